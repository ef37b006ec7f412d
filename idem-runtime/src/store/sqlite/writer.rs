//! Group commit: every write of the store goes to one thread, which takes what is queued,
//! runs it in one transaction (each write in a savepoint of its own) and commits it with one
//! fsync, then answers each caller.
//!
//! With one caller this is a transaction per write, as before. With many, the fsync (about
//! 230 µs on the machines this was measured on, and the whole cost of a write) is shared:
//! the callers that queued while one batch committed form the next.
//!
//! The guarantees are the single write's:
//! - a caller is answered only after its batch has committed: a claim is durable before its
//!   body runs, a result before it is returned;
//! - a write that fails (a corrupt record, a constraint) is rolled back to its savepoint and
//!   answered with its error; the others in its batch commit;
//! - a batch that cannot begin (another process holds the file's write lock past the busy
//!   timeout) or commit (the disk failed) fails exactly the writes in it;
//! - each write reads the clock when it runs, after the file's write lock is held: a lease
//!   or TTL counted from a time read before the wait (up to the busy timeout, for another
//!   process's lock) could end before it was written.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// One write, run by the writer thread inside a batch's transaction.
pub(super) trait Write: Send {
    /// Looks at the file before the batch begins (outside any transaction): whether that
    /// look answered the caller, so that the write is not needed (a claim that finds a live
    /// result: a replay, without the write lock).
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
    work: Option<W>,
    key: Option<Key>,
    done: Option<Result<R, Error>>,
    reply: oneshot::Sender<Result<R, Error>>,
}

impl<R, W> Write for Pending<R, W>
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
    jobs: mpsc::Sender<Box<dyn Write>>,
    counts: Arc<Counts>,
}

/// What the writer has done (for the tests: how many writes shared a commit).
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Writes sent and not yet taken into a batch.
    pub(super) queued: AtomicUsize,
    /// Writes taken into batches, in all.
    pub(super) taken: AtomicUsize,
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
    /// returns its result once the batch has committed.
    pub(super) async fn write<R, W>(&self, key: Option<&Key>, work: W) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
    {
        self.write_unless(key, None, work).await
    }

    /// As [`write`](Self::write), unless `look`, run first on the writer's connection
    /// outside any transaction, answers: then its answer is the result, at once, and the
    /// write is not run.
    pub(super) async fn write_unless<R, W>(
        &self,
        key: Option<&Key>,
        look: Option<Look<R>>,
        work: W,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            look,
            work: Some(work),
            key: key.copied(),
            done: None,
            reply,
        };
        self.counts.queued.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(Box::new(pending)).is_err() {
            self.counts.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::store(
                "sqlite",
                key,
                "the store's writer thread has stopped",
            ));
        }
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
    queue: &mpsc::Receiver<Box<dyn Write>>,
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
        counts.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        counts.taken.fetch_add(batch.len(), Ordering::AcqRel);
        // The looks first: those they answer (replays) need no transaction, no fsync.
        let mut writes = Vec::with_capacity(batch.len());
        for mut write in batch {
            if write.answered_by_a_look(&connection) {
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
    batch: Vec<Box<dyn Write>>,
    counts: &Counts,
) {
    let mut batch = batch;
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            let error = db(error);
            for write in batch {
                write.answer(Err(error.clone()));
            }
            return;
        }
    };
    if let [only] = batch.as_mut_slice() {
        // Alone in its batch, a write needs no savepoint: if it fails, the transaction is
        // rolled back whole, and the write's own error is its answer.
        if !only.run(&transaction, now_ms()) {
            drop(transaction);
            for write in batch {
                write.answer(Ok(()));
            }
            return;
        }
    } else {
        for write in &mut batch {
            let outcome = savepoint(&transaction, |connection| write.run(connection, now_ms()));
            if let Err(error) = outcome {
                // The savepoint itself failed: the transaction can no longer be trusted.
                drop(transaction);
                for write in batch {
                    write.answer(Err(error.clone()));
                }
                return;
            }
        }
    }
    let committed = transaction.commit().map_err(db);
    if committed.is_ok() {
        counts.commits.fetch_add(1, Ordering::Relaxed);
    }
    for write in batch {
        write.answer(committed.clone());
    }
}

/// Runs `write` in a savepoint, rolled back if it reports failure.
fn savepoint(
    connection: &Connection,
    write: impl FnOnce(&Connection) -> bool,
) -> Result<(), Error> {
    connection.execute_batch("SAVEPOINT write").map_err(db)?;
    if !write(connection) {
        connection.execute_batch("ROLLBACK TO write").map_err(db)?;
    }
    connection.execute_batch("RELEASE write").map_err(db)
}

#[cfg(test)]
pub(super) fn pending<R, W>(work: W) -> (Box<dyn Write>, oneshot::Receiver<Result<R, Error>>)
where
    R: Send + 'static,
    W: FnOnce(&Connection, i64) -> Result<R, Error> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        look: None,
        work: Some(work),
        key: None,
        done: None,
        reply,
    };
    (Box::new(pending), answer)
}
