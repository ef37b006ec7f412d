//! What the body of a call and the caller of a call can learn about it.

use std::cell::Cell;
use std::future::Future;

use crate::key::Key;
use crate::outcome::Disposition;
use crate::store::FencingToken;

tokio::task_local! {
    static CURRENT: CallContext;
    static OBSERVED: Cell<Option<Disposition>>;
}

/// The call whose body is running: its key, its fencing token, and whether it resumes a call
/// whose owner died. Read it with [`current_call`].
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    action: &'static str,
    key: Key,
    token: FencingToken,
    resumed: bool,
}

impl CallContext {
    pub(crate) fn new(action: &'static str, key: Key, token: FencingToken, resumed: bool) -> Self {
        CallContext {
            action,
            key,
            token,
            resumed,
        }
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
}

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
    current_call().map(|call| call.key)
}

/// The idempotent call whose body is running on this task, if any (see [`current_key`]).
pub fn current_call() -> Option<CallContext> {
    CURRENT.try_with(|call| *call).ok()
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
