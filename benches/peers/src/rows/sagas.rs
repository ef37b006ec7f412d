//! Saga rows: a 3-step idem saga (reserve a seat → charge the card → send the ticket, each a
//! `#[saga_step]`, the last irreversible), a new saga id each call, on SQLite, Redis and
//! PostgreSQL; beside each, the raw writes of its log made directly on the same store: an
//! intent before each step's body and its outcome after, 2 per step, 6 per saga, each its
//! own round trip (and, on SQLite and PostgreSQL, its own durable transaction).
//!
//! The saga does more than its log: its own claim, its status and its recorded outcome. So
//! a 12-step saga (the same 3 steps 4 times) runs beside the 3-step one: the difference of
//! their times is what 9 steps cost alone, set against the raw log of 3 steps (its 6 writes)
//! 3 times. (A 6-step saga did until `2ca8bd1`: a difference of two rates of which the steps
//! were half, so that its noise was about twice each rate's; with 9 steps of 12, the step's
//! cost is most of the long saga's time, and the ratio moves about half as much between
//! runs of the same code.)
//!
//! - SQLite: raw `INSERT OR REPLACE INTO steps …` (WAL, `synchronous = FULL`), each store on
//!   a new file every round;
//! - Redis: raw `HSET saga:<id> <step> <record JSON>`; the database is flushed before each round;
//! - PostgreSQL: raw `INSERT INTO raw.steps … ON CONFLICT (saga, idx) DO UPDATE` on the pool
//!   idem's store uses (`raw.steps` is `LIKE idem.idem_saga_steps`); tables emptied before
//!   each round.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use idem::store::{SqliteStore, Store};
use idem::{saga_step, Saga};
use redis::aio::ConnectionManager;
use rusqlite::{params, Connection};
use tokio::sync::Mutex;

use super::postgres::PgEnv;
use super::redis::RedisEnv;
use super::sqlite::{durable_connection, on, remove_file, round_file};
use super::{counted, Mode, RoundResult, System};
use crate::call::{PeerError, Receipt, AMOUNT, CUSTOMER};
use crate::measure::{Call, Timing};

/// Executions of the steps' bodies (the raw rows count theirs here too).
static STEP_BODIES: AtomicU64 = AtomicU64::new(0);
/// Steps of the 3-step saga, and of the raw log.
const STEPS: u64 = 3;
/// The long saga runs the 3 steps this many times.
pub const LONG_SAGA_REPEATS: u64 = 4;

#[saga_step(compensate = release_seat)]
async fn reserve_seat(order: &str, seat: u32) -> Result<String, PeerError> {
    STEP_BODIES.fetch_add(1, Ordering::Relaxed);
    Ok(format!("{order}/seat-{seat}"))
}

async fn release_seat(_seat: String) -> Result<(), PeerError> {
    Ok(())
}

#[saga_step(compensate = refund)]
async fn charge_card(order: &str, amount_cents: u64) -> Result<Receipt, PeerError> {
    STEP_BODIES.fetch_add(1, Ordering::Relaxed);
    Ok(Receipt {
        message_id: format!("ch-{order}"),
        amount_cents,
    })
}

async fn refund(_charge: Receipt) -> Result<(), PeerError> {
    Ok(())
}

#[saga_step(irreversible)]
async fn send_ticket(order: &str) -> Result<String, PeerError> {
    STEP_BODIES.fetch_add(1, Ordering::Relaxed);
    Ok(format!("ticket sent for {order}"))
}

/// A caller running idem sagas on a store: of the 3 steps, `repeats` times (1, or
/// [`LONG_SAGA_REPEATS`] for the long saga).
struct SagaCall {
    store: Arc<dyn Store>,
    repeats: u64,
}

impl Call for SagaCall {
    async fn call(&self, n: u64) -> Result<(), String> {
        let order = format!("order-{n}");
        let repeats = self.repeats;
        let ticket = Saga::new(order.clone())
            .store(&*self.store)
            .run(|s| async move {
                for seat in 1..repeats {
                    s.step(reserve_seat(&order, 7 + seat as u32)).await?;
                    s.step(charge_card(&order, AMOUNT)).await?;
                    s.step(send_ticket(&order)).await?;
                }
                s.step(reserve_seat(&order, 7)).await?;
                s.step(charge_card(&order, AMOUNT)).await?;
                s.step(send_ticket(&order)).await
            })
            .await
            .map_err(|e| e.0)?;
        if ticket.ends_with(&format!("order-{n}")) {
            Ok(())
        } else {
            Err(format!("a wrong answer: {ticket}"))
        }
    }
}

/// The log of step `idx` of saga `n`, as a raw write stores it: (name, args JSON, output).
fn step_record(n: u64, idx: u64) -> (&'static str, String, String) {
    let order = format!("order-{n}");
    match idx {
        0 => (
            "reserve_seat",
            format!("[\"{order}\",7]"),
            format!("\"{order}/seat-7\""),
        ),
        1 => (
            "charge_card",
            format!("[\"{order}\",{AMOUNT}]"),
            format!("{{\"message_id\":\"ch-{order}\",\"amount_cents\":{AMOUNT}}}"),
        ),
        _ => (
            "send_ticket",
            format!("[\"{order}\"]"),
            format!("\"ticket sent for {order} ({CUSTOMER})\""),
        ),
    }
}

/// Where the raw log writes go.
enum RawLog {
    Sqlite(Arc<Mutex<Connection>>),
    Redis(ConnectionManager),
    Postgres(Pool),
}

const SQLITE_STEPS: &str = "CREATE TABLE IF NOT EXISTS steps (saga TEXT NOT NULL,
    idx INTEGER NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL, irreversible INTEGER NOT NULL,
    args BLOB NOT NULL, state TEXT NOT NULL, output BLOB, error TEXT,
    PRIMARY KEY (saga, idx)) WITHOUT ROWID";
const SQLITE_WRITE: &str = "INSERT OR REPLACE INTO steps
    (saga, idx, name, key, irreversible, args, state, output, error)
    VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, NULL)";
const PG_WRITE: &str = "INSERT INTO raw.steps
    (saga, idx, name, key, irreversible, args, state, output)
    VALUES ($1, $2, $3, $4, false, $5, $6, $7)
    ON CONFLICT (saga, idx) DO UPDATE SET state = EXCLUDED.state, output = EXCLUDED.output";

impl RawLog {
    /// One write of the log of step `idx` of saga `n`: its intent (no output) or its outcome.
    async fn write(&self, n: u64, idx: u64, output: Option<String>) -> Result<(), String> {
        let (name, args, _) = step_record(n, idx);
        let saga = format!("{n:064x}");
        let state = if output.is_some() { "done" } else { "started" };
        match self {
            RawLog::Sqlite(writer) => {
                on(writer, move |c| {
                    c.prepare_cached(SQLITE_WRITE)?.execute(params![
                        saga,
                        idx as i64,
                        name,
                        saga,
                        args.as_bytes(),
                        state,
                        output.as_ref().map(|o| o.as_bytes())
                    ])
                })
                .await?;
            }
            RawLog::Redis(connection) => {
                let record = format!(
                    "{{\"name\":\"{name}\",\"args\":{args},\"state\":\"{state}\",\"output\":{}}}",
                    output.as_deref().unwrap_or("null")
                );
                let _: i64 = redis::cmd("HSET")
                    .arg(format!("saga:{saga}"))
                    .arg(idx)
                    .arg(record)
                    .query_async(&mut connection.clone())
                    .await
                    .map_err(|e| format!("HSET: {e}"))?;
            }
            RawLog::Postgres(pool) => {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let write = client
                    .prepare_cached(PG_WRITE)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .execute(
                        &write,
                        &[
                            &saga,
                            &(idx as i64),
                            &name,
                            &saga,
                            &args.as_bytes(),
                            &state,
                            &output.as_ref().map(|o| o.as_bytes()),
                        ],
                    )
                    .await
                    .map_err(|e| format!("upsert: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Call for RawLog {
    /// Per step: the intent, the step's body, the outcome.
    async fn call(&self, n: u64) -> Result<(), String> {
        for idx in 0..STEPS {
            self.write(n, idx, None).await?;
            STEP_BODIES.fetch_add(1, Ordering::Relaxed);
            let (_, _, output) = step_record(n, idx);
            self.write(n, idx, Some(output)).await?;
        }
        Ok(())
    }
}

/// The stores of the saga rows.
pub struct SagaEnv<'a> {
    pub folder: &'a Path,
    pub redis: Option<&'a RedisEnv>,
    pub postgres: Option<&'a PgEnv>,
}

/// One round of `call`: fresh sagas, each of `steps` step bodies, counted from `since`.
async fn saga_round<C: Call>(
    call: C,
    steps: u64,
    since: u64,
    callers: usize,
    timing: Timing,
) -> RoundResult {
    counted(
        Arc::new(call),
        &STEP_BODIES,
        since,
        Mode::Fresh,
        steps,
        callers,
        timing,
    )
    .await
}

/// One round of idem sagas on `store`.
async fn idem_round(
    store: Arc<dyn Store>,
    long: bool,
    since: u64,
    callers: usize,
    timing: Timing,
) -> RoundResult {
    let repeats = if long { LONG_SAGA_REPEATS } else { 1 };
    let call = SagaCall { store, repeats };
    saga_round(call, repeats * STEPS, since, callers, timing).await
}

/// One round of a saga row.
pub async fn round(
    env: &SagaEnv<'_>,
    system: System,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    let since = STEP_BODIES.load(Ordering::SeqCst);
    let long = matches!(
        system,
        System::LongSagaSqlite | System::LongSagaRedis | System::LongSagaPostgres
    );
    let result = match system {
        System::SagaSqlite | System::LongSagaSqlite | System::RawLogSqlite => {
            let path = round_file(env.folder, &format!("{system:?}").to_lowercase());
            let result = if system == System::RawLogSqlite {
                let writer = durable_connection(&path)?;
                writer
                    .execute_batch(SQLITE_STEPS)
                    .map_err(|e| e.to_string())?;
                let raw = RawLog::Sqlite(Arc::new(Mutex::new(writer)));
                saga_round(raw, STEPS, since, callers, timing).await
            } else {
                let store = SqliteStore::open(&path)
                    .await
                    .map_err(|e| format!("idem SqliteStore: {e}"))?;
                idem_round(Arc::new(store), long, since, callers, timing).await
            };
            remove_file(&path);
            result
        }
        System::SagaRedis | System::LongSagaRedis | System::RawLogRedis => {
            let redis = env.redis.ok_or("no Redis")?;
            redis.reset().await?;
            let mut result = if system == System::RawLogRedis {
                let raw = RawLog::Redis(redis.raw_connection());
                saga_round(raw, STEPS, since, callers, timing).await
            } else {
                idem_round(redis.idem_store(), long, since, callers, timing).await
            };
            result.extra = Some(redis.server_note(result.measured.calls).await?);
            result
        }
        System::SagaPostgres | System::LongSagaPostgres | System::RawLogPostgres => {
            let postgres = env.postgres.ok_or("no PostgreSQL")?;
            postgres.empty(system).await?;
            if system == System::RawLogPostgres {
                let raw = RawLog::Postgres(postgres.pool().clone());
                saga_round(raw, STEPS, since, callers, timing).await
            } else {
                idem_round(postgres.idem_store(), long, since, callers, timing).await
            }
        }
        other => return Err(format!("{other:?} is not a saga row")),
    };
    Ok(result)
}
