//! What a recorded call costs each store as work grows: the bytes one completed record takes,
//! and the server CPU time one fresh call and one replay take; then, from those, an on-paper
//! sizing of a fleet at 10k and 100k tool calls per second.
//!
//! ```text
//! cargo bench --bench footprint
//! IDEM_FOOTPRINT_RECORDS=20000 cargo bench --bench footprint   # a quicker run
//! ```
//!
//! The call is a typical small tool call made through `#[idempotent(ttl = "24h")]` on the real
//! store: three arguments (`customer_id: &str`, `order_id: &str`, `amount_cents: u64`), a
//! two-field serde result (`{"message_id": "msg-123", "amount_cents": 1999}`). Each store gets
//! `IDEM_FOOTPRINT_RECORDS` (default 100,000) fresh calls, each a new order, so that many
//! completed records (the usual state of a record), then a quarter as many replays of
//! recorded orders spread over them (so the mix is 80 % fresh, 20 % replays). Callers are
//! Tokio tasks on a runtime of 2 workers: 64 on Redis (one multiplexed connection), 16 on
//! PostgreSQL (a pool of 16) and on SQLite (one writer).
//!
//! Bytes per record:
//!
//! - Redis (`RedisServer::shared()`, prefix `idem:`): `MEMORY USAGE … SAMPLES 0` of the record
//!   strings `idem:{<bucket>}:<key>:r`, averaged over up to 10,000 of them (the keys come from
//!   `idem::current_key()` in the body); the token counter `idem:tokens` (one key for all
//!   records); and the growth of `INFO memory`'s `used_memory` over the load, per
//!   record, which also holds what `MEMORY USAGE` leaves out (the keyspace's and the expiry
//!   dictionary's entries and tables);
//! - PostgreSQL (`PostgresServer::shared()`, schema `footprint`): the average
//!   `pg_column_size(row)` of the records; the growth of the table (heap), of its two indexes
//!   and `pg_total_relation_size` per record, as written (the `complete` is an `UPDATE` that
//!   leaves a dead version of each row and new index entries: `pgstattuple` says how much)
//!   and after `VACUUM FULL` (compact); the WAL written per fresh call and per replay
//!   (`pg_current_wal_lsn`); per fresh call, the commits (`pg_stat_database.xact_commit`),
//!   the transaction ids handed out (`txid_current()`: the transactions that write), the WAL
//!   syncs and full-page images (`pg_stat_wal`), read once the store's connections have
//!   closed, so that their counts are reported; and the checkpoints in that window;
//! - SQLite (`SqliteStore::open`, WAL mode): the growth of the `.db` file plus its `-wal`
//!   after `PRAGMA wal_checkpoint(TRUNCATE)`, per record, and the share of the table and of
//!   its expiry index (`dbstat`). The file is put in `/dev/shm` (tmpfs, where an `fsync`
//!   costs nothing) so that the load is quick: the bytes do not depend on the disk.
//!   `IDEM_FOOTPRINT_SQLITE_DIR` puts it elsewhere.
//!
//! Server CPU per call:
//!
//! - Redis: `INFO commandstats` (after `CONFIG RESETSTAT`) over the load of fresh calls and
//!   over the replays: the time inside every command per call (an upper bound where scripts
//!   run: their own commands count inside the `EVALSHA` and again by name); and the CPU time of the `redis-server` process (`/proc`, user +
//!   system: the event loop, the sockets and the commands) over the same window, per call;
//! - PostgreSQL: the CPU time of the postmaster and all its children (backends, WAL writer,
//!   checkpointer, autovacuum; with those that ended in the window, which the postmaster's
//!   children's time holds) over the window, per call. `pg_stat_statements` would need
//!   `shared_preload_libraries` and a restart, which `PostgresServer` does not offer (it
//!   takes no extra settings), so the `/proc` figure is the one there is;
//! - SQLite is embedded: the CPU time of this whole process (the callers and the store) per
//!   call.
//!
//! The servers run on the same 2 cores as the callers, over loopback. The sizing after the
//! tables states its assumptions with its numbers. `IDEM_FOOTPRINT_ONLY=redis` (or
//! `postgresql`, `sqlite`) runs one store.

#[path = "common/call.rs"]
mod call;
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem::idempotent;
use idem::store::{PostgresStore, RedisStore, SqliteStore, Store};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};
use redis::aio::ConnectionManager;

use call::{BenchError, Receipt};
use common::{info_commandstats, redis_cmd, Cpu};

/// How many records each store gets unless `IDEM_FOOTPRINT_RECORDS` says.
const DEFAULT_RECORDS: u64 = 100_000;
/// How many Redis records `MEMORY USAGE` is asked about.
const SAMPLE: usize = 10_000;
/// Replays per fresh call: 20 % of all calls are replays.
const REPLAY_SHARE: f64 = 0.2;
const REDIS_CALLERS: usize = 64;
const POOL_CALLERS: usize = 16;

// The on-paper fleet.
const LOADS: [f64; 2] = [10_000.0, 100_000.0];
const FRESH_SHARE: f64 = 0.8;
const KEPT_SECONDS: f64 = 86_400.0;
/// A core gives 1e6 µs of CPU per second; run at most at this share of it.
const CORE_BUDGET: f64 = 0.5;
/// What one Redis shard holds at most (its `maxmemory`), in bytes.
const SHARD_MEMORY: f64 = 32.0 * GIB;
/// The cores of one PostgreSQL instance.
const PG_CORES: f64 = 16.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The name of `key`'s record under `prefix` since Redis layout 2,
/// `<prefix>{<bucket>}:<key>:r`, the bucket being the key's first 3 hex digits
/// (`store/redis/layout.rs`).
fn record_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{{{}}}:{key}:r", &key[..3])
}

/// The bodies that ran: a replay must not add one.
static BODIES: AtomicU64 = AtomicU64::new(0);
/// The keys of the first bodies of a load (for `MEMORY USAGE`).
static SAMPLED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The typical small tool call.
#[idempotent(skip = [store], store = store, ttl = "24h", name = "send_receipt")]
async fn send_receipt(
    store: &dyn Store,
    customer_id: &str,
    order_id: &str,
    amount_cents: u64,
) -> Result<Receipt, BenchError> {
    BODIES.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = idem::current_key() {
        let mut sampled = SAMPLED.lock().expect("the sample");
        if sampled.len() < SAMPLE {
            sampled.push(key.to_string());
        }
    }
    let n = order_id.trim_start_matches("order-");
    Ok(Receipt {
        message_id: format!("msg-{n}"),
        amount_cents,
    })
}

/// The call of order `n`, always with the same arguments for the same `n`.
async fn call_order(store: &dyn Store, n: u64) {
    let customer = format!("customer-{}", n % 997);
    let order = format!("order-{n}");
    let receipt = send_receipt(store, &customer, &order, 1000 + n % 1000)
        .await
        .expect("a call");
    black_box(receipt);
}

/// Orders `1..=records` (fresh), or `replays` calls of orders spread over them.
#[derive(Clone, Copy)]
enum Pass {
    Fresh { records: u64 },
    Replay { records: u64, replays: u64 },
}

impl Pass {
    fn calls(self) -> u64 {
        match self {
            Pass::Fresh { records } => records,
            Pass::Replay { replays, .. } => replays,
        }
    }

    fn order(self, i: u64) -> u64 {
        match self {
            Pass::Fresh { .. } => 1 + i,
            Pass::Replay { records, .. } => 1 + (i * 7919 + 13) % records,
        }
    }
}

/// `callers` tasks make the calls of `pass` until none is left.
async fn drive(store: &Arc<dyn Store>, callers: usize, pass: Pass) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pass.calls() {
                        break;
                    }
                    call_order(&*store, pass.order(i)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a caller panicked");
    }
}

/// Runs `pass`, and checks that fresh calls ran their bodies and replays did not.
async fn run_pass(store: &Arc<dyn Store>, callers: usize, pass: Pass) -> Duration {
    let bodies = BODIES.load(Ordering::Relaxed);
    let started = Instant::now();
    drive(store, callers, pass).await;
    let elapsed = started.elapsed();
    let ran = BODIES.load(Ordering::Relaxed) - bodies;
    match pass {
        Pass::Fresh { records } => assert_eq!(ran, records, "every fresh call ran its body"),
        Pass::Replay { .. } => assert_eq!(ran, 0, "a replay ran a body"),
    }
    elapsed
}

/// What a measured pass cost: server (or process) CPU µs per call, and calls per second.
#[derive(Clone, Copy, Default)]
struct Cost {
    cpu_us: f64,
    rate: f64,
    /// Redis only: µs per call inside the commands (`INFO commandstats`).
    commands_us: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Redis

/// The field `name` of an `INFO` answer.
fn info_field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO"))
}

/// µs per call inside every command (an upper bound: `commandstats` counts a script's own
/// commands inside its `EVALSHA` and again by their names; a claim or replay that sends native
/// commands only is exact), and every command per call (for the log).
fn describe_stats(stats: &BTreeMap<String, (u64, u64)>, calls: u64) -> (f64, String) {
    let calls = calls as f64;
    let sent: u64 = stats.values().map(|(_, usec)| usec).sum();
    let all = stats
        .iter()
        .map(|(name, (count, usec))| {
            format!(
                "{name} × {:.3}: {:.2} µs",
                *count as f64 / calls,
                *usec as f64 / calls
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    (sent as f64 / calls, all)
}

/// Runs `pass` on Redis, measuring the commands' time and the server's CPU time.
async fn redis_measured(
    store: &Arc<dyn Store>,
    admin: &ConnectionManager,
    port: u16,
    pass: Pass,
    notes: &mut Vec<String>,
    what: &str,
) -> Cost {
    let _: () = redis_cmd(admin, &["CONFIG", "RESETSTAT"]).await;
    let cpu = Cpu::Redis(port).seconds();
    let elapsed = run_pass(store, REDIS_CALLERS, pass).await;
    let cpu = Cpu::Redis(port).seconds() - cpu;
    let mut stats = info_commandstats(admin).await;
    stats.retain(|name, _| !matches!(name.as_str(), "info" | "config|resetstat"));
    let calls = pass.calls() as f64;
    let (commands_us, all) = describe_stats(&stats, pass.calls());
    notes.push(format!("Redis, {what}, commands per call: {all}"));
    Cost {
        cpu_us: cpu * 1e6 / calls,
        rate: calls / elapsed.as_secs_f64(),
        commands_us: Some(commands_us),
    }
}

struct RedisFigures {
    record_hash: f64,
    hash_encoding: String,
    tokens: f64,
    used_memory: f64,
    fresh: Cost,
    replay: Cost,
}

async fn redis(server: &RedisServer, records: u64, notes: &mut Vec<String>) -> RedisFigures {
    let store = RedisStore::connect(&server.url()).await.expect("the store");
    let prefix = store.prefix().to_owned();
    let store: Arc<dyn Store> = Arc::new(store);
    let client = redis::Client::open(server.url()).expect("a client");
    let admin = client.get_connection_manager().await.expect("a connection");
    let _: () = redis_cmd(&admin, &["FLUSHALL"]).await;

    // The first call loads the scripts and makes the token counter.
    call_order(&*store, 0).await;
    SAMPLED.lock().expect("the sample").clear();
    let memory = |info: String| info_field(&info, "used_memory");
    let before = memory(redis_cmd(&admin, &["INFO", "memory"]).await);
    let fresh = redis_measured(
        &store,
        &admin,
        server.port(),
        Pass::Fresh { records },
        notes,
        "fresh",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = memory(redis_cmd(&admin, &["INFO", "memory"]).await);

    let sampled = std::mem::take(&mut *SAMPLED.lock().expect("the sample"));
    let mut total = 0i64;
    let mut states = BTreeMap::<String, u64>::new();
    for chunk in sampled.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            let hash = record_key(&prefix, key);
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(&hash)
                .arg("SAMPLES")
                .arg(0);
            // The record's first byte is its status (`c`: completed).
            pipe.cmd("GETRANGE").arg(&hash).arg(0).arg(0);
        }
        let answers: Vec<redis::Value> = pipe
            .query_async(&mut admin.clone())
            .await
            .expect("MEMORY USAGE");
        for pair in answers.chunks(2) {
            let bytes: i64 = redis::from_redis_value(&pair[0]).expect("a record's usage");
            let state: String = redis::from_redis_value(&pair[1]).expect("a record's status");
            let state = if state == "c" {
                "completed".to_owned()
            } else {
                state
            };
            total += bytes;
            *states.entry(state).or_default() += 1;
        }
    }
    assert_eq!(
        states.get("completed").copied(),
        Some(sampled.len() as u64),
        "the sampled records are completed: {states:?}"
    );
    let first = record_key(&prefix, &sampled[0]);
    let tokens = format!("{prefix}tokens");
    let usage = |key: String| {
        let admin = admin.clone();
        async move {
            let bytes: i64 =
                redis_cmd(&admin, &["MEMORY", "USAGE", key.as_str(), "SAMPLES", "0"]).await;
            bytes as f64
        }
    };
    let keys: u64 = redis_cmd(&admin, &["DBSIZE"]).await;
    notes.push(format!(
        "Redis: {keys} keys after the load; the first sampled record: {first}"
    ));
    let figures_tokens = usage(tokens).await / (records + 1) as f64;

    let replays = (records as f64 * REPLAY_SHARE / (1.0 - REPLAY_SHARE)).round() as u64;
    let replay = redis_measured(
        &store,
        &admin,
        server.port(),
        Pass::Replay { records, replays },
        notes,
        "replay",
    )
    .await;
    let hash_encoding: String = redis_cmd(&admin, &["OBJECT", "ENCODING", &first]).await;
    let _: () = redis_cmd(&admin, &["FLUSHALL"]).await;
    RedisFigures {
        record_hash: total as f64 / sampled.len() as f64,
        hash_encoding,
        tokens: figures_tokens,
        used_memory: (after - before) / records as f64,
        fresh,
        replay,
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const SCHEMA: &str = "footprint";

/// The numbers of the one row `sql` answers.
fn pg_row(server: &PostgresServer, sql: &str) -> Vec<f64> {
    let answer = server.sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    answer
        .trim()
        .split('|')
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect()
}

fn pg_text(server: &PostgresServer, sql: &str) -> String {
    server
        .sql(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_owned()
}

/// Heap, indexes (primary key, expiry), total.
fn pg_sizes(server: &PostgresServer) -> [f64; 4] {
    let row = pg_row(
        server,
        &format!(
            "SELECT pg_relation_size('{SCHEMA}.idem_records'), \
                    pg_relation_size('{SCHEMA}.idem_records_pkey'), \
                    pg_relation_size('{SCHEMA}.idem_records_expiry'), \
                    pg_total_relation_size('{SCHEMA}.idem_records')"
        ),
    );
    [row[0], row[1], row[2], row[3]]
}

/// Committed transactions of the database so far, WAL full-page images, WAL syncs (the
/// flushes of commits, several commits to a flush when they come together), as reported; and
/// the transaction ids handed out (one per transaction that writes; this query takes one);
/// the checkpoints made.
fn pg_counters(server: &PostgresServer) -> [f64; 5] {
    let row = pg_row(
        server,
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'), \
                wal_fpi, wal_sync, txid_current(), \
                (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) \
         FROM pg_stat_wal",
    );
    [row[0], row[1], row[2], row[3], row[4]]
}

async fn pg_store(server: &PostgresServer) -> Arc<dyn Store> {
    let store = PostgresStore::builder(server.url())
        .schema(SCHEMA)
        .pool_size(POOL_CALLERS)
        .connect()
        .await
        .expect("the store");
    Arc::new(store)
}

/// Lets the store's connections close (a background purge holds a clone of the store until
/// it is done): a backend reports its counts when it exits.
async fn pg_close(store: Arc<dyn Store>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(store);
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

struct PgFigures {
    column_size: f64,
    /// Per record: heap, primary key, expiry index, total; as written and after VACUUM FULL.
    written: [f64; 4],
    compact: [f64; 4],
    /// Of the heap, as written (pgstattuple): live tuple bytes, dead tuple bytes, free space.
    tuples: Option<[f64; 3]>,
    wal_per_fresh: f64,
    fpi_per_fresh: f64,
    commits_per_fresh: f64,
    syncs_per_fresh: f64,
    xids_per_fresh: f64,
    wal_per_replay: f64,
    fresh: Cost,
    replay: Cost,
}

async fn postgres(server: &PostgresServer, records: u64, notes: &mut Vec<String>) -> PgFigures {
    let cpu = Cpu::Postgres(server.port());
    server
        .sql(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .expect("DROP SCHEMA");
    let store = pg_store(server).await;
    call_order(&*store, 0).await;
    pg_close(store).await;

    let sizes = pg_sizes(server);
    let counters = pg_counters(server);
    let lsn = pg_text(server, "SELECT pg_current_wal_lsn()");
    // The window includes opening the pool and letting it close (its backends' exits).
    let cpu_before = cpu.seconds();
    let store = pg_store(server).await;
    let elapsed = run_pass(&store, POOL_CALLERS, Pass::Fresh { records }).await;
    pg_close(store).await;
    let cpu_used = cpu.seconds() - cpu_before;
    let wal = pg_row(
        server,
        &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"),
    )[0];
    let counters_after = pg_counters(server);
    let n = records as f64;
    let [commits, fpi, syncs, xids, checkpoints] =
        std::array::from_fn(|i| (counters_after[i] - counters[i]) / n);
    notes.push(format!(
        "PostgreSQL: {:.0} checkpoints during the fresh calls (after a checkpoint, the first \
         change to each page writes a full-page image to the WAL)",
        checkpoints * n
    ));
    let fresh = Cost {
        cpu_us: cpu_used * 1e6 / n,
        rate: n / elapsed.as_secs_f64(),
        commands_us: None,
    };

    let counts = pg_row(
        server,
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*), \
                    avg(pg_column_size(r.*)) FROM {SCHEMA}.idem_records AS r"
        ),
    );
    assert_eq!(counts[0], counts[1], "every record is completed");
    assert_eq!(counts[0], n + 1.0, "one record per call");
    let grown = pg_sizes(server);
    let per = |after: [f64; 4], before: [f64; 4]| -> [f64; 4] {
        std::array::from_fn(|i| (after[i] - before[i]) / n)
    };
    let written = per(grown, sizes);
    let tuples = server
        .sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        .ok()
        .map(|_| {
            let row = pg_row(
                server,
                &format!(
                    "SELECT tuple_len, dead_tuple_len, free_space, dead_tuple_count, table_len \
                     FROM pgstattuple('{SCHEMA}.idem_records')"
                ),
            );
            notes.push(format!(
                "PostgreSQL heap as written (pgstattuple): {} bytes, {} dead row versions for {} \
                 records",
                row[4], row[3], counts[1]
            ));
            [row[0] / n, row[1] / n, row[2] / n]
        });
    if tuples.is_none() {
        notes.push("PostgreSQL: pgstattuple is not installed: no dead-tuple figures".into());
    }
    // What autovacuum would do soon after such a load; the replays then find a clean table.
    server
        .sql(&format!("VACUUM (ANALYZE) {SCHEMA}.idem_records"))
        .expect("VACUUM");

    let replays = (n * REPLAY_SHARE / (1.0 - REPLAY_SHARE)).round() as u64;
    let store = pg_store(server).await;
    call_order(&*store, 1).await; // the pool's connections are opened outside the window
    let lsn = pg_text(server, "SELECT pg_current_wal_lsn()");
    let cpu_before = cpu.seconds();
    let elapsed = run_pass(&store, POOL_CALLERS, Pass::Replay { records, replays }).await;
    let cpu_used = cpu.seconds() - cpu_before;
    let replay_wal = pg_row(
        server,
        &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"),
    )[0];
    pg_close(store).await;
    let replay = Cost {
        cpu_us: cpu_used * 1e6 / replays as f64,
        rate: replays as f64 / elapsed.as_secs_f64(),
        commands_us: None,
    };

    server
        .sql(&format!("VACUUM FULL {SCHEMA}.idem_records"))
        .expect("VACUUM FULL");
    let compact = per(pg_sizes(server), sizes);
    server
        .sql(&format!("DROP SCHEMA {SCHEMA} CASCADE"))
        .expect("DROP SCHEMA");
    PgFigures {
        column_size: counts[2],
        written,
        compact,
        tuples,
        wal_per_fresh: wal / n,
        fpi_per_fresh: fpi,
        commits_per_fresh: commits,
        syncs_per_fresh: syncs,
        xids_per_fresh: xids,
        wal_per_replay: replay_wal / replays as f64,
        fresh,
        replay,
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

struct SqliteFigures {
    file: f64,
    parts: Vec<(String, f64)>,
    folder: PathBuf,
    fresh: Cost,
    replay: Cost,
}

/// The bytes of the `.db` file and its `-wal`, after a checkpoint that empties the WAL.
fn sqlite_bytes(path: &Path) -> f64 {
    let connection = rusqlite::Connection::open(path).expect("the file");
    for _ in 0..50 {
        let busy: i64 = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .expect("a checkpoint");
        if busy == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len()) as f64;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    size(path.to_path_buf()) + size(wal)
}

/// Bytes by table and index (`dbstat`), if this SQLite has it.
fn sqlite_parts(path: &Path) -> Vec<(String, f64)> {
    let connection = rusqlite::Connection::open(path).expect("the file");
    let parts = connection
        .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as f64)))?
                .collect::<Result<Vec<_>, _>>()
        });
    parts.unwrap_or_default()
}

async fn sqlite(records: u64, notes: &mut Vec<String>) -> SqliteFigures {
    let folder = std::env::var_os("IDEM_FOOTPRINT_SQLITE_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|shm| shm.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    let path = folder.join(format!("idem-footprint-{}.db", std::process::id()));
    let remove = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    remove();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("the store"));
    call_order(&*store, 0).await;
    let before = sqlite_bytes(&path);
    let parts_before: BTreeMap<String, f64> = sqlite_parts(&path).into_iter().collect();

    let cpu = Cpu::ThisProcess.seconds();
    let elapsed = run_pass(&store, POOL_CALLERS, Pass::Fresh { records }).await;
    let cpu = Cpu::ThisProcess.seconds() - cpu;
    let n = records as f64;
    let fresh = Cost {
        cpu_us: cpu * 1e6 / n,
        rate: n / elapsed.as_secs_f64(),
        commands_us: None,
    };
    let after = sqlite_bytes(&path);
    let parts = sqlite_parts(&path)
        .into_iter()
        .map(|(name, bytes)| {
            let grown = (bytes - parts_before.get(&name).copied().unwrap_or(0.0)) / n;
            (name, grown)
        })
        .filter(|(_, grown)| *grown > 0.0)
        .collect::<Vec<_>>();
    {
        let connection = rusqlite::Connection::open(&path).expect("the file");
        let (completed, all): (i64, i64) = connection
            .query_row(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM idem_records",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("a count");
        assert_eq!(
            (completed, all),
            (all, records as i64 + 1),
            "completed records"
        );
        let page: i64 = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .expect("page_size");
        let free: i64 = connection
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .expect("freelist_count");
        notes.push(format!(
            "SQLite: {} bytes after the load ({} pages of {page} bytes, {free} free)",
            after,
            after as i64 / page
        ));
    }

    let replays = (n * REPLAY_SHARE / (1.0 - REPLAY_SHARE)).round() as u64;
    let cpu = Cpu::ThisProcess.seconds();
    let elapsed = run_pass(&store, POOL_CALLERS, Pass::Replay { records, replays }).await;
    let cpu = Cpu::ThisProcess.seconds() - cpu;
    let replay = Cost {
        cpu_us: cpu * 1e6 / replays as f64,
        rate: replays as f64 / elapsed.as_secs_f64(),
        commands_us: None,
    };
    drop(store);
    remove();
    SqliteFigures {
        file: (after - before) / n,
        parts,
        folder,
        fresh,
        replay,
    }
}

// ---------------------------------------------------------------------------------------------
// The report

fn wanted(store: &str) -> bool {
    std::env::var("IDEM_FOOTPRINT_ONLY").map_or(true, |only| store.contains(&only.to_lowercase()))
}

/// `bytes` with a binary unit.
fn size(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `n` with thousands separators.
fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    format!("{cpus} cores, {model}")
}

fn main() {
    let records: u64 = std::env::var("IDEM_FOOTPRINT_RECORDS")
        .ok()
        .map(|n| n.parse().expect("IDEM_FOOTPRINT_RECORDS: a number"))
        .unwrap_or(DEFAULT_RECORDS);
    assert!(records >= 100, "IDEM_FOOTPRINT_RECORDS: at least 100");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut notes = Vec::new();
    let started = Instant::now();
    let (redis, postgres, sqlite) = runtime.block_on(async {
        let redis = match RedisServer::shared().filter(|_| wanted("redis")) {
            Some(server) => Some(redis(server, records, &mut notes).await),
            None => None,
        };
        eprintln!("redis done after {:.0?}", started.elapsed());
        let postgres = match PostgresServer::shared().filter(|_| wanted("postgresql")) {
            Some(server) => Some(postgres(server, records, &mut notes).await),
            None => None,
        };
        eprintln!("postgresql done after {:.0?}", started.elapsed());
        let sqlite = if wanted("sqlite") {
            Some(sqlite(records, &mut notes).await)
        } else {
            None
        };
        eprintln!("sqlite done after {:.0?}", started.elapsed());
        (redis, postgres, sqlite)
    });

    println!();
    println!(
        "{} fresh calls (completed records) and {} replays per store, `#[idempotent(ttl = \"24h\")]` \
         with 3 arguments and a 2-field result; {}; {:.0} s.",
        count(records as f64),
        count((records as f64 * REPLAY_SHARE / (1.0 - REPLAY_SHARE)).round()),
        machine(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("Bytes per completed record:");
    println!();
    println!("| store | what | bytes per record |");
    println!("|---|---|---:|");
    if let Some(r) = &redis {
        let sum = r.record_hash + r.tokens;
        println!(
            "| Redis | record `idem:{{bucket}}:key:r` (`MEMORY USAGE`, {}, mean of {}) | {:.0} |",
            r.hash_encoding,
            count(SAMPLE.min(records as usize) as f64),
            r.record_hash
        );
        println!(
            "| Redis | the token counter `idem:tokens` (one key for all) | {:.4} |",
            r.tokens
        );
        println!("| Redis | sum of the keys' `MEMORY USAGE` | {sum:.0} |");
        println!(
            "| Redis | **`used_memory` growth per record** (+ keyspace and expiry dict entries and tables) | **{:.0}** |",
            r.used_memory
        );
    }
    if let Some(p) = &postgres {
        println!(
            "| PostgreSQL | a row, `pg_column_size(row)` (mean) | {:.0} |",
            p.column_size
        );
        if let Some([live, dead, free]) = p.tuples {
            println!(
                "| PostgreSQL | heap as written: live tuples · dead tuples · free space (`pgstattuple`; page pruning reclaimed most of the old versions `complete`'s `UPDATE` leaves) | {live:.0} · {dead:.0} · {free:.0} |"
            );
        }
        let [heap, pkey, expiry, total] = p.written;
        println!(
            "| PostgreSQL | growth as written: heap · primary key · expiry index | {heap:.0} · {pkey:.0} · {expiry:.0} |"
        );
        println!(
            "| PostgreSQL | **`pg_total_relation_size` growth, as written** | **{total:.0}** |"
        );
        let [heap, pkey, expiry, total] = p.compact;
        println!(
            "| PostgreSQL | after `VACUUM FULL`: heap · primary key · expiry index = total | {heap:.0} · {pkey:.0} · {expiry:.0} = {total:.0} |"
        );
        println!(
            "| PostgreSQL | WAL per fresh call ({:.2} full-page images) · per replay | {:.0} · {:.1} |",
            p.fpi_per_fresh, p.wal_per_fresh, p.wal_per_replay
        );
    }
    if let Some(s) = &sqlite {
        let parts = s
            .parts
            .iter()
            .map(|(name, bytes)| format!("{name} {bytes:.0}"))
            .collect::<Vec<_>>()
            .join(" · ");
        println!(
            "| SQLite | **`.db` + `-wal` growth after `wal_checkpoint(TRUNCATE)`** (file in {}) | **{:.0}** |",
            s.folder.display(),
            s.file
        );
        if !parts.is_empty() {
            println!("| SQLite | of which (`dbstat`) | {parts} |");
        }
    }

    println!();
    println!("Server CPU per call:");
    println!();
    println!("| store | call | calls/s here | inside commands (`INFO commandstats`) | server CPU (`/proc`) |");
    println!("|---|---|---:|---:|---:|");
    let cost_row = |store: &str, call: &str, cost: &Cost| {
        let commands = cost
            .commands_us
            .map_or("—".to_owned(), |us| format!("{us:.1} µs"));
        println!(
            "| {store} | {call} | {} | {commands} | {:.1} µs |",
            count(cost.rate),
            cost.cpu_us
        );
    };
    if let Some(r) = &redis {
        cost_row("Redis", "fresh", &r.fresh);
        cost_row("Redis", "replay", &r.replay);
    }
    if let Some(p) = &postgres {
        cost_row("PostgreSQL", "fresh", &p.fresh);
        cost_row("PostgreSQL", "replay", &p.replay);
    }
    if let Some(s) = &sqlite {
        cost_row("SQLite (this process: embedded)", "fresh", &s.fresh);
        cost_row("SQLite (this process: embedded)", "replay", &s.replay);
    }
    if let Some(p) = &postgres {
        println!();
        println!(
            "PostgreSQL, per fresh call: {:.2} committed transactions (`xact_commit`: a statement \
             each, read-only ones included), {:.2} of them writing (transaction ids handed out), \
             {:.2} WAL syncs (`pg_stat_wal.wal_sync`, at {} callers: concurrent commits share a \
             flush). `pg_stat_statements` not used (`PostgresServer` takes no \
             `shared_preload_libraries`).",
            p.commits_per_fresh, p.xids_per_fresh, p.syncs_per_fresh, POOL_CALLERS
        );
    }

    sizing(redis.as_ref(), postgres.as_ref(), sqlite.as_ref());

    println!();
    println!("Notes:");
    println!();
    for note in notes {
        println!("- {note}");
    }
}

/// The on-paper fleet.
fn sizing(
    redis: Option<&RedisFigures>,
    postgres: Option<&PgFigures>,
    sqlite: Option<&SqliteFigures>,
) {
    let budget = 1e6 * CORE_BUDGET;
    println!();
    println!("Fleet sizing on paper. Assumptions: {:.0} % of calls fresh (each leaves a record), {:.0} % replays; \
              results kept 24 h, so records kept = fresh calls/s × 86,400; a core gives 1e6 µs of CPU a second \
              and is run at {:.0} % (headroom); a Redis shard is one core (single-threaded) with at most {} of \
              records (`maxmemory`); a PostgreSQL instance has {PG_CORES:.0} cores; bytes and µs per call are \
              this run's (CPU measured on this machine, with client and server sharing 2 cores).",
        FRESH_SHARE * 100.0,
        (1.0 - FRESH_SHARE) * 100.0,
        CORE_BUDGET * 100.0,
        size(SHARD_MEMORY),
    );
    println!();
    println!("| calls/s | fresh · replays /s | records kept | store | records' size | CPU needed | servers |");
    println!("|---:|---:|---:|---|---:|---:|---|");
    for load in LOADS {
        let (fresh, replays) = (load * FRESH_SHARE, load * (1.0 - FRESH_SHARE));
        let kept = fresh * KEPT_SECONDS;
        let head = format!(
            "| {} | {} · {} | {} ",
            count(load),
            count(fresh),
            count(replays),
            count(kept)
        );
        if let Some(r) = redis {
            let memory = kept * r.used_memory;
            let cpu = fresh * r.fresh.cpu_us + replays * r.replay.cpu_us;
            let commands = fresh * r.fresh.commands_us.unwrap_or(0.0)
                + replays * r.replay.commands_us.unwrap_or(0.0);
            let by_cpu = (cpu / budget).ceil();
            let by_commands = (commands / budget).ceil();
            let by_memory = (memory / SHARD_MEMORY).ceil();
            println!(
                "{head}| Redis | {} | {:.2} cores (inside commands only: {:.2}) | **{:.0} shards**: {by_cpu:.0} for CPU ({by_commands:.0} counting commands only), {by_memory:.0} for memory |",
                size(memory),
                cpu / 1e6,
                commands / 1e6,
                by_cpu.max(by_memory)
            );
        }
        if let Some(p) = postgres {
            let cpu = fresh * p.fresh.cpu_us + replays * p.replay.cpu_us;
            let cores = cpu / budget;
            let instances = (cores / PG_CORES).ceil();
            println!(
                "{head}| PostgreSQL | {} as written ({} compact) | {:.1} cores | **{instances:.0} × {PG_CORES:.0}-core**, {:.1} cores at {:.0} %; one primary would commit {} writing transactions/s (transaction ids: a wraparound freeze every {:.0} min at the default 200M `autovacuum_freeze_max_age`) and write {}/s of WAL ({} a day) |",
                size(kept * p.written[3]),
                size(kept * p.compact[3]),
                cpu / 1e6,
                cores,
                CORE_BUDGET * 100.0,
                count(fresh * p.xids_per_fresh),
                200e6 / (fresh * p.xids_per_fresh) / 60.0,
                size(fresh * p.wal_per_fresh),
                size(fresh * p.wal_per_fresh * KEPT_SECONDS),
            );
        }
        if let Some(s) = sqlite {
            println!(
                "{head}| SQLite | {} | {:.1} cores in the callers' processes | one file per machine: only for calls of a key that always land on the same machine |",
                size(kept * s.file),
                (fresh * s.fresh.cpu_us + replays * s.replay.cpu_us) / 1e6,
            );
        }
    }
}
