//! Calls dropped while they claim (issue 12, case 6): an agent's `timeout` around a tool drops
//! the call wherever it is. A claim that still lands is given back at once, so that the next
//! call runs the body as a fresh call, and is never parked for review.
//!
//! To cut a call while its claim is on its way, each test stalls the store from outside (a
//! held write lock, a paused Redis, a locked table) until the call's own timeout has dropped
//! it, then lets the claim through. On SQLite the dropped claim lands (its write runs on a
//! thread of its own): without the give-back the key stayed claimed for the whole lease. The
//! Redis and PostgreSQL clients here happen not to send a request whose caller is gone while
//! it waits in their queue, so on them the test holds either way; it is kept for a claim that
//! was already on the wire.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idem::store::Store;
use idem::{current_call, idempotent};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

use crate::child::temp_folder;
use crate::support::{Ledger, ToolError};

/// A payment under review policy: an interrupted call waits for an operator. Its lease is a
/// minute, so that only a claim given back (not one run out) frees the key within the test.
#[idempotent(store = store, skip = [store, ledger], lease = "60s", on_conflict = fail, on_stale = review,
             name = "dropped_pay")]
async fn pay(store: &dyn Store, ledger: &Ledger, customer: &str) -> Result<bool, ToolError> {
    ledger.record();
    Ok(current_call().expect("in the body").resumed())
}

/// Cuts a call of `pay` while `stall` holds the store, lets the store go, and checks that the
/// next call runs the body, once, as a fresh call.
async fn the_claim_of_a_dropped_call_is_given_back<S, R>(store: Arc<dyn Store>, stall: S)
where
    S: FnOnce() -> R,
    R: Future<Output = Box<dyn FnOnce() + Send>>,
{
    let ledger = Ledger::new();
    let release = stall().await;
    let cut = tokio::time::timeout(Duration::from_millis(200), pay(&*store, &ledger, "ada")).await;
    assert!(cut.is_err(), "the call is cut while the store is stalled");
    release();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        match pay(&*store, &ledger, "ada").await {
            Ok(resumed) => break resumed,
            Err(ToolError::Idem(busy)) if busy.contains("in progress") => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dropped call's claim was not given back: {busy}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("the payment did not run: {other:?}"),
        }
    };
    assert!(
        !resumed,
        "not a retry of an interrupted call: the body never ran"
    );
    assert_eq!(ledger.count(), 1, "the payment ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_it_claims_gives_its_claim_back_on_sqlite() {
    let folder = temp_folder("dropped-calls");
    let path = folder.join("idem.db");
    let store = idem::store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    // Another process's write transaction holds the file's write lock.
    let stall = || async {
        let (locked, hold) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let (locked_tx, locked_rx) = locked;
        let (hold_tx, hold_rx) = hold;
        std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&path).expect("open the file");
            connection.execute_batch("BEGIN IMMEDIATE").expect("lock");
            locked_tx.send(()).expect("tell");
            let _ = hold_rx.recv();
            connection.execute_batch("COMMIT").expect("unlock");
        });
        locked_rx.recv().expect("locked");
        Box::new(move || {
            let _ = hold_tx.send(());
        }) as Box<dyn FnOnce() + Send>
    };
    the_claim_of_a_dropped_call_is_given_back(store, stall).await;
    let _ = std::fs::remove_dir_all(&folder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_call_dropped_while_it_claims_gives_its_claim_back_on_redis() {
    // A server of its own: `CLIENT PAUSE` holds every client's writes, and the shared
    // server's are other tests'.
    let Some(server) = RedisServer::own() else {
        return;
    };
    let url = format!("{}6", server.url());
    let store = idem::store::open(&url).await.expect("open");
    // The server holds every write until told to go on.
    let stall = || async {
        let client = redis::Client::open(url.as_str()).expect("a client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(20_000)
            .arg("WRITE")
            .query_async(&mut connection)
            .await
            .expect("pause");
        Box::new(move || {
            let mut connection = client.get_connection().expect("connect");
            let _: () = redis::cmd("CLIENT")
                .arg("UNPAUSE")
                .query(&mut connection)
                .expect("unpause");
        }) as Box<dyn FnOnce() + Send>
    };
    the_claim_of_a_dropped_call_is_given_back(store, stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_call_dropped_while_it_claims_gives_its_claim_back_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = format!("{}?schema=dropped_calls", server.url());
    let store = idem::store::open(&url).await.expect("open");
    // A transaction holds the records' table locked.
    let stall = || async {
        let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(connection);
        tokio::spawn(async move {
            client
                .batch_execute("BEGIN; LOCK TABLE dropped_calls.idem_records IN EXCLUSIVE MODE")
                .await
                .expect("lock");
            let _ = locked_tx.send(());
            let _ = hold_rx.await;
            client.batch_execute("COMMIT").await.expect("unlock");
        });
        locked_rx.await.expect("locked");
        Box::new(move || {
            let _ = hold_tx.send(());
        }) as Box<dyn FnOnce() + Send>
    };
    the_claim_of_a_dropped_call_is_given_back(store, stall).await;
}
