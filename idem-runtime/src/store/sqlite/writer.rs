//! Group commit: every write of the store goes to one thread, which takes what is queued,
//! runs it in one transaction (each write in a savepoint of its own) and commits it with one
//! fsync, then answers each caller.
//!
//! With one caller this is a transaction per write, as before. With many, the fsync (about
//! 190 µs on the machines this was measured on, and most of a write's cost) is shared: the
//! callers that queued while one batch committed form the next.
//!
//! The guarantees are the single write's:
//! - a caller is answered only after its batch has committed: a claim is durable before its
//!   body runs, a result before it is returned;
//! - a write that fails (a corrupt record, a constraint, a panic) is rolled back to its
//!   savepoint and answered with its error; the others in its batch commit;
//! - a batch that cannot begin (another process holds the file's write lock past the busy
//!   timeout) or commit (the disk failed) fails exactly the writes in it;
//! - each write reads the clock when it runs, after the file's write lock is held: a lease
//!   or TTL counted from a time read before the wait (up to the busy timeout, for another
//!   process's lock) could end before it was written;
//! - a claim may first look at the file, outside any transaction: a live result found there
//!   is the answer (a replay needs neither the write lock nor a commit).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::key::Key;
use crate::Error;

use super::{db, now_ms};

/// The most writes one transaction takes: a heartbeat queued behind a full batch waits for
/// at most this many writes and one fsync.
const MOST_PER_BATCH: usize = 64;

/// One write queued for the writer thread.
pub(super) trait BatchedWrite: Send {
    /// Looks at the file before the batch begins (outside any transaction): whether that
    /// look answered the caller, so that the write is not needed.
    fn answered_by_a_look(&mut self, connection: &Connection) -> bool;
    /// Runs the write's statements on `connection` at `now` (ms); whether they succeeded.
    fn run(&mut self, connection: &Connection, now: i64) -> bool;
    /// Answers the caller once the batch has ended: `Ok` if it committed.
    fn answer(self: Box<Self>, committed: Result<(), Error>);
}

/// A look at the file that may answer a write's caller without the write (`Some`).
pub(super) type Look<R> = Box<dyn FnOnce(&Connection) -> Result<Option<R>, Error> + Send>;

/// A write and the caller waiting for its answer.
struct Pending<R, W> {
    look: Option<Look<R>>,
    /// A claim (it came with a look): skipped when its caller has gone, for nobody would
    /// run the body it claims for (a runtime shutting down drops the caller's task and the
    /// task that would give the claim back).
    claim: bool,
    work: Option<W>,
    key: Option<Key>,
    done: Option<Result<R, Error>>,
    reply: oneshot::Sender<Result<R, Error>>,
}

impl<R, W> Pending<R, W> {
    fn new(
        key: Option<&Key>,
        look: Option<Look<R>>,
        work: W,
    ) -> (Self, oneshot::Receiver<Result<R, Error>>) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            claim: look.is_some(),
            look,
            work: Some(work),
            key: key.copied(),
            done: None,
            reply,
        };
        (pending, answer)
    }
}

impl<R, W> BatchedWrite for Pending<R, W>
where
    R: Send,
    W: FnOnce(&Connection, i64) -> Result<R, Error> + Send,
{
    fn answered_by_a_look(&mut self, connection: &Connection) -> bool {
        let Some(look) = self.look.take() else {
            return false;
        };
        let looked = catch_unwind(AssertUnwindSafe(|| look(connection)))
            .unwrap_or_else(|_| Err(Error::store("sqlite", None, "a look panicked")));
        match looked {
            Ok(None) => false,
            Ok(Some(value)) => {
                self.done = Some(Ok(value));
                true
            }
            Err(error) => {
                self.done = Some(Err(error));
                true
            }
        }
    }

    fn run(&mut self, connection: &Connection, now: i64) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        if self.claim && self.reply.is_closed() {
            self.done = Some(Err(Error::store("sqlite", None, "the caller went away")));
            return false;
        }
        // A write that panics fails alone, like one that errs, and the thread lives on.
        let done = catch_unwind(AssertUnwindSafe(|| work(connection, now)))
            .unwrap_or_else(|_| Err(Error::store("sqlite", None, "a write panicked")));
        let ok = done.is_ok();
        self.done = Some(done);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), Error>) {
        let answer = match (self.done, committed) {
            (Some(Err(error)), _) | (None | Some(Ok(_)), Err(error)) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(Error::store("sqlite", None, "a write was never run")),
        };
        let answer = answer.map_err(|error| match &self.key {
            Some(key) => error.with_key(key),
            None => error,
        });
        // A caller that stopped waiting (its future was dropped) needs no answer.
        let _ = self.reply.send(answer);
    }
}

/// The queue to the writer thread; the thread ends, and closes the connection, when the
/// last handle is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn BatchedWrite>>,
    counts: Arc<Counts>,
}

/// What the writer has done: read by the tests to see writes share commits.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Writes in the queue or taken from it, in all.
    pub(super) sent: AtomicU64,
    /// Transactions committed.
    pub(super) commits: AtomicU64,
}

impl Writer {
    /// Starts the writer thread on `connection`.
    pub(super) fn start(connection: Connection) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread_counts = Arc::clone(&counts);
        std::thread::Builder::new()
            .name("idem-sqlite-writer".into())
            .spawn(move || write_batches(connection, &queue, &thread_counts))
            .map_err(|error| Error::store("sqlite", None, error))?;
        Ok(Writer { jobs, counts })
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Runs `work` in the next batch (inside its transaction, at the time it runs) and
    /// returns its result once the batch has committed; unless `look`, run first on the
    /// writer's connection outside any transaction, answers: then its answer is the result,
    /// at once, and `work` is not run.
    pub(super) async fn write<R, W>(
        &self,
        key: Option<&Key>,
        look: Option<Look<R>>,
        work: W,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
    {
        let (pending, answer) = Pending::new(key, look, work);
        if self.jobs.send(Box::new(pending)).is_err() {
            return Err(Error::store(
                "sqlite",
                key,
                "the store's writer thread has stopped",
            ));
        }
        self.counts.sent.fetch_add(1, Ordering::AcqRel);
        answer.await.unwrap_or_else(|_| {
            Err(Error::store(
                "sqlite",
                key,
                "the store's writer thread stopped during the write",
            ))
        })
    }
}

/// The writer thread: a batch at a time, until every handle is gone.
fn write_batches(
    mut connection: Connection,
    queue: &mpsc::Receiver<Box<dyn BatchedWrite>>,
    counts: &Counts,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // The looks first: those they answer (replays) need no transaction, no fsync. A
        // look reads committed rows only if no transaction is open on the connection.
        let mut writes = Vec::with_capacity(batch.len());
        for mut write in batch {
            if connection.is_autocommit() && write.answered_by_a_look(&connection) {
                write.answer(Ok(()));
            } else {
                writes.push(write);
            }
        }
        if !writes.is_empty() {
            commit_batch(&mut connection, writes, counts);
        }
    }
}

/// Runs `batch` in one transaction, each write in a savepoint, commits it, and answers each
/// write.
pub(super) fn commit_batch(
    connection: &mut Connection,
    mut batch: Vec<Box<dyn BatchedWrite>>,
    counts: &Counts,
) {
    let committed = run_batch(connection, &mut batch, counts);
    // A rollback that failed inside rusqlite's drop would leave the connection in the
    // batch's transaction, where the next looks would read its uncommitted rows.
    if !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    for write in batch {
        write.answer(committed.clone());
    }
}

/// The batch's transaction: `Ok` once committed. A write that failed is answered with its
/// own error whatever this says.
fn run_batch(
    connection: &mut Connection,
    batch: &mut [Box<dyn BatchedWrite>],
    counts: &Counts,
) -> Result<(), Error> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    if let [only] = batch {
        // Alone in its batch, a write needs no savepoint: if it fails, the transaction is
        // rolled back whole (dropped), and the write's own error is its answer.
        if !only.run(&transaction, now_ms()) {
            return Ok(());
        }
    } else {
        for write in batch.iter_mut() {
            savepoint(&transaction, |connection| write.run(connection, now_ms()))?;
            // SQLite rolls back the whole transaction on some errors (a full disk, an I/O
            // error): the writes before this one would not be in it any more.
            if transaction.is_autocommit() {
                return Err(Error::store(
                    "sqlite",
                    None,
                    "the batch's transaction was rolled back by SQLite",
                ));
            }
        }
    }
    transaction.commit().map_err(db)?;
    counts.commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs `write` in a savepoint, rolled back if it reports failure.
fn savepoint(
    connection: &Connection,
    write: impl FnOnce(&Connection) -> bool,
) -> Result<(), Error> {
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(db)
    };
    run("SAVEPOINT write")?;
    if !write(connection) {
        run("ROLLBACK TO write")?;
    }
    run("RELEASE write").map(drop)
}

/// A write for [`commit_batch`], and where its answer arrives (for the tests).
#[cfg(test)]
pub(super) fn pending<R, W>(
    look: Option<Look<R>>,
    work: W,
) -> (Box<dyn BatchedWrite>, oneshot::Receiver<Result<R, Error>>)
where
    R: Send + 'static,
    W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
{
    let (pending, answer) = Pending::new(None, look, work);
    (Box::new(pending), answer)
}
