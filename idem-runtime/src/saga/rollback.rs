//! Backward recovery: undoing a failed saga's completed steps in reverse order, from its log.
//!
//! The one path for a saga whose step failed in this process, for a saga a later run finds
//! half undone, and for a saga `recover` takes over from a dead owner.

use std::sync::{Mutex, PoisonError};

use crate::context::in_call;
use crate::saga::run::{Run, SagaFailure};
use crate::saga::step::{registered, StepFailure};
use crate::saga::step_event;
use crate::store::{SagaStatus, SagaWrite, StepRecord, StepState};
use crate::Error;

/// How a rollback ended.
pub(crate) enum Rollback {
    /// Every completed step was compensated.
    Compensated(SagaFailure),
    /// A compensation still failed after its retries (or a step could not be undone): the saga
    /// is NEEDS_ATTENTION.
    NeedsAttention(SagaFailure),
}

/// Compensates the saga's completed steps, last first, each retried by the run's policy; a
/// step left in doubt is first run again to learn its output (see [`settle_doubt`]).
/// Stops at the first compensation that still fails: the earlier steps stay as they are, for
/// an operator to undo in order. `Err` only when the log cannot be written (the claim is then
/// left to run out, and recovery goes on from the log).
pub(crate) async fn rollback(run: &Run<'_>, error: &str) -> Result<Rollback, Error> {
    run.set_status(SagaStatus::Compensating, Some(error))
        .await?;
    if let Err(attention) = settle_doubt(run).await? {
        return Ok(Rollback::NeedsAttention(attention));
    }
    let steps = run.state().steps.clone();
    for (position, step) in steps.iter().enumerate().rev() {
        let problem = match step.state {
            StepState::Failed | StepState::Compensated => continue,
            StepState::Started => format!(
                "step `{}` is in doubt (its output was never logged), so it cannot be undone",
                step.name
            ),
            StepState::Done if step.irreversible => format!(
                "step `{}` is irreversible and succeeded; it cannot be undone",
                step.name
            ),
            StepState::Done | StepState::CompensationFailed => match compensate(run, step).await? {
                Ok(()) => {
                    let undone = StepRecord {
                        state: StepState::Compensated,
                        error: None,
                        ..step.clone()
                    };
                    run.write(SagaWrite::Step(&undone)).await?;
                    step_event(run, &undone, "compensated");
                    continue;
                }
                Err(failure) => {
                    let failed = StepRecord {
                        state: StepState::CompensationFailed,
                        error: Some(failure.to_string()),
                        ..step.clone()
                    };
                    run.write(SagaWrite::Step(&failed)).await?;
                    step_event(run, &failed, "compensation_failed");
                    format!("the compensation of step `{}` failed: {failure}", step.name)
                }
            },
        };
        let pending = Run::pending(&run.state().steps[..=position]);
        let problem = format!("{problem} (the saga failed: {error})");
        run.set_status(SagaStatus::NeedsAttention, Some(&problem))
            .await?;
        return Ok(Rollback::NeedsAttention(SagaFailure::needs_attention(
            problem, pending,
        )));
    }
    run.set_status(SagaStatus::Compensated, Some(error)).await?;
    Ok(Rollback::Compensated(SagaFailure::compensated(error)))
}

/// Runs the compensation of one completed step, under its own key, with retries. Before
/// each try the run checks that the saga's claim is still its own (a fenced heartbeat): an
/// owner that was taken over stops there, with `Err`, rather than undo a step again.
async fn compensate(run: &Run<'_>, step: &StepRecord) -> Result<Result<(), StepFailure>, Error> {
    let problem = |problem: String| Ok(Err(StepFailure::Idem(run.log_problem(problem))));
    let def = match registered(&step.name) {
        Ok(def) => def,
        Err(unlinked) => return problem(unlinked),
    };
    let Some(compensation) = def.compensation() else {
        return problem(format!(
            "step `{}` is registered as irreversible",
            step.name
        ));
    };
    let Some(output) = step.output.clone() else {
        return problem(format!("step `{}` has no logged output", step.name));
    };
    let key = match run.compensation_key(step) {
        Ok(key) => key,
        Err(error) => return Ok(Err(StepFailure::Idem(error))),
    };
    // Run before: by an owner that died, or by a try that failed.
    let resumed = run.resumed || step.state == StepState::CompensationFailed;
    let context = run.context(def.name(), key, resumed);
    // A `Mutex`, not a `Cell`: the future is held across `.await`s and must stay `Send` for
    // the sagas that run in a task of their own (`tokio::spawn`).
    let not_owner = Mutex::new(None);
    let undone = run
        .policy
        .compensation_retry
        .run(def.name(), 0, || async {
            if let Err(error) = run.still_owner().await {
                let stop = StepFailure::Idem(error.copy());
                *not_owner.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                return Err(stop);
            }
            in_call(context, compensation(output.clone(), step.args.clone())).await
        })
        .await;
    let not_owner = not_owner
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    match not_owner {
        Some(error) => Err(error),
        None => Ok(undone),
    }
}

/// Runs the step left in doubt, if any (its intent is logged, its output is not: the owner
/// died or the log failed in between), again under its own key, so that the service it calls
/// answers with the first run's result; logs what it learned. A step that cannot be run again
/// leaves the saga NEEDS_ATTENTION: `Ok(Err(…))`.
pub(crate) async fn settle_doubt(run: &Run<'_>) -> Result<Result<(), SagaFailure>, Error> {
    let in_doubt = run
        .state()
        .steps
        .iter()
        .find(|s| s.state == StepState::Started)
        .cloned();
    let Some(step) = in_doubt else {
        return Ok(Ok(()));
    };
    let rerun = match registered(&step.name) {
        Ok(def) => {
            let context = run.context(def.name(), step.key, true);
            in_call(context, def.run(step.args.clone())).await
        }
        Err(problem) => Err(StepFailure::Idem(run.log_problem(problem))),
    };
    let settled = match rerun {
        Ok(output) => StepRecord {
            state: StepState::Done,
            output: Some(output),
            ..step
        },
        Err(StepFailure::Failed(error)) => StepRecord {
            state: StepState::Failed,
            error: Some(error),
            ..step
        },
        Err(StepFailure::Idem(error)) => {
            let problem = format!(
                "step `{}` was left in doubt and could not be run again to learn its output: {error}",
                step.name
            );
            run.set_status(SagaStatus::NeedsAttention, Some(&problem))
                .await?;
            let pending = vec![format!(
                "find out whether `{}` (step {}) happened",
                step.name, step.index
            )];
            return Ok(Err(SagaFailure::needs_attention(problem, pending)));
        }
    };
    run.write(SagaWrite::Step(&settled)).await?;
    let outcome = if settled.state == StepState::Done {
        "resumed"
    } else {
        "failed"
    };
    step_event(run, &settled, outcome);
    Ok(Ok(()))
}
