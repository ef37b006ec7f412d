//! Several OS processes on one SQLite file: the body runs once, and a process killed inside
//! the body is taken over by the next one.
//!
//! The parent test starts this same test binary again as child processes, running the
//! ignored test `processes::child`, which reads what to do from its environment.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use idem::store::SqliteStore;
use idem::{current_call, idempotent, observe};

use crate::support::{Receipt, ToolError};

/// Appends one line to the ledger file: the side effect, visible to every process.
fn append(ledger: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .expect("open the ledger");
    writeln!(file, "{line}").expect("write the ledger");
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[idempotent(skip = [store, ledger, hang], store = store, lease = "300ms")]
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child's side: open the store, wait for the start signal, make the call, print it.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
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

/// A child process and the lines it prints.
struct ChildProcess {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl ChildProcess {
    fn start(folder: &Path, hang: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "processes::child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IDEM_DB", folder.join("idem.db"))
            .env("IDEM_LEDGER", folder.join("ledger.txt"))
            .env("IDEM_GO", folder.join("go"))
            .env("IDEM_HANG", if hang { "1" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a child process");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        ChildProcess { child, lines }
    }

    /// Reads lines until one holds `word` (the test harness may print before it on the same
    /// line); returns what follows it.
    fn expect(&mut self, word: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read the child's output");
            if let Some((_, rest)) = line.split_once(word) {
                return rest.trim().to_owned();
            }
        }
        panic!("the child process ended without printing {word}");
    }

    fn finish(mut self) {
        let status = self.child.wait().expect("wait for the child");
        assert!(status.success(), "the child process failed: {status}");
    }
}

impl Drop for ChildProcess {
    /// A test that fails part-way leaves no child behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_folder(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("idem-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    folder
}

#[test]
fn two_processes_race_on_one_sqlite_file_and_the_body_runs_once() {
    let folder = temp_folder("race");
    let mut children = [
        ChildProcess::start(&folder, false),
        ChildProcess::start(&folder, false),
    ];
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

    let mut doomed = ChildProcess::start(&folder, true);
    doomed.expect("STARTED");
    doomed
        .child
        .kill()
        .expect("SIGKILL the child inside its body");
    let _ = doomed.child.wait();

    let mut next = ChildProcess::start(&folder, false);
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
