//! A claim on Redis: one native command for a key with no record (a fresh call), for a
//! result to replay and for a key parked for review; a second, `PTTL`, for a live owner
//! (its lease is timed by its key's expiry), in the same pipeline when a result's expiry is
//! asked for too; and a script for a record the claim must change.
//!
//! A handle whose recent claims mostly found a record (replays, duplicates) reads first
//! (`store/first_look.rs`): a replay is then `GET` with no claim to encode and send. A
//! call's claim (`Store::claim_without_expiry`) reads a result without its expiry; a
//! `ReplayCache`'s (`Store::claim`) reads both.
//!
//! ```text
//! GET r (a call's) | GET r; PTTL r (one pipeline)      (when reading first)
//!   nil                  → the native claim below
//!   a live result        → its answer, nothing written
//!   a key parked         → its answer, nothing written
//!   an owner             → timed by PTTL r (a call's: one more round trip), then
//!     alive              → its answer, nothing written
//!     dead               → the script below
//!   anything else        → the script below (a tombstone, a saga's claim, a TTL
//!                          shorter than a key lives)
//!
//! SET r <claim> NX GET PX <lease + ttl> (a call's)
//!   | the same; PTTL r (one pipeline)
//!   nil                  → acquired (the token came from the store's block)
//!   this claim           → acquired (an earlier send made it: the same claim id)
//!   another record       → as above (store::rules decides), the script being
//!                          INCR the counter, then scripts/claim.lua (takeover, review,
//!                          an expired result or a tombstone claimed afresh)
//! ```

use std::time::Instant;

use redis::Value;

use super::decode::{bytes, claim_answer, corrupt};
use super::record::{hex, State, Stored};
use super::scripts::{CLAIM, RETOKEN};
use super::tokens::FRESH_BLOCK_TTL;
use super::{command, failed, wall_now_ms, RedisStore};
use crate::key::Key;
use crate::store::{
    decide, millis, Claim, ClaimRequest, FencingToken, Found, OnStale, Status, Verdict,
};
use crate::Error;

impl RedisStore {
    /// The claim as one native command (and a `PTTL` for a record found that must be timed),
    /// with the record as this claim wrote it if it made one; `None` when the record must be
    /// changed by the script (or the action's TTL is too short for a token from a block).
    /// `expiry`: whether a result found is reported with the time it has left (a
    /// `ReplayCache`'s claim), as in [`claim_by_reading`](Self::claim_by_reading).
    pub(super) async fn claim_natively(
        &self,
        request: &ClaimRequest<'_>,
        claim_id: u64,
        expiry: bool,
    ) -> Result<Option<(Claim, Option<Vec<u8>>)>, Error> {
        if request.ttl < FRESH_BLOCK_TTL {
            return Ok(None);
        }
        let (token, reserved) = self.inner.tokens.next(self).await?;
        self.claim_with_token(request, token, reserved, claim_id, expiry)
            .await
    }

    /// The native claim under `token`, from a block reserved at `reserved`, by the claim
    /// `claim_id`, with the record it wrote if it made one.
    async fn claim_with_token(
        &self,
        request: &ClaimRequest<'_>,
        token: FencingToken,
        reserved: Instant,
        claim_id: u64,
        expiry: bool,
    ) -> Result<Option<(Claim, Option<Vec<u8>>)>, Error> {
        let key = request.key;
        let ttl_ms = millis(request.ttl);
        let claim = Stored::encode_claim(
            token,
            claim_id,
            ttl_ms,
            wall_now_ms(),
            request.fingerprint,
            request.action,
        );
        let record_key = self.record_key(key);
        let mut set = command("SET", 6, record_key.len() + claim.len() + 32);
        set.arg(&record_key)
            .arg(&claim)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(request.lease).saturating_add(ttl_ms).max(1));
        let (previous, read_pttl) = self.with_expiry(key, set, &record_key, expiry).await?;
        // Made: no record was there; or the record is this very claim, made by an earlier
        // send of this `SET` whose answer was lost (its claim id is this claim's: a token
        // alone could be another's, handed out again after a failover).
        let found = match previous {
            Value::Nil => None,
            value => bytes(value)
                .and_then(Stored::decode_owned)
                .map_err(corrupt(key, "a record"))
                .map(Some)?
                .filter(|found| {
                    found.state != State::Is(Status::InProgress)
                        || (found.token, found.claim_id) != (token, claim_id)
                }),
        };
        let Some(found) = found else {
            // A `SET` that reached the server late may carry a token smaller than one handed
            // out for this key meanwhile (`tokens.rs`): it gets a new one first.
            if reserved.elapsed() >= FRESH_BLOCK_TTL {
                // Boxed: rare, and a script's round trip would make every claim's future
                // larger (see `RedisStore::claim_reading_expiry`).
                let retokened = Box::pin(self.retoken(key, token, claim_id)).await?;
                return Ok(retokened.map(|claim| (claim, None)));
            }
            let acquired = Claim::Acquired {
                token,
                resumed: false,
            };
            return Ok(Some((acquired, Some(claim))));
        };
        let expiry = self.expiry_of(key, &record_key, &found, read_pttl).await?;
        Ok(reported(found, expiry, request).map(|claim| (claim, None)))
    }

    /// The claim's first step when its handle reads first: `GET` and `PTTL` of the record,
    /// a plain read (the decision rests on the record as one command read it; the `PTTL`
    /// after it only times it, as in the native claim). Without `expiry` asked for (a call's
    /// claim, not a `ReplayCache`'s), `GET` alone: a result is reported without the time it
    /// has left, and only a record whose answer needs its key's expiry (a lease to time) is
    /// timed by a `PTTL` after it.
    pub(super) async fn claim_by_reading(
        &self,
        request: &ClaimRequest<'_>,
        expiry: bool,
    ) -> Result<Looked, Error> {
        let key = request.key;
        let record_key = self.record_key(key);
        let get = of_key("GET", &record_key);
        let (value, read_pttl) = self.with_expiry(key, get, &record_key, expiry).await?;
        if value == Value::Nil {
            return Ok(Looked::NoRecord);
        }
        let found = bytes(value)
            .and_then(Stored::decode_owned)
            .map_err(corrupt(key, "a record"))?;
        let expiry = self.expiry_of(key, &record_key, &found, read_pttl).await?;
        Ok(match reported(found, expiry, request) {
            Some(claim) => Looked::Answered(claim),
            None => Looked::ToChange,
        })
    }

    /// The claim's first command (`GET`, or the native `SET … GET`) and what it answered,
    /// with the `PTTL` of `record_key` after it in one pipeline when `expiry` is asked for
    /// (a pipeline, not a transaction: see [`expiry_of`](Self::expiry_of)).
    async fn with_expiry(
        &self,
        key: &Key,
        first: redis::Cmd,
        record_key: &str,
        expiry: bool,
    ) -> Result<(Value, Option<i64>), Error> {
        let mut connection = self.inner.connection.clone();
        if expiry {
            redis::Pipeline::with_capacity(2)
                .add_command(first)
                .add_command(of_key("PTTL", record_key))
                .query_async(&mut connection)
                .await
                .map(|(value, pttl)| (value, Some(pttl)))
        } else {
            first
                .query_async(&mut connection)
                .await
                .map(|value| (value, None))
        }
        .map_err(failed(Some(key)))
    }

    /// The expiry of the key of `found`, a record the claim's first command read: as
    /// `read` with it; else read now, in a round trip of its own, for a live owner's lease
    /// to time (a call's claim that found another's: rare on a handle that writes first, see
    /// `store/first_look.rs`), and left unread for any other record (a result is reported
    /// without the time it has left, a key parked for review has no expiry, and a record
    /// only the script decides on needs none).
    ///
    /// The decision rests on the record as the first command read it; the `PTTL`, read
    /// after it, only times it. A record that changed in between is one whose owner is alive
    /// (a heartbeat, a takeover, a result: the answer is "in progress" a moment late, and
    /// the caller waits or asks again), or one the script looks at again (a key gone or
    /// without expiry, `PTTL` -2 or -1; a key released meanwhile, whose tombstone's short
    /// expiry ends the lease as read).
    async fn expiry_of(
        &self,
        key: &Key,
        record_key: &str,
        found: &Stored,
        read: Option<i64>,
    ) -> Result<Expiry, Error> {
        Ok(match read {
            Some(pttl) => Expiry::Read(pttl),
            None if reportable_status(found) != Some(Status::InProgress) => Expiry::Unread,
            None => Expiry::Read(
                of_key("PTTL", record_key)
                    .query_async(&mut self.inner.connection.clone())
                    .await
                    .map_err(failed(Some(key)))?,
            ),
        })
    }

    /// The native claim of `key` under `late`, now under a token drawn from the counter
    /// (`scripts/retoken.lua`); `None` if the claim was lost meanwhile (the script's claim
    /// then decides).
    async fn retoken(
        &self,
        key: &Key,
        late: FencingToken,
        claim_id: u64,
    ) -> Result<Option<Claim>, Error> {
        let token = self.draw(1).await?;
        let mut invocation = RETOKEN.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.closed_log(key))
            .key(self.owner_log(key, late, &claim_id.to_string()))
            .arg(late)
            .arg(token)
            .arg(claim_id);
        let held: i64 = self.run(Some(key), &invocation).await?;
        Ok((held == 1).then_some(Claim::Acquired {
            token,
            resumed: false,
        }))
    }

    /// The claim by `scripts/claim.lua`, under a token drawn from the counter: larger than
    /// any the key had, as a takeover's must be.
    ///
    /// A claim that takes a saga's record from its owner closes that owner's list of step
    /// writes (`step_log.rs`), which the script must be given: it is given none at first, and
    /// answers with the owner when it needs one; the claim is then sent again naming it.
    pub(super) async fn claim_by_script(
        &self,
        request: &ClaimRequest<'_>,
        claim_id: u64,
    ) -> Result<Claim, Error> {
        let key = request.key;
        let token = self.draw(1).await?;
        let fingerprint = hex(request.fingerprint.as_bytes());
        let fill = |invocation: &mut redis::ScriptInvocation<'_>| {
            invocation
                .key(self.record_key(key))
                .key(self.saga_keys(key).0)
                .key(self.closed_log(key))
                .arg(&fingerprint)
                .arg(request.action)
                .arg(millis(request.lease))
                .arg(match request.on_stale {
                    OnStale::TakeOver => "takeover",
                    OnStale::Review => "review",
                })
                .arg(millis(request.ttl))
                .arg(token)
                .arg(claim_id);
        };
        self.run_naming_the_owner(key, &CLAIM, fill, claim_answer, "a record")
            .await
    }
}

/// What reading a key's record first found.
pub(super) enum Looked {
    /// The claim's answer, as read: a result, a live owner, a key parked for review.
    Answered(Claim),
    /// No record: the native claim makes one.
    NoRecord,
    /// A record the claim must change (a takeover, an expired result, a tombstone): the
    /// script.
    ToChange,
}

/// The command `name` (`GET`, `PTTL`) of the one key `record_key`.
fn of_key(name: &str, record_key: &str) -> redis::Cmd {
    let mut command = command(name, 1, record_key.len());
    command.arg(record_key);
    command
}

/// A record's key's expiry as a claim read it.
enum Expiry {
    /// `PTTL`'s answer: ms left, -1 none, -2 no key.
    Read(i64),
    /// Not read: the record's answer needs no time (a result reported without the time it
    /// has left, a key parked for review).
    Unread,
}

/// The answer of a claim that changes nothing, from a record `found` read with its key's
/// `expiry`; `None` when the claim must change it, or when only the script can tell
/// ([`reportable_status`]).
fn reported(found: Stored, expiry: Expiry, request: &ClaimRequest<'_>) -> Option<Claim> {
    let status = reportable_status(&found)?;
    // The record's times in its key's expiry, on a timeline whose now is 0: a record whose
    // key exists has not run out (Redis deletes it when it does).
    let now_ms = 0;
    let expires_at_ms = match expiry {
        // A key parked for review waits for an operator: its key has no expiry.
        _ if status == Status::NeedsReview => None,
        Expiry::Read(pttl) if pttl < 0 => return None,
        Expiry::Read(pttl) => found.ends_at_ms(pttl),
        Expiry::Unread => None,
    };
    let rule = Found {
        status,
        token: found.token,
        fingerprint: found.fingerprint,
        expires_at_ms,
        claim_ttl_ms: Some(found.ttl_ms),
    };
    match decide(&rule, request, now_ms) {
        Verdict::Report => Some(rule.report(found.outcome, now_ms)),
        Verdict::Write(_) => None,
    }
}

/// The status of a record `found` that a claim may report from what it read; `None` for a
/// tombstone, or a record whose times it keeps itself (a saga's claim, and TTLs shorter than
/// a key lives: `lease_end_ms`), on which only the script decides, with the server's clock.
/// Every other record's times are in its key's expiry, and a key that still exists has not
/// run out.
fn reportable_status(found: &Stored) -> Option<Status> {
    match found.state {
        State::Is(status) if found.lease_end_ms == 0 => Some(status),
        _ => None,
    }
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conformance::servers::{Flavor, RedisServer};
    use crate::key::Fingerprint;
    use crate::store::first_look::FirstStep;
    use crate::store::Store;
    use crate::Action;

    /// A claim of `key` by `action` with `lease`, keeping its result an hour, taking over a
    /// dead owner.
    fn request<'a>(
        key: &'a Key,
        fingerprint: &'a Fingerprint,
        action: &'static str,
        lease: Duration,
    ) -> ClaimRequest<'a> {
        ClaimRequest {
            key,
            fingerprint,
            action,
            lease,
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        }
    }

    /// A call's claim is one command, `GET` on a handle that reads first and the native
    /// `SET … GET` on one that writes first: a fresh key's, and a replay's, whose answer
    /// leaves the result's expiry out, which a `ReplayCache`'s claim (`claim`: the same
    /// command and `PTTL`) reads. A record in progress is timed all the same (its lease from
    /// a `PTTL` after the command); a released key's tombstone and an owner whose lease the
    /// record keeps (a TTL shorter than a key lives), which the script decides on, are not;
    /// nor is a key parked for review, reported as read. The `PTTL`s are counted by the
    /// server (a server of the test's own; `INFO commandstats` counts a script's too).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_call_reads_an_expiry_only_to_time_a_lease_and_a_cache_always_does() {
        let Some(server) = RedisServer::own_of(Flavor::Redis, &[]) else {
            return;
        };
        for step in [FirstStep::Read, FirstStep::Write] {
            let store = RedisStore::builder(server.url())
                .prefix(format!("unread-expiry-{step:?}:"))
                .first_step(step)
                .connect()
                .await
                .expect("connect");
            expiries_read(&store, step, &server).await;
        }
    }

    /// The `PTTL`s a server runs (`INFO commandstats`, which counts a script's too), counted
    /// through one connection of the test's.
    struct Pttls {
        connection: redis::aio::MultiplexedConnection,
        counted: u64,
    }

    impl Pttls {
        async fn of(server: &RedisServer) -> Pttls {
            let client = redis::Client::open(server.url()).expect("a client");
            let connection = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            let mut pttls = Pttls {
                connection,
                counted: 0,
            };
            pttls.since().await;
            pttls
        }

        /// How many `PTTL`s the server has run since the last count.
        async fn since(&mut self) -> u64 {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut self.connection)
                .await
                .expect("INFO commandstats");
            let now = info
                .lines()
                .find_map(|line| line.strip_prefix("cmdstat_pttl:calls="))
                .map_or(0, |rest| {
                    let calls = rest.split(',').next().unwrap_or_default();
                    calls.parse().expect("a count of calls")
                });
            now - std::mem::replace(&mut self.counted, now)
        }
    }

    async fn expiries_read(store: &RedisStore, step: FirstStep, server: &RedisServer) {
        let key = Action::new("unread").key(&(1,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let request = request(&key, &fingerprint, "unread", Duration::from_secs(10));
        let mut pttls = Pttls::of(server).await;

        let fresh = store.claim_without_expiry(&request).await.expect("claim");
        let Claim::Acquired { token, .. } = fresh else {
            panic!("{step:?}: a fresh key is acquired: {fresh:?}");
        };
        assert_eq!(pttls.since().await, 0, "{step:?}: a fresh claim's PTTLs");
        match store.claim_without_expiry(&request).await.expect("claim") {
            Claim::InProgress {
                lease_remaining, ..
            } => assert!(
                lease_remaining > Duration::ZERO && lease_remaining <= request.lease,
                "{step:?}: {lease_remaining:?}"
            ),
            other => panic!("{step:?}: the owner, timed: {other:?}"),
        }
        assert_eq!(pttls.since().await, 1, "{step:?}: a live owner's PTTLs");
        let ok = crate::store::StoredOutcome::Ok(b"1".to_vec());
        let recorded = store.complete(&key, token, ok, request.ttl).await;
        assert_eq!(recorded.expect("complete"), crate::store::Ownership::Held);
        assert_eq!(
            store.inner.first_look.write_first(),
            step == FirstStep::Write,
            "the handle's first step"
        );
        pttls.since().await;

        let call = store.claim_without_expiry(&request).await.expect("claim");
        assert!(
            matches!(
                call,
                Claim::Completed {
                    expires_in: None,
                    ..
                }
            ),
            "{step:?}: {call:?}"
        );
        assert_eq!(pttls.since().await, 0, "{step:?}: a call's replay's PTTLs");
        let cache = store.claim(&request).await.expect("claim");
        assert!(
            matches!(cache, Claim::Completed { expires_in: Some(left), .. } if left <= request.ttl),
            "{step:?}: {cache:?}"
        );
        assert_eq!(pttls.since().await, 1, "{step:?}: a cache's replay's PTTLs");

        let key = Action::new("unread").key(&(2,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let other = self::request(&key, &fingerprint, "unread", Duration::from_secs(10));
        let Claim::Acquired { token, .. } = store.claim(&other).await.expect("claim") else {
            panic!("{step:?}: a fresh key is acquired");
        };
        // Counted before the release (which reads no expiry): the tombstone lasts 1.5 s.
        pttls.since().await;
        let released = store.release(&key, token).await.expect("release");
        assert_eq!(released, crate::store::Ownership::Held);
        let again = store.claim_without_expiry(&other).await.expect("claim");
        assert!(
            matches!(again, Claim::Acquired { token: new, .. } if new > token),
            "{step:?}: a released key is claimed afresh: {again:?}"
        );
        // One, the script's own (`claim.lua` reads the key's expiry): none before it.
        assert_eq!(pttls.since().await, 1, "{step:?}: a tombstone's PTTLs");

        // An owner whose TTL is shorter than a key lives: claimed by the script, its lease
        // kept in its record.
        let key = Action::new("unread").key(&(3,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let mut short = self::request(&key, &fingerprint, "unread", Duration::from_secs(10));
        short.ttl = Duration::from_secs(1);
        let made = store.claim_without_expiry(&short).await.expect("claim");
        assert!(matches!(made, Claim::Acquired { .. }), "{step:?}: {made:?}");
        pttls.since().await;
        let owner = store.claim_without_expiry(&short).await.expect("claim");
        assert!(
            matches!(owner, Claim::InProgress { .. }),
            "{step:?}: {owner:?}"
        );
        assert_eq!(
            pttls.since().await,
            1,
            "{step:?}: a short TTL's owner's PTTLs, the script's"
        );

        // A key parked for review: its dead owner found by a claim that asks for review.
        let key = Action::new("unread").key(&(4,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let mut parked = self::request(&key, &fingerprint, "unread", Duration::from_millis(1));
        parked.on_stale = OnStale::Review;
        let made = store.claim_without_expiry(&parked).await.expect("claim");
        assert!(matches!(made, Claim::Acquired { .. }), "{step:?}: {made:?}");
        // Polled until the 1 ms lease has run out on the server's clock, and the key parked.
        let parking = async {
            while !matches!(
                store.claim_without_expiry(&parked).await.expect("claim"),
                Claim::NeedsReview { .. }
            ) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), parking)
            .await
            .unwrap_or_else(|_| panic!("{step:?}: the key parked for review within 10 s"));
        pttls.since().await;
        let review = store.claim_without_expiry(&parked).await.expect("claim");
        assert!(
            matches!(review, Claim::NeedsReview { .. }),
            "{step:?}: {review:?}"
        );
        assert_eq!(pttls.since().await, 0, "{step:?}: a parked key's PTTLs");
        let cache = store.claim(&parked).await.expect("claim");
        assert!(
            matches!(cache, Claim::NeedsReview { .. }),
            "{step:?}: {cache:?}"
        );
        assert_eq!(
            pttls.since().await,
            1,
            "{step:?}: a parked key's PTTLs for a cache, none a script's"
        );
    }

    /// A claim whose `SET` reached the server late (the process stalled after taking its
    /// token) runs under a token drawn from the counter since, larger than any handed out
    /// meanwhile; one in time keeps its block's token, and so does that claim sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_claim_that_reached_the_server_late_gets_a_token_from_the_counter() {
        let Some(server) = RedisServer::shared() else {
            return;
        };
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect")
            .with_prefix("late-claims:");
        let claim = |n: u32, token, reserved, claim_id| {
            let store = &store;
            async move {
                let key = Action::new("late").key(&(n,)).expect("a key");
                let fingerprint = Fingerprint::from(key);
                let request = request(&key, &fingerprint, "late", Duration::from_secs(10));
                let claim = store
                    .claim_with_token(&request, token, reserved, claim_id, false)
                    .await
                    .map(|claim| claim.map(|(claim, _)| claim));
                let record = store.get(&key).await.expect("get").expect("the claim");
                (claim.expect("claim"), record.token)
            }
        };
        let old = store.draw(1).await.expect("a token");
        let since = store.draw(1).await.expect("another");
        let stalled = Instant::now()
            .checked_sub(FRESH_BLOCK_TTL + Duration::from_millis(1))
            .expect("an instant in the past");

        let (late, stored) = claim(1, old, stalled, 1).await;
        let Some(Claim::Acquired { token, .. }) = late else {
            panic!("acquired: {late:?}")
        };
        assert!(token > since, "{token} after {since}");
        assert_eq!(stored, token, "the record holds the new token");

        let (in_time, stored) = claim(2, old, Instant::now(), 2).await;
        assert_eq!(
            in_time,
            Some(Claim::Acquired {
                token: old,
                resumed: false
            })
        );
        assert_eq!(stored, old);

        // The same `SET` sent again (its first answer lost): the claim is this one's.
        let (again, stored) = claim(2, old, Instant::now(), 2).await;
        assert_eq!(again, in_time, "a re-sent claim gets its own token back");
        assert_eq!(stored, old);
        // Another claim of that key, under another token, finds it in progress; and so does
        // another claim under the same token (a counter that went back), by its claim id.
        for (token, claim_id) in [(since, 3), (old, 4)] {
            let (other, _) = claim(2, token, Instant::now(), claim_id).await;
            assert!(
                matches!(other, Some(Claim::InProgress { token, .. }) if token == old),
                "{other:?}"
            );
        }
    }

    /// A claim by the script sent again (its answer lost, the client re-sent it) gets its own
    /// token back, as fresh or as a takeover as it was; another claim id finds it in progress.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_claim_by_script_sent_again_gets_its_own_token_back() {
        let Some(server) = RedisServer::shared() else {
            return;
        };
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect")
            .with_prefix("resent-claims:");
        let key = Action::new("resent").key(&(1,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let request = |lease_ms| {
            request(
                &key,
                &fingerprint,
                "resent",
                Duration::from_millis(lease_ms),
            )
        };
        let first = store
            .claim_by_script(&request(150), 11)
            .await
            .expect("claim");
        let Claim::Acquired {
            token,
            resumed: false,
        } = first
        else {
            panic!("a fresh claim: {first:?}");
        };
        let again = store
            .claim_by_script(&request(150), 11)
            .await
            .expect("again");
        assert_eq!(again, first, "the same claim, sent again");
        let other = store
            .claim_by_script(&request(150), 12)
            .await
            .expect("other");
        assert!(matches!(other, Claim::InProgress { .. }), "{other:?}");

        // Once the lease ran out, a takeover; sent again, a takeover still.
        let deadline = Instant::now() + Duration::from_secs(10);
        let took_over = loop {
            assert!(Instant::now() < deadline, "the lease never ran out");
            tokio::time::sleep(Duration::from_millis(50)).await;
            match store
                .claim_by_script(&request(60_000), 13)
                .await
                .expect("takeover")
            {
                Claim::InProgress { .. } => continue,
                claim => break claim,
            }
        };
        let Claim::Acquired {
            token: new,
            resumed: true,
        } = took_over
        else {
            panic!("a takeover: {took_over:?}");
        };
        assert!(new > token);
        let again = store
            .claim_by_script(&request(60_000), 13)
            .await
            .expect("again");
        assert_eq!(again, took_over, "the same takeover, sent again");
    }

    /// The owner's writes check the claim id beside the token: under the same token, another
    /// claim id (the token handed out twice, after a failover) owns nothing, so complete,
    /// heartbeat, release and the saga log are refused; the owner's own id is held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    async fn a_token_under_another_claim_id_owns_nothing() {
        use crate::store::{Ownership, SagaStatus, SagaStore, SagaWrite, StoredOutcome};

        let Some(server) = RedisServer::shared() else {
            return;
        };
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect")
            .with_prefix("claim-ids:");
        let key = Action::new("ids").key(&(1,)).expect("a key");
        let fingerprint = Fingerprint::from(key);
        let request = request(&key, &fingerprint, "ids", Duration::from_secs(60));
        let Claim::Acquired { token, .. } = store.claim(&request).await.expect("claim") else {
            panic!("a fresh key is acquired");
        };
        let own: u64 = store
            .inner
            .claim_ids
            .of(&key, token)
            .parse()
            .expect("an id");
        let running = || SagaWrite::Status {
            status: SagaStatus::Running,
            error: None,
        };
        let ok = || StoredOutcome::Ok(b"1".to_vec());
        let ttl = Duration::from_secs(60);

        let stranger =
            |store: &RedisStore| store.inner.claim_ids.remember(&key, token, own + 1, None);
        stranger(&store);
        let lease = Duration::from_secs(60);
        assert_eq!(
            store.heartbeat(&key, token, lease).await.unwrap(),
            Ownership::Lost
        );
        let saga = store.write_saga(&key, "saga-1", token, running()).await;
        assert_eq!(saga.unwrap(), Ownership::Lost);
        assert_eq!(store.release(&key, token).await.unwrap(), Ownership::Lost);
        stranger(&store);
        let completed = store.complete(&key, token, ok(), ttl).await.unwrap();
        assert_eq!(completed, Ownership::Lost);

        store.inner.claim_ids.remember(&key, token, own, None);
        assert_eq!(
            store.heartbeat(&key, token, lease).await.unwrap(),
            Ownership::Held
        );
        let saga = store.write_saga(&key, "saga-1", token, running()).await;
        assert_eq!(saga.unwrap(), Ownership::Held);
        let completed = store.complete(&key, token, ok(), ttl).await.unwrap();
        assert_eq!(completed, Ownership::Held);
    }
}
