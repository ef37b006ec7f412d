//! Backward recovery: undoing a failed saga's completed steps in reverse order, from its log.
//!
//! The one path for a saga whose step failed in this process, for a saga a later run finds
//! half undone, and for a saga `recover` takes over from a dead owner.

use std::sync::{Mutex, PoisonError};

use crate::call::context::in_call;
use crate::saga::doubt::{settle_doubt, Settling};
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
/// step left in doubt is first settled (see [`settle_doubt`]): while one stays in doubt,
/// nothing is undone and the saga is NEEDS_ATTENTION. A step learned to be irreversible and
/// done turns the saga forward (NEEDS_ATTENTION, to carry on). Stops at the first compensation
/// that still fails: the earlier steps stay as they are, for an operator to undo in order.
/// `Err` only when the log cannot be written (the claim is then left to run out, and recovery
/// goes on from the log).
pub(crate) async fn rollback(run: &Run<'_>, error: &str) -> Result<Rollback, Error> {
    run.set_status(SagaStatus::Compensating, Some(error))
        .await?;
    if let Err(attention) = settle_doubt(run, Settling::Rollback).await? {
        return Ok(Rollback::NeedsAttention(attention));
    }
    if let Some(pivot) = run.pivot() {
        let problem = format!(
            "its irreversible step `{pivot}` happened, so it cannot be undone and must be carried forward (the saga failed: {error})"
        );
        run.set_status(SagaStatus::NeedsAttention, Some(&problem))
            .await?;
        let pending = Run::pending(&run.state().steps);
        return Ok(Rollback::NeedsAttention(SagaFailure::needs_attention(
            problem, pending,
        )));
    }
    let steps = run.state().steps.clone();
    for (position, step) in steps.iter().enumerate().rev() {
        let problem = match step.state {
            StepState::Failed | StepState::Compensated => continue,
            // Settled above: only a log written meanwhile by someone else could hold one.
            StepState::Started => format!(
                "step `{}` may have happened (its outcome was never logged), so it cannot be undone",
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
    let context = &context;
    // A `Mutex`, not a `Cell`: the future is held across `.await`s and must stay `Send` for
    // the sagas that run in a task of their own (`tokio::spawn`).
    let not_owner = Mutex::new(None);
    let undone = run
        .policy
        .compensation_retry
        .run(def.name(), 0, || async {
            if let Err(error) = run.still_owner().await {
                let stop = StepFailure::Idem(error.clone());
                *not_owner.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                return Err(stop);
            }
            in_call(
                context.clone(),
                compensation(output.clone(), step.args.clone()),
            )
            .await
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
