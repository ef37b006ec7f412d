//! A process-local cache of recorded results, in front of any store: a process that replays
//! the same calls again and again (an agent retrying, many tasks asking for one answer)
//! answers them from memory instead of a round trip to the store.
//!
//! Only completed records are kept, and only as the store reported them: the cache learns a
//! result when a claim through it finds the result recorded, and keeps it for
//! `min(max_age, what is left of the record's TTL)` counted from before the claim was sent,
//! so it never replays a result its store would no longer replay. Everything else (claims of
//! keys it does not hold, completions, releases, heartbeats, the sagas' logs, what operators
//! ask) goes to the store as it would without the cache.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::key::{Fingerprint, Key};
use crate::store::forward::forward_logs_and_inspect;
use crate::store::{
    Claim, ClaimRequest, FencingToken, Inspect, Ownership, Record, RecordCount, RecordQuery,
    SagaLog, SagaQuery, SagaStore, SagaWrite, StaleSaga, Store, StoredOutcome,
};
use crate::Error;

/// A store with a process-local cache of recorded results in front of it: repeated replays
/// of a key skip the store's round trip. Opt-in, bounded in entries and in age, and never
/// past a record's TTL.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::store::{MemoryStore, ReplayCache};
///
/// // In a real program the inner store is Redis, PostgreSQL or SQLite.
/// let store = ReplayCache::new(MemoryStore::new())
///     .max_entries(50_000)
///     .max_age(Duration::from_secs(10));
/// assert_eq!(store.settings(), (50_000, Duration::from_secs(10)));
/// ```
///
/// # What it changes
///
/// - **A replay is answered from memory** once this process has seen the key's result in
///   the store: the first replay through the cache makes the round trip and keeps the
///   result; the next ones, until it ages out, make none. A result this process records
///   itself is learned at its first replay.
/// - **Nothing else changes.** A key without a cached result is claimed in the store as
///   before; a call that runs its body, a duplicate that waits for an owner, a key in doubt
///   or parked for review never touch the cache (only completed records are kept). A cached
///   result claimed with other arguments is refused (`PayloadMismatch`) as the store would.
/// - **Bounds.** At most `max_entries` results (default 10,000; the oldest goes first), each
///   for at most `max_age` (default 30 s) and never past what was left of its TTL when the
///   store answered, measured from before the claim was sent. Memory is about the results'
///   size plus ~150 bytes per entry.
///
/// # Operators, while a result is cached
///
/// A completed record changes in the store only when its TTL runs out (the cache drops it by
/// then too) or when it is deleted: by `idem forget KEY` ([`Inspect::forget_result`]), by
/// hand, or by code of one's own. **A deletion made elsewhere is not seen by a process that
/// holds the result: it replays the deleted result until the entry is `max_age` old.** Choose
/// `max_age` as the longest such delay you accept. A deletion through this handle
/// (`forget_result` on the cache) drops the entry here at once; [`ReplayCache::forget`] drops
/// one from this process's cache only. `idem unlock` and `idem settle` never meet the cache:
/// they act on keys in progress, in doubt or parked for review, which are never cached, so the
/// next call sees what they did at once. `idem purge` deletes only results whose TTL ran out,
/// which no cache holds.
///
/// # Where it pays
///
/// On Redis, PostgreSQL and SQLite a replay is a round trip or a transaction; from the cache
/// it is a lock, a lookup and a copy of the result's bytes. On [`MemoryStore`] it gains
/// nothing.
///
/// [`MemoryStore`]: crate::store::MemoryStore
pub struct ReplayCache<S> {
    store: S,
    shelf: Arc<Mutex<Shelf>>,
    max_entries: usize,
    max_age: Duration,
}

/// The cached results, and the order they came in (for eviction, oldest first).
#[derive(Default)]
struct Shelf {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were cached, with the entry's number: a key cached again has a
    /// newer number, and its old place in the queue is skipped.
    arrivals: VecDeque<(Key, u64)>,
    next: u64,
}

struct Entry {
    fingerprint: Fingerprint,
    outcome: StoredOutcome,
    until: Instant,
    number: u64,
}

/// The default bound on cached results.
const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// The default bound on a cached result's age.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);

impl<S: Store> ReplayCache<S> {
    /// A cache in front of `store`, with the default bounds (10,000 results, 30 s).
    pub fn new(store: S) -> Self {
        ReplayCache {
            store,
            shelf: Arc::default(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// Keep at most `entries` results; the oldest is dropped for a new one. Zero keeps none
    /// (every claim goes to the store).
    ///
    /// ```
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// let store = ReplayCache::new(MemoryStore::new()).max_entries(1_000);
    /// assert_eq!(store.settings().0, 1_000);
    /// ```
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }

    /// Keep a result at most `age` (and never past its TTL): the longest a deletion made
    /// elsewhere goes unseen here.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// let store = ReplayCache::new(MemoryStore::new()).max_age(Duration::from_secs(5));
    /// assert_eq!(store.settings().1, Duration::from_secs(5));
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// The bounds: (max entries, max age).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// let store = ReplayCache::new(MemoryStore::new());
    /// assert_eq!(store.settings(), (10_000, Duration::from_secs(30)));
    /// ```
    pub fn settings(&self) -> (usize, Duration) {
        (self.max_entries, self.max_age)
    }

    /// The store behind the cache. Claims made on it directly neither read nor fill the
    /// cache.
    ///
    /// ```
    /// # use idem_runtime::store::{MemoryStore, ReplayCache, Store};
    /// let store = ReplayCache::new(MemoryStore::new());
    /// assert_eq!(store.inner().name(), "memory");
    /// ```
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Drop `key`'s result from this process's cache (other processes keep theirs until
    /// they age out); the next claim asks the store. Returns whether it was cached.
    ///
    /// ```
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// # use idem_runtime::Action;
    /// let store = ReplayCache::new(MemoryStore::new());
    /// let key = Action::new("send_email").key(&("ada@example.com",))?;
    /// assert!(!store.forget(&key));
    /// # Ok::<(), idem_runtime::Error>(())
    /// ```
    pub fn forget(&self, key: &Key) -> bool {
        self.shelf().entries.remove(key).is_some()
    }

    /// How many results are cached now (aged ones included until they are looked up or
    /// pushed out).
    ///
    /// ```
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// assert_eq!(ReplayCache::new(MemoryStore::new()).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.shelf().entries.len()
    }

    /// Whether no result is cached.
    ///
    /// ```
    /// # use idem_runtime::store::{MemoryStore, ReplayCache};
    /// assert!(ReplayCache::new(MemoryStore::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Shelf> {
        // A panic while the lock was held cannot leave the map half changed in a way that
        // matters: every entry is whole, and the worst is a stale place in the queue.
        self.shelf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached result of `key`, as the store's claim would report it.
    fn replay(&self, key: &Key) -> Option<Claim> {
        let now = Instant::now();
        let mut shelf = self.shelf();
        let entry = shelf.entries.get(key)?;
        if entry.until <= now {
            shelf.entries.remove(key);
            return None;
        }
        Some(Claim::Completed {
            fingerprint: entry.fingerprint,
            outcome: entry.outcome.clone(),
            expires_in: Some(entry.until - now),
        })
    }

    /// Keep a result the store reported to a claim sent at `asked_at`.
    fn keep(&self, key: Key, claim: &Claim, asked_at: Instant) {
        let Claim::Completed {
            fingerprint,
            outcome,
            expires_in: Some(left),
        } = claim
        else {
            return;
        };
        let until = asked_at + (*left).min(self.max_age);
        if self.max_entries == 0 || until <= Instant::now() {
            return;
        }
        let mut shelf = self.shelf();
        let Shelf {
            entries,
            arrivals,
            next,
        } = &mut *shelf;
        // Make room: the oldest arrivals go first; a queue place whose key was cached again
        // since (or dropped) is skipped. The queue never grows past twice the bound.
        while entries.len() >= self.max_entries || arrivals.len() >= 2 * self.max_entries {
            let Some((old, number)) = arrivals.pop_front() else {
                break;
            };
            if entries
                .get(&old)
                .is_some_and(|entry| entry.number == number)
            {
                entries.remove(&old);
            }
        }
        *next += 1;
        arrivals.push_back((key, *next));
        entries.insert(
            key,
            Entry {
                fingerprint: *fingerprint,
                outcome: outcome.clone(),
                until,
                number: *next,
            },
        );
    }
}

impl<S: Clone> Clone for ReplayCache<S> {
    /// Another handle to the same store and the same cache.
    fn clone(&self) -> Self {
        ReplayCache {
            store: self.store.clone(),
            shelf: Arc::clone(&self.shelf),
            max_entries: self.max_entries,
            max_age: self.max_age,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ReplayCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("store", &self.store)
            .field("max_entries", &self.max_entries)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: Store> Store for ReplayCache<S> {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    /// The store's owned handle, behind the same cache: a call's claim is made through it
    /// (so that a dropped call can give its claim back), and it must read and fill the cache
    /// like this handle.
    fn shared(&self) -> Option<Arc<dyn Store>> {
        let store = self.store.shared()?;
        Some(Arc::new(ReplayCache {
            store,
            shelf: Arc::clone(&self.shelf),
            max_entries: self.max_entries,
            max_age: self.max_age,
        }))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        if let Some(cached) = self.replay(request.key) {
            return Ok(cached);
        }
        let asked_at = Instant::now();
        let claim = self.store.claim(request).await?;
        self.keep(*request.key, &claim, asked_at);
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        self.store.complete(key, token, outcome, ttl).await
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.store.release(key, token).await
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        self.store.heartbeat(key, token, lease).await
    }

    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.store.leave_in_doubt(key, token).await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        self.store.wait(key, token, at_most).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.store.get(key).await
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.store.purge_expired().await
    }
}

// An operator's deletion made through this handle drops the result here too.
forward_logs_and_inspect!(
    [S: Store] ReplayCache<S>, |this| &this.store,
    on_forget = |this, key| this.forget(key)
);
