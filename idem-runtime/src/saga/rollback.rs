//! Backward recovery: undoing a failed saga's completed steps in reverse order, from its log.
//!
//! The one path for a saga whose step failed in this process, for a saga a later run finds
//! half undone, and for a saga `recover` takes over from a dead owner.

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
            StepState::Done | StepState::CompensationFailed => match compensate(run, step).await {
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
