//! `SqliteStore`: the embedded durable store, one SQLite file in WAL mode.
//!
//! The schema is `SCHEMA` below, at version `SCHEMA_VERSION` (the file's `user_version`).
//! Files of older versions are upgraded in place when a store opens them: version 2 added the
//! saga logs, version 3 the operator's note on a saga settled by hand, version 4 the action's
//! TTL on each claim (so that a claim whose owner died is purged once it ran out).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, OpenFlags, OptionalExtension, Transaction,
    TransactionBehavior,
};
use tokio::sync::Mutex;

use crate::key::{Fingerprint, Key};
use crate::store::{
    decide, millis, Claim, ClaimRequest, FencingToken, Found, Opening, Ownership, Record,
    RecordCount, RecordKind, RecordQuery, RecordTally, SagaLog, SagaQuery, SagaStatus, SagaWrite,
    StaleSaga, Status, StepRecord, StepState, Store, StoredOutcome, Verdict, Waiters, Write,
};
use crate::Error;

/// The schema this version writes; a file with a larger `user_version` is refused.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS idem_records (
    key           TEXT    PRIMARY KEY,  -- 64 hex digits: a hash, never the arguments
    action        TEXT    NOT NULL,
    status        TEXT    NOT NULL,     -- in_progress | completed | needs_review
    token         INTEGER NOT NULL,     -- fencing token of the last claim
    fingerprint   BLOB    NOT NULL,     -- 32 bytes
    outcome       TEXT,                 -- ok | err, once completed
    result        BLOB,                 -- the recorded value or error, as JSON
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,              -- lease end, or result expiry; NULL: waits for review
    ttl_ms        INTEGER               -- version 4: the claiming action's TTL (see upgrade);
                                        -- NULL in claims made before: never purged
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_records_expiry ON idem_records (expires_at_ms);
CREATE TABLE IF NOT EXISTS idem_meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO idem_meta (name, value) VALUES ('fencing_token', 0);
-- Version 2: saga logs. A saga's claim is its row in idem_records.
CREATE TABLE IF NOT EXISTS idem_sagas (
    key           TEXT    PRIMARY KEY,  -- the key of the saga's claim
    id            TEXT    NOT NULL,     -- the saga's id, as its caller gave it
    status        TEXT    NOT NULL,     -- running | compensating | completed | compensated | needs_attention | interrupted | resolved
    error         TEXT,
    updated_at_ms INTEGER NOT NULL,
    note          TEXT                  -- version 3: the operator's, once resolved (see upgrade)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_sagas_status ON idem_sagas (status);
CREATE TABLE IF NOT EXISTS idem_saga_steps (
    saga          TEXT    NOT NULL,     -- idem_sagas.key
    idx           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    key           TEXT    NOT NULL,     -- the step's key
    irreversible  INTEGER NOT NULL,
    args          BLOB    NOT NULL,     -- JSON
    state         TEXT    NOT NULL,     -- started | done | failed | compensated | compensation_failed
    output        BLOB,                 -- JSON, once done
    error         TEXT,
    PRIMARY KEY (saga, idx)
) WITHOUT ROWID;
";

/// The columns of a record, in the order [`RawRow`] reads them.
const COLUMNS: &str =
    "status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, action";

/// The records a purge deletes at `?1`, the rule of `Found::is_purgeable`: results whose TTL
/// ran out, and claims whose lease ended and the action's TTL after it, unless they have a
/// saga log. `purge_expired`, its batches and `count_expired` all use it (on `idem_records AS r`). (Both kinds have
/// `expires_at_ms <= ?1`: the expiry index finds them.)
const EXPIRED: &str = "expires_at_ms <= ?1 AND (status = 'completed' OR (status = 'in_progress'      AND expires_at_ms + ttl_ms <= ?1      AND NOT EXISTS (SELECT 1 FROM idem_sagas AS g WHERE g.key = r.key)))";

/// How long a statement waits for another process's write lock. Every transaction here is a
/// few statements long, so a lock held this long means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// After how many recorded results expired ones are purged (in the background).
const PURGE_EVERY: u64 = 1024;

/// How many expired results one purge transaction deletes at most. A batch holds the writer
/// for milliseconds, so a heartbeat or a claim queued behind it waits no longer than that.
const PURGE_BATCH: usize = 500;

/// The longest pause between two batches of a purge (see [`SqliteStore::purge_in_batches`]).
const PURGE_PAUSE: Duration = Duration::from_millis(50);

/// The embedded durable store: one SQLite file (WAL mode, synchronous writes), safe for many
/// tasks and for several processes on the same file.
///
/// Claims run in `BEGIN IMMEDIATE` transactions, so two processes never own one key; SQLite
/// serialises them and each waits up to 5 s for the file's write lock. Leases and TTLs are
/// measured on the machine's wall clock, which every process on the file shares (a large
/// step of that clock ends leases early or late), read once the write lock is held: waiting
/// for another process does not eat a lease.
///
/// Expired results and dead claims (see [`Store::purge_expired`]) are purged when the store
/// opens, in the background after every 1024 recorded results, and by
/// [`purge_expired`](Store::purge_expired) (or [in batches](Store::purge_expired_batch)).
/// Every purge deletes at most 500 records per
/// transaction (whatever batch its caller asks for) and pauses between transactions, so that however large the backlog, the
/// heartbeats of the callers running bodies (in this process or another) get through.
///
/// A file made by an older idem is upgraded in place when a store opens it, and older idems
/// then refuse it: they would not know what newer ones write (a saga resolved by an operator).
///
/// ```no_run
/// use idem_runtime::{set_default_store, store::SqliteStore};
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// set_default_store(SqliteStore::open("idem.db").await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Claims, results, releases, heartbeats, purge batches: every write, one at a time, in
    /// the order they asked (tokio's mutex is fair), so a heartbeat never waits for more than
    /// the writes queued before it.
    writer: Arc<Mutex<Connection>>,
    /// Waiters' looks and `get`: in WAL mode they never wait for the writer, and the
    /// writer's heartbeats never queue behind them.
    reader: Arc<Mutex<Connection>>,
    waiters: Waiters,
    recorded: AtomicU64,
    /// Whether a background purge is under way (one at a time is enough).
    purging: AtomicBool,
}

/// Which of the store's connections a piece of work runs on.
#[derive(Debug, Clone, Copy)]
enum Use {
    Write,
    Read,
}

/// A record as read from the file.
struct Row {
    found: Found,
    outcome: Option<StoredOutcome>,
    created_at_ms: i64,
    action: String,
}

impl Row {
    fn report(self, now_ms: i64) -> Claim {
        self.found.report(self.outcome, now_ms)
    }

    fn into_record(self, key: Key) -> Record {
        Record {
            key,
            action: self.action,
            status: self.found.status,
            token: self.found.token,
            fingerprint: self.found.fingerprint,
            outcome: self.outcome,
            created_at: to_wall(self.created_at_ms),
            expires_at: self.found.expires_at_ms.map(to_wall),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store in the file at `path`, upgrading a file of an
    /// older idem in place, and purges expired results.
    ///
    /// A large backlog of expired results makes opening slower (it is purged in batches that
    /// leave room for the other processes on the file), never makes their leases run out.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let store = Self::open_with(path, Opening::ForAgents).await?;
        // Leftovers are purged later too: a busy file must not stop the store from opening.
        if let Err(error) = store.purge_in_batches(usize::MAX).await {
            tracing::warn!(target: "idem", %error, "purging expired results at open failed");
        }
        Ok(store)
    }

    /// Opens the store in the file at `path` for an operator's look: changes nothing by
    /// opening it. The file must exist and have this idem's schema version (an older file is
    /// upgraded by the first agent of this version that opens it with [`SqliteStore::open`]);
    /// nothing is created, upgraded or purged.
    ///
    /// ```
    /// use idem_runtime::store::SqliteStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let path = std::env::temp_dir().join(format!("idem-doc-existing-{}.db", std::process::id()));
    /// let missing = SqliteStore::open_existing(&path).await.unwrap_err();
    /// assert!(missing.to_string().contains("no SQLite database"), "{missing}");
    /// SqliteStore::open(&path).await?; // an agent made it
    /// let store = SqliteStore::open_existing(&path).await?;
    /// assert_eq!(store.path(), path.as_path());
    /// # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn open_existing(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Opening::Existing).await
    }

    async fn open_with(path: impl AsRef<Path>, opening: Opening) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let opened = path.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || open_file(&opened, opening))
            .await
            .map_err(|e| Error::store("sqlite", None, e))??;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Arc::new(Mutex::new(writer)),
                reader: Arc::new(Mutex::new(reader)),
                waiters: Waiters::default(),
                recorded: AtomicU64::new(0),
                purging: AtomicBool::new(false),
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Purges up to `at_most` expired results, [`PURGE_BATCH`] at a time, each batch a
    /// transaction of its own and a turn of its own on the writer; returns how many.
    ///
    /// Between batches it pauses as long as the last one took (up to [`PURGE_PAUSE`]): in this
    /// process the writer is fair anyway, but another process on the file waits for the write
    /// lock in SQLite's busy handler, which only looks now and then, and would rarely find
    /// the lock free if the batches followed each other at once.
    async fn purge_in_batches(&self, at_most: usize) -> Result<u64, Error> {
        let (mut left, mut purged) = (at_most, 0u64);
        loop {
            let limit = left.min(PURGE_BATCH);
            let started = Instant::now();
            let batch = self
                .on(Use::Write, None, move |connection| purge(connection, limit))
                .await?;
            purged = purged.saturating_add(batch);
            left = left.saturating_sub(usize::try_from(batch).unwrap_or(usize::MAX));
            if batch < limit as u64 || left == 0 {
                return Ok(purged);
            }
            let pause = started
                .elapsed()
                .clamp(Duration::from_millis(1), PURGE_PAUSE);
            tokio::time::sleep(pause).await;
        }
    }

    /// Starts [`purge_in_batches`](Self::purge_in_batches) on a task of its own, unless one
    /// is under way already: the caller whose result set it off does not wait for it.
    fn purge_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime to run it on: the next one purges
        };
        if self.inner.purging.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (also when its runtime shuts down).
        struct Purging(Arc<Inner>);
        impl Drop for Purging {
            fn drop(&mut self) {
                self.0.purging.store(false, Ordering::Release);
            }
        }
        let purging = Purging(Arc::clone(&self.inner));
        let store = self.clone();
        runtime.spawn(async move {
            let _purging = purging;
            if let Err(error) = store.purge_in_batches(usize::MAX).await {
                tracing::warn!(target: "idem", %error, "purging expired results failed");
            }
        });
    }

    /// Runs `work` on one of the connections, on a thread where blocking is allowed, once
    /// the work asked before it on that connection is done.
    async fn on<R, W>(&self, use_: Use, key: Option<&Key>, work: W) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&mut Connection) -> Result<R, Error> + Send + 'static,
    {
        let connection = match use_ {
            Use::Write => &self.inner.writer,
            Use::Read => &self.inner.reader,
        };
        // Taken here, not on the blocking thread: the queue is in the order of the calls.
        let mut connection = Arc::clone(connection).lock_owned().await;
        let done = tokio::task::spawn_blocking(move || work(&mut connection)).await;
        match done {
            Ok(result) => result.map_err(|e| match key {
                Some(key) => e.with_key(key),
                None => e,
            }),
            Err(join) => Err(Error::store("sqlite", key, join)),
        }
    }
}

/// Opens the store's two connections to `path`: creating or upgrading the schema once, or
/// checking that it is this version's.
fn open_file(path: &Path, opening: Opening) -> Result<(Connection, Connection), Error> {
    let refused = |why: String| {
        Error::store(
            "sqlite",
            None,
            format!("cannot open {}: {why}", path.display()),
        )
    };
    let failed = |e: rusqlite::Error| refused(e.to_string());
    let writer = match opening {
        Opening::ForAgents => {
            let mut writer = connect(path, OpenFlags::default()).map_err(failed)?;
            if let Some(newer) = while_busy(|| initialize(&mut writer)).map_err(failed)? {
                return Err(refused(newer_schema(newer)));
            }
            writer
        }
        Opening::Existing => {
            match std::fs::metadata(path) {
                Ok(found) if found.is_file() => {}
                Ok(_) => return Err(refused("it is not a file".into())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::store(
                        "sqlite",
                        None,
                        format!("no SQLite database at {}", path.display()),
                    ))
                }
                // Permission denied, say: not the same as a file that is not there.
                Err(error) => return Err(refused(error.to_string())),
            }
            let writer = connect(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(failed)?;
            let version: i64 =
                while_busy(|| writer.pragma_query_value(None, "user_version", |row| row.get(0)))
                    .map_err(failed)?;
            match version {
                SCHEMA_VERSION => {}
                0 => return Err(refused("it is not an idem store (no idem schema)".into())),
                newer if newer > SCHEMA_VERSION => return Err(refused(newer_schema(newer))),
                older => {
                    return Err(refused(format!(
                        "its schema version {older} was made by an older idem; the first agent \
                         of this version that opens it upgrades it (this idem knows {SCHEMA_VERSION})"
                    )))
                }
            }
            writer
        }
    };
    let reader = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    Ok((writer, reader))
}

/// Why a file of a newer idem is refused: this version would not know what that one writes.
fn newer_schema(version: i64) -> String {
    format!(
        "its schema version {version} was made by a newer idem; this one knows {SCHEMA_VERSION}"
    )
}

fn connect(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // FULL makes each commit durable: a lost claim would let a second caller run a side
    // effect that already happened.
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

/// WAL mode (readers and the writer work at once) and the schema, upgraded from an older
/// version if need be, in one transaction so that processes opening a file together never see
/// half of it, nor upgrade it twice. The version is read inside that transaction: a file that
/// a newer idem upgraded meanwhile is left alone, `Ok(Some(its version))`, never lowered.
fn initialize(connection: &mut Connection) -> rusqlite::Result<Option<i64>> {
    // A file of a newer idem is left as it is, journal mode included (read again below,
    // inside the transaction, for one upgraded meanwhile).
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(version));
    }
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Some(version)); // the transaction rolls back: nothing was written
    }
    transaction.execute_batch(SCHEMA)?;
    upgrade(&transaction)?;
    transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    transaction.commit()?;
    Ok(None)
}

/// What `CREATE TABLE IF NOT EXISTS` cannot do for a file of an older version: add columns to
/// the tables it already has. A version-1 file had no saga tables (the schema creates them
/// whole); a version-2 file has `idem_sagas` without `note`; a version-3 file has
/// `idem_records` without `ttl_ms` (its claims keep NULL there: their TTL is unknown, so a
/// purge leaves them to be resumed, as that version did).
fn upgrade(connection: &Connection) -> rusqlite::Result<()> {
    let has_column = |table: &str, column: &str| -> rusqlite::Result<bool> {
        connection.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |row| row.get(0),
        )
    };
    if !has_column("idem_sagas", "note")? {
        connection.execute_batch("ALTER TABLE idem_sagas ADD COLUMN note TEXT")?;
    }
    if !has_column("idem_records", "ttl_ms")? {
        connection.execute_batch("ALTER TABLE idem_records ADD COLUMN ttl_ms INTEGER")?;
    }
    Ok(())
}

/// Runs `work` again while another process holds a lock it needs. SQLite's busy handler does
/// not cover every case (switching a new file to WAL, a lock taken while the file is being
/// recovered), and several processes opening one new file at once meet those.
fn while_busy<T>(mut work: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match work() {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if matches!(
                    error.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

fn db(error: rusqlite::Error) -> Error {
    Error::store("sqlite", None, error)
}

/// Begins a write transaction (`BEGIN IMMEDIATE`: it waits for the file's write lock) and
/// reads the clock once the lock is held. A lease or TTL counted from a time read before the
/// wait would lose the time spent waiting for another process's lock (up to
/// [`BUSY_TIMEOUT`]), and could end before it was written.
fn begin_write(connection: &mut Connection) -> Result<(Transaction<'_>, i64), Error> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    Ok((transaction, now_ms()))
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    millis(since_epoch)
}

fn to_wall(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A record's [`COLUMNS`] as SQLite returns them, before they are checked.
type RawRow = (
    String,
    i64,
    Vec<u8>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    Option<i64>,
    String,
);

fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

/// Reads the record of `key`, checking every field: a corrupt or foreign row is an error that
/// names the key, never a panic.
fn read(connection: &Connection, key: &Key) -> Result<Option<Row>, Error> {
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM idem_records WHERE key = ?1"
        ))
        .map_err(db)?;
    let raw = statement
        .query_row([key.to_string()], raw_row)
        .optional()
        .map_err(|e| Error::codec("a record", Some(key), e))?;
    raw.map(|raw| check(key, raw)).transpose()
}

/// The record of `key` from its raw columns, every field checked.
fn check(key: &Key, raw: RawRow) -> Result<Row, Error> {
    let (status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, action) = raw;
    let corrupt =
        |what: &str| Error::codec("a record", Some(key), format!("corrupt record: {what}"));
    let status = Status::parse(&status).ok_or_else(|| corrupt("unknown status"))?;
    let fingerprint: [u8; 32] = fingerprint
        .try_into()
        .map_err(|_| corrupt("the fingerprint is not 32 bytes"))?;
    let outcome = match (outcome.as_deref(), result) {
        (None, _) => None,
        (Some("ok"), Some(bytes)) => Some(StoredOutcome::Ok(bytes)),
        (Some("err"), Some(bytes)) => Some(StoredOutcome::Err(bytes)),
        _ => return Err(corrupt("unknown outcome")),
    };
    if status == Status::Completed && outcome.is_none() {
        return Err(corrupt("completed without a result"));
    }
    Ok(Row {
        found: Found {
            status,
            token: FencingToken::try_from(token).map_err(|_| corrupt("negative token"))?,
            fingerprint: Fingerprint::from_bytes(fingerprint),
            expires_at_ms,
            // Not read: the purge's rule runs in SQL (`EXPIRED`).
            claim_ttl_ms: None,
        },
        outcome,
        created_at_ms,
        action,
    })
}

fn next_token(connection: &Connection) -> Result<FencingToken, Error> {
    let token: i64 = connection
        .prepare_cached(
            "UPDATE idem_meta SET value = value + 1 WHERE name = 'fencing_token' RETURNING value",
        )
        .map_err(db)?
        .query_row([], |row| row.get(0))
        .map_err(db)?;
    FencingToken::try_from(token)
        .map_err(|_| db(rusqlite::Error::IntegralValueOutOfRange(0, token)))
}

/// What a claim needs, owned, to move to the blocking thread.
struct OwnedClaim {
    key: Key,
    fingerprint: Fingerprint,
    action: String,
    lease: Duration,
    ttl: Duration,
    on_stale: crate::store::OnStale,
}

fn claim(connection: &mut Connection, request: &OwnedClaim) -> Result<Claim, Error> {
    let key = &request.key;
    let borrowed = ClaimRequest {
        key,
        fingerprint: &request.fingerprint,
        action: &request.action,
        lease: request.lease,
        ttl: request.ttl,
        on_stale: request.on_stale,
    };
    // A live result is stable until it expires: answer a replay with one read, without the
    // file's write lock.
    let now = now_ms();
    if let Some(row) = read(connection, key)? {
        if row.found.is_live_result(now) {
            return Ok(row.report(now));
        }
    }

    let (transaction, now) = begin_write(connection)?;
    let write = match read(&transaction, key)? {
        None => Write::Insert,
        Some(row) => match decide(&row.found, &borrowed, now) {
            Verdict::Report => return Ok(row.report(now)),
            Verdict::Write(write) => write,
        },
    };
    let lease_end = now.saturating_add(millis(request.lease));
    let ttl = millis(request.ttl);
    let hex = key.to_string();
    let claim = match write {
        Write::Insert => {
            let token = next_token(&transaction)?;
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO idem_records
                       (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, ttl_ms)
                     VALUES (?1, ?2, 'in_progress', ?3, ?4, NULL, NULL, ?5, ?6, ?7)",
                )
                .map_err(db)?
                .execute(params![hex, request.action, token as i64, &request.fingerprint.as_bytes()[..], now, lease_end, ttl])
                .map_err(db)?;
            Claim::Acquired {
                token,
                resumed: false,
            }
        }
        Write::TakeOver => {
            let token = next_token(&transaction)?;
            transaction
                .prepare_cached(
                    "UPDATE idem_records SET token = ?2, expires_at_ms = ?3, ttl_ms = ?4 WHERE key = ?1",
                )
                .map_err(db)?
                .execute(params![hex, token as i64, lease_end, ttl])
                .map_err(db)?;
            Claim::Acquired {
                token,
                resumed: true,
            }
        }
        Write::Park => {
            transaction
                .prepare_cached("UPDATE idem_records SET status = 'needs_review', expires_at_ms = NULL WHERE key = ?1")
                .map_err(db)?
                .execute([hex])
                .map_err(db)?;
            Claim::NeedsReview {
                fingerprint: request.fingerprint,
            }
        }
    };
    transaction.commit().map_err(db)?;
    Ok(claim)
}

/// Runs a write that only applies while `token` owns `key`.
fn fenced(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Ownership, Error> {
    let changed = connection
        .prepare_cached(sql)
        .map_err(db)?
        .execute(params)
        .map_err(db)?;
    Ok(if changed == 1 {
        Ownership::Held
    } else {
        Ownership::Lost
    })
}

/// Records `outcome` as the result of `key` if `token` still owns it; its TTL counts from the
/// time the write lock is held.
fn complete(
    connection: &mut Connection,
    key: &Key,
    token: FencingToken,
    outcome: StoredOutcome,
    ttl: Duration,
) -> Result<Ownership, Error> {
    let (kind, bytes) = match outcome {
        StoredOutcome::Ok(bytes) => ("ok", bytes),
        StoredOutcome::Err(bytes) => ("err", bytes),
    };
    let (transaction, now) = begin_write(connection)?;
    let mut ownership = fenced(
        &transaction,
        "UPDATE idem_records SET status = 'completed', outcome = ?3, result = ?4, expires_at_ms = ?5
         WHERE key = ?1 AND token = ?2 AND status IN ('in_progress', 'needs_review')",
        params![key.to_string(), token as i64, kind, bytes, now.saturating_add(millis(ttl))],
    )?;
    // A retry of a completion that committed but whose answer was lost: still ours.
    if ownership == Ownership::Lost
        && read(&transaction, key)?.is_some_and(|row| row.found.completed_by(token))
    {
        ownership = Ownership::Held;
    }
    transaction.commit().map_err(db)?;
    Ok(ownership)
}

/// Extends the lease of `key` to `lease` from now if `token` still owns it, now being read
/// once the write lock is held (see [`begin_write`]).
fn heartbeat(
    connection: &mut Connection,
    key: &Key,
    token: FencingToken,
    lease: Duration,
) -> Result<Ownership, Error> {
    let (transaction, now) = begin_write(connection)?;
    let ownership = fenced(
        &transaction,
        "UPDATE idem_records SET expires_at_ms = ?3 WHERE key = ?1 AND status = 'in_progress' AND token = ?2",
        params![key.to_string(), token as i64, now.saturating_add(millis(lease))],
    )?;
    transaction.commit().map_err(db)?;
    Ok(ownership)
}

/// Deletes the expired results and dead claims ([`EXPIRED`]; at most `limit`, the oldest
/// expiries first) and the logs of the sagas those results ended, in one transaction; returns
/// how many records. Keep `limit` small (see
/// [`PURGE_BATCH`]): the transaction holds the file's write lock.
fn purge(connection: &mut Connection, limit: usize) -> Result<u64, Error> {
    // The same keys in all three statements: the order is total, and the results are deleted
    // last. It is the order of the expiry index, which ends with the primary key.
    let expired = format!(
        "SELECT r.key FROM idem_records AS r WHERE {EXPIRED} ORDER BY r.expires_at_ms, r.key LIMIT ?2"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (transaction, now) = begin_write(connection)?;
    let delete = |table: &str, column: &str| {
        transaction
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE {column} IN ({expired})"
            ))
            .map_err(db)?
            .execute(params![now, limit])
            .map_err(db)
    };
    delete("idem_saga_steps", "saga")?;
    delete("idem_sagas", "key")?;
    let purged = delete("idem_records", "key")?;
    transaction.commit().map_err(db)?;
    Ok(u64::try_from(purged).unwrap_or(u64::MAX))
}

/// How many records [`purge`] would delete now.
fn count_expired(connection: &Connection) -> Result<u64, Error> {
    let count: i64 = connection
        .prepare_cached(&format!(
            "SELECT count(*) FROM idem_records AS r WHERE {EXPIRED}"
        ))
        .map_err(db)?
        .query_row([now_ms()], |row| row.get(0))
        .map_err(db)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// What a saga write needs, owned, to move to the blocking thread.
enum OwnedSagaWrite {
    Status {
        status: SagaStatus,
        error: Option<String>,
    },
    Step(StepRecord),
}

fn write_saga(
    connection: &mut Connection,
    saga: &Key,
    id: &str,
    token: FencingToken,
    write: &OwnedSagaWrite,
) -> Result<Ownership, Error> {
    let (transaction, now) = begin_write(connection)?;
    let held = read(&transaction, saga)?.is_some_and(|row| row.found.renewed_by(token));
    if !held {
        return Ok(Ownership::Lost);
    }
    let hex = saga.to_string();
    let (status, error) = match write {
        OwnedSagaWrite::Status { status, error } => (Some(status.as_str()), error.as_deref()),
        OwnedSagaWrite::Step(_) => (None, None),
    };
    transaction
        .prepare_cached(
            "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms)
             VALUES (?1, ?2, coalesce(?3, 'running'), ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET
               status = coalesce(?3, status),
               error = CASE WHEN ?3 IS NULL THEN error ELSE ?4 END,
               updated_at_ms = ?5",
        )
        .map_err(db)?
        .execute(params![hex, id, status, error, now])
        .map_err(db)?;
    if let OwnedSagaWrite::Step(step) = write {
        transaction
            .prepare_cached(
                "INSERT OR REPLACE INTO idem_saga_steps
                   (saga, idx, name, key, irreversible, args, state, output, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?
            .execute(params![
                hex,
                step.index,
                step.name,
                step.key.to_string(),
                step.irreversible,
                step.args,
                step.state.as_str(),
                step.output,
                step.error,
            ])
            .map_err(db)?;
    }
    transaction.commit().map_err(db)?;
    Ok(Ownership::Held)
}

/// The columns of a saga log's head, in the order [`RawSaga`] reads them.
const SAGA_COLUMNS: &str = "id, status, error, updated_at_ms, note";

/// A saga log's [`SAGA_COLUMNS`] as SQLite returns them, before they are checked.
type RawSaga = (String, String, Option<String>, i64, Option<String>);

fn raw_saga(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSaga> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

/// Reads a saga's log, checking every field as [`read`] does.
fn read_saga(connection: &Connection, saga: &Key) -> Result<Option<SagaLog>, Error> {
    let head = connection
        .prepare_cached(&format!(
            "SELECT {SAGA_COLUMNS} FROM idem_sagas WHERE key = ?1"
        ))
        .map_err(db)?
        .query_row([saga.to_string()], raw_saga)
        .optional()
        .map_err(|e| Error::codec("a saga log", Some(saga), e))?;
    head.map(|head| saga_log(connection, saga, head))
        .transpose()
}

/// The log of `saga` from its head's raw columns and its steps, every field checked.
fn saga_log(connection: &Connection, saga: &Key, head: RawSaga) -> Result<SagaLog, Error> {
    let corrupt = |what: String| {
        Error::codec(
            "a saga log",
            Some(saga),
            format!("corrupt saga log: {what}"),
        )
    };
    let (id, status, error, updated_at_ms, note) = head;
    let status =
        SagaStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?;
    let mut statement = connection
        .prepare_cached(
            "SELECT idx, name, key, irreversible, args, state, output, error
             FROM idem_saga_steps WHERE saga = ?1 ORDER BY idx",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([saga.to_string()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<Vec<u8>>>(6)?,
                row.get::<_, Option<String>>(7)?,
            ))
        })
        .map_err(db)?;
    let mut steps = Vec::new();
    for row in rows {
        let (index, name, key, irreversible, args, state, output, error) =
            row.map_err(|e| Error::codec("a saga log", Some(saga), e))?;
        steps.push(StepRecord {
            index: u32::try_from(index).map_err(|_| corrupt(format!("step index {index}")))?,
            key: key
                .parse()
                .map_err(|_| corrupt(format!("the key of step {index}")))?,
            state: StepState::parse(&state)
                .ok_or_else(|| corrupt(format!("unknown state {state:?} of step {index}")))?,
            name,
            irreversible,
            args,
            output,
            error,
        });
    }
    Ok(SagaLog::new(*saga, id, status, error, steps, to_wall(updated_at_ms)).with_note(note))
}

/// The sagas whose claim's lease ran out while they were running or compensating.
///
/// A read takes no lock, and here the clock is read before the statement takes its snapshot
/// on purpose: a heartbeat committed in between only makes a saga look alive, whereas a clock
/// read after the snapshot could call stale a saga whose owner had just renewed its lease.
/// Recovery claims each saga before it acts, and the claim decides under the write lock.
fn stale_sagas(connection: &Connection, limit: usize) -> Result<Vec<StaleSaga>, Error> {
    let now = now_ms();
    let mut statement = connection
        .prepare_cached(
            "SELECT s.key, s.id, r.fingerprint FROM idem_sagas s JOIN idem_records r ON r.key = s.key
             WHERE s.status IN ('running', 'compensating')
               AND r.status = 'in_progress' AND r.expires_at_ms <= ?1
             LIMIT ?2",
        )
        .map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(params![now, limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(db)?;
    let mut stale = Vec::new();
    for row in rows {
        let (key, id, fingerprint) = row.map_err(|e| Error::codec("a saga log", None, e))?;
        let corrupt = || Error::codec("a saga log", None, format!("corrupt saga row {key:?}"));
        let key: Key = key.parse().map_err(|_| corrupt())?;
        let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| corrupt())?;
        stale.push(StaleSaga::new(
            key,
            id,
            Fingerprint::from_bytes(fingerprint),
        ));
    }
    Ok(stale)
}

/// The `outcome` of the records of `kind`, where it tells kinds apart: a completed record is
/// `failed` when it recorded an error. With [`RecordKind::status`], the one mapping between
/// kinds and columns.
fn outcome_of(kind: RecordKind) -> Option<&'static str> {
    match kind {
        RecordKind::Completed => Some("ok"),
        RecordKind::Failed => Some("err"),
        RecordKind::InProgress | RecordKind::NeedsReview => None,
    }
}

/// The kind of a record by its `status` and `outcome` columns; `None` if idem writes no such
/// pair.
fn kind_of(status: &str, outcome: Option<&str>) -> Option<RecordKind> {
    let status = Status::parse(status)?;
    RecordKind::ALL.into_iter().find(|&kind| {
        kind.status() == status && outcome_of(kind).is_none_or(|wanted| outcome == Some(wanted))
    })
}

/// `WHERE …` over `conditions`, or nothing.
fn filter(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

fn sql_limit(limit: usize) -> Value {
    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The statement (and its parameters) that lists what `query` selects, the key last; `None`
/// when no record can match.
///
/// ```text
/// kind = failed, action = charge_card, key prefix 9f3a, limit 20
///   SELECT {COLUMNS}, key FROM idem_records
///   WHERE key >= '9f3a' AND key < '9f3ag' AND status = 'completed' AND outcome = 'err'
///     AND action = 'charge_card'
///   ORDER BY created_at_ms DESC, key LIMIT 20
/// ```
fn list_records_sql(query: &RecordQuery) -> Option<(String, Vec<Value>)> {
    if !query.key_prefix_can_match() {
        return None;
    }
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    if let Some(prefix) = query.key_prefix.as_deref().filter(|p| !p.is_empty()) {
        // Keys are lowercase hex, so the keys that start with `prefix` are exactly those from
        // `prefix` up to `prefix` + 'g': a range of the primary key.
        conditions.push("key >= ? AND key < ?");
        values.push(Value::Text(prefix.to_owned()));
        values.push(Value::Text(format!("{prefix}g")));
    }
    if let Some(kind) = query.kind {
        conditions.push("status = ?");
        values.push(Value::Text(kind.status().as_str().to_owned()));
        if let Some(outcome) = outcome_of(kind) {
            conditions.push("outcome = ?");
            values.push(Value::Text(outcome.to_owned()));
        }
    }
    if let Some(action) = &query.action {
        conditions.push("action = ?");
        values.push(Value::Text(action.clone()));
    }
    values.push(sql_limit(query.limit));
    let sql = format!(
        "SELECT {COLUMNS}, key FROM idem_records {} ORDER BY created_at_ms DESC, key LIMIT ?",
        filter(&conditions)
    );
    Some((sql, values))
}

fn list_records(connection: &Connection, query: &RecordQuery) -> Result<Vec<Record>, Error> {
    let Some((sql, values)) = list_records_sql(query) else {
        return Ok(Vec::new());
    };
    let mut statement = connection.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, String>(8)?, raw_row(row)))
        })
        .map_err(db)?;
    let mut records = Vec::new();
    for row in rows {
        let (key, raw) = row.map_err(|e| Error::codec("a record", None, e))?;
        let key: Key = key.parse().map_err(|_| {
            Error::codec("a record", None, format!("corrupt record: the key {key:?}"))
        })?;
        let raw = raw.map_err(|e| Error::codec("a record", Some(&key), e))?;
        records.push(check(&key, raw)?.into_record(key));
    }
    Ok(records)
}

fn record_counts(connection: &Connection) -> Result<Vec<RecordCount>, Error> {
    let mut statement = connection
        .prepare_cached(
            "SELECT action, status, outcome, count(*) FROM idem_records
             GROUP BY action, status, outcome",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .map_err(db)?;
    let mut tally = RecordTally::new();
    for row in rows {
        let (action, status, outcome, count) =
            row.map_err(|e| Error::codec("a record", None, e))?;
        let kind = kind_of(&status, outcome.as_deref()).ok_or_else(|| {
            Error::codec(
                "a record",
                None,
                format!("corrupt record of {action:?}: status {status:?}, outcome {outcome:?}"),
            )
        })?;
        tally.add(&action, kind, u64::try_from(count).unwrap_or(0));
    }
    Ok(tally.into_counts())
}

fn list_sagas(connection: &mut Connection, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    if let Some(status) = query.status {
        conditions.push("status = ?");
        values.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(id) = &query.id {
        conditions.push("id = ?");
        values.push(Value::Text(id.clone()));
    }
    values.push(sql_limit(query.limit));
    let sql = format!(
        "SELECT {SAGA_COLUMNS}, key FROM idem_sagas {} ORDER BY updated_at_ms DESC, id, key LIMIT ?",
        filter(&conditions)
    );
    // One snapshot: each log's steps as of its head.
    let transaction = connection.transaction().map_err(db)?;
    let heads = transaction
        .prepare_cached(&sql)
        .map_err(db)?
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, String>(5)?, raw_saga(row)))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::codec("a saga log", None, e))?;
    let mut logs = Vec::with_capacity(heads.len());
    for (key, head) in heads {
        let key: Key = key.parse().map_err(|_| {
            Error::codec(
                "a saga log",
                None,
                format!("corrupt saga log: the key {key:?}"),
            )
        })?;
        let head = head.map_err(|e| Error::codec("a saga log", Some(&key), e))?;
        logs.push(saga_log(&transaction, &key, head)?);
    }
    transaction.commit().map_err(db)?;
    Ok(logs)
}

/// Marks the saga `saga` resolved with `note` if it needs attention.
fn resolve_saga(connection: &mut Connection, saga: &Key, note: &str) -> Result<bool, Error> {
    let (transaction, now) = begin_write(connection)?;
    let changed = transaction
        .prepare_cached(
            "UPDATE idem_sagas SET status = 'resolved', note = ?2, updated_at_ms = ?3
             WHERE key = ?1 AND status = 'needs_attention'",
        )
        .map_err(db)?
        .execute(params![saga.to_string(), note, now])
        .map_err(db)?;
    transaction.commit().map_err(db)?;
    Ok(changed == 1)
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn Store>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let owned = OwnedClaim {
            key: *request.key,
            fingerprint: *request.fingerprint,
            action: request.action.to_owned(),
            lease: request.lease,
            ttl: request.ttl,
            on_stale: request.on_stale,
        };
        self.on(Use::Write, Some(request.key), move |connection| {
            claim(connection, &owned)
        })
        .await
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let owned_key = *key;
        let ownership = self
            .on(Use::Write, Some(key), move |connection| {
                complete(connection, &owned_key, token, outcome, ttl)
            })
            .await?;
        self.inner.waiters.wake(key);
        // The result is committed; the purge it may set off runs on its own, batch by batch,
        // so that neither this caller nor anybody's heartbeat waits for it.
        if self.inner.recorded.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.purge_in_background();
        }
        Ok(ownership)
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let hex = key.to_string();
        let ownership = self
            .on(Use::Write, Some(key), move |connection| {
                fenced(
                    connection,
                    "DELETE FROM idem_records WHERE key = ?1 AND token = ?2 AND status IN ('in_progress', 'needs_review')",
                    params![hex, token as i64],
                )
            })
            .await?;
        self.inner.waiters.wake(key);
        Ok(ownership)
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        let owned_key = *key;
        self.on(Use::Write, Some(key), move |connection| {
            heartbeat(connection, &owned_key, token, lease)
        })
        .await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        let owned_key = *key;
        let still_held = self.on(Use::Read, Some(key), move |connection| {
            let now = now_ms();
            Ok(read(connection, &owned_key)?.is_some_and(|row| row.found.held_by(token, now)))
        });
        self.inner.waiters.poll(key, at_most, still_held).await;
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let owned_key = *key;
        let row = self
            .on(Use::Read, Some(key), move |connection| {
                read(connection, &owned_key)
            })
            .await?;
        Ok(row.map(|row| row.into_record(*key)))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.purge_in_batches(usize::MAX).await
    }

    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let (owned_key, id) = (*saga, id.to_owned());
        let write = match write {
            SagaWrite::Status { status, error } => OwnedSagaWrite::Status {
                status,
                error: error.map(str::to_owned),
            },
            SagaWrite::Step(step) => OwnedSagaWrite::Step(step.clone()),
        };
        self.on(Use::Write, Some(saga), move |connection| {
            write_saga(connection, &owned_key, &id, token, &write)
        })
        .await
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let owned_key = *saga;
        self.on(Use::Read, Some(saga), move |connection| {
            read_saga(connection, &owned_key)
        })
        .await
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        self.on(Use::Read, None, move |connection| {
            stale_sagas(connection, limit)
        })
        .await
    }

    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let query = query.clone();
        self.on(Use::Read, None, move |connection| {
            list_records(connection, &query)
        })
        .await
    }

    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        self.on(Use::Read, None, |connection| record_counts(connection))
            .await
    }

    async fn count_expired(&self) -> Result<u64, Error> {
        self.on(Use::Read, None, |connection| count_expired(connection))
            .await
    }

    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        self.purge_in_batches(limit).await
    }

    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let query = query.clone();
        self.on(Use::Read, None, move |connection| {
            list_sagas(connection, &query)
        })
        .await
    }

    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let (owned_key, note) = (*saga, note.to_owned());
        self.on(Use::Write, Some(saga), move |connection| {
            resolve_saga(connection, &owned_key, &note)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OnStale;

    fn temp_file(name: &str) -> PathBuf {
        let folder = std::env::temp_dir().join(format!("idem-sqlite-unit-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let file = folder.join(name);
        let _ = std::fs::remove_file(&file);
        file
    }

    /// Writes a row by hand, as another program (or a disk fault) might have.
    fn write_row(
        path: &Path,
        key: &Key,
        status: &str,
        fingerprint: &[u8],
        expires_at_ms: Option<i64>,
    ) {
        let connection = Connection::open(path).expect("open");
        connection
            .execute(
                "INSERT OR REPLACE INTO idem_records
                   (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms)
                 VALUES (?1, 'foreign', ?2, 1, ?3, 'ok', x'31', 0, ?4)",
                params![key.to_string(), status, fingerprint, expires_at_ms],
            )
            .expect("insert");
    }

    fn request(key: &Key) -> OwnedClaim {
        OwnedClaim {
            key: *key,
            fingerprint: Fingerprint::from(*key),
            action: "test".into(),
            lease: Duration::from_secs(10),
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        }
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_naming_its_key() {
        let path = temp_file("corrupt.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let (bad_status, bad_fingerprint) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        write_row(&path, &bad_status, "exploded", &[0; 32], None);
        write_row(
            &path,
            &bad_fingerprint,
            "completed",
            &[0; 5],
            Some(i64::MAX),
        );
        for key in [bad_status, bad_fingerprint] {
            let owned = request(&key);
            let claimed = store
                .on(Use::Write, Some(&key), move |connection| {
                    claim(connection, &owned)
                })
                .await;
            match claimed {
                Err(error @ Error::Codec { .. }) => {
                    assert_eq!(error.key(), Some(&key));
                    assert!(error.to_string().contains(&key.to_string()), "{error}");
                }
                other => panic!("expected a codec error, got {other:?}"),
            }
            assert!(matches!(store.get(&key).await, Err(Error::Codec { .. })));
        }
    }

    /// A file made by the first version (no saga tables) opens, keeps its records, and gets
    /// the saga tables.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_in_place() {
        let path = temp_file("version-1.db");
        {
            let connection = Connection::open(&path).expect("open");
            connection
                .execute_batch(
                    "CREATE TABLE idem_records (
                        key TEXT PRIMARY KEY, action TEXT NOT NULL, status TEXT NOT NULL,
                        token INTEGER NOT NULL, fingerprint BLOB NOT NULL, outcome TEXT,
                        result BLOB, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER
                     ) WITHOUT ROWID;
                     CREATE TABLE idem_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                     INSERT INTO idem_meta (name, value) VALUES ('fencing_token', 41);
                     PRAGMA user_version = 1;",
                )
                .expect("a version-1 file");
        }
        let kept = Key::from_bytes([5; 32]);
        write_row(&path, &kept, "completed", &[0; 32], Some(i64::MAX));

        let store = SqliteStore::open(&path)
            .await
            .expect("open a version-1 file");
        assert!(store.get(&kept).await.expect("get").is_some());
        let saga = Key::from_bytes([6; 32]);
        let owned = request(&saga);
        let claimed = store
            .on(Use::Write, None, move |connection| {
                claim(connection, &owned)
            })
            .await
            .expect("claim");
        let Claim::Acquired { token, .. } = claimed else {
            panic!("a free key is acquired: {claimed:?}");
        };
        assert_eq!(token, 42, "the fencing counter goes on from the file's");
        let running = SagaWrite::Status {
            status: SagaStatus::Running,
            error: None,
        };
        let written = store.write_saga(&saga, "order-1", token, running).await;
        assert_eq!(written.expect("write_saga"), Ownership::Held);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    /// A file made by version 2 (saga logs without the operator's note) opens, keeps its logs,
    /// and gets the column: a saga that needed attention can be resolved, its note kept.
    #[tokio::test]
    async fn a_version_2_file_is_upgraded_in_place() {
        let path = temp_file("version-2.db");
        let (stuck, key) = (Key::from_bytes([7; 32]), Key::from_bytes([8; 32]));
        {
            let connection = Connection::open(&path).expect("open");
            connection
                .execute_batch(
                    "CREATE TABLE idem_records (
                        key TEXT PRIMARY KEY, action TEXT NOT NULL, status TEXT NOT NULL,
                        token INTEGER NOT NULL, fingerprint BLOB NOT NULL, outcome TEXT,
                        result BLOB, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER
                     ) WITHOUT ROWID;
                     CREATE INDEX idem_records_expiry ON idem_records (expires_at_ms);
                     CREATE TABLE idem_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                     INSERT INTO idem_meta (name, value) VALUES ('fencing_token', 41);
                     CREATE TABLE idem_sagas (
                        key TEXT PRIMARY KEY, id TEXT NOT NULL, status TEXT NOT NULL,
                        error TEXT, updated_at_ms INTEGER NOT NULL
                     ) WITHOUT ROWID;
                     CREATE INDEX idem_sagas_status ON idem_sagas (status);
                     CREATE TABLE idem_saga_steps (
                        saga TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL,
                        key TEXT NOT NULL, irreversible INTEGER NOT NULL, args BLOB NOT NULL,
                        state TEXT NOT NULL, output BLOB, error TEXT,
                        PRIMARY KEY (saga, idx)
                     ) WITHOUT ROWID;
                     PRAGMA user_version = 2;",
                )
                .expect("a version-2 file");
            connection
                .execute(
                    "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms)
                     VALUES (?1, 'order-7', 'needs_attention', 'refund failed', 1)",
                    [stuck.to_string()],
                )
                .expect("a saga log");
            connection
                .execute(
                    "INSERT INTO idem_saga_steps
                       (saga, idx, name, key, irreversible, args, state, output, error)
                     VALUES (?1, 0, 'charge_payment', ?2, 0, x'5b5d', 'compensation_failed', NULL, 'down')",
                    [stuck.to_string(), key.to_string()],
                )
                .expect("a step");
        }

        let store = SqliteStore::open(&path)
            .await
            .expect("open a version-2 file");
        let log = store
            .read_saga(&stuck)
            .await
            .expect("read_saga")
            .expect("the log is kept");
        assert_eq!(
            (log.id.as_str(), log.status, log.note.as_deref()),
            ("order-7", SagaStatus::NeedsAttention, None)
        );
        assert_eq!(log.steps.len(), 1);
        assert_eq!(log.steps[0].key, key);
        let note = "refunded by hand";
        assert!(store.resolve_saga(&stuck, note).await.expect("resolve"));
        drop(store);

        // Opened again, the file is not upgraded twice, and the note is there.
        let store = SqliteStore::open(&path).await.expect("reopen");
        let log = store
            .read_saga(&stuck)
            .await
            .expect("read_saga")
            .expect("the log");
        assert_eq!(
            (log.status, log.note.as_deref()),
            (SagaStatus::Resolved, Some(note))
        );
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    /// A file made by version 3 (claims without the action's TTL) opens, keeps its claims and
    /// gets the column: a claim of it whose owner died is not purged (its TTL is unknown), one
    /// made after the upgrade is, once its lease and TTL ran out.
    #[tokio::test]
    async fn a_version_3_file_is_upgraded_in_place() {
        let path = temp_file("version-3.db");
        drop(SqliteStore::open(&path).await.expect("create"));
        Connection::open(&path)
            .expect("open")
            .execute_batch(
                "ALTER TABLE idem_records DROP COLUMN ttl_ms;
                 PRAGMA user_version = 3;",
            )
            .expect("a version-3 file");
        let old = Key::from_bytes([9; 32]);
        write_row(&path, &old, "in_progress", &[0; 32], Some(1));
        Connection::open(&path)
            .expect("open")
            .execute(
                "UPDATE idem_records SET outcome = NULL, result = NULL WHERE key = ?1",
                [old.to_string()],
            )
            .expect("an in-progress row");

        let store = SqliteStore::open(&path)
            .await
            .expect("open a version-3 file");
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        let dying = Key::from_bytes([10; 32]);
        let owned = OwnedClaim {
            lease: Duration::ZERO,
            ttl: Duration::ZERO,
            ..request(&dying)
        };
        let claimed = store
            .on(Use::Write, None, move |connection| {
                claim(connection, &owned)
            })
            .await
            .expect("claim");
        assert!(matches!(claimed, Claim::Acquired { .. }), "{claimed:?}");
        assert_eq!(store.count_expired().await.expect("count"), 1);
        assert_eq!(store.purge_expired().await.expect("purge"), 1);
        assert_eq!(store.get(&dying).await.expect("get"), None);
        let kept = store.get(&old).await.expect("get").expect("the old claim");
        assert_eq!(kept.status, Status::InProgress);
    }

    /// A file a newer idem upgraded is refused, and its version is never lowered.
    #[tokio::test]
    async fn a_file_of_a_newer_idem_is_refused_and_left_alone() {
        let path = temp_file("newer.db");
        drop(SqliteStore::open(&path).await.expect("create"));
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", 99)
            .expect("set the version");
        let refused = SqliteStore::open(&path).await.expect_err("a newer file");
        assert!(
            refused.to_string().contains("made by a newer idem"),
            "{refused}"
        );
        assert_eq!(user_version(&path), 99);
        let refused = SqliteStore::open_existing(&path)
            .await
            .expect_err("a newer file");
        assert!(
            refused.to_string().contains("made by a newer idem"),
            "{refused}"
        );
    }

    /// An operator's look changes nothing: no file made, no expired result purged, no older
    /// schema upgraded, an empty file left empty.
    #[tokio::test]
    async fn opening_an_existing_store_changes_nothing() {
        let missing = temp_file("missing.db");
        let refused = SqliteStore::open_existing(&missing)
            .await
            .expect_err("missing");
        assert!(
            refused.to_string().contains("no SQLite database"),
            "{refused}"
        );
        assert!(!missing.exists(), "no file was made");

        let path = temp_file("existing.db");
        let store = SqliteStore::open(&path).await.expect("create");
        let key = Key::from_bytes([3; 32]);
        write_row(&path, &key, "completed", &[3; 32], Some(1));
        drop(store);
        let store = SqliteStore::open_existing(&path)
            .await
            .expect("open it as it is");
        assert_eq!(
            store.count_expired().await.expect("count"),
            1,
            "not purged by opening"
        );

        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", 2)
            .expect("set the version");
        let refused = SqliteStore::open_existing(&path)
            .await
            .expect_err("an older file");
        assert!(
            refused.to_string().contains("made by an older idem"),
            "{refused}"
        );
        assert_eq!(user_version(&path), 2, "not upgraded");

        let empty = temp_file("empty.db");
        std::fs::write(&empty, b"").expect("an empty file");
        let refused = SqliteStore::open_existing(&empty)
            .await
            .expect_err("not idem's");
        assert!(
            refused.to_string().contains("not an idem store"),
            "{refused}"
        );
        assert_eq!(std::fs::metadata(&empty).expect("the file").len(), 0);
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .expect("open")
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    /// Listing by key prefix reads a range of the primary key, not the whole table; a prefix
    /// no key can have reads nothing.
    #[tokio::test]
    async fn a_key_prefix_is_a_range_of_the_primary_key() {
        let path = temp_file("prefix-plan.db");
        drop(SqliteStore::open(&path).await.expect("create"));
        let query = RecordQuery::new()
            .key_prefix("9F3A")
            .kind(RecordKind::Failed)
            .action("charge_card");
        let (sql, values) = list_records_sql(&query).expect("a hex prefix");
        let connection = Connection::open(&path).expect("open");
        let mut explain = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let plan = explain
            .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
            .expect("the plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("the plan");
        assert!(
            plan.iter()
                .any(|step| step.contains("USING PRIMARY KEY (key>? AND key<?)")),
            "{plan:?}"
        );
        for not_hex in ["9f%", "9f_", "g", "9F"] {
            let mut query = RecordQuery::new();
            query.key_prefix = Some(not_hex.to_owned());
            assert_eq!(list_records_sql(&query), None, "{not_hex}");
        }
    }

    /// Purges larger than a batch are split into transactions of [`PURGE_BATCH`] results, and
    /// still delete what they were asked to: exactly `limit` of them, or every expired one.
    #[tokio::test]
    async fn purges_larger_than_a_batch_delete_all_they_are_asked_to() {
        let path = temp_file("purge-batches.db");
        let store = SqliteStore::open(&path).await.expect("create");
        let expired = 2 * PURGE_BATCH + 200;
        {
            let mut connection = Connection::open(&path).expect("open");
            let transaction = connection.transaction().expect("a transaction");
            for i in 0..expired {
                transaction
                    .execute(
                        "INSERT INTO idem_records
                           (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms)
                         VALUES (?1, 'old', 'completed', 1, zeroblob(32), 'ok', x'31', 0, 1)",
                        [format!("{i:064x}")],
                    )
                    .expect("insert");
            }
            transaction.commit().expect("commit");
        }
        let live = Key::from_bytes([4; 32]);
        write_row(&path, &live, "completed", &[0; 32], Some(i64::MAX));

        let limit = PURGE_BATCH + 100;
        assert_eq!(
            store.purge_expired_batch(limit).await.expect("purge"),
            limit as u64
        );
        let left = (expired - limit) as u64;
        assert_eq!(store.count_expired().await.expect("count"), left);
        assert_eq!(store.purge_expired().await.expect("purge"), left);
        assert_eq!(store.count_expired().await.expect("count"), 0);
        assert!(store.get(&live).await.expect("get").is_some(), "kept");
    }

    #[tokio::test]
    async fn opening_the_store_purges_expired_results() {
        let path = temp_file("purge-on-open.db");
        drop(SqliteStore::open(&path).await.expect("create"));
        let (expired, live) = (Key::from_bytes([3; 32]), Key::from_bytes([4; 32]));
        write_row(&path, &expired, "completed", &[0; 32], Some(1));
        write_row(&path, &live, "completed", &[0; 32], Some(i64::MAX));
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(store.get(&expired).await.expect("get"), None);
        assert!(store.get(&live).await.expect("get").is_some());
    }
}
