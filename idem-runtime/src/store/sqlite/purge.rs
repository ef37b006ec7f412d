//! Purging expired results and dead claims, in batches that leave room for the heartbeats.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::Error;

use super::{db, now_ms, statements, Inner, SqliteStore, PURGE_BATCH, PURGE_PAUSE};

/// Deletes the expired results and dead claims (`expired!` in [`statements`]; at most `limit`, the oldest
/// expiries first) and the logs of the sagas those results ended, in one transaction; returns
/// how many records. Keep `limit` small (see [`PURGE_BATCH`]): the writer's transaction holds
/// the file's write lock, and the writes batched with it wait for it.
pub(super) fn purge(transaction: &Connection, now: i64, limit: usize) -> Result<u64, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let delete = |statement: &str| {
        transaction
            .prepare_cached(statement)
            .map_err(db)?
            .execute(params![now, limit])
            .map_err(db)
    };
    delete(statements::PURGE_STEPS)?;
    delete(statements::PURGE_SAGAS)?;
    let purged = delete(statements::PURGE_RECORDS)?;
    Ok(u64::try_from(purged).unwrap_or(u64::MAX))
}

/// How many records [`purge`] would delete now.
pub(super) fn count_expired(connection: &Connection) -> Result<u64, Error> {
    let count: i64 = connection
        .prepare_cached(statements::COUNT_EXPIRED)
        .map_err(db)?
        .query_row([now_ms()], |row| row.get(0))
        .map_err(db)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

impl SqliteStore {
    /// Purges up to `at_most` expired results, [`PURGE_BATCH`] at a time, each a write of its
    /// own on the writer; returns how many.
    ///
    /// Between batches it pauses as long as the last one took (up to [`PURGE_PAUSE`]): in this
    /// process the writer is fair anyway, but another process on the file waits for the write
    /// lock in SQLite's busy handler, which only looks now and then, and would rarely find
    /// the lock free if the batches followed each other at once.
    pub(super) async fn purge_in_batches(&self, at_most: usize) -> Result<u64, Error> {
        let (mut left, mut purged) = (at_most, 0u64);
        loop {
            let limit = left.min(PURGE_BATCH);
            let started = Instant::now();
            let batch = self
                .writing(None, None, move |connection, now| {
                    purge(connection, now, limit)
                })
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
    pub(super) fn purge_in_background(&self) {
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
}
