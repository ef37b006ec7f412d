//! Throughput of the Redis and PostgreSQL stores, each next to the raw commands the claim
//! protocol needs, sent in the same run, through the same kind of client, at the same
//! concurrency (1, 16 and 64 callers); the CPU time a call costs the caller's process and the
//! server; and the round trips a call costs on each.
//!
//! ```text
//! cargo bench --bench stores
//! ```
//!
//! Rows (a call returns a small serde struct; `callers` tasks call in a loop on a Tokio
//! multi-thread runtime of 2 workers; the servers run on the same machine):
//!
//! - idem, `fresh`: an `#[idempotent]` call with a new key each call (`ttl = "2s"`, lease
//!   10 s), so that results expire as fast as they are made and the store's purge works in
//!   its steady state;
//! - idem, `fresh-kept` (diagnostic): the same with the default TTL of a day, so that no purge
//!   finds anything to remove during the run;
//! - idem, `replay`: the same key every call, after one first call recorded the result;
//! - Redis raw, fresh: `SET k in_progress NX PX 10000`, then `SET k <result json> XX PX <ttl>`
//!   (2 round trips; the TTL is 2 s, or a day for `fresh-kept`); raw, replay: `GET k` and
//!   decoding the JSON (1 round trip). The raw rows have their own `ConnectionManager` (redis
//!   0.32) to the same server, with the settings the store gives its own (timeouts of 2 s to
//!   connect and 5 s per response; `IDEM_BENCH_RAW_DEFAULTS=1`: the crate's defaults);
//! - PostgreSQL raw, fresh: `INSERT INTO bench.raw … ON CONFLICT DO NOTHING`, then `UPDATE
//!   bench.raw SET status = 'completed', result = … WHERE key = $1`; raw, replay: `SELECT …
//!   FROM bench.raw WHERE key = $1`. `bench.raw` is made `LIKE bench.idem_records INCLUDING
//!   ALL` (same columns, same indexes). The raw statements run on THE SAME deadpool pool (16
//!   connections) as the store (`PostgresStore::with_pool(pool.clone()).schema("bench")`),
//!   one connection checkout per statement, as the store does (the body of a call runs
//!   between its two statements, holding no connection).
//!
//! Each figure is the median of 3 rounds of 2 s (after 0.3 s of warm-up each); the rounds of
//! idem and of its baseline alternate. The fresh rows stay bounded: idem's results expire
//! after 2 s and its stores purge them (Redis: every 64th result purges up to 64 expired
//! ones; Postgres: every 1024th starts a purge in the background), the raw Redis keys expire
//! natively, the `fresh-kept` records are flushed (Redis) after their rows, and the
//! PostgreSQL tables are truncated before each fresh row.
//!
//! CPU time per call: of this process and of the server (`redis-server`, or the postmaster
//! and all its children, with those that ended in the window), from `/proc`, over the
//! measured window, divided by the calls.
//!
//! Round trips are counted afterwards, one call at a time: on Redis with `MONITOR`, which
//! shows each command a client sent (`[0 127.0.0.1:port]`) apart from the commands a Lua
//! script ran (`[0 lua]`); on PostgreSQL with `pg_stat_database.xact_commit` of a database
//! used by nothing else (each statement outside a transaction is one transaction, and one
//! round trip: the statements are prepared once per connection and a pooled connection is
//! taken without a query), as the difference between 1100 and 100 calls.
//!
//! For a quick look: `IDEM_BENCH_ROUND_MS=500` (the length of a round), `IDEM_BENCH_CALLERS=64`
//! (or `1,16`), `IDEM_BENCH_ONLY=redis` (or `postgresql-replay`, …: the rows whose
//! `<store>-<call>` contains it; round trips are counted only for a whole store).

#[path = "common/call.rs"]
mod call;
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use idem::idempotent;
use idem::store::{PostgresStore, RedisStore, Store};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};
use redis::aio::ConnectionManager;

use call::{BenchError, Receipt};
use common::{info_commandstats, redis_cmd, Cpu};

/// The concurrencies of the rows.
const CALLERS: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;
const WARM_UP: Duration = Duration::from_millis(300);
/// The pool of the PostgreSQL rows, shared by idem and the raw statements.
const POOL_SIZE: usize = 16;
/// The lease and TTL of the raw fresh rows: idem's default lease, and the `ttl` of
/// `fresh_call`.
const LEASE_MS: i64 = 10_000;
const TTL_MS: i64 = 2_000;
/// The TTL of the replay rows' records, and of the `fresh-kept` rows: a day.
const DAY_MS: i64 = 24 * 3600 * 1000;
/// The issue's target: idem's throughput at least this share of the baseline's.
const TARGET: f64 = 0.85;

/// The concurrencies to run: `IDEM_BENCH_CALLERS=64` (or `1,16`) for a quick look.
fn callers() -> Vec<usize> {
    std::env::var("IDEM_BENCH_CALLERS")
        .ok()
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("IDEM_BENCH_CALLERS: numbers"))
                .collect()
        })
        .unwrap_or_else(|| CALLERS.to_vec())
}

fn receipt(n: u64) -> Receipt {
    Receipt {
        message_id: format!("msg-{n}"),
        amount_cents: 1999,
    }
}

/// A new key each call (`n` from a counter); results kept 2 s, then purged.
#[idempotent(skip = [store], store = store, ttl = "2s", name = "bench_fresh")]
async fn fresh_call(store: &dyn Store, n: u64) -> Result<Receipt, BenchError> {
    Ok(receipt(n))
}

/// The same, results kept a day: the diagnostic rows `fresh-kept`, where nothing expires
/// during the run, so that no purge has anything to remove.
#[idempotent(skip = [store], store = store, name = "bench_fresh_kept")]
async fn fresh_kept_call(store: &dyn Store, n: u64) -> Result<Receipt, BenchError> {
    Ok(receipt(n))
}

/// The same key every call (`n` = 0).
#[idempotent(skip = [store], store = store, name = "bench_replay")]
async fn replay_call(store: &dyn Store, n: u64) -> Result<Receipt, BenchError> {
    Ok(receipt(n))
}

/// The numbers of the fresh keys, idem's and raw, never repeated in a run.
static NEXT: AtomicU64 = AtomicU64::new(1);

const RAW_REPLAY_KEY: &str = "raw:replay";
const RAW_INSERT: &str = "INSERT INTO bench.raw
    (key, action, status, token, fingerprint, created_at, expires_at)
    VALUES ($1, 'bench_fresh', 'in_progress', $2, $3, clock_timestamp(),
            clock_timestamp() + $4::bigint * interval '1 millisecond')
    ON CONFLICT DO NOTHING";
const RAW_UPDATE: &str = "UPDATE bench.raw
    SET status = 'completed', outcome = 'ok', result = $2,
        expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
    WHERE key = $1";
const RAW_SELECT: &str = "SELECT status, token, fingerprint, outcome, result, expires_at
    FROM bench.raw WHERE key = $1";

/// What one caller does, over and over.
#[derive(Clone)]
enum Work {
    /// A fresh call, its result kept 2 s (or a day: `kept`).
    IdemFresh {
        store: Arc<dyn Store>,
        kept: bool,
    },
    IdemReplay(Arc<dyn Store>),
    /// `SET NX` and `SET XX`, the result kept `ttl_ms`.
    RedisRawFresh(ConnectionManager, i64),
    RedisRawReplay(ConnectionManager),
    /// `INSERT` and `UPDATE`, the result kept `ttl_ms`.
    PgRawFresh(Pool, i64),
    PgRawReplay(Pool),
}

impl Work {
    async fn call(&self) {
        match self {
            Work::IdemFresh { store, kept } => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let called = if *kept {
                    fresh_kept_call(&**store, n).await
                } else {
                    fresh_call(&**store, n).await
                };
                black_box(called.expect("a fresh call"));
            }
            Work::IdemReplay(store) => {
                black_box(replay_call(&**store, 0).await.expect("a replay"));
            }
            Work::RedisRawFresh(connection, ttl_ms) => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                redis_raw_fresh(connection, &format!("raw:{n:064x}"), n, *ttl_ms).await;
            }
            Work::RedisRawReplay(connection) => {
                let mut connection = connection.clone();
                let bytes: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(RAW_REPLAY_KEY)
                    .query_async(&mut connection)
                    .await
                    .expect("GET");
                let bytes = bytes.expect("the recorded result");
                black_box(serde_json::from_slice::<Receipt>(&bytes).expect("a receipt"));
            }
            Work::PgRawFresh(pool, ttl_ms) => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                pg_raw_fresh(pool, &format!("{n:064x}"), n, *ttl_ms).await;
            }
            Work::PgRawReplay(pool) => {
                let client = pool.get().await.expect("a connection");
                let select = client.prepare_cached(RAW_SELECT).await.expect("prepare");
                let row = client
                    .query_one(&select, &[&RAW_REPLAY_KEY])
                    .await
                    .expect("SELECT");
                let bytes: Vec<u8> = row.get(4);
                black_box(serde_json::from_slice::<Receipt>(&bytes).expect("a receipt"));
            }
        }
    }
}

/// `SET NX PX <lease>`, the body, `SET XX PX <ttl>`.
async fn redis_raw_fresh(connection: &ConnectionManager, key: &str, n: u64, ttl_ms: i64) {
    let mut connection = connection.clone();
    let claimed: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("in_progress")
        .arg("NX")
        .arg("PX")
        .arg(LEASE_MS)
        .query_async(&mut connection)
        .await
        .expect("SET NX");
    assert!(claimed.is_some(), "a fresh raw key was taken");
    let result = serde_json::to_vec(&receipt(n)).expect("json");
    let _: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(result)
        .arg("XX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(&mut connection)
        .await
        .expect("SET XX");
}

/// The first call of the raw replay rows.
async fn redis_first_raw_call(connection: &ConnectionManager) {
    let _: i64 = redis::cmd("DEL")
        .arg(RAW_REPLAY_KEY)
        .query_async(&mut connection.clone())
        .await
        .expect("DEL");
    redis_raw_fresh(connection, RAW_REPLAY_KEY, 0, DAY_MS).await;
}

/// `INSERT … ON CONFLICT DO NOTHING`, the body, `UPDATE`: a connection from the pool for each
/// statement, as the store takes one for its claim and one for its `complete`.
async fn pg_raw_fresh(pool: &Pool, key: &str, n: u64, ttl_ms: i64) {
    let token = i64::try_from(n).expect("a token");
    let fingerprint = [7u8; 32];
    {
        let client = pool.get().await.expect("a connection");
        let insert = client.prepare_cached(RAW_INSERT).await.expect("prepare");
        client
            .execute(&insert, &[&key, &token, &&fingerprint[..], &LEASE_MS])
            .await
            .expect("INSERT");
    }
    let result = serde_json::to_vec(&receipt(n)).expect("json");
    let client = pool.get().await.expect("a connection");
    let update = client.prepare_cached(RAW_UPDATE).await.expect("prepare");
    let updated = client
        .execute(&update, &[&key, &result, &ttl_ms])
        .await
        .expect("UPDATE");
    assert_eq!(updated, 1, "the raw row was recorded");
}

/// Whether the rows of `store` and `call` run: `IDEM_BENCH_ONLY=redis` (or `postgresql`,
/// `redis-replay`, …) runs only the rows whose `<store>-<call>` contains it.
fn wanted(store: &str, call: &str) -> bool {
    std::env::var("IDEM_BENCH_ONLY").map_or(true, |only| {
        format!("{store}-{call}")
            .to_lowercase()
            .contains(&only.to_lowercase())
    })
}

fn round_length() -> Duration {
    let ms = std::env::var("IDEM_BENCH_ROUND_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(2000);
    Duration::from_millis(ms)
}

/// What one round measured.
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    /// CPU µs per call of this process, and of the server.
    client_us: f64,
    server_us: f64,
}

/// One round: `callers` tasks call in a loop; calls per second over the measured window, and
/// the CPU time spent per call by this process and by the server over that window.
async fn round(work: &Work, callers: usize, server: Cpu) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (work, stop, done) = (work.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    work.call().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP).await;
    let (client, served) = (Cpu::ThisProcess.seconds(), server.seconds());
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(round_length()).await;
    let (after, elapsed) = (done.load(Ordering::Relaxed), started.elapsed());
    let (client, served) = (
        Cpu::ThisProcess.seconds() - client,
        server.seconds() - served,
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a caller panicked");
    }
    let calls = (after - before) as f64;
    Sample {
        rate: calls / elapsed.as_secs_f64(),
        client_us: client * 1e6 / calls,
        server_us: served * 1e6 / calls,
    }
}

/// The round of median throughput.
fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    sorted[sorted.len() / 2]
}

struct Row {
    store: &'static str,
    call: &'static str,
    callers: usize,
    idem: Vec<Sample>,
    raw: Vec<Sample>,
}

/// Rounds of idem and of the baseline, alternating (which goes first alternates too).
async fn compare(
    store: &'static str,
    call: &'static str,
    callers: usize,
    idem: &Work,
    raw: &Work,
    server: Cpu,
) -> Option<Row> {
    let (mut idem_rates, mut raw_rates) = (Vec::new(), Vec::new());
    if !wanted(store, call) {
        return None;
    }
    for r in 0..ROUNDS {
        if r % 2 == 0 {
            idem_rates.push(round(idem, callers, server).await);
            raw_rates.push(round(raw, callers, server).await);
        } else {
            raw_rates.push(round(raw, callers, server).await);
            idem_rates.push(round(idem, callers, server).await);
        }
    }
    let rates = |samples: &[Sample]| {
        samples
            .iter()
            .map(|s| s.rate.round() as u64)
            .collect::<Vec<_>>()
    };
    eprintln!(
        "{store} {call} x{callers}: idem {:?} raw {:?} calls/s",
        rates(&idem_rates),
        rates(&raw_rates)
    );
    Some(Row {
        store,
        call,
        callers,
        idem: idem_rates,
        raw: raw_rates,
    })
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A `ConnectionManager` with the settings `RedisStore::connect` gives its own (timeouts of
/// 2 s to connect and 5 s per response, one quick retry), so that the two differ only in what
/// they send. `IDEM_BENCH_RAW_DEFAULTS=1`: the crate's defaults instead (no timeouts).
async fn raw_connection(client: &redis::Client) -> ConnectionManager {
    if std::env::var("IDEM_BENCH_RAW_DEFAULTS").is_ok_and(|v| v == "1") {
        return client.get_connection_manager().await.expect("a connection");
    }
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_factor(2)
        .set_max_delay(200)
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(config)
        .await
        .expect("a connection")
}

async fn redis_rows(server: &RedisServer, rows: &mut Vec<Row>) {
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.expect("store"));
    let client = redis::Client::open(server.url()).expect("a client");
    let raw = raw_connection(&client).await;

    for (call, kept, ttl_ms) in [("fresh", false, TTL_MS), ("fresh-kept", true, DAY_MS)] {
        for callers in callers() {
            rows.extend(
                compare(
                    "Redis",
                    call,
                    callers,
                    &Work::IdemFresh {
                        store: store.clone(),
                        kept,
                    },
                    &Work::RedisRawFresh(raw.clone(), ttl_ms),
                    Cpu::Redis(server.port()),
                )
                .await,
            );
        }
    }
    // The records kept a day: gone before the next rows.
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut raw.clone())
        .await
        .expect("FLUSHDB");

    // The first calls of the replay rows.
    replay_call(&*store, 0).await.expect("the first call");
    redis_first_raw_call(&raw).await;
    for callers in callers() {
        rows.extend(
            compare(
                "Redis",
                "replay",
                callers,
                &Work::IdemReplay(store.clone()),
                &Work::RedisRawReplay(raw.clone()),
                Cpu::Redis(server.port()),
            )
            .await,
        );
    }
}

/// The commands the server ran while `calls` ran, from `MONITOR`: by name, those sent by a
/// client (round trips) and those run by Lua scripts.
struct Monitored {
    sent: BTreeMap<String, u64>,
    in_scripts: BTreeMap<String, u64>,
}

impl Monitored {
    fn describe(&self, calls: u64) -> String {
        let per_call = |counts: &BTreeMap<String, u64>| {
            counts
                .iter()
                .map(|(name, n)| format!("{name} {:.2}", *n as f64 / calls as f64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sent: u64 = self.sent.values().sum();
        let mut text = format!(
            "{:.2} round trips per call ({})",
            sent as f64 / calls as f64,
            per_call(&self.sent)
        );
        if !self.in_scripts.is_empty() {
            text += &format!("; in scripts: {}", per_call(&self.in_scripts));
        }
        text
    }
}

const MARK: &str = "idem-bench-mark";

async fn monitored<F: std::future::Future<Output = ()>>(
    server: &RedisServer,
    marker: &ConnectionManager,
    calls: F,
) -> Monitored {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.write_all(b"MONITOR\r\n").expect("MONITOR");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("+OK");
    assert!(line.starts_with("+OK"), "MONITOR answered {line:?}");
    let reading = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut marks = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("a MONITOR line") == 0 {
                break;
            }
            if line.contains(MARK) {
                marks += 1;
                if marks == 2 {
                    break;
                }
            } else if marks == 1 {
                lines.push(line);
            }
        }
        lines
    });
    let mark = || async {
        let _: String = redis::cmd("ECHO")
            .arg(MARK)
            .query_async(&mut marker.clone())
            .await
            .expect("ECHO");
    };
    mark().await;
    calls.await;
    mark().await;
    let lines = reading.join().expect("the MONITOR reader");
    let mut monitored = Monitored {
        sent: BTreeMap::new(),
        in_scripts: BTreeMap::new(),
    };
    for line in lines {
        // `+1700000000.123456 [0 127.0.0.1:40000] "EVALSHA" "…" …` or `[0 lua] "HMGET" …`.
        let Some((client, command)) = line.split_once("] \"") else {
            continue;
        };
        let name = command.split('"').next().unwrap_or("").to_lowercase();
        let counts = if client.ends_with(" lua") {
            &mut monitored.in_scripts
        } else {
            &mut monitored.sent
        };
        *counts.entry(name).or_default() += 1;
    }
    monitored
}

async fn redis_round_trips(server: &RedisServer) -> Vec<(String, String)> {
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&server.url())
            .await
            .expect("store")
            .with_prefix("count:"),
    );
    let client = redis::Client::open(server.url()).expect("a client");
    let raw = raw_connection(&client).await;
    let marker = client.get_connection_manager().await.expect("a connection");
    let mut found = Vec::new();
    const N: u64 = 1000;

    // Replays (the scripts are loaded by the first calls).
    replay_call(&*store, 0).await.expect("the first call");
    replay_call(&*store, 0).await.expect("a replay");
    let idem = monitored(server, &marker, async {
        for _ in 0..N {
            Work::IdemReplay(store.clone()).call().await;
        }
    })
    .await;
    found.push(("Redis, idem replay".into(), idem.describe(N)));
    redis_first_raw_call(&raw).await;
    let raw_replay = monitored(server, &marker, async {
        for _ in 0..N {
            Work::RedisRawReplay(raw.clone()).call().await;
        }
    })
    .await;
    found.push(("Redis, raw replay".into(), raw_replay.describe(N)));

    // Fresh calls in the steady state: as many results expire as are made. 1280 results,
    // left to expire, then 1280 fresh calls counted (20 of them purge up to 64 each).
    const FRESH: u64 = 1280;
    let fresh = Work::IdemFresh {
        store: store.clone(),
        kept: false,
    };
    for _ in 0..FRESH {
        fresh.call().await;
    }
    tokio::time::sleep(Duration::from_millis(TTL_MS as u64 + 300)).await;
    let idem = monitored(server, &marker, async {
        for _ in 0..FRESH {
            fresh.call().await;
        }
    })
    .await;
    found.push((
        "Redis, idem fresh (steady state: results expire as fast as they come)".into(),
        idem.describe(FRESH),
    ));
    let raw_fresh = monitored(server, &marker, async {
        for _ in 0..FRESH {
            Work::RedisRawFresh(raw.clone(), TTL_MS).call().await;
        }
    })
    .await;
    found.push(("Redis, raw fresh".into(), raw_fresh.describe(FRESH)));

    // The server's time inside the commands: INFO commandstats over the same passes, then
    // (fresh calls) the share of each script, from SLOWLOG.
    let replays = || async {
        for _ in 0..N {
            Work::IdemReplay(store.clone()).call().await;
        }
    };
    let raw_replays = || async {
        for _ in 0..N {
            Work::RedisRawReplay(raw.clone()).call().await;
        }
    };
    let fresh_calls = || async {
        for _ in 0..FRESH {
            fresh.call().await;
        }
    };
    let raw_fresh_calls = || async {
        for _ in 0..FRESH {
            Work::RedisRawFresh(raw.clone(), TTL_MS).call().await;
        }
    };
    let stats = command_stats(&marker, replays()).await;
    found.push((
        "Redis, idem replay, server time".into(),
        describe_stats(&stats, N),
    ));
    let stats = command_stats(&marker, raw_replays()).await;
    found.push((
        "Redis, raw replay, server time".into(),
        describe_stats(&stats, N),
    ));
    tokio::time::sleep(Duration::from_millis(TTL_MS as u64 + 300)).await;
    let stats = command_stats(&marker, fresh_calls()).await;
    found.push((
        "Redis, idem fresh, server time".into(),
        describe_stats(&stats, FRESH),
    ));
    let stats = command_stats(&marker, raw_fresh_calls()).await;
    found.push((
        "Redis, raw fresh, server time".into(),
        describe_stats(&stats, FRESH),
    ));
    tokio::time::sleep(Duration::from_millis(TTL_MS as u64 + 300)).await;
    let scripts = script_times(&marker, fresh_calls()).await;
    found.push((
        "Redis, idem fresh, time of each script (SLOWLOG)".into(),
        describe_scripts(&scripts, FRESH),
    ));
    found
}

fn text_of(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

/// `INFO commandstats` over `calls` (after `CONFIG RESETSTAT`): by command, (calls, µs),
/// without the commands sent to measure (`CONFIG`, `INFO`, the `ECHO` marks).
async fn command_stats<F: std::future::Future<Output = ()>>(
    connection: &ConnectionManager,
    calls: F,
) -> BTreeMap<String, (u64, u64)> {
    let _: () = redis_cmd(connection, &["CONFIG", "RESETSTAT"]).await;
    calls.await;
    let mut stats = info_commandstats(connection).await;
    stats.retain(|name, _| {
        !(matches!(name.as_str(), "config" | "info" | "echo") || name.starts_with("config|"))
    });
    stats
}

/// What the client sent, per call, with the server's time inside it; then the commands the
/// scripts ran.
fn describe_stats(stats: &BTreeMap<String, (u64, u64)>, calls: u64) -> String {
    const SENT: [&str; 5] = ["evalsha", "get", "set", "zrange", "time"];
    let per_call =
        |(count, micros): (u64, u64)| (count as f64 / calls as f64, micros as f64 / calls as f64);
    let mut sent = Vec::new();
    let mut inner = Vec::new();
    let mut total = 0.0;
    for (name, &counts) in stats {
        let (count, micros) = per_call(counts);
        if SENT.contains(&name.as_str()) && !(name == "time" && stats.contains_key("evalsha")) {
            total += micros;
            sent.push(format!("{name} × {count:.2}: {micros:.1} µs"));
        } else {
            inner.push(format!("{name} × {count:.2}: {micros:.1} µs"));
        }
    }
    let mut text = format!(
        "{total:.1} µs per call inside commands ({})",
        sent.join(", ")
    );
    if !inner.is_empty() {
        text += &format!("; of which in scripts: {}", inner.join(", "));
    }
    text
}

/// The time of each of the store's scripts over `calls` (`SLOWLOG` with a threshold of 0 µs),
/// told apart by their numbers of keys and arguments: (runs, µs). Under SLOWLOG every
/// command a script runs is logged too, which makes the scripts slower than without it: the
/// shares are what this is for.
async fn script_times<F: std::future::Future<Output = ()>>(
    connection: &ConnectionManager,
    calls: F,
) -> BTreeMap<String, (u64, u64)> {
    let _: () = redis_cmd(connection, &["CONFIG", "SET", "slowlog-max-len", "100000"]).await;
    let _: () = redis_cmd(
        connection,
        &["CONFIG", "SET", "slowlog-log-slower-than", "0"],
    )
    .await;
    let _: () = redis_cmd(connection, &["SLOWLOG", "RESET"]).await;
    calls.await;
    let _: () = redis_cmd(
        connection,
        &["CONFIG", "SET", "slowlog-log-slower-than", "10000"],
    )
    .await;
    let logged: redis::Value = redis_cmd(connection, &["SLOWLOG", "GET", "-1"]).await;
    let _: () = redis_cmd(connection, &["SLOWLOG", "RESET"]).await;
    let _: () = redis_cmd(connection, &["CONFIG", "SET", "slowlog-max-len", "128"]).await;
    let redis::Value::Array(entries) = logged else {
        panic!("SLOWLOG GET answered {logged:?}");
    };
    let mut times = BTreeMap::new();
    for entry in entries {
        // [id, timestamp, µs, [command, args…], client address, client name]; the commands
        // a script runs have the address `?:0`.
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let (Some(redis::Value::Int(micros)), Some(redis::Value::Array(args))) =
            (fields.get(2), fields.get(3))
        else {
            continue;
        };
        if fields.get(4).map(text_of).as_deref() == Some("?:0") {
            continue;
        }
        let words: Vec<String> = args.iter().map(text_of).collect();
        let name = match words.first().map(|w| w.to_lowercase()).as_deref() {
            Some("evalsha") => match (words.get(2).map(String::as_str), words.len()) {
                // EVALSHA, the hash, the number of keys, the keys, the arguments.
                (Some("3"), 11) => "claim",
                (Some("3"), 10) => "complete",
                _ => "other script",
            },
            Some("zrange") => "zrange",
            Some("time") => "time",
            _ => continue,
        };
        let slot = times.entry(name.to_owned()).or_insert((0u64, 0u64));
        slot.0 += 1;
        slot.1 += u64::try_from(*micros).unwrap_or(0);
    }
    times
}

fn describe_scripts(times: &BTreeMap<String, (u64, u64)>, calls: u64) -> String {
    let total: u64 = times.values().map(|t| t.1).sum();
    let parts: Vec<String> = times
        .iter()
        .map(|(name, (count, micros))| {
            format!(
                "{name} × {:.2}: {:.0} % ({:.1} µs each)",
                *count as f64 / calls as f64,
                *micros as f64 * 100.0 / total as f64,
                *micros as f64 / *count as f64
            )
        })
        .collect();
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn pool(url: &str) -> Pool {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .build()
        .expect("a pool")
}

/// The store on `pool` (schema `bench`), and the raw table next to its records.
async fn pg_setup(pool: &Pool) -> Arc<dyn Store> {
    let store = PostgresStore::with_pool(pool.clone())
        .schema("bench")
        .connect()
        .await
        .expect("store");
    let client = pool.get().await.expect("a connection");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench.raw (LIKE bench.idem_records INCLUDING ALL)",
        )
        .await
        .expect("the raw table");
    Arc::new(store)
}

async fn pg_sql(pool: &Pool, sql: &str) {
    let client = pool.get().await.expect("a connection");
    client.batch_execute(sql).await.expect(sql);
}

async fn pg_first_calls(store: &dyn Store, pool: &Pool) {
    replay_call(store, 0).await.expect("the first call");
    pg_sql(pool, "DELETE FROM bench.raw WHERE key = 'raw:replay'").await;
    pg_raw_fresh(pool, RAW_REPLAY_KEY, 0, DAY_MS).await;
}

async fn postgres_rows(server: &PostgresServer, rows: &mut Vec<Row>) {
    let pool = pool(&server.url());
    let store = pg_setup(&pool).await;
    for (call, kept, ttl_ms) in [("fresh", false, TTL_MS), ("fresh-kept", true, DAY_MS)] {
        for callers in callers() {
            if wanted("PostgreSQL", call) {
                pg_sql(&pool, "TRUNCATE bench.idem_records, bench.raw").await;
            }
            rows.extend(
                compare(
                    "PostgreSQL",
                    call,
                    callers,
                    &Work::IdemFresh {
                        store: store.clone(),
                        kept,
                    },
                    &Work::PgRawFresh(pool.clone(), ttl_ms),
                    Cpu::Postgres(server.port()),
                )
                .await,
            );
        }
    }
    pg_first_calls(&*store, &pool).await;
    for callers in callers() {
        rows.extend(
            compare(
                "PostgreSQL",
                "replay",
                callers,
                &Work::IdemReplay(store.clone()),
                &Work::PgRawReplay(pool.clone()),
                Cpu::Postgres(server.port()),
            )
            .await,
        );
    }
}

/// Committed and rolled-back transactions of the database `roundtrips` so far, as reported.
fn transactions(server: &PostgresServer) -> (i64, i64) {
    let answer = server
        .sql("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = 'roundtrips'")
        .expect("pg_stat_database");
    let (commit, rollback) = answer.trim().split_once('|').expect("two numbers");
    (
        commit.parse().expect("a number"),
        rollback.parse().expect("a number"),
    )
}

#[derive(Clone, Copy)]
enum PgCall {
    IdemReplay,
    RawReplay,
    IdemFresh,
    RawFresh,
}

/// The transactions (committed, rolled back) of `n` calls of `kind`, one at a time, on a
/// pool and a store of their own, closed at the end: a backend reports its counts at most
/// once a second, and at the latest when it exits.
async fn counted(server: &PostgresServer, url: &str, kind: PgCall, n: u64) -> (i64, i64) {
    let (commit, rollback) = transactions(server);
    {
        let pool = pool(url);
        let store = pg_setup(&pool).await;
        let work = match kind {
            PgCall::IdemReplay => Work::IdemReplay(store),
            PgCall::RawReplay => Work::PgRawReplay(pool.clone()),
            PgCall::IdemFresh => Work::IdemFresh { store, kept: false },
            PgCall::RawFresh => Work::PgRawFresh(pool.clone(), TTL_MS),
        };
        for _ in 0..n {
            work.call().await;
        }
        // A background purge holds a clone of the store until it is done.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (commit_after, rollback_after) = transactions(server);
    (commit_after - commit, rollback_after - rollback)
}

/// The server's time per call in each statement of `n` calls of `kind`, from its log with
/// `log_min_duration_statement = 0` for the database `roundtrips`: bind and execute, so
/// neither the network nor the commit (its WAL flush) is in it.
async fn statement_times(server: &PostgresServer, url: &str, kind: PgCall, n: u64) -> String {
    let log = server.folder().join("server.log");
    server
        .sql("ALTER DATABASE roundtrips SET log_min_duration_statement = 0")
        .expect("log durations");
    let from;
    {
        let pool = pool(url);
        let store = pg_setup(&pool).await;
        let work = match kind {
            PgCall::IdemReplay => Work::IdemReplay(store),
            PgCall::RawReplay => Work::PgRawReplay(pool.clone()),
            PgCall::IdemFresh => Work::IdemFresh { store, kept: false },
            PgCall::RawFresh => Work::PgRawFresh(pool.clone(), TTL_MS),
        };
        for _ in 0..20 {
            work.call().await;
        }
        from = std::fs::metadata(&log).map_or(0, |m| m.len());
        for _ in 0..n {
            work.call().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server
        .sql("ALTER DATABASE roundtrips RESET log_min_duration_statement")
        .expect("stop logging durations");
    let bytes = std::fs::read(&log).unwrap_or_default();
    let text =
        String::from_utf8_lossy(&bytes[usize::try_from(from).unwrap_or(0).min(bytes.len())..]);
    // `… LOG:  duration: 0.051 ms  execute s3: WITH cur AS (`
    let mut times: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("LOG:  duration: ") else {
            continue;
        };
        let Some((ms, rest)) = rest.split_once(" ms  ") else {
            continue;
        };
        let Some((_, statement)) = rest.split_once(": ") else {
            continue;
        };
        let statement = match statement {
            s if s.starts_with("WITH cur AS") => "claim",
            s if s.starts_with("WITH done AS") => "complete",
            s if s.starts_with("WITH gone AS") => "purge",
            s if s.starts_with("INSERT INTO bench.raw") => "raw INSERT",
            s if s.starts_with("UPDATE bench.raw") => "raw UPDATE",
            s if s.starts_with("SELECT status, token") => "raw SELECT",
            _ => "other",
        };
        let slot = times.entry(statement).or_insert((0, 0.0));
        slot.0 += 1;
        slot.1 += ms.parse::<f64>().unwrap_or(0.0);
    }
    let total: f64 = times.values().map(|t| t.1).sum();
    let parts: Vec<String> = times
        .iter()
        .map(|(name, (_, ms))| format!("{name} {:.1} µs", ms * 1000.0 / n as f64))
        .collect();
    format!(
        "{:.1} µs in statements (bind + execute) per call: {}",
        total * 1000.0 / n as f64,
        parts.join(", ")
    )
}

async fn postgres_round_trips(server: &PostgresServer) -> Vec<(String, String)> {
    let exists = server
        .sql("SELECT count(*) FROM pg_database WHERE datname = 'roundtrips'")
        .expect("pg_database");
    if exists.trim() == "0" {
        server
            .sql("CREATE DATABASE roundtrips")
            .expect("CREATE DATABASE");
    }
    let url = format!(
        "{}/roundtrips",
        server.url().strip_suffix("/postgres").expect("a URL")
    );
    {
        let pool = pool(&url);
        let store = pg_setup(&pool).await;
        pg_first_calls(&*store, &pool).await;
    }
    let mut found = Vec::new();
    let kinds = [
        ("PostgreSQL, idem replay", PgCall::IdemReplay),
        ("PostgreSQL, raw replay", PgCall::RawReplay),
        ("PostgreSQL, idem fresh", PgCall::IdemFresh),
        ("PostgreSQL, raw fresh", PgCall::RawFresh),
    ];
    for (name, kind) in kinds {
        found.push((
            format!("{name}, server time per call"),
            statement_times(server, &url, kind, 1000).await,
        ));
    }
    // The difference between 1100 calls and 100 calls, each on a new pool: what opening the
    // pool, checking the schema and preparing the statements cost cancels out.
    for (name, kind) in kinds {
        let (few, few_rolled_back) = counted(server, &url, kind, 100).await;
        let (many, many_rolled_back) = counted(server, &url, kind, 1100).await;
        found.push((
            name.into(),
            format!(
                "{:.3} statements (committed transactions) per call; {} rolled back",
                (many - few) as f64 / 1000.0,
                few_rolled_back + many_rolled_back
            ),
        ));
    }
    found
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rows = Vec::new();
    let mut trips = Vec::new();
    runtime.block_on(async {
        match RedisServer::shared() {
            Some(server) => {
                redis_rows(server, &mut rows).await;
                if wanted("Redis", "") {
                    trips.extend(redis_round_trips(server).await);
                }
            }
            None => println!("redis-server is not installed: the Redis rows are skipped"),
        }
        match PostgresServer::shared() {
            Some(server) => {
                postgres_rows(server, &mut rows).await;
                if wanted("PostgreSQL", "") {
                    trips.extend(postgres_round_trips(server).await);
                }
            }
            None => println!("PostgreSQL is not installed: the PostgreSQL rows are skipped"),
        }
    });

    println!();
    println!("| store | call | callers | idem calls/s | raw calls/s | idem / raw | ≥ 85 % |");
    println!("|---|---|---:|---:|---:|---:|:---:|");
    for row in &rows {
        let (idem, raw) = (median(&row.idem).rate, median(&row.raw).rate);
        let ratio = idem / raw;
        println!(
            "| {} | {} | {} | {idem:.0} | {raw:.0} | {:.0} % | {} |",
            row.store,
            row.call,
            row.callers,
            ratio * 100.0,
            if ratio >= TARGET { "yes" } else { "**no**" }
        );
    }
    println!();
    println!(
        "CPU time per call (µs, median round): this process (callers and client) + the server:"
    );
    println!();
    println!("| store | call | callers | idem: client + server | raw: client + server |");
    println!("|---|---|---:|---:|---:|");
    for row in &rows {
        let (idem, raw) = (median(&row.idem), median(&row.raw));
        println!(
            "| {} | {} | {} | {:.1} + {:.1} = {:.1} | {:.1} + {:.1} = {:.1} |",
            row.store,
            row.call,
            row.callers,
            idem.client_us,
            idem.server_us,
            idem.client_us + idem.server_us,
            raw.client_us,
            raw.server_us,
            raw.client_us + raw.server_us,
        );
    }
    println!();
    println!("Rounds (calls/s), idem | raw:");
    println!();
    for row in &rows {
        let show = |samples: &[Sample]| {
            samples
                .iter()
                .map(|s| format!("{:.0}", s.rate))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "- {} {} x{}: {} | {}",
            row.store,
            row.call,
            row.callers,
            show(&row.idem),
            show(&row.raw)
        );
    }
    println!();
    println!("One call at a time: round trips, and the server's time inside them:");
    println!();
    for (what, count) in trips {
        println!("- {what}: {count}");
    }
}
