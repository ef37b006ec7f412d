//! Backward recovery: undoing a failed saga's completed steps in reverse order, from its log.
//!
//! The one path for a saga whose step failed in this process, for a saga a later run finds
//! half undone, and for a saga `recover` takes over from a dead owner.

use crate::context::in_call;
use crate::saga::run::{Run, SagaFailure};
use crate::saga::step::{registered, StepFailure};
use crate::store::{SagaStatus, StepRecord, StepState};
use crate::Error;

/// How a rollback ended.
pub(crate) enum Rollback {
    /// Every completed step was compensated.
    Compensated(SagaFailure),
    /// A compensation still failed after its retries (or a step could not be undone): the saga
    /// is NEEDS_ATTENTION.
    NeedsAttention(SagaFailure),
}

/// Compensates the saga's completed steps, last first, each retried by the run's policy.
/// Stops at the first compensation that still fails: the earlier steps stay as they are, for
/// an operator to undo in order. `Err` only when the log cannot be written (the claim is then
/// left to run out, and recovery goes on from the log).
pub(crate) async fn rollback(run: &Run<'_>, error: &str) -> Result<Rollback, Error> {
    run.set_status(SagaStatus::Compensating, Some(error))
        .await?;
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
            StepState::Done | StepState::CompensationFailed => match compensate(run, step).await {
                Ok(()) => {
                    let undone = StepRecord {
                        state: StepState::Compensated,
                        error: None,
                        ..step.clone()
                    };
                    run.write(crate::store::SagaWrite::Step(&undone)).await?;
                    continue;
                }
                Err(failure) => {
                    let failed = StepRecord {
                        state: StepState::CompensationFailed,
                        error: Some(failure.to_string()),
                        ..step.clone()
                    };
                    run.write(crate::store::SagaWrite::Step(&failed)).await?;
                    format!("the compensation of step `{}` failed: {failure}", step.name)
                }
            },
        };
        let pending = steps[..=position]
            .iter()
            .rev()
            .filter(|s| !matches!(s.state, StepState::Failed | StepState::Compensated))
            .map(|s| format!("undo `{}` (step {})", s.name, s.index))
            .collect();
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

/// Runs the compensation of one completed step, under its own key, with retries.
async fn compensate(run: &Run<'_>, step: &StepRecord) -> Result<(), StepFailure> {
    let def = registered(&step.name).map_err(StepFailure::Failed)?;
    let Some(compensation) = def.compensation() else {
        return Err(StepFailure::Failed(format!(
            "step `{}` is registered as irreversible",
            step.name
        )));
    };
    let output = step.output.clone().ok_or_else(|| {
        StepFailure::Idem(run.log_problem(format!("step `{}` has no logged output", step.name)))
    })?;
    let key = run.compensation_key(step).map_err(StepFailure::Idem)?;
    let context = run.context(def.name(), key, false);
    run.compensation_retry
        .run(def.name(), || {
            in_call(context, compensation(output.clone(), step.args.clone()))
        })
        .await
}
