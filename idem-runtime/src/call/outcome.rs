//! How a call was answered: by running its body, or from the record of an earlier run.

/// The value of a call, and whether the body ran for it.
///
/// Returned by [`Call::run`](crate::Call::run); an `#[idempotent]` function keeps its own
/// signature, and its callers learn the same with [`observe`](crate::observe).
///
/// ```
/// use idem_runtime::{store::MemoryStore, Action, Error, Outcome};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static REFUND: Action = Action::new("refund");
/// let store = MemoryStore::new();
/// let refund = || async {
///     REFUND.call(&("charge-9",))?.run::<_, Error, _>(&store, async { Ok(1999u64) }).await
/// };
/// assert_eq!(refund().await?, Outcome::Executed(1999));
/// let again = refund().await?;
/// assert!(again.is_replayed());
/// assert_eq!(*again.value(), 1999);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The body ran on this call and its result was recorded.
    Executed(T),
    /// An earlier call's recorded result was returned; the body did not run.
    Replayed(T),
}

impl<T> Outcome<T> {
    /// The value, however it was obtained.
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Executed(value) | Outcome::Replayed(value) => value,
        }
    }

    /// The value, by reference.
    pub fn value(&self) -> &T {
        match self {
            Outcome::Executed(value) | Outcome::Replayed(value) => value,
        }
    }

    /// Whether the value came from the record of an earlier call.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

/// How one call was answered, in more detail than [`Outcome`]: what the `tracing` event of the
/// call reports and what [`observe`](crate::observe) returns (see its example).
///
/// ```
/// use idem_runtime::Disposition;
///
/// assert!(Disposition::TookOver.executed());
/// assert!(!Disposition::WaitedThenReplayed.executed());
/// assert_eq!(Disposition::WaitedThenReplayed.as_str(), "waited");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// The key was free: the body ran.
    Executed,
    /// The previous owner died inside the body (its lease ran out): the body ran again.
    TookOver,
    /// The body ran, but the store failed to record its result (after a few tries): the
    /// value was returned, and a later duplicate may run the body again once the claim runs
    /// out. An error event says so too.
    ExecutedUnrecorded,
    /// A recorded result was returned at once.
    Replayed,
    /// The call waited for another caller holding the key, then returned its result.
    WaitedThenReplayed,
    /// An earlier call was in doubt (its owner died, or its error was ambiguous) and `verify`
    /// found its effect: that output was recorded and returned, and the body did not run.
    Verified,
    /// The body ran and failed in a way that leaves its effect unknown (`in_doubt = …`, or
    /// a `verify` that failed): the key is kept in doubt, not released.
    InDoubt,
}

impl Disposition {
    /// Whether the body ran on this call.
    pub fn executed(self) -> bool {
        matches!(
            self,
            Disposition::Executed
                | Disposition::TookOver
                | Disposition::ExecutedUnrecorded
                | Disposition::InDoubt
        )
    }

    /// The word used in the `outcome` field of the call's `tracing` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Executed => "executed",
            Disposition::TookOver => "taken_over",
            Disposition::ExecutedUnrecorded => "unrecorded",
            Disposition::Replayed => "replayed",
            Disposition::WaitedThenReplayed => "waited",
            Disposition::Verified => "verified",
            Disposition::InDoubt => "in_doubt",
        }
    }
}
