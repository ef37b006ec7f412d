//! A real memory store with faults on demand and a count of the writes it took: what the
//! tests of store failures and of round trips need.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use idem::store::{
    Claim, ClaimRequest, FencingToken, MemoryStore, Ownership, Record, SagaLog, SagaWrite,
    StaleSaga, StepState, Store, StoredOutcome,
};
use idem::store::{Inspect, SagaStore};
use idem::{Error, Key};
use tokio::sync::Notify;

/// Forwards to a store (a [`MemoryStore`] by default); `complete` fails the next `failing_completes` times and
/// `write_saga` the next `failing_saga_writes` times (with "connection reset", as a store
/// does when its server restarts); every call that reaches the store is counted.
#[derive(Debug)]
pub struct FaultyStore<S = MemoryStore> {
    pub inner: S,
    pub failing_completes: AtomicUsize,
    pub failing_saga_writes: AtomicUsize,
    /// Calls of `claim`, `complete`, `release`, `write_saga`, `read_saga`.
    pub claims: AtomicUsize,
    pub completes: AtomicUsize,
    pub saga_writes: AtomicUsize,
    pub saga_reads: AtomicUsize,
    /// When set, what `stale_sagas` answers: a list made before the store changed, as a
    /// recovering process may hold one.
    pub stale_answer: Mutex<Option<Vec<StaleSaga>>>,
    /// The heartbeats of this fencing token fail: an owner cut off from the store (0: none).
    pub cut_off: AtomicU64,
    /// The next write of a compensated step is made, then its writer is cut off and the
    /// write's answer waits for `gate`: an owner that is slow, not dead, mid-rollback.
    /// `applied` fires once the write is made.
    pub stall_next_undo: AtomicBool,
    pub applied: Notify,
    pub gate: Notify,
}

impl FaultyStore {
    pub fn new() -> Self {
        Self::wrapping(MemoryStore::new())
    }
}

impl<S> FaultyStore<S> {
    /// Counts (and can fail) the calls made to `inner`.
    pub fn wrapping(inner: S) -> Self {
        FaultyStore {
            inner,
            failing_completes: AtomicUsize::new(0),
            failing_saga_writes: AtomicUsize::new(0),
            claims: AtomicUsize::new(0),
            completes: AtomicUsize::new(0),
            saga_writes: AtomicUsize::new(0),
            saga_reads: AtomicUsize::new(0),
            stale_answer: Mutex::new(None),
            cut_off: AtomicU64::new(0),
            stall_next_undo: AtomicBool::new(false),
            applied: Notify::new(),
            gate: Notify::new(),
        }
    }

    /// Every call that reaches the store, heartbeats aside.
    pub fn round_trips(&self) -> usize {
        [
            &self.claims,
            &self.completes,
            &self.saga_writes,
            &self.saga_reads,
        ]
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .sum()
    }
}

/// Takes one fault off `budget`, if any is left.
fn fault(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    fn name(&self) -> &'static str {
        "faulty"
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(request).await
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        if fault(&self.failing_completes) {
            return Err(Error::store("faulty", Some(key), "connection reset"));
        }
        self.inner.complete(key, token, outcome, ttl).await
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.inner.release(key, token).await
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        if self.cut_off.load(Ordering::SeqCst) == token {
            return Err(Error::store("faulty", Some(key), "partitioned"));
        }
        self.inner.heartbeat(key, token, lease).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.inner.get(key).await
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.inner.purge_expired().await
    }
}

#[async_trait]
impl<S: Store> SagaStore for FaultyStore<S> {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        self.saga_writes.fetch_add(1, Ordering::SeqCst);
        if fault(&self.failing_saga_writes) {
            return Err(Error::store("faulty", Some(saga), "connection reset"));
        }
        let answer = self.inner.write_saga(saga, id, token, write).await;
        let undone = matches!(write, SagaWrite::Step(step) if step.state == StepState::Compensated);
        if undone && self.stall_next_undo.swap(false, Ordering::SeqCst) {
            self.cut_off.store(token, Ordering::SeqCst);
            self.applied.notify_one();
            self.gate.notified().await;
        }
        answer
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        self.saga_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_saga(saga).await
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        let answer = self.stale_answer.lock().unwrap().clone();
        match answer {
            Some(answer) => Ok(answer),
            None => self.inner.stale_sagas(limit).await,
        }
    }
}

#[async_trait]
impl<S: Store> Inspect for FaultyStore<S> {}
