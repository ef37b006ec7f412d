//! What a call does when the store fails after the body ran: the value is not lost, and the
//! caller is told it was not recorded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idem::store::{
    Claim, ClaimRequest, FencingToken, MemoryStore, Ownership, Record, Store, StoredOutcome,
};
use idem::{idempotent, observe, Disposition, Error, Key};

use crate::support::{Ledger, ToolError};

/// A real memory store whose `complete` fails the first `failures` times, as a store does
/// when its server restarts or its file is locked.
#[derive(Debug)]
struct FlakyCompletes {
    inner: MemoryStore,
    failures: AtomicUsize,
}

#[async_trait]
impl Store for FlakyCompletes {
    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.inner.claim(request).await
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failed.is_ok() {
            return Err(Error::store("flaky", Some(key), "connection reset"));
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
        self.inner.heartbeat(key, token, lease).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        self.inner.get(key).await
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.inner.purge_expired().await
    }
}

#[idempotent(skip = [store, ledger], store = store, lease = "2s")]
async fn charge(store: &FlakyCompletes, ledger: &Ledger, order: u32) -> Result<usize, ToolError> {
    Ok(ledger.record())
}

fn flaky(failures: usize) -> FlakyCompletes {
    FlakyCompletes {
        inner: MemoryStore::new(),
        failures: AtomicUsize::new(failures),
    }
}

#[tokio::test]
async fn a_store_that_fails_once_while_recording_is_tried_again() {
    let (store, ledger) = (flaky(1), Ledger::new());
    let (result, how) = observe(charge(&store, &ledger, 7)).await;
    assert_eq!((result, how), (Ok(1), Some(Disposition::Executed)));
    assert_eq!(
        charge(&store, &ledger, 7).await,
        Ok(1),
        "recorded on the second try, then replayed"
    );
    assert_eq!(ledger.count(), 1);
}

#[tokio::test]
async fn a_result_the_store_will_not_take_is_returned_and_reported_unrecorded() {
    let (store, ledger) = (flaky(usize::MAX), Ledger::new());
    let (result, how) = observe(charge(&store, &ledger, 7)).await;
    assert_eq!(
        result,
        Ok(1),
        "the side effect happened: its value is not thrown away"
    );
    assert_eq!(how, Some(Disposition::ExecutedUnrecorded));
    // Nothing was recorded and the claim still holds: a duplicate now waits for the lease.
    let record = store
        .inner
        .get(&idem::Action::new("charge").key(&(7u32,)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        record.map(|r| r.status),
        Some(idem::store::Status::InProgress)
    );
}
