//! The fleet demo: four agents work through a queue of customer tasks (quote emails,
//! payments, contract deals) in a world that misbehaves, and idem keeps every side effect to
//! one per intended action.
//!
//! ```text
//! cargo run --example agent_demo                        # with idem, on a SQLite file
//! cargo run --example agent_demo -- --unprotected       # the same world without idem
//! cargo run --example agent_demo -- --store redis://127.0.0.1:6379/0
//! ```
//!
//! What goes wrong, as it does in production:
//!
//! - **Timeouts after the effect happened.** A provider makes the charge (or sends the email)
//!   but answers after the agent stopped waiting; the agent retries.
//! - **Duplicate assignment.** The task queue delivers some tasks twice (at-least-once
//!   delivery), so two agents work on the same task.
//! - **An agent killed mid-task.** Its process dies right after the payment provider made a
//!   charge, before the agent heard back; a new agent takes the task from the queue again.
//! - **A payment declined mid-saga.** The contract was already created.
//!
//! With idem, the tools are `#[idempotent]` and the deal is a saga: a retry or a duplicate is
//! answered from the record, the new agent takes over the dead one's call once its lease runs
//! out (the payment provider, sent idem's key as its `Idempotency-Key`, answers with the first
//! charge), the saga resumes from its log, and a declined card deletes the contract again.
//! Without idem (`--unprotected`), the same world sends duplicate emails, makes duplicate
//! charges and leaves contracts behind.
//!
//! The services are in-process fakes that count what they did; "killed" aborts every task of
//! the agent's process at its next `.await`, with no clean-up, as a crash would stop it.

mod fleet;
mod plan;
mod report;
mod tools;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::tools::Mode;
use crate::world::World;

/// How many agents work the queue at once.
const AGENTS: usize = 4;

const USAGE: &str = "\
usage: agent_demo [--unprotected] [--store URL]

  --unprotected   run the same world with plain tool calls, without idem
  --store URL     idem's store: memory:, sqlite://PATH, redis://HOST:PORT/DB, postgres://…
                  (default: a new SQLite file in the temporary directory)";

/// What the command line asked for.
#[derive(Debug, Default)]
struct Options {
    unprotected: bool,
    store: Option<String>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--unprotected" => options.unprotected = true,
            "--store" => {
                options.store = Some(args.next().ok_or("--store needs a URL")?);
            }
            _ => {
                if let Some(url) = arg.strip_prefix("--store=") {
                    options.store = Some(url.to_owned());
                } else {
                    return Err(format!("unknown argument `{arg}`"));
                }
            }
        }
    }
    if options.unprotected && options.store.is_some() {
        return Err("--unprotected runs without idem, so without a store".to_owned());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("agent_demo: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent_demo: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    // Each run's references are new, so runs on a shared store never replay each other.
    let run_id = format!(
        "{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );
    let plan = Plan::new(&run_id);
    let (kills, kill_requests) = mpsc::unbounded_channel();
    let world = Arc::new(World::new(plan.misbehaviour.clone(), kills));

    let mut scratch_file = None;
    let (mode, store) = if options.unprotected {
        (Mode::Unprotected, None)
    } else {
        let url = options.store.unwrap_or_else(|| {
            let path =
                std::env::temp_dir().join(format!("idem-agent-demo-{}.db", std::process::id()));
            let url = format!("sqlite://{}", path.display());
            scratch_file = Some(path);
            url
        });
        let store = idem::store::open(&url).await?;
        println!(
            "{AGENTS} agents, with idem, on the {} store at {url}",
            store.name()
        );
        (Mode::Idem, Some(store))
    };
    if mode == Mode::Unprotected {
        println!("{AGENTS} agents, without idem: plain tool calls");
    }
    report::print_plan(&plan);
    println!();

    tools::install(Arc::clone(&world), store);
    let fleet = Fleet::new(mode, plan.queue(), plan.tasks.len() as u64);
    fleet.run(AGENTS, kill_requests).await;

    report::print_table(mode, &fleet.counts, plan.intended(), world.ledger());
    if let Some(path) = scratch_file {
        remove_sqlite_files(path);
    }
    Ok(())
}

/// Removes a scratch SQLite database with its WAL files.
fn remove_sqlite_files(path: PathBuf) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
