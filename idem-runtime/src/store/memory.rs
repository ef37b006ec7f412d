//! `MemoryStore`: records in a map, for tests and for agents that run in one process.

use std::collections::hash_map;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::key::{Fingerprint, Key, KeyMap};
use crate::store::{
    decide, millis, remaining, Claim, ClaimRequest, FencingToken, Found, Ownership, Record,
    RecordCount, RecordKind, RecordQuery, RecordTally, SagaLog, SagaQuery, SagaStatus, SagaWrite,
    StaleSaga, Status, Store, StoredOutcome, Verdict, Waiters, Write,
};
use crate::store::{Inspect, SagaStore};
use crate::Error;

/// A store in this process's memory: fast, and gone when the process ends.
///
/// Right for tests and for agents that run as one process and accept losing their records
/// with it. A duplicate that waits for a running call is woken the moment the call finishes
/// (no polling). Clones share the same records.
///
/// ```
/// use idem_runtime::{store::MemoryStore, Action};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static GREET: Action = Action::new("greet");
/// let store = MemoryStore::new();
/// let mut runs = 0;
/// for _ in 0..3 {
///     let outcome = GREET
///         .call(&("ada",))?
///         .run::<_, idem_runtime::Error, _>(&store, async {
///             runs += 1;
///             Ok(String::from("hello, ada"))
///         })
///         .await?;
///     assert_eq!(outcome.into_inner(), "hello, ada");
/// }
/// assert_eq!(runs, 1);
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    waiters: Waiters,
    /// The clock's zero: leases are measured on the monotonic clock.
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            state: Mutex::default(),
            waiters: Waiters::default(),
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    records: KeyMap<Entry>,
    last_token: FencingToken,
    /// Inserts since the last sweep of purgeable records, so memory stays bounded.
    inserts: usize,
    /// How many records the last sweep kept.
    kept: usize,
    /// The action name of the last claim, shared by the records of that action.
    last_action: Option<Arc<str>>,
    /// The logs of sagas, by the key of their claim.
    sagas: KeyMap<SagaEntry>,
}

#[derive(Debug)]
struct SagaEntry {
    id: String,
    status: SagaStatus,
    error: Option<String>,
    steps: Vec<crate::store::StepRecord>,
    /// When the log was last written.
    updated_ms: i64,
    /// When its status was last written (or the log made): the order of listings, as on the
    /// stores that keep a step's write apart from the log's head.
    status_ms: i64,
    /// An operator's note, once settled by hand.
    note: Option<String>,
}

#[derive(Debug)]
struct Entry {
    action: Arc<str>,
    status: Status,
    token: FencingToken,
    fingerprint: Fingerprint,
    outcome: Option<StoredOutcome>,
    created_ms: i64,
    expires_at_ms: Option<i64>,
    /// The TTL of the action that claimed the key: how long a dead claim is kept.
    ttl_ms: i64,
}

impl Entry {
    /// A new claim of `request`'s key under `token`.
    fn claimed(
        action: Arc<str>,
        request: &ClaimRequest<'_>,
        token: FencingToken,
        now_ms: i64,
    ) -> Self {
        Entry {
            action,
            status: Status::InProgress,
            token,
            fingerprint: *request.fingerprint,
            outcome: None,
            created_ms: now_ms,
            expires_at_ms: Some(now_ms.saturating_add(millis(request.lease))),
            ttl_ms: millis(request.ttl),
        }
    }

    fn found(&self) -> Found {
        Found {
            status: self.status,
            token: self.token,
            fingerprint: self.fingerprint,
            expires_at_ms: self.expires_at_ms,
            claim_ttl_ms: Some(self.ttl_ms),
        }
    }

    fn report(&self, now_ms: i64) -> Claim {
        let outcome = match self.status {
            Status::Completed => self.outcome.clone(),
            _ => None,
        };
        self.found().report(outcome, now_ms)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records the store holds, expired ones included until they are purged.
    pub fn len(&self) -> usize {
        self.inner.state().records.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave a record half-written: every change
        // below is a single assignment or insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        millis(self.epoch.elapsed())
    }

    fn record(&self, key: &Key, e: &Entry) -> Record {
        Record {
            key: *key,
            action: e.action.to_string(),
            status: e.status,
            token: e.token,
            fingerprint: e.fingerprint,
            outcome: e.outcome.clone(),
            created_at: self.wall(e.created_ms),
            expires_at: e.expires_at_ms.map(|ms| self.wall(ms)),
        }
    }

    fn saga_log(&self, key: &Key, log: &SagaEntry) -> SagaLog {
        SagaLog::new(
            *key,
            log.id.clone(),
            log.status,
            log.error.clone(),
            log.steps.clone(),
            self.wall(log.updated_ms),
        )
        .with_note(log.note.clone())
    }

    fn wall(&self, ms: i64) -> SystemTime {
        self.epoch_wall + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Apply `write` to the record if `token` may settle it, then wake the key's waiters.
    /// A record for which `done` is true is already settled as asked: held, unchanged.
    fn fenced(
        &self,
        key: &Key,
        token: FencingToken,
        done: impl FnOnce(&Found) -> bool,
        write: impl FnOnce(hash_map::OccupiedEntry<'_, Key, Entry>, i64),
    ) -> Ownership {
        let now = self.now_ms();
        let mut state = self.state();
        match state.records.entry(*key) {
            hash_map::Entry::Occupied(record) if record.get().found().settled_by(token) => {
                write(record, now)
            }
            hash_map::Entry::Occupied(record) if done(&record.get().found()) => {
                return Ownership::Held
            }
            _ => return Ownership::Lost,
        }
        drop(state);
        self.waiters.wake(key);
        Ownership::Held
    }
}

/// `name`, shared with the records of the `last` action claimed when it is the same.
fn shared_name(last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
    match last {
        Some(last) if **last == *name => Arc::clone(last),
        _ => Arc::clone(last.insert(Arc::from(name))),
    }
}

impl State {
    /// Sweeps once the inserts since the last sweep outnumber the records it kept (and 1024):
    /// each sweep walks at most twice the inserts that paid for it, and the map holds at most
    /// about twice its live records.
    fn sweep_if_due(&mut self, now_ms: i64) {
        self.inserts += 1;
        if self.inserts < 1024 || self.inserts < self.kept {
            return;
        }
        self.inserts = 0;
        self.purge(now_ms);
        self.kept = self.records.len();
    }

    /// Removes the expired results, with the logs of the sagas they ended, and the dead
    /// claims (`Found::is_purgeable`); returns how many records went.
    fn purge(&mut self, now_ms: i64) -> usize {
        let mut purged = Vec::new();
        let sagas = &self.sagas;
        self.records.retain(|key, e| {
            let expired = is_purgeable(sagas, key, e, now_ms);
            if expired {
                purged.push(*key);
            }
            !expired
        });
        for key in &purged {
            self.sagas.remove(key);
        }
        purged.len()
    }

    /// Like [`State::purge`], at most `limit` records.
    fn purge_some(&mut self, now_ms: i64, limit: usize) -> usize {
        let expired: Vec<Key> = self
            .records
            .iter()
            .filter(|(key, e)| is_purgeable(&self.sagas, key, e, now_ms))
            .map(|(key, _)| *key)
            .take(limit)
            .collect();
        for key in &expired {
            self.records.remove(key);
            self.sagas.remove(key);
        }
        expired.len()
    }
}

fn is_purgeable(sagas: &KeyMap<SagaEntry>, key: &Key, entry: &Entry, now_ms: i64) -> bool {
    entry.found().is_purgeable(sagas.contains_key(key), now_ms)
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let mut guard = inner.state();
        let state = &mut *guard;
        let entry = match state.records.entry(*request.key) {
            hash_map::Entry::Vacant(vacant) => {
                state.last_token += 1;
                let token = state.last_token;
                let action = shared_name(&mut state.last_action, request.action);
                vacant.insert(Entry::claimed(action, request, token, now));
                state.sweep_if_due(now);
                return Ok(Claim::Acquired {
                    token,
                    resumed: false,
                });
            }
            hash_map::Entry::Occupied(occupied) => occupied.into_mut(),
        };
        let claim = match decide(&entry.found(), request, now) {
            Verdict::Report => entry.report(now),
            Verdict::Write(Write::Insert) => {
                state.last_token += 1;
                let token = state.last_token;
                let action = shared_name(&mut state.last_action, request.action);
                *entry = Entry::claimed(action, request, token, now);
                state.sweep_if_due(now);
                Claim::Acquired {
                    token,
                    resumed: false,
                }
            }
            Verdict::Write(Write::TakeOver) => {
                state.last_token += 1;
                entry.token = state.last_token;
                entry.expires_at_ms = Some(now.saturating_add(millis(request.lease)));
                entry.ttl_ms = millis(request.ttl);
                Claim::Acquired {
                    token: entry.token,
                    resumed: true,
                }
            }
            Verdict::Write(Write::Park) => {
                entry.status = Status::NeedsReview;
                entry.expires_at_ms = None;
                Claim::NeedsReview {
                    fingerprint: *request.fingerprint,
                }
            }
        };
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let completed = |found: &Found| found.completed_by(token);
        Ok(self.inner.fenced(key, token, completed, |record, now| {
            let entry = record.into_mut();
            entry.status = Status::Completed;
            entry.outcome = Some(outcome);
            entry.expires_at_ms = Some(now.saturating_add(millis(ttl)));
        }))
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        Ok(self.inner.fenced(
            key,
            token,
            |_| false,
            |record, _| {
                record.remove();
            },
        ))
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        let now = self.inner.now_ms();
        let mut state = self.inner.state();
        match state.records.get_mut(key) {
            Some(entry) if entry.found().renewed_by(token) => {
                entry.expires_at_ms = Some(now.saturating_add(millis(lease)));
                Ok(Ownership::Held)
            }
            _ => Ok(Ownership::Lost),
        }
    }

    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let held = self.heartbeat(key, token, Duration::ZERO).await?;
        if held == Ownership::Held {
            // Waiters sleep until the lease they saw ends: it just did.
            self.inner.waiters.wake(key);
        }
        Ok(held)
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        let inner = &self.inner;
        let lease_end = inner
            .state()
            .records
            .get(key)
            .filter(|e| e.found().renewed_by(token))
            .and_then(|e| e.expires_at_ms);
        let Some(lease_end) = lease_end else {
            return Ok(());
        };
        // Wake at the end of the lease too: its owner may be dead, and then nobody calls wake.
        let until_lease_end = remaining(Some(lease_end), inner.now_ms());
        let still_held = async {
            let now = inner.now_ms();
            inner
                .state()
                .records
                .get(key)
                .is_some_and(|e| e.found().held_by(token, now))
        };
        inner
            .waiters
            .wait(key, at_most.min(until_lease_end), still_held)
            .await;
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let inner = &self.inner;
        let state = inner.state();
        Ok(state.records.get(key).map(|e| inner.record(key, e)))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        let now = self.inner.now_ms();
        let purged = self.inner.state().purge(now);
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl SagaStore for MemoryStore {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let now = self.inner.now_ms();
        let mut guard = self.inner.state();
        let state = &mut *guard;
        let held = state
            .records
            .get(saga)
            .is_some_and(|record| record.found().renewed_by(token));
        if !held {
            return Ok(Ownership::Lost);
        }
        let log = state.sagas.entry(*saga).or_insert_with(|| SagaEntry {
            id: id.to_owned(),
            status: SagaStatus::Running,
            error: None,
            steps: Vec::new(),
            updated_ms: now,
            status_ms: now,
            note: None,
        });
        log.updated_ms = now;
        match write {
            SagaWrite::Status { status, error } => {
                log.status_ms = now;
                log.status = status;
                log.error = error.map(str::to_owned);
            }
            SagaWrite::Step(step) => match log.steps.iter_mut().find(|s| s.index == step.index) {
                Some(logged) => *logged = step.clone(),
                None => {
                    log.steps.push(step.clone());
                    log.steps.sort_by_key(|s| s.index);
                }
            },
        }
        Ok(Ownership::Held)
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let inner = &self.inner;
        let state = inner.state();
        Ok(state.sagas.get(saga).map(|log| inner.saga_log(saga, log)))
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        let now = self.inner.now_ms();
        let state = self.inner.state();
        let stale = state.sagas.iter().filter_map(|(key, log)| {
            let record = state.records.get(key)?;
            let found = record.found();
            (log.status.is_active() && found.is_stale_claim(now))
                .then(|| StaleSaga::new(*key, log.id.clone(), found.fingerprint))
        });
        Ok(stale.take(limit).collect())
    }
}

#[async_trait]
impl Inspect for MemoryStore {
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let inner = &self.inner;
        let state = inner.state();
        let mut found: Vec<(i64, Record)> = state
            .records
            .iter()
            .map(|(key, e)| (e.created_ms, inner.record(key, e)))
            .filter(|(_, record)| query.matches(record))
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        Ok(found
            .into_iter()
            .take(query.limit)
            .map(|(_, record)| record)
            .collect())
    }

    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        let state = self.inner.state();
        let mut tally = RecordTally::new();
        for e in state.records.values() {
            tally.add(&e.action, RecordKind::of(e.status, e.outcome.as_ref()), 1);
        }
        Ok(tally.into_counts())
    }

    async fn count_expired(&self) -> Result<u64, Error> {
        let now = self.inner.now_ms();
        let state = self.inner.state();
        let expired = state
            .records
            .iter()
            .filter(|(key, e)| is_purgeable(&state.sagas, key, e, now))
            .count();
        Ok(u64::try_from(expired).unwrap_or(u64::MAX))
    }

    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        let now = self.inner.now_ms();
        let purged = self.inner.state().purge_some(now, limit);
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let inner = &self.inner;
        let state = inner.state();
        let mut found: Vec<(i64, SagaLog)> = state
            .sagas
            .iter()
            .map(|(key, log)| (log.status_ms, inner.saga_log(key, log)))
            .filter(|(_, log)| query.matches(log))
            .collect();
        found.sort_by(|(a_ms, a), (b_ms, b)| b_ms.cmp(a_ms).then_with(|| a.id.cmp(&b.id)));
        found.truncate(query.limit);
        Ok(found.into_iter().map(|(_, log)| log).collect())
    }

    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let mut state = self.inner.state();
        let forgettable = !state.sagas.contains_key(key)
            && state
                .records
                .get(key)
                .is_some_and(|entry| entry.status == Status::Completed && entry.token == token);
        if !forgettable {
            return Ok(Ownership::Lost);
        }
        state.records.remove(key);
        Ok(Ownership::Held)
    }

    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let now = self.inner.now_ms();
        let mut state = self.inner.state();
        match state.sagas.get_mut(saga) {
            Some(log) if log.status == SagaStatus::NeedsAttention => {
                log.status = SagaStatus::Resolved;
                log.note = Some(note.to_owned());
                log.updated_ms = now;
                log.status_ms = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OnStale;

    async fn acquire(store: &MemoryStore, key: &Key, lease: Duration) -> FencingToken {
        let request = ClaimRequest {
            key,
            fingerprint: &Fingerprint::from(*key),
            action: "sweep",
            lease,
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        };
        match store.claim(&request).await.unwrap() {
            Claim::Acquired { token, .. } => token,
            other => panic!("a fresh key is acquired, not {other:?}"),
        }
    }

    /// Expired results are swept as new keys come in, also when records outlive each sweep
    /// (here one claim with a long lease), so the map stays near its live records.
    #[tokio::test]
    async fn expired_results_are_swept_while_others_live() {
        let store = MemoryStore::new();
        acquire(
            &store,
            &Key::from_bytes([0xff; 32]),
            Duration::from_secs(60),
        )
        .await;
        for i in 0..10_000u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            let key = Key::from_bytes(bytes);
            let token = acquire(&store, &key, Duration::from_secs(60)).await;
            let outcome = StoredOutcome::Ok(b"1".to_vec());
            let done = store.complete(&key, token, outcome, Duration::ZERO).await;
            assert_eq!(done.unwrap(), Ownership::Held);
        }
        assert!(store.len() <= 2048, "{} records are kept", store.len());
    }

    /// A caller waiting on a key is woken by the release itself: the memory store never
    /// polls, so a wait bounded by a minute that returns at all was woken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_woken_by_a_notification_not_a_poll() {
        let store = MemoryStore::new();
        let key = Key::from_bytes([7; 32]);
        let token = acquire(&store, &key, Duration::from_secs(600)).await;
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait(&key, token, Duration::from_secs(60)).await })
        };
        // Release only once the waiter is registered, so that only a notification can end
        // its wait.
        while store
            .inner
            .waiters
            .waiting
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.release(&key, token).await.unwrap(), Ownership::Held);
        let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
        woken
            .expect("the waiter returns long before its minute is up")
            .expect("the waiter task")
            .expect("wait");
    }
}
