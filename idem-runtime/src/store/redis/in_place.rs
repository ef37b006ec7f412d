//! A result recorded over the claim that made its record, with one comparison.
//!
//! Most calls claim a fresh key with the native `SET … NX` (`claim.rs`) and nothing changes
//! their record until the result comes (a heartbeat moves only the key's expiry). The handle
//! that made such a claim keeps the record it wrote (`claim_ids.rs`), so recording the result
//! is a compare-and-set of the whole record: `SET <record> <with result> IFEQ <as claimed> PX
//! <ttl>` on a server that has it (Valkey 8.1 and later), and a three-line script
//! (`scripts/complete_in_place.lua`) on Redis 7, instead of decoding the record in Lua. The
//! comparison covers the token and the claim id. Anything else (a saga's claim, a takeover, a
//! new token, a TTL shorter than a key lives, a record that changed) goes to `complete.lua`.

use std::time::Duration;

use redis::Value;

use super::connection::Connection;
use super::durability::{Write, LOSABLE};
use super::record::Stored;
use super::scripts::COMPLETE_IN_PLACE;
use super::tokens::FRESH_BLOCK_TTL;
use super::{command, RedisStore};
use crate::key::Key;
use crate::store::{millis, FencingToken, Ownership};

impl RedisStore {
    /// Records the outcome `kind` and `result` over the claim of `key` under `token`, if
    /// this handle made it with the native `SET` and the record is still as it was written;
    /// `None` when it is not so (the full `complete` decides).
    pub(super) async fn complete_in_place(
        &self,
        key: &Key,
        token: FencingToken,
        kind: &str,
        result: &[u8],
        ttl: Duration,
    ) -> Result<Option<Ownership>, crate::Error> {
        // A shorter TTL is kept in the record, from the server's clock: the script's work.
        if ttl < FRESH_BLOCK_TTL {
            return Ok(None);
        }
        let Some(written) = self.inner.claim_ids.written(key, token) else {
            return Ok(None);
        };
        let Some(completed) = Stored::completed(&written, kind, result) else {
            return Ok(None);
        };
        let record = self.record_key(key);
        let recorded = if self.inner.set_ifeq {
            let mut set = command(
                "SET",
                6,
                record.len() + completed.len() + written.len() + 32,
            );
            set.arg(&record)
                .arg(completed)
                .arg("IFEQ")
                .arg(written)
                .arg("PX")
                .arg(millis(ttl));
            let write = Write::Command(&set);
            let answer: Value = self
                .acknowledged(Some(key), write, "the result", LOSABLE, |answer| {
                    *answer != Value::Nil
                })
                .await?;
            answer != Value::Nil
        } else {
            let mut invocation = COMPLETE_IN_PLACE.prepare_invoke();
            invocation
                .key(&record)
                .arg(written)
                .arg(completed)
                .arg(millis(ttl));
            let held: i64 = self
                .run_acknowledged(key, &invocation, "the result", |held| *held == 1)
                .await?;
            held == 1
        };
        Ok(recorded.then_some(Ownership::Held))
    }
}

/// Whether the server takes `SET … IFEQ` (Valkey 8.1 and later): a `SET` of a key nobody
/// writes, under a condition that fails, so that nothing is written either way.
pub(super) async fn knows_set_ifeq(connection: &Connection, prefix: &str) -> bool {
    let mut connection = connection.clone();
    redis::cmd("SET")
        .arg(format!("{prefix}probe:ifeq"))
        .arg("1")
        .arg("IFEQ")
        .arg("never")
        .query_async::<Value>(&mut connection)
        .await
        .is_ok()
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use super::*;
    use crate::call::Action;
    use crate::conformance::servers::RedisServer;
    use crate::key::Fingerprint;
    use crate::store::{
        Claim, ClaimRequest, OnStale, SagaStatus, SagaStore, SagaWrite, Status, Store,
        StoredOutcome,
    };

    /// On `url`: a native claim's result is recorded in place, also after a heartbeat (which
    /// moves only the key's expiry), and reads back as the full script would have written
    /// it; a claim whose record changed (a saga's) is left to `complete.lua`.
    async fn recorded_in_place(url: &str, ifeq: bool) {
        let store = RedisStore::connect(url)
            .await
            .expect("connect")
            .with_prefix("in-place:");
        assert_eq!(store.inner.set_ifeq, ifeq, "SET … IFEQ known to the server");
        let action = Action::new("in_place");
        let action = &action;
        let claim = |n: u32| {
            let store = &store;
            async move {
                let key = action.key(&(n,)).expect("a key");
                let fingerprint = Fingerprint::from(key);
                let request = ClaimRequest {
                    key: &key,
                    fingerprint: &fingerprint,
                    action: "in_place",
                    lease: Duration::from_secs(60),
                    ttl: Duration::from_secs(3600),
                    on_stale: OnStale::TakeOver,
                };
                match store.claim(&request).await.expect("claim") {
                    Claim::Acquired { token, .. } => (key, token),
                    other => panic!("a fresh key is acquired: {other:?}"),
                }
            }
        };
        let ttl = Duration::from_secs(60);

        let (key, token) = claim(1).await;
        let lease = Duration::from_secs(30);
        assert_eq!(
            store.heartbeat(&key, token, lease).await.unwrap(),
            Ownership::Held
        );
        let done = store.complete_in_place(&key, token, "ok", b"42", ttl).await;
        assert_eq!(done.expect("complete"), Some(Ownership::Held));
        let record = store.get(&key).await.expect("get").expect("a record");
        assert_eq!(record.status, Status::Completed);
        assert_eq!(record.outcome, Some(StoredOutcome::Ok(b"42".to_vec())));
        // Sent again (its answer lost): the record is no longer the claim.
        let again = store.complete_in_place(&key, token, "ok", b"42", ttl).await;
        assert_eq!(again.expect("again"), None);
        let full = StoredOutcome::Ok(b"42".to_vec());
        assert_eq!(
            store.complete(&key, token, full, ttl).await.unwrap(),
            Ownership::Held
        );

        let (saga, token) = claim(2).await;
        let running = SagaWrite::Status {
            status: SagaStatus::Running,
            error: None,
        };
        let written = store.write_saga(&saga, "saga-1", token, running).await;
        assert_eq!(written.expect("saga"), Ownership::Held);
        let changed = store.complete_in_place(&saga, token, "ok", b"1", ttl).await;
        assert_eq!(changed.expect("in place"), None, "a saga's record changed");
        let ok = StoredOutcome::Ok(b"1".to_vec());
        assert_eq!(
            store.complete(&saga, token, ok, ttl).await.unwrap(),
            Ownership::Held
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_result_is_recorded_in_place_by_a_script_on_redis() {
        if let Some(server) = RedisServer::shared() {
            recorded_in_place(&server.url(), false).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_valkey,
        ignore = "valkey-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_result_is_recorded_in_place_by_set_ifeq_on_valkey() {
        if let Some(server) = RedisServer::shared_valkey() {
            recorded_in_place(&server.url(), true).await;
        }
    }
}
