//! What the body of a call and the caller of a call can learn about it.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::call::Disposition;
use crate::key::Key;
use crate::store::FencingToken;

tokio::task_local! {
    static CURRENT: CallContext;
    static OBSERVED: Cell<Option<Disposition>>;
}

/// The call whose body is running: its key, its fencing token, whether it resumes a call
/// whose owner died, and whether its lease was lost meanwhile. Read it with [`current_call`].
///
/// ```
/// use idem_runtime::{current_call, store::MemoryStore, Action, Error};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static CHARGE: Action = Action::new("charge_card");
/// let header = CHARGE
///     .call(&("customer-42", 1999))?
///     .run::<_, Error, _>(&MemoryStore::new(), async {
///         let call = current_call().expect("inside the body");
///         if call.resumed() {
///             // An earlier owner died in here: the payment API deduplicates by key.
///         }
///         Ok(format!("Idempotency-Key: {}", call.key()))
///     })
///     .await?
///     .into_inner();
/// assert!(header.starts_with("Idempotency-Key: "));
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct CallContext {
    action: &'static str,
    key: Key,
    token: FencingToken,
    resumed: bool,
    shared: Arc<CallShared>,
}

/// What a call's body and the protocol around it tell each other while it runs: whether its
/// lease was lost (the heartbeat learns it, the body may want to stop), and what its
/// `verify` found (the body asks it, the protocol records accordingly).
#[derive(Debug, Default)]
pub(crate) struct CallShared {
    lost: AtomicBool,
    notify: Notify,
    verify: AtomicU8,
}

/// What a call's `verify` found, as [`CallShared`] keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verified {
    /// Not asked (the call did not resume a call in doubt, or has no `verify`), or it found
    /// nothing and the body ran.
    NotAsked = 0,
    /// It found the effect: its output is the call's result, and the body did not run.
    Happened = 1,
    /// It failed: the effect may have happened; the key stays in doubt.
    Failed = 2,
}

impl CallShared {
    /// Says that the lease is lost, to the body and every future of [`CallContext::lease_lost`].
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub(crate) fn set_verified(&self, verified: Verified) {
        self.verify.store(verified as u8, Ordering::Release);
    }

    pub(crate) fn verified(&self) -> Verified {
        match self.verify.load(Ordering::Acquire) {
            1 => Verified::Happened,
            2 => Verified::Failed,
            _ => Verified::NotAsked,
        }
    }
}

impl CallContext {
    pub(crate) fn new(action: &'static str, key: Key, token: FencingToken, resumed: bool) -> Self {
        CallContext {
            action,
            key,
            token,
            resumed,
            shared: Arc::default(),
        }
    }

    /// A context for a part of this call that has a key of its own (a saga's step or
    /// compensation): the same token and the same lease.
    pub(crate) fn part(&self, action: &'static str, key: Key, resumed: bool) -> Self {
        CallContext {
            action,
            key,
            token: self.token,
            resumed,
            shared: Arc::clone(&self.shared),
        }
    }

    /// What the body and the protocol around it tell each other.
    pub(crate) fn shared(&self) -> &Arc<CallShared> {
        &self.shared
    }

    /// The action's name.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The call's key: pass it downstream (an `Idempotency-Key` header, a message id) so that
    /// a crash between the side effect and the record cannot cause a second effect.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The fencing token of this ownership: larger than that of any earlier owner of the key.
    /// Services that accept one can refuse writes from an owner that was taken over.
    pub fn fencing_token(&self) -> FencingToken {
        self.token
    }

    /// Whether an earlier owner died inside this body (its lease ran out) and this call runs
    /// it again: the side effect may already have happened once.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Whether another caller has taken this call's key over: its lease ran out before a
    /// heartbeat could renew it (the process stalled, the store was out of reach). The body
    /// may go on, but its result will not be recorded
    /// ([`Error::LostOwnership`](crate::Error::LostOwnership)), and the new owner may be
    /// running the same side effect: a body between two steps of its own should stop here.
    pub fn is_lease_lost(&self) -> bool {
        self.shared.is_lost()
    }

    /// Resolves once the lease is lost (see [`is_lease_lost`](Self::is_lease_lost)): a body
    /// can `select!` on it to stop a long side effect that another caller now owns.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::{current_call, store::MemoryStore, Action, Error};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// static EXPORT: Action = Action::new("export_rows");
    /// let rows = EXPORT
    ///     .call(&("table-7",))?
    ///     .run::<_, Error, _>(&MemoryStore::new(), async {
    ///         let call = current_call().expect("inside the body");
    ///         let mut exported = 0_u32;
    ///         for _batch in 0..3 {
    ///             tokio::select! {
    ///                 _ = call.lease_lost() => return Err(Error::LostOwnership { key: call.key(), action: call.action() }),
    ///                 _ = tokio::time::sleep(Duration::from_millis(1)) => exported += 100,
    ///             }
    ///         }
    ///         Ok(exported)
    ///     })
    ///     .await?
    ///     .into_inner();
    /// assert_eq!(rows, 300);
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn lease_lost(&self) {
        loop {
            let notified = self.shared.notify.notified();
            if self.shared.is_lost() {
                return;
            }
            notified.await;
        }
    }
}

impl PartialEq for CallContext {
    /// Two contexts are equal when they are of the same call: action, key, token, resumed.
    fn eq(&self, other: &Self) -> bool {
        (self.action, self.key, self.token, self.resumed)
            == (other.action, other.key, other.token, other.resumed)
    }
}

impl Eq for CallContext {}

/// The key of the idempotent call whose body is running on this task, if any.
///
/// ```
/// use idem_runtime::{current_key, store::MemoryStore, Action, Error};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static CHARGE: Action = Action::new("charge");
/// let call = CHARGE.call(&("customer-42", 1999))?;
/// let key = call.key();
/// let seen = call
///     .run::<_, Error, _>(&MemoryStore::new(), async { Ok(current_key().map(|k| k.to_string())) })
///     .await?
///     .into_inner();
/// assert_eq!(seen, Some(key.to_string()));
/// assert_eq!(current_key(), None); // outside a body
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
///
/// The value is set for the body's own task: a task the body spawns does not see it, so
/// read it first and move it into the task.
pub fn current_key() -> Option<Key> {
    CURRENT.try_with(|call| call.key).ok()
}

/// The idempotent call whose body is running on this task, if any (see [`current_key`]).
pub fn current_call() -> Option<CallContext> {
    CURRENT.try_with(CallContext::clone).ok()
}

pub(crate) async fn in_call<F: Future>(call: CallContext, body: F) -> F::Output {
    CURRENT.scope(call, body).await
}

/// Runs `call` (a future that makes one idempotent call, such as an `#[idempotent]` function)
/// and returns its output together with how idem answered it, or `None` when no idempotent
/// call finished inside it (for example when it failed before claiming).
///
/// ```
/// use idem_runtime::{observe, store::MemoryStore, Action, Disposition, Error};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static SEND: Action = Action::new("send");
/// let store = MemoryStore::new();
/// let send = || async {
///     SEND.call(&("hello",))?
///         .run::<_, Error, _>(&store, async { Ok(1) })
///         .await
///         .map(|outcome| outcome.into_inner())
/// };
/// let (_, first) = observe(send()).await;
/// let (_, second) = observe(send()).await;
/// assert_eq!(first, Some(Disposition::Executed));
/// assert_eq!(second, Some(Disposition::Replayed));
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
///
/// When several idempotent calls finish inside `call`, the last one to finish is reported
/// (for nested calls, the outermost).
pub async fn observe<F: Future>(call: F) -> (F::Output, Option<Disposition>) {
    OBSERVED
        .scope(Cell::new(None), async move {
            let output = call.await;
            (output, OBSERVED.with(Cell::get))
        })
        .await
}

/// Tell an enclosing [`observe`], if any, how a call was answered.
pub(crate) fn report(disposition: Disposition) {
    let _ = OBSERVED.try_with(|slot| slot.set(Some(disposition)));
}
