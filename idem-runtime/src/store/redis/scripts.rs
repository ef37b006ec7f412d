//! The store's Lua scripts, one file each in `scripts/`: every write that must read a record
//! before it changes anything (the rest are native commands: a claim of a key with no record,
//! a result over an unchanged claim, a saga step's write by its owner), run atomically by the
//! server. Each file says at its top what its `KEYS` and `ARGV`
//! are and what it returns.
//!
//! The scripts that read the clock start with `scripts/prelude.lua`, which sets `now` (the
//! server's `TIME`, in milliseconds):
//!
//! ```text
//! CLAIM source = prelude.lua ++ record.lua ++ claim.lua    (local now = …; decode, encode; …)
//! RELEASE      =                record.lua ++ release.lua  (no clock)
//! RESOLVE      = prelude.lua ++               resolve.lua  (a saga log, no record)
//! ```

use std::sync::LazyLock;

use redis::Script;

/// The source of the script in `scripts/<file>`, with the clock prelude in front of it, and
/// the record's format (`scripts/record.lua`) for a script that reads or writes a record.
macro_rules! with_clock {
    ($file:literal) => {
        concat!(
            include_str!("scripts/prelude.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
    ($file:literal, record) => {
        concat!(
            include_str!("scripts/prelude.lua"),
            include_str!("scripts/record.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}

/// The source of the script in `scripts/<file>`, which needs no clock, with the record's
/// format in front of it.
macro_rules! with_record {
    ($file:literal) => {
        concat!(
            include_str!("scripts/record.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}

const CLAIM_LUA: &str = with_clock!("claim.lua", record);
const COMPLETE_LUA: &str = with_clock!("complete.lua", record);
const RELEASE_LUA: &str = with_record!("release.lua");
const FORGET_LUA: &str = with_record!("forget.lua");
const COMPLETE_IN_PLACE_LUA: &str = include_str!("scripts/complete_in_place.lua");
const RETOKEN_LUA: &str = with_record!("retoken.lua");
const HEARTBEAT_LUA: &str = with_clock!("heartbeat.lua", record);
const RESOLVE_LUA: &str = with_clock!("resolve.lua");
const WRITE_SAGA_LUA: &str = with_clock!("write_saga.lua", record);
const READ_SAGA_LUA: &str = with_record!("read_saga.lua");

/// The claim rule of `store::rules`, in the server (`scripts/claim.lua`).
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));

/// Records an outcome if the token still owns the record (`scripts/complete.lua`).
pub(super) static COMPLETE: LazyLock<Script> = LazyLock::new(|| Script::new(COMPLETE_LUA));

/// Gives a claim back if the token still owns it (`scripts/release.lua`).
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// Deletes a result recorded under a token, unless it is a saga's (`scripts/forget.lua`).
pub(super) static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_LUA));

/// Records a result over an unchanged native claim, by comparing the whole record
/// (`scripts/complete_in_place.lua`).
pub(super) static COMPLETE_IN_PLACE: LazyLock<Script> =
    LazyLock::new(|| Script::new(COMPLETE_IN_PLACE_LUA));

/// Gives a late native claim a token from the counter (`scripts/retoken.lua`).
pub(super) static RETOKEN: LazyLock<Script> = LazyLock::new(|| Script::new(RETOKEN_LUA));

/// Extends a lease if the token still owns the record (`scripts/heartbeat.lua`).
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT_LUA));

/// Settles a saga that needs attention by hand (`scripts/resolve.lua`).
pub(super) static RESOLVE: LazyLock<Script> = LazyLock::new(|| Script::new(RESOLVE_LUA));

/// One write to a saga's log, if the token still owns its record (`scripts/write_saga.lua`):
/// a status, or a step's write that found no list of its owner's (`step_log.rs`).
pub(super) static WRITE_SAGA: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE_SAGA_LUA));

/// A saga's log with its owner's step writes, in one read (`scripts/read_saga.lua`).
pub(super) static READ_SAGA: LazyLock<Script> = LazyLock::new(|| Script::new(READ_SAGA_LUA));

/// Every script: its name, its source and the `Script` the store runs.
#[cfg(test)]
fn all() -> [(&'static str, &'static str, &'static Script); 10] {
    [
        ("claim", CLAIM_LUA, &CLAIM),
        ("complete", COMPLETE_LUA, &COMPLETE),
        ("release", RELEASE_LUA, &RELEASE),
        ("forget", FORGET_LUA, &FORGET),
        (
            "complete_in_place",
            COMPLETE_IN_PLACE_LUA,
            &COMPLETE_IN_PLACE,
        ),
        ("retoken", RETOKEN_LUA, &RETOKEN),
        ("heartbeat", HEARTBEAT_LUA, &HEARTBEAT),
        ("resolve", RESOLVE_LUA, &RESOLVE),
        ("write_saga", WRITE_SAGA_LUA, &WRITE_SAGA),
        ("read_saga", READ_SAGA_LUA, &READ_SAGA),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRELUDE: &str = include_str!("scripts/prelude.lua");

    /// The clock is read in one place: only the prelude calls `TIME`, and a script that uses
    /// `now` has the prelude in front of it.
    #[test]
    fn the_clock_is_read_by_the_prelude_only() {
        for (name, source, _) in all() {
            let own = source.strip_prefix(PRELUDE).unwrap_or(source);
            assert!(!own.contains("'TIME'"), "{name}.lua reads the clock itself");
            let uses_now = own.lines().any(|line| {
                !line.trim_start().starts_with("--")
                    && line
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|word| word == "now")
            });
            assert_eq!(
                uses_now,
                source.starts_with(PRELUDE),
                "{name}.lua uses `now` only with the prelude in front"
            );
        }
    }

    /// A key lives at least as long in the scripts as a token block is trusted in Rust.
    #[test]
    fn the_shortest_life_of_a_key_is_the_shortest_ttl_of_a_block_token() {
        let line = format!(
            "local SHORTEST_MS = {}",
            super::super::tokens::FRESH_BLOCK_TTL.as_millis()
        );
        assert!(include_str!("scripts/record.lua").contains(&line), "{line}");
    }

    /// Every script compiles on a real server (`SCRIPT LOAD`), as the one the store runs: a
    /// syntax error in a `.lua` file fails here, not on a customer's first call.
    #[cfg(feature = "conformance")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn every_script_loads_into_redis() {
        let Some(server) = crate::conformance::servers::RedisServer::shared() else {
            return;
        };
        let client = redis::Client::open(server.url()).expect("a redis url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        for (name, source, script) in all() {
            let loaded: Result<String, _> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source)
                .query_async(&mut connection)
                .await;
            let sha = loaded.unwrap_or_else(|error| panic!("{name}.lua does not load: {error}"));
            assert_eq!(
                sha,
                script.get_hash(),
                "{name}.lua is the script the store runs"
            );
        }
    }
}
