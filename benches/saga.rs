//! What a saga step costs: store round trips and time per step, on the memory, SQLite and
//! Redis stores, next to the raw writes its log needs (an intent and an output per step) made
//! directly, in the same run; and, on Redis, the server's commands per saga.
//!
//! ```text
//! cargo bench --bench saga
//! ```
//!
//! Per step = (a saga of 9 steps − a saga of 1 step) / 8, so the saga's own claim, log read,
//! status writes and recorded outcome are left out. Each figure is the median of 7 rounds.
//!
//! Baselines (the raw writes the log needs, per step):
//!
//! - memory: two inserts of the step's record into a `HashMap` behind a `Mutex` (intent,
//!   then output) — what an in-process log is at the least;
//! - SQLite: two `INSERT OR REPLACE INTO idem_saga_steps …` statements through `rusqlite`,
//!   each its own durable transaction (WAL, `synchronous = FULL`, as the store runs), on a
//!   connection of its own to a file of its own;
//! - Redis (a `redis-server` the bench starts, as the tests do; the row is left out, saying
//!   so, when there is none): two `HSET`s of the step's record under the saga's hash, on a
//!   connection of its own.

#[allow(dead_code)]
mod common;
#[path = "../tests/it/faulty_store.rs"]
#[allow(dead_code)]
mod faulty_store;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{info_commandstats, redis_cmd};
use faulty_store::FaultyStore;
use idem::store::{MemoryStore, SqliteStore, Store};
use idem::{saga_step, Saga};
use idem_runtime::conformance::servers::RedisServer;
use idem_runtime::store::RedisStore;
use redis::aio::ConnectionManager;

#[derive(Debug)]
struct BenchError(idem::Error);

impl From<idem::Error> for BenchError {
    fn from(error: idem::Error) -> Self {
        BenchError(error)
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A step with two small arguments and a small output, and a compensation.
#[saga_step(compensate = undo_reserve)]
async fn reserve(order: &str, seat: u32) -> Result<String, BenchError> {
    Ok(format!("{order}/{seat}"))
}

async fn undo_reserve(_: String) -> Result<(), BenchError> {
    Ok(())
}

const ROUNDS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn saga_of(store: &dyn Store, id: String, steps: u32) {
    Saga::new(id)
        .store(store)
        .run(|s| async move {
            for seat in 0..steps {
                black_box(s.step(reserve("order-7", seat)).await?);
            }
            Ok::<_, BenchError>(())
        })
        .await
        .expect("the saga runs");
}

/// Time per step of `sagas` sagas, and store writes per step.
async fn per_step<S: Store>(store: &FaultyStore<S>, sagas: u32, label: &str) -> (Duration, f64) {
    let mut samples = Vec::new();
    let mut n = 0u64;
    let mut writes = 0.0;
    for _ in 0..ROUNDS {
        let mut time = |steps: u32| {
            let store = &*store;
            let start_writes = store.saga_writes.load(Ordering::SeqCst);
            let ids: Vec<String> = (0..sagas)
                .map(|_| {
                    n += 1;
                    format!("{label}-{n}")
                })
                .collect();
            async move {
                let started = Instant::now();
                for id in ids {
                    saga_of(store, id, steps).await;
                }
                let writes = store.saga_writes.load(Ordering::SeqCst) - start_writes;
                (started.elapsed(), writes)
            }
        };
        let (one, one_writes) = time(1).await;
        let (nine, nine_writes) = time(9).await;
        samples.push(nine.saturating_sub(one) / (8 * sagas));
        writes = (nine_writes - one_writes) as f64 / f64::from(8 * sagas);
    }
    (median(samples), writes)
}

/// A minimal in-process log: (saga, step) → (name, arguments, output).
type RawLog = Mutex<HashMap<(u64, u32), (String, Vec<u8>, Option<Vec<u8>>)>>;

/// Two inserts per step into a mutex-guarded map.
fn raw_memory(steps: u32) -> Duration {
    let log = RawLog::default();
    let mut samples = Vec::new();
    for round in 0..ROUNDS as u64 {
        let started = Instant::now();
        for step in 0..steps {
            let args = br#"["order-7",3]"#.to_vec();
            log.lock()
                .unwrap()
                .insert((round, step), ("reserve".into(), args.clone(), None));
            log.lock().unwrap().insert(
                (round, step),
                ("reserve".into(), args, Some(br#""order-7/3""#.to_vec())),
            );
        }
        samples.push(started.elapsed() / steps);
    }
    median(samples)
}

/// Two durable `INSERT OR REPLACE` statements per step, as the log's table takes them.
fn raw_sqlite(path: &std::path::Path, steps: u32) -> Duration {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    connection
        .pragma_update(None, "synchronous", "FULL")
        .expect("full");
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS steps (saga TEXT NOT NULL, idx INTEGER NOT NULL,
               name TEXT NOT NULL, key TEXT NOT NULL, irreversible INTEGER NOT NULL,
               args BLOB NOT NULL, state TEXT NOT NULL, output BLOB, error TEXT,
               PRIMARY KEY (saga, idx)) WITHOUT ROWID;",
        )
        .expect("schema");
    let mut insert = connection
        .prepare(
            "INSERT OR REPLACE INTO steps (saga, idx, name, key, irreversible, args, state, output, error)
             VALUES (?1, ?2, 'reserve', ?3, 0, ?4, ?5, ?6, NULL)",
        )
        .expect("prepare");
    let key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let saga = format!("saga-{round}");
        let started = Instant::now();
        for step in 0..steps {
            let args = br#"["order-7",3]"#.as_slice();
            insert
                .execute(rusqlite::params![
                    saga,
                    step,
                    key,
                    args,
                    "started",
                    None::<Vec<u8>>
                ])
                .expect("intent");
            insert
                .execute(rusqlite::params![
                    saga,
                    step,
                    key,
                    args,
                    "done",
                    Some(br#""order-7/3""#.to_vec())
                ])
                .expect("output");
        }
        samples.push(started.elapsed() / steps);
    }
    median(samples)
}

/// Two `HSET`s per step (intent, then output) of the step's record under its saga's hash.
async fn raw_redis(connection: &ConnectionManager, steps: u32) -> Duration {
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let saga = format!("raw-saga-{round}");
        let started = Instant::now();
        for step in 0..steps {
            let field = step.to_string();
            let intent = r#"{"name":"reserve","args":["order-7",3],"state":"started"}"#;
            let output =
                r#"{"name":"reserve","args":["order-7",3],"state":"done","output":"order-7/3"}"#;
            for record in [intent, output] {
                let _: i64 = redis_cmd(connection, &["HSET", &saga, &field, record]).await;
            }
        }
        samples.push(started.elapsed() / steps);
    }
    median(samples)
}

/// The Redis row: time and store writes per step, the raw writes' time, and the server's
/// commands per saga of 2 steps (from `INFO commandstats`: how many of each, scripts
/// included); `None` when no `redis-server` can be started.
async fn redis_row() -> Option<(Duration, f64, Duration, String)> {
    let server = RedisServer::shared()?;
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_prefix(format!("bench-saga-{}:", std::process::id()));
    let store = FaultyStore::wrapping(store);
    let (per, writes) = per_step(&store, 100, "redis").await;
    let client = redis::Client::open(server.url()).expect("a url");
    let raw = ConnectionManager::new(client).await.expect("connect");
    let raw_per = raw_redis(&raw, 500).await;
    let _: () = redis_cmd(&raw, &["CONFIG", "RESETSTAT"]).await;
    let sagas = 100;
    for n in 0..sagas {
        saga_of(&store, format!("counted-{n}"), 2).await;
    }
    let counts = info_commandstats(&raw).await;
    let per_saga = counts
        .iter()
        .filter(|(name, _)| !name.starts_with("config") && !name.starts_with("info"))
        .map(|(name, (calls, _))| format!("{name} {:.1}", *calls as f64 / f64::from(sagas)))
        .collect::<Vec<_>>()
        .join(", ");
    Some((per, writes, raw_per, per_saga))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let folder = std::env::temp_dir().join(format!("idem-bench-saga-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a folder");

    let (memory, memory_writes) = runtime.block_on(async {
        let store = FaultyStore::wrapping(MemoryStore::new());
        per_step(&store, 2000, "memory").await
    });
    let raw_memory = raw_memory(20_000);

    let (sqlite, sqlite_writes) = runtime.block_on(async {
        let store = FaultyStore::wrapping(
            SqliteStore::open(folder.join("idem.db"))
                .await
                .expect("open"),
        );
        per_step(&store, 20, "sqlite").await
    });
    let raw_sqlite = raw_sqlite(&folder.join("raw.db"), 200);
    let _ = std::fs::remove_dir_all(&folder);
    let redis = runtime.block_on(redis_row());

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!();
    println!("| store | store writes per step | time per step | raw writes per step (2) | ratio |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| memory | {memory_writes:.2} | {memory:.2?} | {raw_memory:.2?} | {:.1}x |",
        ratio(memory, raw_memory)
    );
    println!(
        "| sqlite | {sqlite_writes:.2} | {sqlite:.2?} | {raw_sqlite:.2?} | {:.2}x |",
        ratio(sqlite, raw_sqlite)
    );
    match redis {
        Some((redis, redis_writes, raw_redis, per_saga)) => {
            println!(
                "| redis | {redis_writes:.2} | {redis:.2?} | {raw_redis:.2?} | {:.2}x |",
                ratio(redis, raw_redis)
            );
            println!();
            println!("Redis server commands per 2-step saga (scripts counted whole, and again by what they run): {per_saga}");
        }
        None => println!("| redis | — | — | — | no redis-server here: left out |"),
    }
}
