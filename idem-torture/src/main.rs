//! `idem-torture`: see the crate's documentation (src/lib.rs) and RELIABILITY.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use idem_torture::agent::{self, AgentConfig};
use idem_torture::check::{check, Run};
use idem_torture::driver::{self, RunConfig};
use idem_torture::faulty::Sabotage;
use idem_torture::schedule::StoreKind;

/// Agents under faults, and a checker of what they saw.
#[derive(Parser, Debug)]
#[command(name = "idem-torture", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Checks the files of an earlier run's folder again.
    Check {
        /// The run's folder.
        folder: PathBuf,
    },
    /// One agent process (started by the driver).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        store: String,
        #[arg(long)]
        folder: PathBuf,
        #[arg(long)]
        agent: u32,
        #[arg(long)]
        incarnation: u32,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        stop_after_ms: u64,
        #[arg(long)]
        run_age_ms: u64,
        #[arg(long)]
        sabotage: Option<Sabotage>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The store: sqlite, redis, redis-volatile, postgres, or all (each in turn).
    #[arg(long, default_value = "all")]
    store: String,
    /// How long the agents run, per store.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The seed of the schedule and of every agent's choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// How many agent processes run at once.
    #[arg(long, default_value_t = 4)]
    agents: u32,
    /// Where the run's files go (default: a folder under the system's temporary folder).
    #[arg(long)]
    folder: Option<PathBuf>,
    /// Break a protocol rule on purpose, to see the checker catch it: skip-fencing.
    #[arg(long)]
    sabotage: Option<Sabotage>,
    /// Print only the report, not each fault.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Mode::Agent {
            store,
            folder,
            agent,
            incarnation,
            seed,
            stop_after_ms,
            run_age_ms,
            sabotage,
        }) => run_agent(AgentConfig {
            store,
            folder,
            agent,
            incarnation,
            seed,
            stop_after: Duration::from_millis(stop_after_ms),
            run_age: Duration::from_millis(run_age_ms),
            sabotage,
        }),
        Some(Mode::Check { folder }) => match Run::read(&folder) {
            Ok(run) => {
                let report = check(&run);
                println!("{report}");
                if report.violations() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("idem-torture check: {e}");
                ExitCode::from(2)
            }
        },
        None => run_stores(cli.run),
    }
}

fn run_agent(config: AgentConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("agent: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            ExitCode::from(3)
        }
    }
}

fn run_stores(args: RunArgs) -> ExitCode {
    let stores: Vec<StoreKind> = if args.store == "all" {
        StoreKind::ALL.to_vec()
    } else {
        match args.store.parse() {
            Ok(store) => vec![store],
            Err(e) => {
                eprintln!("idem-torture: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let base = args
        .folder
        .unwrap_or_else(|| std::env::temp_dir().join(format!("idem-torture-{seed}")));
    let mut failed = false;
    for store in stores {
        let folder = base.join(store.name());
        println!(
            "== idem-torture --store {} --seconds {} --seed {seed} --agents {}  (files: {})",
            store.name(),
            args.seconds,
            args.agents,
            folder.display()
        );
        let config = RunConfig {
            store,
            length: Duration::from_secs(args.seconds),
            seed,
            agents: args.agents,
            folder,
            sabotage: args.sabotage,
            verbose: !args.quiet,
        };
        match driver::run(&config) {
            Ok(report) => {
                println!("{report}");
                if report.violations() > 0 {
                    failed = true;
                    println!(
                        "VIOLATIONS: {} on {}. Replay with: cargo run --release -p idem-torture -- --store {} --seconds {} --seed {seed} --agents {}{}",
                        report.violations(),
                        store.name(),
                        store.name(),
                        args.seconds,
                        args.agents,
                        match args.sabotage {
                            Some(_) => " --sabotage skip-fencing",
                            None => "",
                        }
                    );
                } else {
                    println!("no violations on {}", store.name());
                }
            }
            Err(e) => {
                failed = true;
                println!("the run on {} failed: {e}", store.name());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
