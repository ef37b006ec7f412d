//! A fleet of agents on one store: four OS processes, each with four tasks, make 2,000 calls
//! each over 500 overlapping keys. The ledger of side effects must show exactly 500
//! executions, and every caller must have got the recorded result of its key.
//!
//! Run for each store that can run here: a SQLite file, Redis and PostgreSQL (servers started
//! by the tests; without their binaries those skip, under `CI=true` they fail).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idem::idempotent;
use idem::store::Store;
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

use crate::child::{append, ledger_lines, say, temp_folder, var, ChildProcess};
use crate::support::ToolError;

const PROCESSES: usize = 4;
const TASKS: usize = 4;
const CALLS: usize = 2_000;
const KEYS: usize = 500;

#[idempotent(skip = [store, ledger], store = store, name = "fleet_ship_order")]
async fn ship_order(
    store: &Arc<dyn Store>,
    ledger: &Path,
    order: usize,
) -> Result<String, ToolError> {
    let shipment = format!("shipment {order} by {}", std::process::id());
    append(ledger, &format!("{order} {shipment}"));
    Ok(shipment)
}

/// The child: opens the store at `IDEM_STORE`, waits for the start signal, makes its calls
/// from four tasks, and writes `order result` lines to `IDEM_RESULTS`.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn fleet_agent() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = PathBuf::from(var("IDEM_LEDGER"));
    let seed: usize = var("IDEM_SEED").parse().unwrap();
    // Bounded, as `processes::child` is: a child that hangs fails, so its parent cannot hang.
    let results = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            fleet_calls(&ledger, seed),
        )
        .await
        .expect("the child finishes in time")
    });
    let lines: Vec<String> = results
        .iter()
        .map(|(order, result)| format!("{order} {result}"))
        .collect();
    std::fs::write(var("IDEM_RESULTS"), lines.join("\n")).expect("write the results");
    say("DONE");
}

/// The child's calls: opens the store at `IDEM_STORE`, waits for the start signal, makes its
/// calls from four tasks; each call's order and result.
async fn fleet_calls(ledger: &Path, seed: usize) -> Vec<(usize, String)> {
    let store = idem::store::open(&var("IDEM_STORE"))
        .await
        .expect("open the store");
    say("READY");
    let go = PathBuf::from(var("IDEM_GO"));
    while !go.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, ledger) = (Arc::clone(&store), ledger.to_path_buf());
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..CALLS / TASKS {
                    // Every process walks the keys in its own order, so they overlap.
                    let order = (i * 7 + task * 131 + seed * 17) % KEYS;
                    let result = ship_order(&store, &ledger, order).await;
                    got.push((order, result.expect("every call is answered")));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a task"));
    }
    all
}

/// Runs the fleet on the store at `url`; `name` names the folder.
fn run_fleet(name: &str, url: &str) {
    let folder = temp_folder(&format!("fleet-{name}"));
    let ledger = folder.join("ledger.txt");
    let go = folder.join("go");
    let mut agents: Vec<ChildProcess> = (0..PROCESSES)
        .map(|seed| {
            ChildProcess::start(
                "fleet::fleet_agent",
                &[
                    ("IDEM_STORE", PathBuf::from(url)),
                    ("IDEM_LEDGER", ledger.clone()),
                    ("IDEM_GO", go.clone()),
                    ("IDEM_SEED", PathBuf::from(seed.to_string())),
                    ("IDEM_RESULTS", folder.join(format!("results-{seed}.txt"))),
                ],
            )
        })
        .collect();
    for agent in &mut agents {
        agent.expect("READY");
    }
    std::fs::write(&go, b"").expect("start signal");
    for mut agent in agents {
        agent.expect("DONE");
        agent.finish();
    }

    let executed: Vec<(usize, String)> = ledger_lines(&ledger)
        .into_iter()
        .map(|line| {
            let (order, shipment) = line.split_once(' ').expect("`order shipment`");
            (order.parse().expect("an order"), shipment.to_owned())
        })
        .collect();
    assert_eq!(
        executed.len(),
        KEYS,
        "{name}: {} executions",
        executed.len()
    );
    let recorded: HashMap<usize, String> = executed.into_iter().collect();
    assert_eq!(recorded.len(), KEYS, "{name}: a key ran twice");

    let mut answers = 0;
    for seed in 0..PROCESSES {
        let results = std::fs::read_to_string(folder.join(format!("results-{seed}.txt")))
            .expect("the agent's results");
        for line in results.lines() {
            let (order, result) = line.split_once(' ').expect("`order result`");
            let order: usize = order.parse().expect("an order");
            assert_eq!(
                Some(result),
                recorded.get(&order).map(String::as_str),
                "{name}: agent {seed} got another result for order {order}"
            );
            answers += 1;
        }
    }
    assert_eq!(
        answers,
        PROCESSES * CALLS,
        "{name}: every call was answered"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_fleet_on_one_sqlite_file_runs_each_key_once() {
    let folder = temp_folder("fleet-sqlite-store");
    let url = format!("sqlite://{}", folder.join("idem.db").display());
    run_fleet("sqlite", &url);
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_fleet_on_redis_runs_each_key_once() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    // A database of its own on the shared server.
    run_fleet("redis", &format!("{}1", server.url()));
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_fleet_on_postgres_runs_each_key_once() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    // A schema of its own on the shared server.
    run_fleet("postgres", &format!("{}?schema=fleet", server.url()));
}
