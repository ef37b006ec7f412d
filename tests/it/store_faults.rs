//! What a call does when the store fails after the body ran: the value is not lost, and the
//! caller is told it was not recorded.

use std::sync::atomic::AtomicUsize;

use idem::store::Store;
use idem::{idempotent, observe, Disposition};

use crate::faulty_store::FaultyStore;
use crate::support::{Ledger, ToolError};

#[idempotent(skip = [store, ledger], store = store, lease = "2s")]
async fn charge(store: &FaultyStore, ledger: &Ledger, order: u32) -> Result<usize, ToolError> {
    Ok(ledger.record())
}

fn flaky(failures: usize) -> FaultyStore {
    FaultyStore {
        failing_completes: AtomicUsize::new(failures),
        ..FaultyStore::new()
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
