//! `SqliteStore`: the embedded durable store, one SQLite file in WAL mode.
//!
//! The schema is `schema.sql`, next to this file, at version `SCHEMA_VERSION` (the file's
//! `user_version`). Files of older versions are upgraded in place when a store opens them, by
//! the files of `migrations/` (`v2.sql` added the saga logs, `v3.sql` the operator's note on a
//! saga settled by hand, `v4.sql` the action's TTL on each claim, so that a claim whose owner
//! died is purged once it ran out, `v5.sql` each step's own time, so that a step's write
//! leaves the saga's head alone).
//!
//! ```text
//! mod.rs         SqliteStore, its connections, and its Store impl (each method hands one
//!                function below to the writer, or to the reading connection)
//! writer.rs      group commit: the thread that runs every write, queued writes sharing a
//!                transaction and its fsync
//! open.rs        opening a file: connections, schema.sql, migrations/
//! records.rs     the claim protocol: claim, complete, heartbeat, release, read
//! purge.rs       expired results and dead claims, in batches
//! saga_log.rs    saga logs: write, read, stale sagas
//! inspect.rs     the operator's queries
//! statements.rs  every statement the functions above run
//! ```

mod inspect;
mod open;
mod purge;
mod records;
mod saga_log;
mod statements;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection};
use tokio::sync::Mutex;

use crate::key::Key;
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Found, Opening, Ownership, Record, RecordCount,
    RecordQuery, SagaLog, SagaQuery, SagaWrite, StaleSaga, Store, StoredOutcome, Waiters,
};
use crate::store::{Inspect, SagaStore};
use crate::Error;

use inspect::{forget_result, list_records, list_sagas, record_counts, resolve_saga};
use open::open_file;
use purge::count_expired;
use records::{claim, complete, fenced, heartbeat, read, OwnedClaim};
use saga_log::{read_saga, stale_sagas, write_saga, OwnedSagaWrite};
use writer::Writer;

/// The schema this version writes; a file with a larger `user_version` is refused.
const SCHEMA_VERSION: i64 = 5;

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
/// serialises them and each waits up to 5 s for the file's write lock. In a process, the
/// writes of concurrent callers share transactions (group commit): one fsync for all that
/// queued while the last one committed, and each caller answered once its write is durable.
/// A replay is one read, taken before the next batch begins, without the write lock. Leases and TTLs are
/// measured on the machine's wall clock, which every process on the file shares (a large
/// step of that clock ends leases early or late), read once the write lock is held: waiting
/// for another process does not eat a lease.
///
/// Expired results and dead claims (see [`Store::purge_expired`]) are purged when the store
/// opens, in the background after every 1024 recorded results, and by
/// [`purge_expired`](Store::purge_expired) (or [in batches](Inspect::purge_expired_batch)).
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
    /// Claims, results, releases, heartbeats, purge batches: every write, in the order they
    /// asked, in batches that share a commit (`writer.rs`), so a heartbeat waits for the
    /// writes queued before it and those batched with it (at most 64), and one fsync.
    writer: Writer,
    /// Waiters' looks and `get`: in WAL mode they never wait for the writer, and the
    /// writer's heartbeats never queue behind them.
    reader: Arc<Mutex<Connection>>,
    waiters: Waiters,
    recorded: AtomicU64,
    /// Whether a background purge is under way (one at a time is enough).
    purging: AtomicBool,
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
                writer: Writer::start(writer)?,
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

    /// Runs `work` on the reading connection, on a thread where blocking is allowed, once
    /// the reads asked before it are done.
    async fn reading<R, W>(&self, key: Option<&Key>, work: W) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&mut Connection) -> Result<R, Error> + Send + 'static,
    {
        // Taken here, not on the blocking thread: the queue is in the order of the calls.
        let mut connection = Arc::clone(&self.inner.reader).lock_owned().await;
        let done = tokio::task::spawn_blocking(move || work(&mut connection)).await;
        match done {
            Ok(result) => result.map_err(|e| match key {
                Some(key) => e.with_key(key),
                None => e,
            }),
            Err(join) => Err(Error::store("sqlite", key, join)),
        }
    }

    /// Runs `work` in the writer's next transaction, at the time it runs (read once the
    /// file's write lock is held: a lease counted from before would lose the wait), and
    /// returns its result once that transaction has committed; unless `look`, run first
    /// outside any transaction, answers (see `writer.rs`).
    async fn writing<R, W>(
        &self,
        key: Option<&Key>,
        look: Option<writer::Look<R>>,
        work: W,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
    {
        self.inner.writer.write(key, look, work).await
    }
}

fn db(error: rusqlite::Error) -> Error {
    Error::store("sqlite", None, error)
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
        // A live result is stable until it expires: a replay is one read, before the
        // batch's transaction, without the file's write lock.
        let key = *request.key;
        let replay: writer::Look<Claim> = Box::new(move |connection| {
            let now = now_ms();
            Ok(read(connection, &key)?
                .filter(|row| row.found.is_live_result(now))
                .map(|row| row.report(now)))
        });
        self.writing(Some(request.key), Some(replay), move |connection, now| {
            claim(connection, now, &owned)
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
            .writing(Some(key), None, move |connection, now| {
                complete(connection, now, &owned_key, token, outcome, ttl)
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
            .writing(Some(key), None, move |connection, _| {
                fenced(connection, statements::RELEASE, params![hex, token as i64])
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
        self.writing(Some(key), None, move |connection, now| {
            heartbeat(connection, now, &owned_key, token, lease)
        })
        .await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        let owned_key = *key;
        let still_held = self.reading(Some(key), move |connection| {
            let now = now_ms();
            Ok(read(connection, &owned_key)?.is_some_and(|row| row.found.held_by(token, now)))
        });
        self.inner.waiters.poll(key, at_most, still_held).await;
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let owned_key = *key;
        let row = self
            .reading(Some(key), move |connection| read(connection, &owned_key))
            .await?;
        Ok(row.map(|row| row.into_record(*key)))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.purge_in_batches(usize::MAX).await
    }
}

#[async_trait]
impl SagaStore for SqliteStore {
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
        self.writing(Some(saga), None, move |connection, now| {
            write_saga(connection, now, &owned_key, &id, token, &write)
        })
        .await
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let owned_key = *saga;
        self.reading(Some(saga), move |connection| {
            read_saga(connection, &owned_key)
        })
        .await
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        self.reading(None, move |connection| stale_sagas(connection, limit))
            .await
    }
}

#[async_trait]
impl Inspect for SqliteStore {
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let query = query.clone();
        self.reading(None, move |connection| list_records(connection, &query))
            .await
    }

    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        self.reading(None, |connection| record_counts(connection))
            .await
    }

    async fn count_expired(&self) -> Result<u64, Error> {
        self.reading(None, |connection| count_expired(connection))
            .await
    }

    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        self.purge_in_batches(limit).await
    }

    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let query = query.clone();
        self.reading(None, move |connection| list_sagas(connection, &query))
            .await
    }

    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let owned_key = *key;
        self.writing(Some(key), None, move |connection, _| {
            forget_result(connection, &owned_key, token)
        })
        .await
    }

    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let (owned_key, note) = (*saga, note.to_owned());
        self.writing(Some(saga), None, move |connection, now| {
            resolve_saga(connection, now, &owned_key, &note)
        })
        .await
    }
}
