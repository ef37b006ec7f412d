//! SQLite rows: idem's `SqliteStore`, agent-effects' `SqliteStore`, and raw writes through
//! rusqlite, each on a new file every round (deleted after it), with the same durability:
//! WAL and `synchronous = FULL` (what both stores set when they open a file; see
//! [`durability`], which checks it and says so in the output).
//!
//! Raw, fresh: `INSERT … ON CONFLICT DO NOTHING` (the claim) and, after the body, `UPDATE`
//! (the result), each its own durable transaction on one writer connection. Raw, replay:
//! `SELECT` of the recorded result on a reader connection, and decoding it. The connections
//! are used as idem's store uses its own: behind a Tokio mutex, the statement on a blocking
//! thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use agent_effects::Runtime;
use idem::store::{SqliteStore, Store};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Mutex;

use super::{once_per_call, Mode, RoundResult, System};
use crate::call::{body, IdemCall, IdemFn, Receipt, AMOUNT, CUSTOMER};
use crate::measure::{next_number, Call, Timing};
use crate::peers::agent_effects::EffectCall;

/// A new file in `folder` for one round of `who`, and the files SQLite makes beside it.
pub fn round_file(folder: &Path, who: &str) -> PathBuf {
    folder.join(format!("{who}-{}.db", next_number()))
}

/// Deletes a round's file and its WAL and shared-memory files.
pub fn remove_file(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// One round of a SQLite row, on new files in `folder`.
pub async fn round(
    folder: &Path,
    system: System,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    let bodies = Arc::new(AtomicU64::new(0));
    let replay = (mode == Mode::Replay).then(next_number);
    let path = round_file(folder, &format!("{system:?}").to_lowercase());
    let result = match system {
        System::IdemSqlite => {
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(&path)
                    .await
                    .map_err(|e| format!("idem SqliteStore: {e}"))?,
            );
            let call = IdemCall::new(store, &bodies, IdemFn::FreshKept, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::AgentEffectsSqlite => {
            let store = agent_effects_sqlite::SqliteStore::open(&path)
                .await
                .map_err(|e| format!("agent-effects SqliteStore: {e}"))?;
            let call = EffectCall {
                runtime: Runtime::new(store),
                bodies: bodies.clone(),
                replay,
            };
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::RawSqlite => {
            let raw = Arc::new(RawSqlite::open(&path, bodies.clone(), replay)?);
            if let Some(order) = replay {
                raw.fresh(order).await?;
            }
            once_per_call(raw, &bodies, mode, callers, timing).await
        }
        other => return Err(format!("{other:?} is not a SQLite row")),
    };
    remove_file(&path);
    Ok(result)
}

const RAW_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS raw (
    key BLOB PRIMARY KEY, status TEXT NOT NULL, token INTEGER NOT NULL,
    fingerprint BLOB NOT NULL, result BLOB, expires_at INTEGER NOT NULL) WITHOUT ROWID";
const RAW_INSERT: &str = "INSERT INTO raw (key, status, token, fingerprint, expires_at)
    VALUES (?1, 'in_progress', ?2, ?3, ?4) ON CONFLICT DO NOTHING";
const RAW_UPDATE: &str =
    "UPDATE raw SET status = 'completed', result = ?2, expires_at = ?3 WHERE key = ?1";
const RAW_SELECT: &str = "SELECT status, result FROM raw WHERE key = ?1";

/// A connection with the stores' settings: WAL, `synchronous = FULL`, a busy timeout of 5 s.
pub fn durable_connection(path: &Path) -> Result<Connection, String> {
    let connection = Connection::open(path).map_err(|e| e.to_string())?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| connection.pragma_update(None, "synchronous", "FULL"))
        .and_then(|()| connection.busy_timeout(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(connection)
}

/// Runs `work` on `connection` once it is free, on a thread where blocking is allowed.
pub async fn on<R, W>(connection: &Arc<Mutex<Connection>>, work: W) -> Result<R, String>
where
    R: Send + 'static,
    W: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
{
    let mut held = connection.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || work(&mut held))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The key of order `n` as the raw table holds it: 32 bytes, as idem's keys.
fn raw_key(n: u64) -> Vec<u8> {
    let mut key = vec![0u8; 24];
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Raw writes on a file of their own: a writer and a reader connection.
struct RawSqlite {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    bodies: Arc<AtomicU64>,
    replay: Option<u64>,
}

impl RawSqlite {
    fn open(path: &Path, bodies: Arc<AtomicU64>, replay: Option<u64>) -> Result<Self, String> {
        let writer = durable_connection(path)?;
        writer
            .execute_batch(RAW_SCHEMA)
            .map_err(|e| e.to_string())?;
        let reader = durable_connection(path)?;
        Ok(RawSqlite {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            bodies,
            replay,
        })
    }

    /// The claim, the body, the result.
    async fn fresh(&self, order: u64) -> Result<(), String> {
        let key = raw_key(order);
        let claim_key = key.clone();
        let token = i64::try_from(order).map_err(|e| e.to_string())?;
        let claimed = on(&self.writer, move |c| {
            c.prepare_cached(RAW_INSERT)?.execute(params![
                claim_key,
                token,
                [7u8; 32].as_slice(),
                now_ms() + 10_000
            ])
        })
        .await?;
        if claimed != 1 {
            return Err(format!("raw SQLite: key {order} was taken"));
        }
        let receipt = body(&self.bodies, CUSTOMER, order, AMOUNT);
        let result = serde_json::to_vec(&receipt).map_err(|e| e.to_string())?;
        let updated = on(&self.writer, move |c| {
            c.prepare_cached(RAW_UPDATE)?
                .execute(params![key, result, now_ms() + 24 * 3600 * 1000])
        })
        .await?;
        if updated != 1 {
            return Err(format!("raw SQLite: key {order} was not recorded"));
        }
        Ok(())
    }

    /// The recorded result, decoded.
    async fn replay(&self, order: u64) -> Result<(), String> {
        let key = raw_key(order);
        let found: Option<(String, Vec<u8>)> = on(&self.reader, move |c| {
            c.prepare_cached(RAW_SELECT)?
                .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .await?;
        match found {
            Some((status, result)) if status == "completed" => {
                let receipt: Receipt =
                    serde_json::from_slice(&result).map_err(|e| e.to_string())?;
                if receipt.is_for(order) {
                    Ok(())
                } else {
                    Err(format!("raw SQLite: a wrong answer {receipt:?}"))
                }
            }
            other => Err(format!("raw SQLite: key {order} holds {other:?}")),
        }
    }
}

impl Call for RawSqlite {
    async fn call(&self, n: u64) -> Result<(), String> {
        match self.replay {
            None => self.fresh(n).await,
            Some(order) => self.replay(order).await,
        }
    }
}

/// What the stores set, checked on files of this run: the journal mode of idem's file (WAL
/// is kept in the file), `synchronous` from agent-effects' pool (idem's
/// connections are its own: it sets `FULL` in `idem-runtime/src/store/sqlite/open.rs`, not
/// configurable), and the raw connections' settings.
pub async fn durability(folder: &Path) -> String {
    let idem_path = round_file(folder, "check-idem");
    let idem_mode = match SqliteStore::open(&idem_path).await {
        Ok(_) => journal_mode_of(&idem_path),
        Err(e) => format!("cannot open: {e}"),
    };
    remove_file(&idem_path);
    let ae_path = round_file(folder, "check-ae");
    let ae = match agent_effects_sqlite::SqliteStore::open(&ae_path).await {
        Ok(store) => {
            let pool = store.pool();
            let synchronous: Result<i64, _> = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await;
            let journal: Result<String, _> = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await;
            match (journal, synchronous) {
                (Ok(journal), Ok(synchronous)) => format!(
                    "journal_mode={}, synchronous={}",
                    journal.to_uppercase(),
                    synchronous_name(synchronous)
                ),
                (journal, synchronous) => format!("cannot read: {journal:?} {synchronous:?}"),
            }
        }
        Err(e) => format!("cannot open: {e}"),
    };
    remove_file(&ae_path);
    format!(
        "SQLite durability: idem journal_mode={idem_mode}, synchronous=FULL (set by idem, fixed); \
         agent-effects {ae} (read from its pool); raw WAL, FULL (set here)"
    )
}

fn synchronous_name(level: i64) -> &'static str {
    match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "?",
    }
}

/// The journal mode a new connection finds in the file (WAL is a property of the file).
fn journal_mode_of(path: &Path) -> String {
    Connection::open(path)
        .and_then(|c| c.pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0)))
        .map_or_else(|e| format!("unreadable: {e}"), |mode| mode.to_uppercase())
}
