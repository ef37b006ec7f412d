//! Several OS processes on one SQLite file: the body runs once, and a process killed inside
//! the body is taken over by the next one.
//!
//! The parent test starts this same test binary again as child processes, running the
//! ignored test `processes::child`, which reads what to do from its environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idem::store::SqliteStore;
use idem::{current_call, idempotent, observe};

use crate::child::{append, ledger_lines, say, temp_folder, var, ChildProcess};
use crate::support::{Receipt, ToolError};

// The lease: long beside the body's 200 ms, so that a stall of a loaded machine does not
// let the racing process take over a live owner; the killed owner's key is taken over once it
// ran out.
#[idempotent(skip = [store, ledger, hang], store = store, lease = "2s")]
async fn ship_order(
    store: &SqliteStore,
    ledger: &Path,
    hang: bool,
    order: &str,
) -> Result<Receipt, ToolError> {
    let pid = std::process::id();
    let resumed = current_call().is_some_and(|call| call.resumed());
    append(
        ledger,
        &format!("shipped {order} by {pid} resumed={resumed}"),
    );
    say("STARTED");
    if hang {
        // Killed here, inside the body, after the side effect.
        std::future::pending::<()>().await;
    }
    // Hold the claim a little, so that the other process finds it in progress.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Receipt {
        id: format!("shipment of {order} by {pid}, resumed: {resumed}"),
    })
}

/// The child's side: open the store, wait for the start signal, make the call, print it.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn child() {
    let (db, ledger, go) = (
        PathBuf::from(var("IDEM_DB")),
        PathBuf::from(var("IDEM_LEDGER")),
        PathBuf::from(var("IDEM_GO")),
    );
    let hang = var("IDEM_HANG") == "1";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // A child that hangs fails instead, so the parent test cannot hang.
    let limit = Duration::from_secs(if hang { 600 } else { 60 });
    let run = async {
        let store = SqliteStore::open(&db).await.expect("open the store");
        say("READY");
        while !go.exists() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (result, how) = observe(ship_order(&store, &ledger, hang, "order-7")).await;
        let receipt = result.expect("the call succeeds");
        say(&format!("RESULT {} | {how:?}", receipt.id));
    };
    runtime
        .block_on(async { tokio::time::timeout(limit, run).await })
        .expect("the child finishes in time");
}

/// A child that runs `child` above on the files of `folder`.
fn start(folder: &Path, hang: bool) -> ChildProcess {
    ChildProcess::start(
        "processes::child",
        &[
            ("IDEM_DB", folder.join("idem.db")),
            ("IDEM_LEDGER", folder.join("ledger.txt")),
            ("IDEM_GO", folder.join("go")),
            ("IDEM_HANG", PathBuf::from(if hang { "1" } else { "0" })),
        ],
    )
}

#[test]
fn two_processes_race_on_one_sqlite_file_and_the_body_runs_once() {
    let folder = temp_folder("race");
    let mut children = [start(&folder, false), start(&folder, false)];
    for child in &mut children {
        child.expect("READY");
    }
    std::fs::write(folder.join("go"), b"").expect("start signal");
    let results: Vec<String> = children.iter_mut().map(|c| c.expect("RESULT")).collect();
    for child in children {
        child.finish();
    }

    let ledger = ledger_lines(&folder.join("ledger.txt"));
    assert_eq!(
        ledger.len(),
        1,
        "the side effect ran {} times: {ledger:?}",
        ledger.len()
    );
    let receipts: Vec<&str> = results
        .iter()
        .map(|r| r.split(" | ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        receipts[0], receipts[1],
        "both processes get the same receipt"
    );
    let mut how: Vec<&str> = results
        .iter()
        .map(|r| r.split(" | ").nth(1).unwrap_or(""))
        .collect();
    how.sort_unstable();
    assert_eq!(how[0], "Some(Executed)", "{results:?}");
    assert!(
        how[1] == "Some(Replayed)" || how[1] == "Some(WaitedThenReplayed)",
        "{results:?}"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_process_killed_inside_the_body_is_taken_over_by_the_next() {
    let folder = temp_folder("crash");
    std::fs::write(folder.join("go"), b"").expect("start signal");

    let mut doomed = start(&folder, true);
    doomed.expect("STARTED");
    doomed.kill(); // SIGKILL, inside the body

    let mut next = start(&folder, false);
    let result = next.expect("RESULT");
    next.finish();
    assert!(
        result.ends_with("resumed: true | Some(TookOver)"),
        "{result}"
    );

    let ledger = ledger_lines(&folder.join("ledger.txt"));
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(
        ledger[0].ends_with("resumed=false") && ledger[1].ends_with("resumed=true"),
        "{ledger:?}"
    );

    // A third caller, in this process, is answered from the record.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let replay = runtime.block_on(async {
        let store = SqliteStore::open(folder.join("idem.db")).await.unwrap();
        ship_order(&store, &folder.join("ledger.txt"), false, "order-7")
            .await
            .unwrap()
    });
    assert_eq!(Some(replay.id.as_str()), result.split(" | ").next());
    assert_eq!(ledger_lines(&folder.join("ledger.txt")).len(), 2);
    let _ = std::fs::remove_dir_all(&folder);
}
