//! Sagas: multi-step operations whose completed steps are compensated in reverse order when a
//! later step fails, recorded in a durable log so that a crash is recovered from.
//!
//! A saga is claimed like any idempotent call (key: its id), so a second run of the same id
//! waits or is refused while the first runs, and replays its outcome once it has ended. Under
//! that claim, each step writes its intent before its side effect and its output after: two
//! writes per step, fenced by the saga's token.

mod recover;
mod retry;
mod rollback;
mod run;
pub(crate) mod step;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::action::{Action, OnConflict};
use crate::call::{execute, Failed};
use crate::context::{current_call, in_call};
use crate::store::{SagaStatus, SagaWrite, StepRecord, StepState, Store};
use crate::Error;

pub use recover::{recover, Recover, RecoveryReport};
pub use retry::Retry;
pub use step::StepCall;

use rollback::{rollback, Rollback};
use run::{saga_codec, Run, RunPolicy, SagaEnd, SagaFailure, StoreHandle, SAGA_ACTION};
use step::{registered, StepFailure};

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
    lease: Duration,
    ttl: Duration,
    on_conflict: OnConflict,
    compensation_retry: Retry,
    forward_retry: Retry,
}

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
            lease: Action::DEFAULT_LEASE,
            ttl: Action::DEFAULT_TTL,
            on_conflict: OnConflict::Wait(Action::DEFAULT_WAIT),
            compensation_retry: Retry::default(),
            forward_retry: Retry::default(),
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
            lease: self.lease,
            ttl: self.ttl,
            on_conflict: self.on_conflict,
            compensation_retry: self.compensation_retry,
            forward_retry: self.forward_retry,
        }
    }

    /// Sagas of different namespaces never share an id.
    pub fn namespace(mut self, namespace: &'static str) -> Self {
        self.namespace = namespace;
        self
    }

    /// How long the saga's claim holds without a heartbeat (renewed every third of it while
    /// the saga runs): how soon [`recover`] may take over from a dead owner.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long the outcome of a finished saga is kept and replayed. Once it has run out and
    /// the store has purged it (with the saga's log), the id is free again: a new run starts
    /// afresh, its steps under the same keys as before (a service that still remembers them
    /// answers from its own records).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// What a second run of the same id does while the first runs.
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }

    /// How a failing compensation is retried before the saga is left NEEDS_ATTENTION.
    pub fn compensation_retry(mut self, retry: Retry) -> Self {
        self.compensation_retry = retry;
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
    ///   it by hand (`idem resolve`, [`Store::resolve_saga`]); the error carries their note.
    /// - `Err` with another [`Error`] (the store failed, another run holds the id): the saga
    ///   did not finish; its log is kept, and the next run or [`recover`] goes on from it.
    ///
    /// A run after a crash replays the steps the log has (their outputs, without running
    /// them), runs a step left in doubt again under its own key, and goes on.
    pub async fn run<T, E, F, Fut>(self, saga: F) -> Result<T, E>
    where
        F: FnOnce(Steps<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display,
    {
        let store = match self.store {
            Some(store) => StoreHandle::Borrowed(store),
            None => match crate::default_store::default_store() {
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
            .lease(self.lease)
            .ttl(self.ttl)
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
                lease: action.lease_duration(),
                compensation_retry: self.compensation_retry,
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
    let result = saga(Steps {
        run: Arc::clone(&run),
    })
    .await;
    // The log could not be written: nothing more can be. The claim is kept as it is, for the
    // next run or `recover` to go on from the log.
    let broken = run.state().broken.take();
    if let Some(error) = broken {
        return Err(SagaEnd::Idem(error));
    }
    let dropped = run.state().dropped.clone();
    let (error, failed) = match (result, dropped) {
        (Ok(value), None) => {
            run.set_status(SagaStatus::Completed, None).await?;
            return Ok(value);
        }
        (Err(failed), _) => (failed.to_string(), Some(failed)),
        (Ok(_), Some(step)) => (
            format!("step `{step}` was dropped before its output was logged, and the saga went on without it"),
            None,
        ),
    };
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

/// The handle a saga's code runs its steps through. Cheap to clone; every clone is the same
/// run of the same saga.
///
/// See [`Saga`] and the `idem` crate's `saga_step` for examples.
#[derive(Clone)]
pub struct Steps<'a> {
    run: Arc<Run<'a>>,
}

impl std::fmt::Debug for Steps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps")
            .field("saga", &self.run.id)
            .finish_non_exhaustive()
    }
}

/// Clears the "a step is running" mark however the step ends, and, when it ends while
/// `armed` (its intent is logged and its output is not: its future was dropped, or the output
/// could not be logged), marks the run so that no later step runs.
struct Running<'r, 'a> {
    run: &'r Run<'a>,
    name: &'static str,
    armed: bool,
}

impl Drop for Running<'_, '_> {
    fn drop(&mut self) {
        let mut state = self.run.state();
        state.busy = false;
        if self.armed {
            state.dropped.get_or_insert_with(|| self.name.to_owned());
        }
    }
}

impl Steps<'_> {
    /// The saga's id.
    pub fn saga_id(&self) -> &str {
        &self.run.id
    }

    /// Runs `call` (a call of a `#[saga_step]` function) as the saga's next step: its intent
    /// and arguments are logged before its body runs, its output after. A step the log
    /// already has is replayed (its output, without running it); a step left in doubt by a
    /// crash, or logged as failed by an earlier run, runs again under the same key. Await each
    /// step before the next: the steps' places in the log must come out the same on every
    /// run. A step whose future is dropped before it finishes (a timeout) ends the saga: it
    /// is undone once its code returns.
    ///
    /// After an irreversible step has succeeded, a step that fails is retried (forward) with
    /// the saga's `forward_retry` policy before the error is returned.
    pub async fn step<F, T, E>(&self, call: StepCall<F>) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error> + Display,
    {
        let run = &*self.run;
        let StepCall { def, args, body } = call;
        let name = def.name();
        let refuse = |problem: String| Err(E::from(run.log_problem(problem)));
        let (index, logged) = {
            let mut state = run.state();
            if state.busy {
                return refuse(format!(
                    "step `{name}` started while another step was running; await each step before the next"
                ));
            }
            if let Some(dropped) = &state.dropped {
                return refuse(format!(
                    "step `{name}` cannot run: step `{dropped}` was dropped before its output was logged, so the saga is undone"
                ));
            }
            if state.broken.is_some() {
                return refuse(format!(
                    "step `{name}` cannot run: the saga's log could not be written"
                ));
            }
            state.busy = true;
            let index = state.next;
            state.next += 1;
            let logged = state.steps.iter().find(|s| s.index == index).cloned();
            (index, logged)
        };
        let mut running = Running {
            run,
            name,
            armed: false,
        };
        match registered(name) {
            Ok(found) if std::ptr::eq(found, def) => {}
            Ok(_) => {
                return refuse(format!(
                    "two saga steps are named `{name}`; give one another name with `#[saga_step(name = \"…\")]`"
                ))
            }
            Err(problem) => return refuse(problem),
        }
        let args = args.map_err(|e| E::from(e.with_key(&run.key)))?;

        let (mut record, resumed) = match logged {
            Some(logged) if logged.name != name || logged.args != args => {
                return refuse(format!(
                    "step {index} is logged as `{}` with arguments {}, but the saga now calls `{name}` with {}; a saga must call the same steps with the same arguments on every run",
                    logged.name,
                    String::from_utf8_lossy(&logged.args),
                    String::from_utf8_lossy(&args),
                ))
            }
            Some(logged) => match (logged.state, &logged.output) {
                (StepState::Done, Some(output)) => {
                    step_event(run, &logged, "replayed");
                    return serde_json::from_slice(output).map_err(|e| {
                        E::from(Error::codec("the logged output of a saga step", Some(&logged.key), e))
                    });
                }
                // In doubt, or failed in an earlier run that then went on (the saga handled
                // the error, or recovery learned it): run it again under its key.
                (StepState::Started | StepState::Failed, _) => (logged, true),
                (state, _) => {
                    return refuse(format!(
                        "step {index} (`{name}`) is {state} in the log; the saga is being undone"
                    ))
                }
            },
            None => {
                let key = run.step_key(index, name).map_err(E::from)?;
                let intent = StepRecord {
                    index,
                    name: name.to_owned(),
                    key,
                    irreversible: def.irreversible(),
                    args,
                    state: StepState::Started,
                    output: None,
                    error: None,
                };
                if let Err(error) = run.write(SagaWrite::Step(&intent)).await {
                    return Err(E::from(run.broke(error)));
                }
                (intent, false)
            }
        };
        running.armed = true;

        let context = run.context(name, record.key, resumed);
        let result = match in_call(context, body).await {
            Err(error) if run.pivot().is_some() => {
                // Past the pivot nothing is undone: try the step again, forward.
                let again = run.context(name, record.key, true);
                let retried = run
                    .policy
                    .forward_retry
                    .run(name, 1, || async {
                        run.still_owner().await.map_err(StepFailure::Idem)?;
                        in_call(again, def.run(record.args.clone())).await
                    })
                    .await;
                match retried.map(|bytes| serde_json::from_slice::<T>(&bytes)) {
                    Ok(Ok(value)) => Ok(value),
                    _ => Err(error),
                }
            }
            result => result,
        };
        let outcome = match &result {
            Ok(value) => {
                let output = serde_json::to_vec(value).map_err(|e| {
                    E::from(Error::codec(
                        "the output of a saga step",
                        Some(&record.key),
                        e,
                    ))
                })?;
                record.state = StepState::Done;
                record.output = Some(output);
                record.error = None;
                if resumed {
                    "resumed"
                } else {
                    "executed"
                }
            }
            Err(error) => {
                record.state = StepState::Failed;
                record.error = Some(error.to_string());
                "failed"
            }
        };
        if let Err(error) = run.write(SagaWrite::Step(&record)).await {
            return Err(E::from(run.broke(error)));
        }
        running.armed = false;
        step_event(run, &record, outcome);
        result
    }
}

/// The event of a step (target `idem`, INFO): the saga's id, the step's name, place and key,
/// and what happened (`executed`, `resumed`, `replayed`, `failed`, `compensated`,
/// `compensation_failed`). Arguments and outputs are not in it.
pub(crate) fn step_event(run: &Run<'_>, step: &StepRecord, outcome: &'static str) {
    tracing::info!(
        target: "idem",
        saga = %run.id,
        step = %step.name,
        index = step.index,
        key = %step.key,
        outcome,
        "saga step",
    );
}
