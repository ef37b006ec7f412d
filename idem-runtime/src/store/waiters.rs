//! Wake-ups for callers waiting on a key held by another caller: at once for one of the same
//! process, by looking again now and then ([`Waiters::poll`]) for one of another process.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::key::{Key, KeyMap};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::Error;

/// How often a store shared with other processes looks at a held record again, for changes
/// those processes made. Callers of the same process are woken at once.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const POLL: Duration = Duration::from_millis(25);

/// One `Notify` per key that somebody waits on.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_key: Mutex<KeyMap<Arc<Notify>>>,
    /// How many callers are inside [`Waiters::wait`], so that [`Waiters::wake`] (called on
    /// every complete and release) can skip the lock and the lookup when nobody waits.
    ///
    /// No wake-up is lost to this: a waiter counts itself before it registers and before
    /// `still_held` reads the record, and a store calls `wake` after its write. Both the read
    /// and the write go through the store's own synchronisation (its lock), so either the
    /// read comes after the write (and sees it: the waiter does not sleep), or it comes before,
    /// and then the count, raised before the read, is visible to `wake` after the write.
    pub(crate) waiting: AtomicUsize,
}

/// A caller inside [`Waiters::wait`]. However it leaves (woken, timed out, cancelled), it
/// drops its `Notify` from the map if nobody else uses it, then counts itself out.
struct Registered<'a> {
    waiters: &'a Waiters,
    key: Key,
    notify: Arc<Notify>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.waiters.forget_if_unused(&self.key, &self.notify);
        self.waiters.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Waiters {
    /// Wait until [`Waiters::wake`] is called for `key`, `still_held` resolves to false, or
    /// `at_most` passes. `still_held` is asked after the waiter is registered, so a wake-up
    /// between the caller's last look and this call is never lost.
    pub(crate) async fn wait(
        &self,
        key: &Key,
        at_most: Duration,
        still_held: impl Future<Output = bool>,
    ) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let registered = Registered {
            waiters: self,
            key: *key,
            notify: {
                let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
                Arc::clone(by_key.entry(*key).or_default())
            },
        };
        let notified = registered.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if still_held.await {
            let _ = tokio::time::timeout(at_most, notified).await;
        }
    }

    /// The `Store::wait` of a store that other processes share (SQLite, PostgreSQL): until a
    /// caller of this process wakes `key`, `still_held` (a look at the record: does the
    /// owner's token still hold it?) says no, or [`POLL`] or `at_most` passes, whichever is
    /// first. A look that fails counts as held: the caller waits the poll interval, then its
    /// claim says what is wrong.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) async fn poll(
        &self,
        key: &Key,
        at_most: Duration,
        still_held: impl Future<Output = Result<bool, Error>>,
    ) {
        let still_held = async { still_held.await.unwrap_or(true) };
        self.wait(key, at_most.min(POLL), still_held).await;
    }

    /// Wake every caller waiting on `key`.
    pub(crate) fn wake(&self, key: &Key) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let notify = self
            .by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn forget_if_unused(&self, key: &Key, notify: &Arc<Notify>) {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        // Two references: the map's and this waiter's. Clones are made under this lock, so
        // the count cannot grow while we look.
        if by_key.get(key).is_some_and(|n| Arc::ptr_eq(n, notify)) && Arc::strong_count(notify) == 2
        {
            by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter that is woken returns at once; one that is cancelled leaves nothing behind,
    /// and `wake` with nobody waiting has nothing to do.
    #[tokio::test]
    async fn woken_and_cancelled_waiters() {
        let waiters = Arc::new(Waiters::default());
        let key = Key::from_bytes([7; 32]);

        let waiting = {
            let waiters = Arc::clone(&waiters);
            tokio::spawn(async move {
                waiters
                    .wait(&key, Duration::from_secs(60), async { true })
                    .await;
            })
        };
        while waiters.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        waiters.wake(&key);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter is woken")
            .unwrap();

        let cancelled = waiters.wait(&key, Duration::from_secs(60), async { true });
        let _ = tokio::time::timeout(Duration::from_millis(10), cancelled).await;
        assert_eq!(waiters.waiting.load(Ordering::SeqCst), 0);
        assert!(waiters.by_key.lock().unwrap().is_empty());
    }
}
