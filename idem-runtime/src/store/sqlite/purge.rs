//! Purging expired results and dead claims, in batches that leave room for the heartbeats.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::Error;

use super::{begin_write, db, now_ms, Inner, SqliteStore, Use, PURGE_BATCH, PURGE_PAUSE};

/// The records a purge deletes at `?1`, the rule of `Found::is_purgeable`: results whose TTL
/// ran out, and claims whose lease ended and the action's TTL after it, unless they have a
/// saga log. `purge_expired`, its batches and `count_expired` all use it (on `idem_records AS r`). (Both kinds have
/// `expires_at_ms <= ?1`: the expiry index finds them.)
pub(super) const EXPIRED: &str = "expires_at_ms <= ?1 AND (status = 'completed' OR (status = 'in_progress'      AND expires_at_ms + ttl_ms <= ?1      AND NOT EXISTS (SELECT 1 FROM idem_sagas AS g WHERE g.key = r.key)))";

/// Deletes the expired results and dead claims ([`EXPIRED`]; at most `limit`, the oldest
/// expiries first) and the logs of the sagas those results ended, in one transaction; returns
/// how many records. Keep `limit` small (see
/// [`PURGE_BATCH`]): the transaction holds the file's write lock.
pub(super) fn purge(connection: &mut Connection, limit: usize) -> Result<u64, Error> {
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
pub(super) fn count_expired(connection: &Connection) -> Result<u64, Error> {
    let count: i64 = connection
        .prepare_cached(&format!(
            "SELECT count(*) FROM idem_records AS r WHERE {EXPIRED}"
        ))
        .map_err(db)?
        .query_row([now_ms()], |row| row.get(0))
        .map_err(db)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

impl SqliteStore {
    /// Purges up to `at_most` expired results, [`PURGE_BATCH`] at a time, each batch a
    /// transaction of its own and a turn of its own on the writer; returns how many.
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
