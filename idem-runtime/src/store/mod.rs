//! The `Store` trait, the vocabulary of the claim protocol, and the stores.
//!
//! ```text
//!             claim                    complete(token)
//!   (none) ─────────▶ IN_PROGRESS ─────────────────────▶ COMPLETED ──(ttl)──▶ (none)
//!                      │    ▲  release(token): back to (none)
//!                      │    └── heartbeat(token) extends the lease while the body runs
//!                      └── lease expired ──▶ claimable again under a new token
//!                                            (or NEEDS_REVIEW with on_stale = review);
//!                                            left alone for the ttl after it: purged
//! ```
//!
//! A store keeps one record per key. [`Store::claim`] is its one atomic step; every other
//! write names the fencing token the claim handed out and does nothing once that token is no
//! longer the record's. Leases and TTLs are given as durations: the store adds them to its own
//! clock, so the clocks of callers on other machines do not matter.

#[cfg(feature = "encryption")]
mod encrypted;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod first_look;
mod forward;
mod inspect;
mod memory;
#[cfg(test)]
mod model;
mod open;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod replay_cache;
mod rules;
mod saga_log;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tls;
mod waiters;

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

#[cfg(feature = "encryption")]
pub use encrypted::{sealed_key_id, EncryptedStore, EncryptionKey, Keyring};
#[cfg(any(feature = "postgres", feature = "redis"))]
pub use first_look::FirstStep;
pub use inspect::{Inspect, RecordCount, RecordKind, RecordQuery, RecordTally, SagaQuery};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use open::migrate_layout;
pub use open::{open, open_existing};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{Migrated, RedisStore, RedisStoreBuilder};
pub use replay_cache::ReplayCache;
pub use saga_log::{SagaLog, SagaStatus, SagaStore, SagaWrite, StaleSaga, StepRecord, StepState};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

pub(crate) use rules::{decide, millis, remaining, Found, Verdict, Write};

/// What opening a store may do: one meaning for `store::open`/`open_existing` and for each
/// store's own constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// An agent's store: create the file or schema, migrate an older one, purge.
    ForAgents,
    /// An operator's look: the store must exist with this version's schema; nothing is
    /// created, migrated or purged.
    Existing,
}
pub(crate) use waiters::Waiters;

use crate::key::{Fingerprint, Key};
use crate::Error;

/// The number a claim hands out. Each successful claim of a key gets a larger one than any
/// before it, so a store can refuse the writes of an owner that was taken over.
///
/// See the example on [`Store`] for how the protocol uses it.
pub type FencingToken = u64;

/// What the next caller does with a key whose owner died inside the body (its lease expired
/// with no result recorded).
///
/// ```
/// use idem_runtime::{Action, OnStale};
///
/// // Charging twice is worse than asking a person: park interrupted payments for review.
/// static CHARGE: Action = Action::new("charge_card").on_stale(OnStale::Review);
/// assert_eq!(CHARGE.settings().on_stale, OnStale::Review);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Run the body again under a new fencing token: at-least-once for that window. The body
    /// can tell with [`CallContext::resumed`](crate::CallContext::resumed) and should pass
    /// [`current_key`](crate::current_key) downstream so that the service deduplicates.
    TakeOver,
    /// Park the key as NEEDS_REVIEW for an operator: right when running the side effect twice
    /// is worse than not at all (payments).
    Review,
}

/// One call's request to own its key.
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The key to claim.
    pub key: &'a Key,
    /// The fingerprint of the caller's payload, recorded with the claim.
    pub fingerprint: &'a Fingerprint,
    /// The action's name, recorded for operators.
    pub action: &'a str,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
    /// The action's TTL: how long a claim whose owner died (its lease ran out, or it was
    /// left in doubt) is kept after its lease ended, for a caller of the same payload to
    /// resume it, before [`Store::purge_expired`] deletes it. (A result's own TTL is given to
    /// [`Store::complete`].)
    pub ttl: Duration,
    /// What to do with a record whose owner's lease expired.
    pub on_stale: OnStale,
}

/// A recorded result: the serialized `Ok` value, or a serialized error that the action
/// declared final (`cache_err`).
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredOutcome {
    /// The body returned `Ok`; these are its value's bytes.
    Ok(Vec<u8>),
    /// The body returned a final `Err`; these are the error's bytes.
    Err(Vec<u8>),
}

/// What [`Store::claim`] found.
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller owns the key and must run the body.
    Acquired {
        /// The fencing token of this ownership.
        token: FencingToken,
        /// The previous owner died inside the body: this is a retry of an interrupted call.
        resumed: bool,
    },
    /// The key has a recorded result.
    Completed {
        /// The fingerprint of the payload that produced it.
        fingerprint: Fingerprint,
        /// The result.
        outcome: StoredOutcome,
        /// How long the store keeps the result from the moment it answered (what is left of
        /// its TTL), or `None` when the store does not say. A cache of results
        /// ([`ReplayCache`]) keeps a result no longer than this.
        expires_in: Option<Duration>,
    },
    /// Another caller owns the key. A record whose lease has run out but which was not taken
    /// over (its payload differs from the request's) is reported here too, with a zero
    /// `lease_remaining`.
    InProgress {
        /// The fingerprint of the owner's payload.
        fingerprint: Fingerprint,
        /// The owner's fencing token.
        token: FencingToken,
        /// How long the owner's lease still runs.
        lease_remaining: Duration,
    },
    /// The key is parked for an operator (see [`OnStale::Review`]).
    NeedsReview {
        /// The fingerprint of the interrupted call's payload.
        fingerprint: Fingerprint,
    },
}

/// Whether a write made with a fencing token took effect.
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Ownership {
    /// The token still owned the key: the write was made.
    Held,
    /// The token no longer owns the key (taken over, settled, expired and purged): nothing
    /// was written.
    Lost,
}

/// Where a record is in the protocol.
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Claimed; the body is running (or its owner died and the lease will run out).
    InProgress,
    /// The result is recorded and replayed until the TTL runs out.
    Completed,
    /// Parked for an operator: the owner died inside the body of an `on_stale = review` action.
    NeedsReview,
}

impl Status {
    /// The name stores write and operators read: `in_progress`, `completed`, `needs_review`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::NeedsReview => "needs_review",
        }
    }

    /// The status named by [`Status::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "in_progress" => Some(Status::InProgress),
            "completed" => Some(Status::Completed),
            "needs_review" => Some(Status::NeedsReview),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record as an operator sees it.
///
/// See the example on [`Store`] for how the protocol uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The key.
    pub key: Key,
    /// The action's name.
    pub action: String,
    /// Where the record is in the protocol.
    pub status: Status,
    /// The fencing token of the last claim.
    pub token: FencingToken,
    /// The fingerprint of the payload the key was claimed with.
    pub fingerprint: Fingerprint,
    /// The recorded result, once completed.
    pub outcome: Option<StoredOutcome>,
    /// When the key was first claimed.
    pub created_at: SystemTime,
    /// When the lease (in progress) or the TTL (completed) runs out; `None` for records that
    /// wait for an operator.
    pub expires_at: Option<SystemTime>,
}

/// A boxed future of a store method, as `async_trait` makes them: the type of the methods
/// that hand on another's future as it is (`claim_without_expiry`'s default, `forward.rs`).
pub(crate) type Boxed<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where idem keeps its records: one trait for every backend, with the atomic [`claim`] at its
/// heart. Stores are cheap handles (`Clone`), shared by every task that calls through them.
///
/// A store is three traits: this one, the claim protocol; [`SagaStore`], the sagas' logs; and
/// [`Inspect`], what operators ask (its methods default to "unsupported", so a store of
/// one's own may leave them out with `impl Inspect for MyStore {}`).
///
/// Every implementation must pass the conformance suite in `idem_runtime::conformance`
/// (feature `conformance`), which holds the rules below as tests.
///
/// The protocol by hand, as the runtime drives it for each call:
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::store::{Claim, ClaimRequest, MemoryStore, Ownership, Status, Store, StoredOutcome};
/// use idem_runtime::{Action, Fingerprint, OnStale};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let key = Action::new("send_email").key(&("ada@example.com", "quote-7"))?;
/// let fingerprint = Fingerprint::from(key);
/// let request = ClaimRequest {
///     key: &key,
///     fingerprint: &fingerprint,
///     action: "send_email",
///     lease: Duration::from_secs(10),
///     ttl: Duration::from_secs(3600),
///     on_stale: OnStale::TakeOver,
/// };
///
/// // The first caller owns the key …
/// let Claim::Acquired { token, resumed: false } = store.claim(&request).await? else {
///     panic!("a free key is acquired");
/// };
/// // … a duplicate sees it in progress …
/// assert!(matches!(store.claim(&request).await?, Claim::InProgress { token: t, .. } if t == token));
/// // … the owner records its result under its token …
/// let recorded = store
///     .complete(&key, token, StoredOutcome::Ok(br#"{"id":"msg-1"}"#.to_vec()), Duration::from_secs(3600))
///     .await?;
/// assert_eq!(recorded, Ownership::Held);
/// // … and every later claim is answered with it.
/// match store.claim(&request).await? {
///     Claim::Completed { outcome, .. } => assert_eq!(outcome, StoredOutcome::Ok(br#"{"id":"msg-1"}"#.to_vec())),
///     other => panic!("expected the result, got {other:?}"),
/// }
/// assert_eq!(store.get(&key).await?.map(|record| record.status), Some(Status::Completed));
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
///
/// [`claim`]: Store::claim
#[async_trait]
pub trait Store: SagaStore + Inspect + Send + Sync + fmt::Debug {
    /// A short name for errors and logs: `"memory"`, `"sqlite"`, …
    fn name(&self) -> &'static str;

    /// Atomically: if the key has no record (or only one whose TTL ran out), or an in-progress
    /// record of the same fingerprint whose lease ran out and `on_stale` is `TakeOver`, make
    /// the caller its owner under a new, larger fencing token and a lease of `lease`. An
    /// expired in-progress record with `OnStale::Review` becomes NEEDS_REVIEW. Otherwise
    /// report what is there.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error>;

    /// [`claim`](Store::claim) for a caller that keeps no results: the same claim, but a
    /// [`Claim::Completed`] may leave `expires_in` as `None` where saying it costs the store
    /// more (on Redis a replay is then one command, not two with a `PTTL`). The calls of
    /// `#[idempotent]` claim so; a [`ReplayCache`], which keeps results no longer than
    /// `expires_in`, claims with `claim`.
    ///
    /// The default is [`claim`](Store::claim): a store that always says, or a wrapper that
    /// keeps results, needs nothing more. A wrapper that hands claims on to another store
    /// should hand this one on as well, or its inner store always says.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use idem_runtime::store::{Claim, ClaimRequest, MemoryStore, OnStale, Store, StoredOutcome};
    /// use idem_runtime::{Action, Fingerprint};
    ///
    /// let store = MemoryStore::new();
    /// let key = Action::new("send_email").key(&("ada@example.com",))?;
    /// let fingerprint = Fingerprint::from(key);
    /// let request = ClaimRequest {
    ///     key: &key,
    ///     fingerprint: &fingerprint,
    ///     action: "send_email",
    ///     lease: Duration::from_secs(30),
    ///     ttl: Duration::from_secs(3600),
    ///     on_stale: OnStale::TakeOver,
    /// };
    /// let Claim::Acquired { token, .. } = store.claim_without_expiry(&request).await? else {
    ///     panic!("a fresh key is acquired");
    /// };
    /// store.complete(&key, token, StoredOutcome::Ok(b"1".to_vec()), request.ttl).await?;
    /// assert!(matches!(
    ///     store.claim_without_expiry(&request).await?,
    ///     Claim::Completed { .. }
    /// ));
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    // Not `async`: the default hands on `claim`'s own future, which an `async fn` here would
    // box a second time on every call (see `forward.rs`). The signature is the one
    // `async_trait` gives an `async fn claim_without_expiry` in an implementation.
    fn claim_without_expiry<'s, 'r, 'k, 'async_trait>(
        &'s self,
        request: &'r ClaimRequest<'k>,
    ) -> Boxed<'async_trait, Claim>
    where
        's: 'async_trait,
        'r: 'async_trait,
        'k: 'async_trait,
        Self: 'async_trait,
    {
        self.claim(request)
    }

    /// Record the result and keep it for `ttl`, if `token` still owns the key: the record is
    /// in progress under `token`, or parked for review under it (the owner was slow, not
    /// dead, and what it records settles the review). A record already completed under
    /// `token` is [`Ownership::Held`] and unchanged: a retry whose first answer was lost.
    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error>;

    /// Remove the record, if `token` still owns the key (in progress or parked for review
    /// under it), so that the next call runs the body.
    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error>;

    /// Extend the lease to `lease` from now, if `token` still owns the key.
    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error>;

    /// End the lease of `token` now, keeping the claim, if `token` still owns the key (in
    /// progress under it): the body ran and its outcome is unknown (an ambiguous error, a
    /// `verify` that failed), so the key must not be freed. The next claim finds the claim
    /// stale at once and follows `on_stale` (resume it, `verify` first, or park it for
    /// review), as for an owner that died. Waiters on the key are woken.
    ///
    /// The default renews the lease to zero ([`Store::heartbeat`] with `Duration::ZERO`);
    /// stores whose waiters are told of changes wake them too.
    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.heartbeat(key, token, Duration::ZERO).await
    }

    /// An owned handle to this store, for work that must finish after its caller is gone: a
    /// call dropped while its claim is on its way (an agent's `timeout`) has a task finish
    /// that claim and give it back through this handle. `None` (the default) for stores
    /// whose claim cannot be cut in half (the memory store's is one synchronous step); a
    /// store that answers `None` although its claim can be left half made leaves such a
    /// claim to run out its lease.
    fn shared(&self) -> Option<std::sync::Arc<dyn Store>> {
        None
    }

    /// Return once the key is no longer held under `token` (completed, released, taken over)
    /// or after `at_most`, whichever is first; the caller then claims again. The default
    /// sleeps a short while (a poll); stores that can be told of changes wait for them.
    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        let _ = (key, token);
        tokio::time::sleep(at_most.min(Duration::from_millis(20))).await;
        Ok(())
    }

    /// The record of a key, if there is one (expired or not).
    async fn get(&self, key: &Key) -> Result<Option<Record>, Error>;

    /// Delete the records nobody needs any more; returns how many. Those are:
    ///
    /// - the completed records whose TTL ran out, with the logs of the sagas they ended;
    /// - the claims whose owner died (in progress, lease ended, or left in doubt) once the
    ///   action's TTL ([`ClaimRequest::ttl`]) has run out too since the lease ended (each
    ///   heartbeat moves that moment): until then the next caller of the same payload resumes
    ///   them. A claim that has a saga log is never purged this way: `idem::recover` (through
    ///   [`SagaStore::stale_sagas`]) or an operator needs it. A claim made by an idem that did not
    ///   record the TTL is kept as before.
    ///
    /// Records parked for review, claims whose lease still runs, and the logs of sagas that
    /// need attention, were interrupted or were resolved are kept: those are for an operator,
    /// their code, or a live owner. The rule is `Found::is_purgeable` in `store::rules`. A
    /// store may also delete such records by itself (Redis does, at that moment); it counts
    /// here only what is left of them, none for Redis.
    async fn purge_expired(&self) -> Result<u64, Error>;
}
