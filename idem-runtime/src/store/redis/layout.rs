//! Where the store's keys live, and which layout wrote them.
//!
//! Every key the store writes for a call sits in its **bucket**: the first three hex digits of
//! the call's key, 4,096 buckets in all. The bucket is the key name's hash tag, so a record,
//! its saga log and the bucket's index of running sagas share one cluster slot, and every
//! script and pipeline touches one slot: the store runs on Redis Cluster as on one server.
//! 4,096 buckets hash to slots spread within 5 % of an even share over up to 30 masters
//! (`tests/runtime/redis_cluster.rs` checks it with the cluster's own hashing).
//!
//! ```text
//! <prefix>{9f3}:9f3a…(64 hex):r       string: the record (see `record.rs`)
//! <prefix>{9f3}:9f3a…:s               hash: a saga's log head (id, status, error, updated, note)
//! <prefix>{9f3}:9f3a…:steps           hash: a saga's steps as layout 2 wrote them
//! <prefix>{9f3}:9f3a…:log              list: the step writes of a saga's owners before
//! <prefix>{9f3}:9f3a…:log:<token>:<id> list: the step writes of a saga's owner in progress
//! <prefix>{9f3}:sagas                 sorted set: the bucket's sagas running or being undone
//! <prefix>tokens                      counter: the fencing tokens (touched by no script)
//! <prefix>layout                      "3": the layout of the keys under the prefix
//! ```
//!
//! The token counter is one key for the whole store: a handle reserves a block of tokens
//! from it at a time (`tokens.rs`), once per 1,024 claims or per second, with `INCRBY`, a
//! command of its own. A counter per bucket would cost a round trip for most claims, since a
//! handle's claims spread over 4,096 buckets.
//!
//! Keep `{` and `}` out of the prefix: a whole `{…}` tag in it puts every key of the store in
//! one slot (correct, on one master), and a lone or empty brace breaks the buckets (a cluster
//! answers `CROSSSLOT`).
//!
//! **Layouts.** Layout 1 (idem before the bucket) named a record `<prefix>{<key>}:r`, kept the
//! running sagas in one index `<prefix>sagas`, and had no claim id in its records; it never
//! wrote `<prefix>layout`. Layout 2 wrote a saga step's every write into the steps hash by a
//! script; this layout reads that hash as it was, but an idem of layout 2 taking a saga over
//! would not close the owner's list (`step_log.rs`), whose next writes would then still land,
//! and would not read the lists: the two must not run on one store. [`connect`](super::RedisStoreBuilder::connect)
//! reads the layout and refuses a store written by another one, saying what to do, rather
//! than misread it: [`migrate_layout`](super::RedisStoreBuilder::migrate_layout) (`idem
//! migrate` on the command line) rewrites a layout-1 store into this one, and marks a
//! layout-2 store as this one (nothing in it moves).

use redis::Value;

use super::connection::Master;
use super::record::Stored;
use super::{failed, RedisStore};
use crate::key::Key;
use crate::Error;

/// The layout this idem writes, as `<prefix>layout` holds it.
pub(super) const LAYOUT: &str = "3";

/// [`LAYOUT`] as a number, as [`Migrated::from_layout`] says it.
const LAYOUT_NUMBER: u32 = 3;

/// How many hex digits of a key name its bucket.
pub(super) const BUCKET_DIGITS: usize = 3;

/// How many buckets there are: 16 to the power of [`BUCKET_DIGITS`].
pub(super) const BUCKETS: u32 = 1 << (4 * BUCKET_DIGITS);

/// The bucket of `key`: the first [`BUCKET_DIGITS`] of its hex.
pub(super) fn bucket(key: &Key) -> String {
    bucket_of(key.hex().as_str()).to_owned()
}

/// The bucket of a key given as its hex digits: the first [`BUCKET_DIGITS`] of them.
pub(super) fn bucket_of(hex: &str) -> &str {
    &hex[..BUCKET_DIGITS]
}

/// Every bucket, in order.
pub(super) fn all_buckets() -> impl Iterator<Item = String> {
    (0..BUCKETS).map(|bucket| format!("{bucket:0width$x}", width = BUCKET_DIGITS))
}

/// What [`RedisStoreBuilder::migrate_layout`](super::RedisStoreBuilder::migrate_layout) moved
/// from an older layout into the current one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migrated {
    /// The layout the store had: 1 (its keys moved), 2 (marked as current, nothing moved),
    /// or 3 when it was already current.
    pub from_layout: u32,
    /// Records moved.
    pub records: u64,
    /// Saga logs moved (a head and its steps).
    pub saga_logs: u64,
    /// Running sagas moved into their bucket's index.
    pub running_sagas: u64,
}

/// What a store's `<prefix>layout` and token counter say about the keys under the prefix.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The current layout (or nothing yet: it is written now).
    Current,
    /// Layout 1: a token counter and no layout key.
    One,
    /// Layout 2: the same keys, a saga step's writes all in the steps hash.
    Two,
    /// A layout this idem does not know (a newer idem wrote it).
    Other(String),
}

impl RedisStore {
    /// `<prefix>layout`.
    fn layout_key(&self) -> String {
        self.global("layout")
    }

    /// Which layout wrote the keys under the prefix; an empty prefix is marked as the current
    /// layout's.
    async fn found_layout(&self) -> Result<Found, Error> {
        let read_layout = || async {
            let mut connection = self.inner.connection.clone();
            redis::cmd("GET")
                .arg(self.layout_key())
                .query_async::<Option<String>>(&mut connection)
                .await
                .map_err(failed(None))
        };
        let found = |layout: Option<String>| match layout.as_deref() {
            None => None,
            Some(LAYOUT) => Some(Found::Current),
            Some("2") => Some(Found::Two),
            Some(other) => Some(Found::Other(other.to_owned())),
        };
        // Separate commands, not a pipeline: on a cluster the keys are in different slots.
        if let Some(found) = found(read_layout().await?) {
            return Ok(found);
        }
        if !self.is_in_use().await? {
            // Nothing under the prefix yet: the first reservation of tokens marks it
            // (`mark_layout`), so that an operator's look writes nothing.
            return Ok(Found::Current);
        }
        // A counter and, a moment ago, no mark: another agent of this layout may have marked
        // the prefix and drawn tokens in between (it marks before it draws), so the mark is
        // read again, after the counter. Still none: the counter is layout 1's.
        Ok(found(read_layout().await?).unwrap_or(Found::One))
    }

    /// Marks the prefix as written in the current layout, before a handle's first reservation
    /// of tokens; an error if the keys under it are in another layout (a handle made with
    /// `with_prefix`, whose prefix `connect` did not check, or a newer idem's mark made
    /// meanwhile).
    pub(super) async fn mark_layout(&self) -> Result<(), Error> {
        // An unmarked prefix whose token counter exists is layout 1's: marking it would hide
        // its records.
        self.check_layout().await?;
        self.set_layout_mark().await
    }

    /// `SET <prefix>layout <LAYOUT> NX GET`: marks the prefix unless a mark is there; an error if
    /// that mark is another layout's.
    pub(super) async fn set_layout_mark(&self) -> Result<(), Error> {
        let mut connection = self.inner.connection.clone();
        // `NX … GET`: a mark made meanwhile is kept, and read back.
        let marked: Option<String> = redis::cmd("SET")
            .arg(self.layout_key())
            .arg(LAYOUT)
            .arg("NX")
            .arg("GET")
            .query_async(&mut connection)
            .await
            .map_err(failed(None))?;
        match marked.as_deref() {
            None | Some(LAYOUT) => Ok(()),
            Some(other) => {
                let problem = format!(
                    "the keys under the prefix {:?} were marked as Redis layout {other:?} since \
                     this store connected: another idem writes there (a newer one: upgrade this one)",
                    self.prefix()
                );
                Err(Error::store("redis", None, problem))
            }
        }
    }

    /// `Ok` if the keys under the prefix are in the layout this idem reads; an error that says
    /// what to do otherwise.
    pub(super) async fn check_layout(&self) -> Result<(), Error> {
        let problem = match self.found_layout().await? {
            Found::Current => return Ok(()),
            Found::One => format!(
                "the keys under the prefix {:?} were written by an older idem (Redis layout 1, \
                 before records were grouped into buckets for Redis Cluster): stop the agents \
                 that use it and run `idem --store <url> migrate` once (or \
                 RedisStore::builder(url).migrate_layout()), then start them again",
                self.prefix()
            ),
            Found::Two => format!(
                "the keys under the prefix {:?} were written by an older idem (Redis layout 2, \
                 before a saga step's write became one command): stop the agents that use it \
                 and run `idem --store <url> migrate` once (or \
                 RedisStore::builder(url).migrate_layout()), then start them again",
                self.prefix()
            ),
            Found::Other(layout) => format!(
                "the keys under the prefix {:?} are in Redis layout {layout:?}, which this idem \
                 does not know (it reads layout {LAYOUT}): a newer idem wrote them; upgrade idem",
                self.prefix()
            ),
        };
        Err(Error::store("redis", None, problem))
    }

    /// Moves a layout-1 store into the current layout; nothing if it is current already.
    pub(super) async fn migrate(&self) -> Result<Migrated, Error> {
        match self.found_layout().await? {
            Found::Current => {
                return Ok(Migrated {
                    from_layout: LAYOUT_NUMBER,
                    ..Migrated::default()
                })
            }
            Found::Two => {
                self.write_layout_mark().await?;
                return Ok(Migrated {
                    from_layout: 2,
                    ..Migrated::default()
                });
            }
            Found::Other(layout) => {
                let problem = format!(
                    "the keys under the prefix {:?} are in Redis layout {layout:?}, which this \
                     idem does not know: it cannot migrate them",
                    self.prefix()
                );
                return Err(Error::store("redis", None, problem));
            }
            Found::One => {}
        }
        let mut migrated = Migrated {
            from_layout: 1,
            ..Migrated::default()
        };
        for master in self.inner.connection.masters().await? {
            for name in self.old_names(&master, ":r").await? {
                migrated.records += u64::from(self.move_record(&name).await?);
            }
            for name in self.old_names(&master, ":s").await? {
                migrated.saga_logs += u64::from(self.move_saga_log(&name).await?);
            }
        }
        migrated.running_sagas = self.move_saga_index().await?;
        // The expiry index of an older idem goes, as a purge deletes it.
        self.purge().await?;
        self.write_layout_mark().await?;
        Ok(migrated)
    }

    /// `SET <prefix>layout <LAYOUT>`, whatever was there: the end of a migration.
    async fn write_layout_mark(&self) -> Result<(), Error> {
        let mut connection = self.inner.connection.clone();
        redis::cmd("SET")
            .arg(self.layout_key())
            .arg(LAYOUT)
            .query_async::<()>(&mut connection)
            .await
            .map_err(failed(None))
    }

    /// The layout-1 names on `master` ending in `suffix` (`<prefix>{<64 hex>}<suffix>`), with
    /// the keys they hold.
    async fn old_names(&self, master: &Master, suffix: &str) -> Result<Vec<(Key, Vec<u8>)>, Error> {
        let pattern = format!(
            "{}{{{}}}{suffix}",
            super::scan::escaped(&self.inner.prefix),
            "?".repeat(64)
        );
        let mut names = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found) = self.next_page(master, cursor, &pattern).await?;
            for name in found {
                let key = name
                    .strip_prefix(self.inner.prefix.as_bytes())
                    .and_then(|rest| rest.strip_prefix(b"{"))
                    .and_then(|rest| rest.strip_suffix(suffix.as_bytes()))
                    .and_then(|rest| rest.strip_suffix(b"}"))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| hex.parse::<Key>().ok());
                if let Some(key) = key {
                    names.push((key, name));
                }
            }
            if next == 0 {
                return Ok(names);
            }
            cursor = next;
        }
    }

    /// Moves one layout-1 record to its bucket, with a claim id of 0 (no owner of a layout-1
    /// claim runs any more) and its expiry; `false` if it went meanwhile.
    async fn move_record(&self, (key, old): &(Key, Vec<u8>)) -> Result<bool, Error> {
        let mut connection = self.inner.connection.clone();
        let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .cmd("GET")
            .arg(old)
            .cmd("PTTL")
            .arg(old)
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        let Some(value) = value else {
            return Ok(false);
        };
        let value =
            Stored::from_layout_one(&value).map_err(super::decode::corrupt(key, "a record"))?;
        let mut set = redis::cmd("SET");
        set.arg(self.record_key(key)).arg(value);
        // -1: no expiry (a saga's claim, a record parked for review); 0: about to go.
        if pttl >= 0 {
            set.arg("PX").arg(pttl.max(1));
        }
        set.query_async::<()>(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        redis::cmd("DEL")
            .arg(old)
            .query_async::<i64>(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        Ok(true)
    }

    /// Moves one layout-1 saga log (its head and its steps) to its bucket, with its expiry.
    async fn move_saga_log(&self, (key, old_head): &(Key, Vec<u8>)) -> Result<bool, Error> {
        let old_steps = format!("{}{{{key}}}:steps", self.inner.prefix);
        let (head, steps) = self.saga_keys(key);
        let mut moved = false;
        for (old, new) in [(old_head.clone(), head), (old_steps.into_bytes(), steps)] {
            let mut connection = self.inner.connection.clone();
            type Fields = Vec<(Vec<u8>, Vec<u8>)>;
            let (fields, pttl): (Fields, i64) = redis::pipe()
                .cmd("HGETALL")
                .arg(&old)
                .cmd("PTTL")
                .arg(&old)
                .query_async(&mut connection)
                .await
                .map_err(failed(Some(key)))?;
            if fields.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&new).ignore();
            pipe.cmd("HSET").arg(&new).arg(&fields).ignore();
            if pttl >= 0 {
                pipe.cmd("PEXPIRE").arg(&new).arg(pttl.max(1)).ignore();
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(failed(Some(key)))?;
            redis::cmd("DEL")
                .arg(&old)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(failed(Some(key)))?;
            moved = true;
        }
        Ok(moved)
    }

    /// Moves the members of layout 1's `<prefix>sagas` into their buckets' indexes.
    async fn move_saga_index(&self) -> Result<u64, Error> {
        let mut connection = self.inner.connection.clone();
        let old = self.global("sagas");
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&old)
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(failed(None))?;
        let mut moved = 0;
        for member in members {
            let Ok(key) = member.parse::<Key>() else {
                continue;
            };
            redis::cmd("ZADD")
                .arg(self.saga_index(&bucket(&key)))
                .arg(0)
                .arg(&member)
                .query_async::<Value>(&mut connection)
                .await
                .map_err(failed(Some(&key)))?;
            moved += 1;
        }
        redis::cmd("DEL")
            .arg(&old)
            .query_async::<i64>(&mut connection)
            .await
            .map_err(failed(None))?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_first_hex_digits() {
        let key: Key = "9f3a".repeat(16).parse().expect("a key");
        assert_eq!(bucket(&key), "9f3");
        let all: Vec<String> = all_buckets().collect();
        assert_eq!(all.len(), 4096);
        assert_eq!((all[0].as_str(), all[4095].as_str()), ("000", "fff"));
    }
}
