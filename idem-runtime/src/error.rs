//! The one error type for everything idem adds to a call.

use std::fmt;

use crate::key::Key;

/// A boxed error from a store's driver (SQLite, Redis, PostgreSQL, I/O…): what
/// [`Error::store`] and [`Error::codec`] take.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The source of an [`Error`], shared, so that an error can be cloned and reported in two
/// places (a saga step and the end of its run) with its driver's error intact.
pub type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in idem itself, as opposed to in the body of a call.
///
/// The error type of an `#[idempotent]` function must implement `From<idem::Error>`, so that
/// these reach the caller through the function's own `Result`:
///
/// ```
/// #[derive(Debug)]
/// enum EmailError {
///     Smtp(String),
///     Idem(idem_runtime::Error),
/// }
///
/// impl From<idem_runtime::Error> for EmailError {
///     fn from(e: idem_runtime::Error) -> Self {
///         EmailError::Idem(e)
///     }
/// }
/// # let _ = EmailError::Smtp(String::new());
/// ```
///
/// Every variant that concerns one call names its key (a hash: never the arguments).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Another caller holds the key and its lease is live: returned at once with
    /// `on_conflict = fail`, or when `on_conflict = wait(…)` ran out of time.
    InProgress {
        /// The key of the call.
        key: Key,
        /// The action's name.
        action: &'static str,
    },
    /// The key was first used with other arguments: idem will not hand one caller's result to
    /// a call that asked for something else.
    PayloadMismatch {
        /// The key of the call.
        key: Key,
        /// The action's name.
        action: &'static str,
    },
    /// This caller no longer holds its key: its lease was taken over (it was paused or cut off
    /// for longer than the lease), the record was settled by an operator, or the store lost
    /// the claim (a failover to a replica that did not have it). Its result was not recorded;
    /// when this comes after the body ran, the body's effect happened.
    LostOwnership {
        /// The key of the call.
        key: Key,
        /// The action's name.
        action: &'static str,
    },
    /// An earlier owner died inside the body and the action says `on_stale = review`: an
    /// operator must decide whether the side effect happened before the key can be used again.
    NeedsReview {
        /// The key of the call.
        key: Key,
        /// The action's name.
        action: &'static str,
    },
    /// The store could not be reached or failed before the body ran: nothing was run on
    /// this call's behalf. (When only recording a result fails, the value is still returned;
    /// see [`Disposition::ExecutedUnrecorded`](crate::Disposition::ExecutedUnrecorded).)
    Store {
        /// Which store (`"memory"`, `"sqlite"`, …).
        store: &'static str,
        /// The key concerned, when there is one.
        key: Option<Key>,
        /// What the store said.
        source: SharedError,
    },
    /// A value could not be encoded or decoded: arguments with no canonical JSON form, a
    /// result that does not serialize, or a stored record that is corrupt or of another shape.
    Codec {
        /// The key concerned, when there is one.
        key: Option<Key>,
        /// What was being encoded or decoded.
        what: &'static str,
        /// Why it failed.
        source: SharedError,
    },
    /// No store was given (`store = …`) and none was set with `idem::set_default_store`.
    NoStore {
        /// The action's name.
        action: &'static str,
    },
    /// A run of this saga id failed earlier and every step it had completed was compensated:
    /// the saga is over, and later runs of the same id are answered with this. (The run that
    /// failed returned its own error.) Run it under a new id to try again.
    SagaRolledBack {
        /// The saga's id.
        saga: String,
        /// Why it failed.
        error: String,
    },
    /// The saga failed and could not be undone: a compensation still failed after its
    /// retries, a step was left in doubt, or a step failed after an irreversible step. Its log
    /// says which; an operator must settle it. Every run of the saga id gets this until then.
    SagaNeedsAttention {
        /// The saga's id.
        saga: String,
        /// What went wrong.
        error: String,
        /// What is left to do by hand: the compensations not done, or the steps to carry
        /// forward.
        pending: Vec<String>,
    },
    /// The saga needed attention and an operator settled it by hand
    /// ([`Inspect::resolve_saga`](crate::store::Inspect::resolve_saga), `idem resolve`): it is over, and
    /// every later run of the saga id gets this, with the operator's note.
    SagaResolved {
        /// The saga's id.
        saga: String,
        /// The operator's note.
        note: String,
    },
    /// A step of the saga may have happened and idem cannot tell: its intent is logged and
    /// its outcome is not (its owner died, its future was dropped, or a run of it again
    /// failed), and it is not run again (it is irreversible, or its `verify` failed). The step
    /// stays in doubt in the log until its output is learned or an operator settles the saga.
    StepInDoubt {
        /// The saga's id.
        saga: String,
        /// The step's name.
        step: String,
        /// Why it is still in doubt.
        problem: String,
    },
    /// Two different functions would share the keys of one action: the same namespace, name
    /// and version. The second is refused rather than answered with the first's results. Give
    /// one of them another `name = "…"` (or `namespace`).
    ActionClash {
        /// The action as keys name it: `namespace/name@version`.
        action: String,
        /// The function that has it first.
        first: String,
        /// The other function.
        second: String,
    },
    /// The saga's code and its log disagree (a step is called where the log has another step
    /// or other arguments), or the saga's steps were not awaited one at a time, or a step's
    /// name is not unique in this program.
    SagaLog {
        /// The saga's id.
        saga: String,
        /// What does not fit.
        problem: String,
    },
    /// A value is larger than the action's limit (`max_value_bytes`, 1 MiB by default) and is
    /// not stored: tool input comes from a model, and a 50 MB argument or result must not
    /// reach the store.
    ///
    /// - The arguments of a saga step: refused before the step's intent is logged; its body
    ///   did not run.
    /// - A result (of an `#[idempotent]` call, or a saga step's output): the body **ran** and
    ///   its effect happened, but its result cannot be recorded. The key is not freed for a
    ///   blind re-run: it is left in doubt, as for any outcome idem cannot record, and the
    ///   next call follows the action's `on_stale` (runs again, told it resumes an
    ///   interrupted call, or waits for an operator's review).
    ///
    /// ```
    /// let key = idem_runtime::Action::new("fetch_page").key(&("https://example.com",)).unwrap();
    /// let error = idem_runtime::Error::TooLarge { key, what: "the result".into(), size: 3_000_000, limit: 1 << 20 };
    /// assert!(!error.is_transient());
    /// assert!(error.to_string().contains("3000000 bytes"));
    /// ```
    TooLarge {
        /// The key of the call (or of the saga step) the value belongs to.
        key: Key,
        /// Which value: `the result`, `the arguments of saga step `charge``, …
        what: String,
        /// Its size, serialized, in bytes.
        size: usize,
        /// The limit it is over, in bytes.
        limit: usize,
    },
}

impl Error {
    /// The key of the call this error concerns, if any.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Error::InProgress { key, .. }
            | Error::PayloadMismatch { key, .. }
            | Error::LostOwnership { key, .. }
            | Error::NeedsReview { key, .. }
            | Error::TooLarge { key, .. } => Some(key),
            Error::Store { key, .. } | Error::Codec { key, .. } => key.as_ref(),
            Error::NoStore { .. }
            | Error::SagaRolledBack { .. }
            | Error::SagaNeedsAttention { .. }
            | Error::SagaResolved { .. }
            | Error::StepInDoubt { .. }
            | Error::ActionClash { .. }
            | Error::SagaLog { .. } => None,
        }
    }

    /// Whether retrying the same call later may succeed: the key is busy or the store
    /// failed. `PayloadMismatch`, `NeedsReview` and codec errors need a different call or a
    /// person.
    ///
    /// ```
    /// let key = idem_runtime::Action::new("send").key(&("ada",)).unwrap();
    /// let busy = idem_runtime::Error::InProgress { key, action: "send" };
    /// assert!(busy.is_transient());
    /// assert_eq!(busy.key(), Some(&key));
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::InProgress { .. } | Error::Store { .. })
    }

    /// A store error, for store implementations.
    pub fn store(store: &'static str, key: Option<&Key>, source: impl Into<BoxError>) -> Self {
        Error::Store {
            store,
            key: key.copied(),
            source: SharedError::from(source.into()),
        }
    }

    /// A codec error, for store implementations and the runtime.
    pub fn codec(what: &'static str, key: Option<&Key>, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            key: key.copied(),
            what,
            source: SharedError::from(source.into()),
        }
    }

    /// The same error with `key` filled in where it was missing.
    pub(crate) fn with_key(mut self, call_key: &Key) -> Self {
        if let Error::Store { key, .. } | Error::Codec { key, .. } = &mut self {
            key.get_or_insert(*call_key);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InProgress { key, action } => write!(
                f,
                "`{action}` with key {key} is in progress in another caller"
            ),
            Error::PayloadMismatch { key, action } => write!(
                f,
                "`{action}` with key {key} was first called with different arguments; \
                 its result is not replayed to this call"
            ),
            Error::LostOwnership { key, action } => write!(
                f,
                "`{action}` with key {key}: this caller no longer holds the key (its lease \
                 was taken over, an operator settled it, or the store lost the claim), \
                 its result was not recorded"
            ),
            Error::NeedsReview { key, action } => write!(
                f,
                "`{action}` with key {key} was interrupted inside its body and waits for \
                 an operator's review"
            ),
            Error::Store { store, key, source } => match key {
                Some(key) => write!(f, "{store} store failed for key {key}: {source}"),
                None => write!(f, "{store} store failed: {source}"),
            },
            Error::Codec { key, what, source } => match key {
                Some(key) => write!(f, "cannot encode or decode {what} for key {key}: {source}"),
                None => write!(f, "cannot encode or decode {what}: {source}"),
            },
            Error::NoStore { action } => write!(
                f,
                "`{action}` has no store: pass `store = …` or call idem::set_default_store at start-up"
            ),
            Error::SagaRolledBack { saga, error } => write!(
                f,
                "saga `{saga}` failed earlier and was rolled back (every completed step compensated): {error}"
            ),
            Error::SagaNeedsAttention {
                saga,
                error,
                pending,
            } => {
                write!(f, "saga `{saga}` needs attention: {error}")?;
                if !pending.is_empty() {
                    write!(f, "; left to do by hand: {}", pending.join(", "))?;
                }
                Ok(())
            }
            Error::SagaResolved { saga, note } => write!(
                f,
                "saga `{saga}` needed attention and was settled by hand: {note}"
            ),
            Error::SagaLog { saga, problem } => write!(f, "saga `{saga}`: {problem}"),
            Error::TooLarge {
                key,
                what,
                size,
                limit,
            } => write!(
                f,
                "{what} for key {key} is {size} bytes, over the limit of {limit} bytes \
                 (`max_value_bytes`); it is not stored"
            ),
            Error::StepInDoubt {
                saga,
                step,
                problem,
            } => write!(
                f,
                "saga `{saga}`: step `{step}` may have happened and is not run again: {problem}"
            ),
            Error::ActionClash {
                action,
                first,
                second,
            } => write!(
                f,
                "`{first}` and `{second}` would share the keys of action `{action}`; \
                 give one of them another `name = \"…\"` so that neither is answered with the other's results"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store { source, .. } | Error::Codec { source, .. } => Some(&**source),
            _ => None,
        }
    }
}
