//! The agents' store: the real one, with the agent's crash points around the protocol's
//! steps (before a claim, after it, before and after a result or a saga's log entry is
//! written), and, for the checker's own test, a rule broken on purpose.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idem::store::{
    Claim, ClaimRequest, FencingToken, Inspect, Ownership, Record, SagaLog, SagaStore, SagaWrite,
    StaleSaga, Status, Store, StoredOutcome,
};
use idem::{Error, Key, OnStale};

use crate::agent::{crash_if_armed, Point};

/// A protocol rule broken on purpose (`--sabotage`), so that a test can show the checker
/// catches a broken store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// `complete` skips the fencing check: an owner whose claim was taken over records its
    /// result anyway, over the new owner's claim or result, as a store whose update forgot
    /// its `token = ?` would. (Made of the store's own operations: under the new owner's
    /// token while it runs; once it recorded, its result forgotten and claimed again.)
    SkipFencing,
}

impl Sabotage {
    /// The name `--sabotage` takes.
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::SkipFencing => "skip-fencing",
        }
    }
}

impl std::str::FromStr for Sabotage {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "skip-fencing" => Ok(Sabotage::SkipFencing),
            other => Err(format!(
                "unknown sabotage `{other}` (expected skip-fencing)"
            )),
        }
    }
}

/// The store an agent calls through.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    sabotage: Option<Sabotage>,
}

impl FaultyStore {
    /// `inner`, with the agent's crash points and `sabotage`.
    pub fn new(inner: Arc<dyn Store>, sabotage: Option<Sabotage>) -> Self {
        FaultyStore { inner, sabotage }
    }
}

impl FaultyStore {
    /// Writes `outcome` over whatever the key holds (the sabotage).
    async fn record_unfenced(
        &self,
        key: &Key,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let Some(record) = self.inner.get(key).await? else {
            return Ok(Ownership::Lost);
        };
        let token = match record.status {
            Status::InProgress => record.token,
            Status::Completed => {
                let _ = self.inner.forget_result(key, record.token).await?;
                let request = ClaimRequest {
                    key,
                    fingerprint: &record.fingerprint,
                    action: &record.action,
                    lease: Duration::from_secs(10),
                    ttl,
                    on_stale: OnStale::TakeOver,
                };
                match self.inner.claim(&request).await? {
                    Claim::Acquired { token, .. } => token,
                    _ => return Ok(Ownership::Lost),
                }
            }
            Status::NeedsReview => return Ok(Ownership::Lost),
        };
        self.inner.complete(key, token, outcome, ttl).await
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn shared(&self) -> Option<Arc<dyn Store>> {
        // The runtime makes a call's claim and writes through this handle: it must be this
        // store, or the crash points around them (and the sabotage) would be bypassed. (A
        // claim finished after its caller was dropped runs outside the call's task, where no
        // crash point is armed.)
        let inner = self.inner.shared()?;
        Some(Arc::new(FaultyStore::new(inner, self.sabotage)))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        crash_if_armed(Point::BeforeClaim);
        let claim = self.inner.claim(request).await;
        if matches!(claim, Ok(Claim::Acquired { .. })) {
            crash_if_armed(Point::AfterClaim);
        }
        claim
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        crash_if_armed(Point::BeforeRecord);
        let mut written = self.inner.complete(key, token, outcome.clone(), ttl).await;
        if self.sabotage == Some(Sabotage::SkipFencing) && matches!(written, Ok(Ownership::Lost)) {
            written = self.record_unfenced(key, outcome, ttl).await;
        }
        crash_if_armed(Point::AfterRecord);
        written
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
        self.inner.heartbeat(key, token, lease).await
    }

    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.inner.leave_in_doubt(key, token).await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        self.inner.wait(key, token, at_most).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.inner.get(key).await
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.inner.purge_expired().await
    }
}

#[async_trait]
impl SagaStore for FaultyStore {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        crash_if_armed(Point::BeforeRecord);
        let written = self.inner.write_saga(saga, id, token, write).await;
        crash_if_armed(Point::AfterRecord);
        written
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        self.inner.read_saga(saga).await
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        self.inner.stale_sagas(limit).await
    }
}

/// Operators' queries are not the agents' business: the defaults ("unsupported").
impl Inspect for FaultyStore {}
