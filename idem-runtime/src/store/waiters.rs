//! Wake-ups for callers waiting on a key held by another caller of the same process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::key::Key;

/// One `Notify` per key that somebody waits on.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_key: Mutex<HashMap<Key, Arc<Notify>>>,
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
        let notify = {
            let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(by_key.entry(*key).or_default())
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if still_held.await {
            let _ = tokio::time::timeout(at_most, notified).await;
        }
        self.forget_if_unused(key, &notify);
    }

    /// Wake every caller waiting on `key`.
    pub(crate) fn wake(&self, key: &Key) {
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
