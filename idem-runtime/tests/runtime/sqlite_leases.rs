//! Leases that a live owner keeps on SQLite (issue 12, point 6): purging expired results, however
//! many, never stalls the heartbeats of a caller that is still running its body.

use idem_runtime::store::Inspect;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem_runtime::store::{SqliteStore, Store};
use idem_runtime::{Action, Error, Outcome};
use tokio::sync::oneshot;

const LEASE: Duration = Duration::from_millis(500);

/// The owner's action: its body runs longer than its lease, held by heartbeats.
static REPORT: Action = Action::new("build_report").lease(LEASE);

/// Results that expire at once: each one recorded is one more for the purge.
static NOTE: Action = Action::new("write_note").ttl(Duration::from_millis(1));

/// Expired results in the file. Purged in one transaction, this many held the store's writer
/// for more than a second, twice the owner's lease (the bug was found with 250k: ~2.6 s).
const BACKLOG: u32 = 80_000;

/// The store purges expired results after every this many results it records.
const PURGE_EVERY: u32 = 1024;

fn temp_file(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("idem-sqlite-leases-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let file = folder.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    file
}

/// Writes `count` results that expired long ago straight into the file, in one transaction: a
/// store whose agents recorded many short-lived results while nothing purged them.
fn write_backlog(path: &Path, count: u32) {
    let mut connection = rusqlite::Connection::open(path).expect("open the file");
    let transaction = connection.transaction().expect("a transaction");
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO idem_records
                   (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms)
                 VALUES (?1, 'old_note', 'completed', ?2, zeroblob(32), 'ok', x'31', 0, ?3)",
            )
            .expect("prepare");
        for i in 0..count {
            // Keys of a form a hash never takes in practice: no clash with the test's calls.
            insert
                .execute(rusqlite::params![
                    format!("{i:064x}"),
                    i64::from(i) + 1,
                    1 + i64::from(i % 1000)
                ])
                .expect("insert");
        }
    }
    transaction.commit().expect("commit");
}

/// How many results of the backlog are still in the file.
fn backlog_left(path: &Path) -> i64 {
    let connection = rusqlite::Connection::open(path).expect("open the file");
    connection
        .query_row(
            "SELECT count(*) FROM idem_records WHERE action = 'old_note'",
            [],
            |row| row.get(0),
        )
        .expect("count")
}

/// The bug: the purge ran inside `complete`, as one transaction on the writer connection the
/// heartbeats need. With a large backlog it held that connection past the owner's lease, a
/// waiting caller took over, and the body ran twice while its first owner was alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_sqlite_owner_keeps_its_lease_through_a_purge_backlog() {
    let path = temp_file("purge-backlog.db");
    let store = SqliteStore::open(&path).await.expect("open the store");
    write_backlog(&path, BACKLOG);
    // Record all but one result of a purge period now: the next result recorded, while the
    // owner runs, sets off a purge of the whole backlog.
    for i in 0..PURGE_EVERY - 1 {
        NOTE.call(&("warm-up", i))
            .expect("a key")
            .run::<_, Error, _>(&store, async move { Ok(i) })
            .await
            .expect("a quick call");
    }
    assert!(
        store.count_expired().await.expect("count") >= u64::from(BACKLOG),
        "the backlog is there"
    );

    let runs = Arc::new(AtomicU32::new(0));
    let (started, owner_started) = oneshot::channel();
    let (operator_done, purged) = oneshot::channel();
    let owner = tokio::spawn({
        let (store, runs) = (store.clone(), Arc::clone(&runs));
        async move {
            let body = async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = started.send(());
                // Longer than the lease, and until the operator's purge is over: the
                // heartbeats have to get through while the purges work.
                let (_, _) = tokio::join!(tokio::time::sleep(2 * LEASE), purged);
                Ok::<_, Error>(run)
            };
            REPORT
                .call(&("report", 1))?
                .run::<_, Error, _>(&store, body)
                .await
        }
    });
    owner_started.await.expect("the owner's body started");

    // Another call records its result (and sets off the purge); an operator purges too; then a
    // second caller of the owner's key waits for it.
    let trigger = tokio::spawn({
        let store = store.clone();
        async move {
            NOTE.call(&("trigger", 0))?
                .run::<_, Error, _>(&store, async { Ok(0) })
                .await
        }
    });
    let operator = tokio::spawn({
        let store = store.clone();
        async move {
            let purged = store.purge_expired().await;
            let _ = operator_done.send(());
            purged
        }
    });
    let second = tokio::spawn({
        let (store, runs) = (store.clone(), Arc::clone(&runs));
        async move {
            REPORT
                .call(&("report", 1))?
                .run::<_, Error, _>(&store, async move {
                    Ok::<_, Error>(runs.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await
        }
    });

    let limit = Duration::from_secs(60);
    let joined = tokio::time::timeout(limit, async {
        let owner = owner.await.expect("the owner's task");
        let second = second.await.expect("the second caller's task");
        trigger
            .await
            .expect("the trigger's task")
            .expect("the trigger call");
        operator
            .await
            .expect("the operator's task")
            .expect("the operator's purge");
        (owner, second)
    })
    .await;
    let (owner, second) = joined.expect("the calls finished in time");

    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the body ran once: its live owner kept the lease (owner: {owner:?}, second caller: {second:?})"
    );
    assert!(
        matches!(owner, Ok(Outcome::Executed(1))),
        "the owner recorded its result: {owner:?}"
    );
    assert!(
        matches!(
            second,
            Ok(Outcome::Replayed(1)) | Err(Error::InProgress { .. })
        ),
        "the second caller replays the owner's result: {second:?}"
    );
    assert_eq!(backlog_left(&path), 0, "the backlog was purged");
}
