//! Sagas: multi-step operations whose completed steps are compensated in reverse order when a
//! later step fails, recorded in a durable log so that a crash is recovered from.
//!
//! A saga is claimed like any idempotent call (key: its id), so a second run of the same id
//! waits or is refused while the first runs, and replays its outcome once it has ended. Under
//! that claim, each step writes its intent before its side effect and its output after: two
//! writes per step, fenced by the saga's token.

mod doubt;
mod recover;
mod retry;
mod rollback;
mod run;
pub(crate) mod step;
mod steps;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::context::current_call;
use crate::call::{execute, Failed};
use crate::call::{Action, OnConflict};
use crate::store::{SagaStatus, Store};
use crate::Error;

pub use recover::{recover, Recover, RecoveryReport};

/// What the saga log keeps in place of a `#[saga_step]` argument marked `#[secret]`: this
/// JSON string, never the value (nor its length or a hash of it).
///
/// ```
/// assert_eq!(idem_runtime::SECRET_PLACEHOLDER, "<secret>");
/// ```
pub const SECRET_PLACEHOLDER: &str = "<secret>";
pub use retry::Retry;
pub use step::StepCall;
pub use steps::Steps;

use rollback::{rollback, Rollback};
use run::{saga_codec, Run, RunPolicy, SagaEnd, SagaFailure, StoreHandle, SAGA_ACTION};
pub(crate) use steps::step_event;

/// A saga: steps that each have a compensation, run in order; when one fails, the ones that
/// succeeded are undone in reverse order. Its log is durable in the store, so a run after a
/// crash replays the finished steps and goes on, and [`recover`] finishes the sagas of dead
/// owners.
///
/// ```
/// use idem_runtime::{store::MemoryStore, Error, Saga};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// // Steps are `#[saga_step]` functions (see the `idem` crate); a saga with none still has
/// // an id, a claim and a recorded outcome.
/// let total = Saga::new("order-42")
///     .store(&store)
///     .run(|_steps| async move { Ok::<_, Error>(1999) })
///     .await?;
/// assert_eq!(total, 1999);
///
/// // The same id again: the recorded outcome, without running anything.
/// let again = Saga::new("order-42")
///     .store(&store)
///     .run(|_steps| async move { Ok::<_, Error>(0) })
///     .await?;
/// assert_eq!(again, 1999);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
#[must_use = "a saga does nothing until it is `run`"]
pub struct Saga<'a> {
    id: String,
    store: Option<&'a dyn Store>,
    namespace: &'static str,
    on_conflict: OnConflict,
    forward_retry: Retry,
    shared: SharedSettings,
}

/// What a saga and its recovery ([`Recover`]) are both set with, and set the same way
/// (`shared_settings!`): the lease of the saga's claim, how long its outcome is kept, and how
/// its compensations are retried.
#[derive(Debug, Clone, Copy)]
struct SharedSettings {
    lease: Duration,
    ttl: Duration,
    compensation_retry: Retry,
}

impl Default for SharedSettings {
    fn default() -> Self {
        SharedSettings {
            lease: Action::DEFAULT_LEASE,
            ttl: Action::DEFAULT_TTL,
            compensation_retry: Retry::default(),
        }
    }
}

/// The setters of [`SharedSettings`], for `Saga` and `Recover`: one text and one rule for
/// both. `$ttl_note` says what the outcome's ttl is to the type at hand.
macro_rules! shared_settings {
    ($lease_note:literal, $ttl_note:literal) => {
        #[doc = concat!("How long the saga's claim holds without a heartbeat (renewed every third of it while it works): ", $lease_note)]
        pub fn lease(mut self, lease: Duration) -> Self {
            self.shared.lease = lease;
            self
        }

        #[doc = concat!("How long the outcome of a saga is kept and replayed to later runs of its id. ", $ttl_note)]
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.shared.ttl = ttl;
            self
        }

        /// How a failing compensation is retried before the saga is left NEEDS_ATTENTION.
        pub fn compensation_retry(mut self, retry: Retry) -> Self {
            self.shared.compensation_retry = retry;
            self
        }
    };
}
use shared_settings;

impl Saga<'static> {
    /// The saga with this id, on the default store (see
    /// [`set_default_store`](crate::set_default_store)), with the defaults: lease 10 s,
    /// outcome kept 24 h, a second run waits up to 30 s for a running one, compensations and
    /// steps past an irreversible step tried up to 5 times in all (pausing 100 ms, doubling up
    /// to 5 s).
    pub fn new(id: impl Into<String>) -> Self {
        Saga {
            id: id.into(),
            store: None,
            namespace: Action::DEFAULT_NAMESPACE,
            on_conflict: OnConflict::Wait(Action::DEFAULT_WAIT),
            forward_retry: Retry::default(),
            shared: SharedSettings::default(),
        }
    }
}

impl<'a> Saga<'a> {
    /// The store that keeps the saga's claim and log.
    pub fn store<'s>(self, store: &'s dyn Store) -> Saga<'s> {
        Saga {
            store: Some(store),
            id: self.id,
            namespace: self.namespace,
            on_conflict: self.on_conflict,
            forward_retry: self.forward_retry,
            shared: self.shared,
        }
    }

    /// Sagas of different namespaces never share an id.
    pub fn namespace(mut self, namespace: &'static str) -> Self {
        self.namespace = namespace;
        self
    }

    shared_settings!(
        "how soon [`recover`] may take over from a dead owner.",
        "Once it has run out and the store has purged it (with the saga's log), the id is free again: a new run starts afresh, its steps under the same keys as before (a service that still remembers them answers from its own records)."
    );

    /// What a second run of the same id does while the first runs.
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }

    /// How a step that fails after an irreversible step succeeded is retried (forward: the
    /// irreversible step cannot be undone) before the saga is left NEEDS_ATTENTION.
    pub fn forward_retry(mut self, retry: Retry) -> Self {
        self.forward_retry = retry;
        self
    }

    /// The saga's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs the saga: `saga` gets the [`Steps`] handle and runs each step with
    /// [`Steps::step`], in order.
    ///
    /// - `Ok(value)`: every step succeeded (now, or in an earlier run whose outcome is
    ///   replayed).
    /// - `Err(e)` with the error that failed the saga (a step's, or the saga's own): every
    ///   step that had completed was compensated, last first.
    /// - `Err` with [`Error::SagaNeedsAttention`]: a compensation still failed after its
    ///   retries, or a step failed after an irreversible step; the log says what is left.
    /// - `Err` with [`Error::SagaRolledBack`]: an earlier run of this id was rolled back.
    /// - `Err` with [`Error::SagaResolved`]: the saga needed attention and an operator settled
    ///   it by hand (`idem resolve`, [`Inspect::resolve_saga`](crate::store::Inspect::resolve_saga)); the error carries their note.
    /// - `Err` with another [`Error`] (the store failed, another run holds the id): the saga
    ///   did not finish; its log is kept, and the next run or [`recover`] goes on from it.
    ///
    /// A run after a crash replays the steps the log has (their outputs, without running
    /// them), settles a step left in doubt (its `verify`, or a run of it again under its own
    /// key where that is safe), and goes on.
    pub async fn run<T, E, F, Fut>(self, saga: F) -> Result<T, E>
    where
        F: FnOnce(Steps<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display,
    {
        let store = match self.store {
            Some(store) => StoreHandle::Borrowed(store),
            None => match crate::call::default_store::default_store() {
                Some(store) => StoreHandle::Shared(store),
                None => {
                    return Err(E::from(Error::NoStore {
                        action: SAGA_ACTION,
                    }))
                }
            },
        };
        let claim_store = store.clone();
        let action = Action::new(SAGA_ACTION)
            .namespace(self.namespace)
            .lease(self.shared.lease)
            .ttl(self.shared.ttl)
            .on_conflict(self.on_conflict);
        let call = action.call(&(&self.id,)).map_err(E::from)?;
        let codec = saga_codec::<T, E>();
        let id = self.id.clone();
        let body = async {
            let Some(claim) = current_call() else {
                return Err(SagaEnd::Idem(Error::SagaLog {
                    saga: self.id.clone(),
                    problem: "the saga's body ran outside its claim".into(),
                }));
            };
            let policy = RunPolicy {
                lease: action.settings().lease,
                compensation_retry: self.shared.compensation_retry,
                forward_retry: self.forward_retry,
            };
            let run = Arc::new(Run::new(store, self.id.clone(), &claim, policy));
            drive(run, saga).await
        };
        match execute(call, claim_store.get(), &codec, body).await {
            Ok((value, _)) => Ok(value),
            Err(Failed::Idem(error)) => Err(E::from(error)),
            Err(Failed::Body(end, _) | Failed::Replayed(end, _)) => Err(end.into_error(&id)),
        }
    }
}

/// The body of a saga's claim: read the log, then run the saga's code (replaying what the
/// log has), or go on undoing it.
async fn drive<'a, T, E, F, Fut>(run: Arc<Run<'a>>, saga: F) -> Result<T, SagaEnd<E>>
where
    F: FnOnce(Steps<'a>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let log = run.store.get().read_saga(&run.key).await?;
    let (status, error, note) = match log {
        Some(log) => {
            run.state().steps = log.steps;
            (Some(log.status), log.error, log.note)
        }
        None => (None, None, None),
    };
    let error = error.unwrap_or_default();
    match status {
        None | Some(SagaStatus::Interrupted) => run.set_status(SagaStatus::Running, None).await?,
        // A crash after the last step, before the outcome was recorded: replay to learn it.
        Some(SagaStatus::Running | SagaStatus::Completed) => {}
        Some(SagaStatus::Compensating) => {
            if let Some(unlinked) = run.unlinked(&run.state().steps) {
                return Err(SagaEnd::Idem(unlinked));
            }
            return Err(ended(rollback(&run, &error).await?, None));
        }
        Some(SagaStatus::Compensated) => {
            return Err(SagaEnd::RolledBack {
                error: None,
                failure: SagaFailure::compensated(&error),
            })
        }
        Some(SagaStatus::NeedsAttention) => {
            let pending = Run::pending(&run.state().steps);
            return Err(SagaEnd::NeedsAttention(SagaFailure::needs_attention(
                error, pending,
            )));
        }
        // Settled by an operator: over, like a recorded failure; the note says how.
        Some(SagaStatus::Resolved) => {
            return Err(SagaEnd::Replayed(SagaFailure::resolved(
                note.unwrap_or_default(),
            )))
        }
    }
    let result = saga(Steps::new(Arc::clone(&run))).await;
    // The log could not be written: nothing more can be. The claim is kept as it is, for the
    // next run or `recover` to go on from the log.
    let broken = run.state().broken.take();
    if let Some(error) = broken {
        return Err(SagaEnd::Idem(error));
    }
    let unsettled = run.state().unsettled.clone();
    let (error, failed) = match (result, unsettled) {
        (Ok(value), None) => {
            run.set_status(SagaStatus::Completed, None).await?;
            return Ok(value);
        }
        (Err(failed), _) => (failed.to_string(), Some(failed)),
        (Ok(_), Some(step)) => (
            format!("step `{step}` ended before its outcome was logged (its future was dropped, or it was in doubt and could not be settled), and the saga went on without it"),
            None,
        ),
    };
    if run.pivot().is_some() {
        // Past the pivot a step in doubt is settled before anyone is told to carry it
        // forward: carried forward blind, it could happen twice.
        if let Err(attention) = doubt::settle_doubt(&run, doubt::Settling::Rollback).await? {
            return Err(SagaEnd::NeedsAttention(attention));
        }
    }
    if let Some(pivot) = run.pivot() {
        let problem = format!(
            "it failed after its irreversible step `{pivot}` succeeded, so it cannot be undone and must be carried forward: {error}"
        );
        run.set_status(SagaStatus::NeedsAttention, Some(&problem))
            .await?;
        let pending = Run::pending(&run.state().steps);
        return Err(SagaEnd::NeedsAttention(SagaFailure::needs_attention(
            problem, pending,
        )));
    }
    Err(ended(rollback(&run, &error).await?, failed))
}

fn ended<E>(rollback: Rollback, error: Option<E>) -> SagaEnd<E> {
    match rollback {
        Rollback::Compensated(failure) => SagaEnd::RolledBack { error, failure },
        Rollback::NeedsAttention(failure) => SagaEnd::NeedsAttention(failure),
    }
}
