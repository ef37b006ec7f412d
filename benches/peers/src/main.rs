//! idem next to its peers, on every store, at several concurrencies.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- [--reps N] [--callers 1,16,64] [--secs S]
//! ```
//!
//! Starts its own `redis-server`, Redis Cluster (3 masters + 3 replicas) and PostgreSQL
//! cluster (idem's conformance servers, on loopback ports), runs every row's rounds
//! interleaved (repetition 1: every row once, at each number of callers; repetition 2: again,
//! rows in the reverse order; …), then prints one table (median and min calls/s over the
//! repetitions, and the dedup check of every row), one line per target (and informational
//! ratios), and writes the chart `peers.svg`.
//!
//! Files: `cli.rs` (the command line), `call.rs` (the call every row makes), `measure.rs` (a
//! round), `peers/` (how each peer is called), `rows/` (one module per store: what its rows
//! measure), `results.rs`, `table.rs`, `targets.rs`, `chart.rs`.

mod call;
mod chart;
mod cli;
mod measure;
mod peers;
mod results;
mod rows;
mod table;
mod targets;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use idem_runtime::conformance::servers::{Flavor, PostgresServer, RedisCluster, RedisServer};

use crate::measure::Timing;
use crate::results::Results;
use crate::rows::postgres::PgEnv;
use crate::rows::redis::RedisEnv;
use crate::rows::redis_cluster::ClusterEnv;
use crate::rows::sagas::SagaEnv;
use crate::rows::{Family, Row, System};

/// Calls before each round's measured window.
const WARM_UP: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start a Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(options))
}

/// The servers a family needs, started (or found missing) once.
struct Servers {
    redis: Result<RedisEnv, String>,
    cluster: Result<ClusterEnv, String>,
    postgres: Result<PgEnv, String>,
}

impl Servers {
    async fn start(options: &cli::Options) -> Servers {
        let wants = |family| options.only.contains(&family);
        let redis = if wants(Family::Redis) || wants(Family::Sagas) {
            match tokio::task::spawn_blocking(RedisServer::shared).await {
                Ok(Some(server)) => RedisEnv::connect(server).await,
                Ok(None) => Err("redis-server is not installed".into()),
                Err(error) => Err(format!("starting redis-server failed: {error}")),
            }
        } else {
            Err("not asked for".into())
        };
        let cluster = if wants(Family::RedisCluster) {
            match tokio::task::spawn_blocking(|| RedisCluster::shared(Flavor::Redis)).await {
                Ok(Some(cluster)) => ClusterEnv::connect(cluster).await,
                Ok(None) => Err("redis-server or redis-cli is not installed".into()),
                Err(error) => Err(format!("starting a Redis Cluster failed: {error}")),
            }
        } else {
            Err("not asked for".into())
        };
        let postgres = if wants(Family::Postgres) || wants(Family::Sagas) {
            match tokio::task::spawn_blocking(PostgresServer::shared).await {
                Ok(Some(server)) => PgEnv::connect(server).await,
                Ok(None) => Err("PostgreSQL is not installed".into()),
                Err(error) => Err(format!("starting PostgreSQL failed: {error}")),
            }
        } else {
            Err("not asked for".into())
        };
        Servers {
            redis,
            cluster,
            postgres,
        }
    }

    /// Why `system`'s rows cannot run, if they cannot.
    fn missing(&self, system: System) -> Option<String> {
        use System::*;
        match system {
            IdemRedis | IdemRedisReplayCache | IdempotentRedis | RawRedis | SagaRedis
            | LongSagaRedis | RawLogRedis => self.redis.as_ref().err().cloned(),
            IdemRedisCluster | RawRedisCluster => self.cluster.as_ref().err().cloned(),
            IdemPostgres | AgentEffectsPostgres | RawPostgres | SagaPostgres | LongSagaPostgres
            | RawLogPostgres => self.postgres.as_ref().err().cloned(),
            _ => None,
        }
    }
}

/// One round of `row`.
async fn round(
    servers: &Servers,
    folder: &Path,
    row: Row,
    callers: usize,
    timing: Timing,
) -> Result<rows::RoundResult, String> {
    match row.system.family() {
        Family::Memory => rows::memory::round(row.system, row.mode, callers, timing).await,
        Family::Sqlite => rows::sqlite::round(folder, row.system, row.mode, callers, timing).await,
        Family::Redis => {
            let env = servers.redis.as_ref().map_err(Clone::clone)?;
            rows::redis::round(env, row.system, row.mode, callers, timing).await
        }
        Family::RedisCluster => {
            let env = servers.cluster.as_ref().map_err(Clone::clone)?;
            rows::redis_cluster::round(env, row.system, row.mode, callers, timing).await
        }
        Family::Postgres => {
            let env = servers.postgres.as_ref().map_err(Clone::clone)?;
            rows::postgres::round(env, row.system, row.mode, callers, timing).await
        }
        Family::Sagas => {
            let env = SagaEnv {
                folder,
                redis: servers.redis.as_ref().ok(),
                postgres: servers.postgres.as_ref().ok(),
            };
            rows::sagas::round(&env, row.system, callers, timing).await
        }
    }
}

async fn run(options: cli::Options) -> ExitCode {
    let timing = Timing {
        warm_up: WARM_UP,
        window: Duration::from_secs_f64(options.secs),
    };
    let folder = std::env::temp_dir().join(format!("idem-peers-{}", std::process::id()));
    if let Err(error) = std::fs::create_dir_all(&folder) {
        eprintln!("error: cannot make {}: {error}", folder.display());
        return ExitCode::FAILURE;
    }
    // The chart's folder, checked before the run rather than after it.
    if let Err(error) = std::fs::create_dir_all(&options.out) {
        eprintln!("error: --out {}: {error}", options.out.display());
        return ExitCode::from(2);
    }
    let servers = Servers::start(&options).await;

    let rows: Vec<Row> = rows::all_rows()
        .into_iter()
        .filter(|row| options.only.contains(&row.system.family()))
        .collect();
    let mut results = Results::new(rows.clone(), options.callers.clone());
    let runnable: Vec<Row> = rows
        .iter()
        .copied()
        .filter(|row| match servers.missing(row.system) {
            Some(why) => {
                results.skipped.insert(*row, why);
                false
            }
            None => true,
        })
        .collect();

    let rounds = runnable.len() * options.callers.len() * options.reps;
    println!(
        "idem vs peers: {} rows × {} caller counts × {} reps = {rounds} rounds of {:.2} s + {:.2} s warm-up (about {:.0} s); Tokio multi-thread runtime, {} workers",
        runnable.len(),
        options.callers.len(),
        options.reps,
        timing.window.as_secs_f64(),
        timing.warm_up.as_secs_f64(),
        rounds as f64 * (timing.window + timing.warm_up).as_secs_f64() * 1.1,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    match &servers.redis {
        Ok(env) => println!("Redis: redis-server on 127.0.0.1:{}", env.port),
        Err(why) => println!("Redis: {why}"),
    }
    match &servers.cluster {
        Ok(env) => println!("Redis Cluster: 3 masters + 3 replicas, {}", env.url),
        Err(why) => println!("Redis Cluster: {why}"),
    }
    match &servers.postgres {
        Ok(_) => println!(
            "PostgreSQL: {}",
            PostgresServer::shared().map_or("?".into(), |s| s.url())
        ),
        Err(why) => println!("PostgreSQL: {why}"),
    }
    if options.only.contains(&Family::Sqlite) || options.only.contains(&Family::Sagas) {
        println!("{}", rows::sqlite::durability(&folder).await);
    }

    let started = Instant::now();
    let mut done = 0;
    for rep in 0..options.reps {
        let mut order = runnable.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for &callers in &options.callers {
            for &row in &order {
                let result = round(&servers, &folder, row, callers, timing).await;
                done += 1;
                match &result {
                    Ok(r) => eprintln!(
                        "[{done}/{rounds} {:.0}s] rep {} x{callers} {} {} {}: {} calls/s{}",
                        started.elapsed().as_secs_f64(),
                        rep + 1,
                        row.system.family().name(),
                        row.system.label(),
                        row.mode.name(),
                        table::thousands(r.measured.rate),
                        r.measured
                            .failure
                            .as_ref()
                            .map_or(String::new(), |f| format!(" (FAILED: {f})"))
                    ),
                    Err(error) => eprintln!(
                        "[{done}/{rounds}] rep {} x{callers} {} {} {}: FAILED: {error}",
                        rep + 1,
                        row.system.family().name(),
                        row.system.label(),
                        row.mode.name(),
                    ),
                }
                results.add(row, callers, result);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&folder);

    println!();
    print!("{}", table::render(&results));
    println!();
    for line in targets::lines(&results) {
        println!("{line}");
    }
    println!();
    match chart::write(&results, &options.out) {
        Ok(path) => println!("chart: {}", path.display()),
        Err(error) => {
            eprintln!("error: the chart was not written: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
