//! The rows of the table: which system, which store, fresh keys or replays of one key; and
//! one round of a row, run by the module of its family.
//!
//! Every row makes the same call (see [`crate::call`]). A **fresh** row gives each call a key
//! never used before, so each call runs its body once; a **replay** row calls one key per
//! round (the first call, made by all callers at once, runs the body; every other call
//! replays it). Each round counts the body's executions and checks them: a fresh row must
//! execute once per call, a replay row once in all per key.

pub mod memory;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod sagas;
pub mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::measure::{measure, Call, Measured, Timing};

/// The stores the rows are grouped by (one panel of the chart each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Memory,
    Sqlite,
    Redis,
    RedisCluster,
    Postgres,
    Sagas,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Memory,
        Family::Sqlite,
        Family::Redis,
        Family::RedisCluster,
        Family::Postgres,
        Family::Sagas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Memory => "memory",
            Family::Sqlite => "SQLite",
            Family::Redis => "Redis",
            Family::RedisCluster => "Redis Cluster",
            Family::Postgres => "PostgreSQL",
            Family::Sagas => "sagas",
        }
    }

    /// The word `--only` takes for it.
    pub fn word(self) -> &'static str {
        match self {
            Family::Memory => "memory",
            Family::Sqlite => "sqlite",
            Family::Redis => "redis",
            Family::RedisCluster => "redis-cluster",
            Family::Postgres => "postgres",
            Family::Sagas => "sagas",
        }
    }
}

/// Fresh keys, or replays of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Fresh,
    Replay,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Replay => "replay",
        }
    }
}

/// A system under test. Its doc says what its rows measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// The same async fn with no deduplication: the baseline of the memory rows (one row:
    /// fresh and replay are the same call for it).
    Plain,
    /// `#[idempotent]` on `idem::store::MemoryStore` (a new store each round).
    IdemMemory,
    /// `cached` 4.1: `#[cached(max_size = 100_000, sync_writes = "by_key")]` on the async fn,
    /// keyed by its arguments (memoization: no fingerprint, no lease, nothing durable).
    Cached,
    /// `idempotent` 0.3, its `MemoryStore` (an actor task behind a channel), driven as its
    /// README shows: `try_insert`, the body, `complete`.
    IdempotentMemory,
    /// agent-effects 0.2 on `agent_effects_memory::MemoryStore` (a new store each round: it
    /// has no TTL).
    AgentEffectsMemory,
    /// `#[idempotent]` on `SqliteStore` (a new file each round).
    IdemSqlite,
    /// agent-effects 0.2 on `agent_effects_sqlite::SqliteStore::open` (a new file each round).
    AgentEffectsSqlite,
    /// rusqlite on a file of its own: fresh `INSERT … ON CONFLICT DO NOTHING` + `UPDATE`, each
    /// its own durable transaction; replay `SELECT`.
    RawSqlite,
    /// `#[idempotent]` on `RedisStore`.
    IdemRedis,
    /// `#[idempotent]` on `ReplayCache::new(RedisStore).max_entries(10_000).max_age(30 s)`
    /// (replay only).
    IdemRedisReplayCache,
    /// `idempotent` 0.3's `ValkeyStore` on the same server.
    IdempotentRedis,
    /// redis 0.32: fresh `SET NX PX` + `SET XX PX`; replay `GET`.
    RawRedis,
    /// `#[idempotent]` on `RedisStore` on a Redis Cluster of 3 masters (and a replica each).
    IdemRedisCluster,
    /// The raw commands of [`RawRedis`](System::RawRedis) on the same cluster, through redis
    /// 0.32's cluster client.
    RawRedisCluster,
    /// `#[idempotent]` on `PostgresStore` (schema `idem`, a pool of 16 shared with the raw
    /// statements).
    IdemPostgres,
    /// agent-effects 0.2 on `agent_effects_postgres` (schema `ae`, a pool of 16 of its own).
    AgentEffectsPostgres,
    /// tokio-postgres: fresh `INSERT … ON CONFLICT DO NOTHING` + `UPDATE`; replay `SELECT`.
    RawPostgres,
    /// A 3-step idem saga (`#[saga_step]`), a new saga id each call, on SQLite.
    SagaSqlite,
    /// The same saga on Redis.
    SagaRedis,
    /// The same saga on PostgreSQL.
    SagaPostgres,
    /// A 12-step idem saga (the 3 steps, 4 times), a new saga id each call, on SQLite:
    /// beside the 3-step saga, what 9 steps cost without the saga's own writes.
    LongSagaSqlite,
    /// The same 12-step saga on Redis.
    LongSagaRedis,
    /// The same 12-step saga on PostgreSQL.
    LongSagaPostgres,
    /// The raw writes of a 3-step saga's log on SQLite: 6 `INSERT OR REPLACE` (an intent and
    /// an outcome per step), each its own durable transaction.
    RawLogSqlite,
    /// The same on Redis: 6 `HSET`.
    RawLogRedis,
    /// The same on PostgreSQL: 6 `INSERT … ON CONFLICT DO UPDATE`.
    RawLogPostgres,
}

impl System {
    pub fn family(self) -> Family {
        use System::*;
        match self {
            Plain | IdemMemory | Cached | IdempotentMemory | AgentEffectsMemory => Family::Memory,
            IdemSqlite | AgentEffectsSqlite | RawSqlite => Family::Sqlite,
            IdemRedis | IdemRedisReplayCache | IdempotentRedis | RawRedis => Family::Redis,
            IdemRedisCluster | RawRedisCluster => Family::RedisCluster,
            IdemPostgres | AgentEffectsPostgres | RawPostgres => Family::Postgres,
            SagaSqlite | SagaRedis | SagaPostgres | LongSagaSqlite | LongSagaRedis
            | LongSagaPostgres | RawLogSqlite | RawLogRedis | RawLogPostgres => Family::Sagas,
        }
    }

    /// The system's name in the table and the chart.
    pub fn label(self) -> &'static str {
        use System::*;
        match self {
            Plain => "plain call",
            IdemMemory => "idem",
            Cached => "cached 4.1",
            IdempotentMemory => "idempotent 0.3",
            AgentEffectsMemory => "agent-effects 0.2",
            IdemSqlite => "idem",
            AgentEffectsSqlite => "agent-effects 0.2",
            RawSqlite => "raw SQLite",
            IdemRedis => "idem",
            IdemRedisReplayCache => "idem + ReplayCache",
            IdempotentRedis => "idempotent 0.3",
            RawRedis => "raw commands",
            IdemRedisCluster => "idem",
            RawRedisCluster => "raw commands",
            IdemPostgres => "idem",
            AgentEffectsPostgres => "agent-effects 0.2",
            RawPostgres => "raw statements",
            SagaSqlite => "idem saga, SQLite",
            SagaRedis => "idem saga, Redis",
            SagaPostgres => "idem saga, PostgreSQL",
            LongSagaSqlite => "idem 12-step saga, SQLite",
            LongSagaRedis => "idem 12-step saga, Redis",
            LongSagaPostgres => "idem 12-step saga, PostgreSQL",
            RawLogSqlite => "raw log, SQLite",
            RawLogRedis => "raw log, Redis",
            RawLogPostgres => "raw log, PostgreSQL",
        }
    }

    /// What the row's call is, for its note in the table.
    pub fn note(self, mode: Mode) -> &'static str {
        use System::*;
        match (self, mode) {
            (Plain, _) => "no dedup: the baseline",
            (IdemMemory, Mode::Fresh) => "ttl 100ms",
            (Cached, _) => "sync_writes by_key, LRU 100k",
            (IdempotentMemory, Mode::Fresh) => "ttl 100ms; try_insert + complete",
            (IdempotentMemory, Mode::Replay) => "in-progress answered at once: caller retries",
            (AgentEffectsMemory, Mode::Fresh) => "no TTL: new store each round",
            (AgentEffectsMemory, Mode::Replay) => "in-progress answered at once: caller retries",
            (IdemSqlite | AgentEffectsSqlite | RawSqlite, _) => "WAL, synchronous=FULL",
            (IdempotentRedis, _) => "EVAL script per op; ttl 2s (fresh)",
            (RawRedis | RawRedisCluster, Mode::Fresh) => "SET NX PX + SET XX PX",
            (RawRedis | RawRedisCluster, Mode::Replay) => "GET",
            (IdemRedis | IdemRedisCluster, Mode::Fresh) => "ttl 2s",
            (IdemRedisReplayCache, _) => "10k entries, 30 s",
            (RawPostgres, Mode::Fresh) => "INSERT ON CONFLICT + UPDATE",
            (RawPostgres, Mode::Replay) => "SELECT",
            (AgentEffectsPostgres, _) => "pool 16, database clock",
            (SagaSqlite | SagaRedis | SagaPostgres, _) => "3 steps, new saga id each call",
            (LongSagaSqlite | LongSagaRedis | LongSagaPostgres, _) => "the 3 steps 4 times",
            (RawLogSqlite, _) => "6 INSERT OR REPLACE",
            (RawLogRedis, _) => "6 HSET",
            (RawLogPostgres, _) => "6 upserts",
            _ => "",
        }
    }

    /// The modes it has rows for.
    pub fn modes(self) -> &'static [Mode] {
        use System::*;
        match self {
            Plain => &[Mode::Fresh],
            IdemRedisReplayCache => &[Mode::Replay],
            SagaSqlite | SagaRedis | SagaPostgres | LongSagaSqlite | LongSagaRedis
            | LongSagaPostgres | RawLogSqlite | RawLogRedis | RawLogPostgres => &[Mode::Fresh],
            _ => &[Mode::Fresh, Mode::Replay],
        }
    }

    /// Whether it deduplicates (its rows are checked); the plain call does not.
    pub fn dedups(self) -> bool {
        self != System::Plain
    }

    /// Every system, in the table's order.
    pub fn all() -> Vec<System> {
        use System::*;
        vec![
            Plain,
            IdemMemory,
            Cached,
            IdempotentMemory,
            AgentEffectsMemory,
            IdemSqlite,
            AgentEffectsSqlite,
            RawSqlite,
            IdemRedis,
            IdemRedisReplayCache,
            IdempotentRedis,
            RawRedis,
            IdemRedisCluster,
            RawRedisCluster,
            IdemPostgres,
            AgentEffectsPostgres,
            RawPostgres,
            SagaSqlite,
            LongSagaSqlite,
            RawLogSqlite,
            SagaRedis,
            LongSagaRedis,
            RawLogRedis,
            SagaPostgres,
            LongSagaPostgres,
            RawLogPostgres,
        ]
    }
}

/// One row: a system and a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub system: System,
    pub mode: Mode,
}

/// Every row, in the table's order.
pub fn all_rows() -> Vec<Row> {
    System::all()
        .into_iter()
        .flat_map(|system| system.modes().iter().map(move |&mode| Row { system, mode }))
        .collect()
}

/// What one round of a row gave.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub measured: Measured,
    /// Body executions in the round, and how many there must be.
    pub executions: u64,
    pub expected: u64,
    /// What else the round saw (Redis: the server's commands and time per call).
    pub extra: Option<String>,
}

/// [`counted`] for a row whose counter starts at 0 and whose call runs one body: every row
/// but the sagas'.
pub async fn once_per_call<C: Call>(
    call: Arc<C>,
    bodies: &AtomicU64,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> RoundResult {
    counted(call, bodies, 0, mode, 1, callers, timing).await
}

/// Measures `call`, whose body counts into `bodies`, and checks the count since `since` (what
/// the counter held before the round: the sagas' counter is shared by their rows): once per
/// call (`fresh`; `per_call` bodies for a saga of several steps), or once in all (`replay`).
pub async fn counted<C: Call>(
    call: Arc<C>,
    bodies: &AtomicU64,
    since: u64,
    mode: Mode,
    per_call: u64,
    callers: usize,
    timing: Timing,
) -> RoundResult {
    let measured = measure(call, callers, timing).await;
    let executions = bodies.load(Ordering::SeqCst) - since;
    let expected = match mode {
        Mode::Fresh => measured.calls * per_call,
        Mode::Replay => 1,
    };
    RoundResult {
        measured,
        executions,
        expected,
        extra: None,
    }
}
