//! One run of a saga under its claim: the log it writes, and how it ends.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::call::context::CallContext;
use crate::call::Action;
use crate::call::{Codec, FinalErrors};
use crate::key::Key;
use crate::saga::retry::Retry;
use crate::store::{FencingToken, Ownership, SagaStatus, SagaWrite, StepRecord, StepState, Store};
use crate::Error;

/// The actions whose keys name a saga's parts: each step and each compensation is keyed by
/// (the saga's key, the step's place, the step's name).
static STEP_KEYS: Action = Action::new("saga_step");
static COMPENSATION_KEYS: Action = Action::new("saga_compensation");

/// The action of every saga's claim (its namespace and policy are the saga's own).
pub(crate) const SAGA_ACTION: &str = "saga";

/// A store the saga borrowed from its caller, or the default store it holds.
#[derive(Clone)]
pub(crate) enum StoreHandle<'a> {
    Borrowed(&'a dyn Store),
    Shared(Arc<dyn Store>),
}

impl StoreHandle<'_> {
    pub(crate) fn get(&self) -> &dyn Store {
        match self {
            StoreHandle::Borrowed(store) => *store,
            StoreHandle::Shared(store) => &**store,
        }
    }
}

/// A saga being run (or recovered) by the holder of its claim.
pub(crate) struct Run<'a> {
    pub(crate) store: StoreHandle<'a>,
    pub(crate) key: Key,
    pub(crate) id: String,
    pub(crate) token: FencingToken,
    /// The claim was taken over from an owner that died: what the steps and compensations
    /// run now may have run before.
    pub(crate) resumed: bool,
    pub(crate) policy: RunPolicy,
    /// The saga's claim, whose token and lease its steps share.
    claim: CallContext,
    state: Mutex<RunState>,
}

/// How a run retries, and the lease its claim is renewed to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunPolicy {
    pub(crate) lease: std::time::Duration,
    pub(crate) compensation_retry: Retry,
    pub(crate) forward_retry: Retry,
}

/// What the run knows of its steps.
#[derive(Default)]
pub(crate) struct RunState {
    /// The place of the next step.
    pub(crate) next: u32,
    /// The steps as logged, by place: read at the start, kept up to date by each write.
    pub(crate) steps: Vec<StepRecord>,
    /// A step is running: steps must be awaited one at a time.
    pub(crate) busy: bool,
    /// A step whose intent is logged but whose outcome is not, and that will not be: its
    /// future was dropped (a timeout), its output could not be logged, or it was in doubt and
    /// a run of it again failed. The saga cannot go on past it (a new call would get a new
    /// place and a new key): it is undone, once the step's doubt is settled.
    pub(crate) unsettled: Option<String>,
    /// The log could not be written (the store failed, or the claim was taken over): nothing
    /// more can be, and the saga is left, as it is, to whoever holds its claim next.
    pub(crate) broken: Option<Error>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        store: StoreHandle<'a>,
        id: String,
        claim: &CallContext,
        policy: RunPolicy,
    ) -> Self {
        Run {
            store,
            key: claim.key(),
            id,
            token: claim.fencing_token(),
            resumed: claim.resumed(),
            policy,
            claim: claim.clone(),
            state: Mutex::default(),
        }
    }

    /// Whether the claim is still this run's: a fenced heartbeat, made before each
    /// compensation and each retry, so that an owner that was taken over stops there.
    pub(crate) async fn still_owner(&self) -> Result<(), Error> {
        let held = self
            .store
            .get()
            .heartbeat(&self.key, self.token, self.policy.lease)
            .await
            .map_err(|e| e.with_key(&self.key))?;
        match held {
            Ownership::Held => Ok(()),
            Ownership::Lost => Err(self.lost()),
        }
    }

    fn lost(&self) -> Error {
        Error::LostOwnership {
            key: self.key,
            action: SAGA_ACTION,
        }
    }

    /// Keeps `error` (a write to the log failed) for the end of the run, and returns a copy
    /// for the step that met it.
    pub(crate) fn broke(&self, error: Error) -> Error {
        let copy = error.clone();
        self.state().broken.get_or_insert(error);
        copy
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, RunState> {
        // Every change under this lock is one assignment: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes to the log under the saga's claim; a claim taken over is `LostOwnership`.
    pub(crate) async fn write(&self, write: SagaWrite<'_>) -> Result<(), Error> {
        let written = self
            .store
            .get()
            .write_saga(&self.key, &self.id, self.token, write)
            .await
            .map_err(|e| e.with_key(&self.key))?;
        if written == Ownership::Lost {
            return Err(self.lost());
        }
        if let SagaWrite::Step(step) = write {
            let mut state = self.state();
            match state.steps.iter_mut().find(|s| s.index == step.index) {
                Some(logged) => *logged = step.clone(),
                None => state.steps.push(step.clone()),
            }
        }
        Ok(())
    }

    pub(crate) async fn set_status(
        &self,
        status: SagaStatus,
        error: Option<&str>,
    ) -> Result<(), Error> {
        self.write(SagaWrite::Status { status, error }).await
    }

    /// The irreversible step that succeeded, if any: past it, the saga only goes forward.
    pub(crate) fn pivot(&self) -> Option<String> {
        self.state()
            .steps
            .iter()
            .find(|s| s.irreversible && s.state == StepState::Done)
            .map(|s| s.name.clone())
    }

    pub(crate) fn step_key(&self, index: u32, name: &str) -> Result<Key, Error> {
        STEP_KEYS.key(&(self.key.to_string(), index, name))
    }

    pub(crate) fn compensation_key(&self, step: &StepRecord) -> Result<Key, Error> {
        COMPENSATION_KEYS.key(&(self.key.to_string(), step.index, &step.name))
    }

    /// The context a step's body (or compensation) sees: its own key, the saga's token.
    pub(crate) fn context(&self, name: &'static str, key: Key, resumed: bool) -> CallContext {
        self.claim.part(name, key, resumed)
    }

    /// What is left to do by hand for a saga whose log is `steps` and that cannot go on: the
    /// steps to carry forward when it is past an irreversible step, else the undos not done,
    /// last first.
    pub(crate) fn pending(steps: &[StepRecord]) -> Vec<String> {
        let past_pivot = steps
            .iter()
            .any(|s| s.irreversible && s.state == StepState::Done);
        if past_pivot {
            return steps
                .iter()
                .filter(|s| s.state != StepState::Done)
                .map(|s| match s.state {
                    // It may have happened: carrying it forward blind could make it twice.
                    StepState::Started => format!(
                        "find out whether `{}` (step {}) happened, and carry it forward only if it did not",
                        s.name, s.index
                    ),
                    _ => format!("carry `{}` (step {}) forward", s.name, s.index),
                })
                .collect();
        }
        steps
            .iter()
            .rev()
            .filter_map(|s| match s.state {
                StepState::Started => Some(format!(
                    "find out whether `{}` (step {}) happened, and undo it if it did",
                    s.name, s.index
                )),
                StepState::Done | StepState::CompensationFailed => {
                    Some(format!("undo `{}` (step {})", s.name, s.index))
                }
                StepState::Failed | StepState::Compensated => None,
            })
            .collect()
    }

    /// The first step of `steps` that this program would have to run again or compensate,
    /// and has no code for: such a saga is left for a program that links it.
    pub(crate) fn unlinked(&self, steps: &[StepRecord]) -> Option<Error> {
        steps
            .iter()
            .filter(|s| match s.state {
                StepState::Started | StepState::CompensationFailed => true,
                StepState::Done => !s.irreversible,
                StepState::Failed | StepState::Compensated => false,
            })
            .find_map(|s| crate::saga::step::registered(&s.name).err())
            .map(|problem| self.log_problem(problem))
    }

    pub(crate) fn log_problem(&self, problem: String) -> Error {
        Error::SagaLog {
            saga: self.id.clone(),
            problem,
        }
    }
}

/// How a saga that failed was left, as recorded and replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SagaFailure {
    /// `compensated`, `needs_attention` or `resolved`.
    pub(crate) status: String,
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) pending: Vec<String>,
}

impl SagaFailure {
    pub(crate) fn compensated(error: &str) -> Self {
        SagaFailure {
            status: SagaStatus::Compensated.as_str().to_owned(),
            error: error.to_owned(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn needs_attention(error: String, pending: Vec<String>) -> Self {
        SagaFailure {
            status: SagaStatus::NeedsAttention.as_str().to_owned(),
            error,
            pending,
        }
    }

    /// A saga an operator settled by hand, with their note.
    pub(crate) fn resolved(note: String) -> Self {
        SagaFailure {
            status: SagaStatus::Resolved.as_str().to_owned(),
            error: note,
            pending: Vec::new(),
        }
    }

    /// The error every later run of the saga gets.
    pub(crate) fn into_error(self, saga: &str) -> Error {
        if self.status == SagaStatus::Compensated.as_str() {
            Error::SagaRolledBack {
                saga: saga.to_owned(),
                error: self.error,
            }
        } else if self.status == SagaStatus::Resolved.as_str() {
            Error::SagaResolved {
                saga: saga.to_owned(),
                note: self.error,
            }
        } else {
            Error::SagaNeedsAttention {
                saga: saga.to_owned(),
                error: self.error,
                pending: self.pending,
            }
        }
    }
}

/// How a saga's body ends when it does not return a value; each way tells the claim protocol
/// what to do with the saga's claim.
pub(crate) enum SagaEnd<E> {
    /// Every completed step was undone: recorded, and replayed to later runs. `error` is the
    /// live run's own error, for its caller.
    RolledBack {
        error: Option<E>,
        failure: SagaFailure,
    },
    /// Left for an operator: the claim is released; the log says why, to every later run.
    /// (The live run's own error is in the failure's text.)
    NeedsAttention(SagaFailure),
    /// Its owner died past an irreversible step (found by recovery): the claim is released
    /// for the code that runs the saga to carry it forward.
    Interrupted,
    /// An earlier run's recorded failure.
    Replayed(SagaFailure),
    /// Recovery found the saga no longer running (someone settled it after it was listed):
    /// nothing is done; the claim is kept for a saga whose outcome only its code can record
    /// (completed), and let go otherwise.
    LeftAlone { keep_claim: bool },
    /// idem could not go on (the store failed, the claim was lost): the claim is left to run
    /// out, and then recovery (or the next run) finishes the saga from its log.
    Idem(Error),
}

impl<E> SagaEnd<E> {
    /// The error the caller of the saga gets.
    pub(crate) fn into_error(self, saga: &str) -> E
    where
        E: From<Error>,
    {
        match self {
            SagaEnd::RolledBack {
                error: Some(error), ..
            } => error,
            SagaEnd::RolledBack { failure, .. }
            | SagaEnd::NeedsAttention(failure)
            | SagaEnd::Replayed(failure) => E::from(failure.into_error(saga)),
            SagaEnd::Interrupted | SagaEnd::LeftAlone { .. } => E::from(Error::SagaLog {
                saga: saga.to_owned(),
                problem: "interrupted after an irreversible step; run it again to carry it forward"
                    .to_owned(),
            }),
            SagaEnd::Idem(error) => E::from(error),
        }
    }
}

impl<E> From<Error> for SagaEnd<E> {
    fn from(error: Error) -> Self {
        SagaEnd::Idem(error)
    }
}

/// The codec of a saga's claim: its value is recorded; a rollback is recorded as a final
/// error; a failure of idem's keeps the claim for recovery; the rest release it.
pub(crate) fn saga_codec<T, E>() -> Codec<Result<T, SagaEnd<E>>, T, SagaEnd<E>>
where
    T: Serialize + DeserializeOwned,
{
    Codec {
        into_result: |result| result,
        from_result: |result| result,
        from_error: SagaEnd::Idem,
        encode: |value| serde_json::to_vec(value),
        decode: |bytes| serde_json::from_slice(bytes),
        final_errors: Some(FinalErrors {
            is_final: |end| matches!(end, SagaEnd::RolledBack { .. }),
            encode: |end| match end {
                SagaEnd::RolledBack { failure, .. } | SagaEnd::Replayed(failure) => {
                    serde_json::to_vec(failure)
                }
                _ => serde_json::to_vec(&()),
            },
            decode: |bytes| serde_json::from_slice(bytes).map(SagaEnd::Replayed),
        }),
        in_doubt: None,
        keeps_claim: |end| {
            matches!(
                end,
                SagaEnd::Idem(_) | SagaEnd::LeftAlone { keep_claim: true }
            )
        },
    }
}
