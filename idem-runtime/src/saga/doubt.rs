//! Steps in doubt: what idem does with a step whose intent is logged and whose outcome is not.
//!
//! Such a step may have happened (its owner died after the side effect, its future was
//! dropped after the request went out, a run of it again failed with a 409). It is settled
//! only by learning its output, or by an operator; never by guessing:
//!
//! ```text
//!  in doubt ──verify: Some(output)──────────────▶ done (then undone, or carried forward)
//!     │    ──verify: None───────────────────────▶ did not happen (nothing to undo)
//!     │    ──run again under its key: Ok(output)▶ done            (not for an irreversible
//!     │                                                             step, unless rerun_safe,
//!     │                                                             and never in a rollback)
//!     └────verify fails / the run fails / may not run ──▶ still in doubt: the saga is
//!                                                        NEEDS_ATTENTION, "may have happened"
//! ```

use crate::call::context::in_call;
use crate::saga::run::{Run, SagaFailure};
use crate::saga::step::{registered, StepDef};
use crate::saga::step_event;
use crate::store::{SagaStatus, SagaWrite, StepRecord, StepState};
use crate::Error;

/// Where a step in doubt is being settled: what may be done to learn its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settling {
    /// Recovery of a saga whose owner died while it ran: an irreversible step that says its
    /// service deduplicates (`rerun_safe`) may be run again, and the saga then goes forward.
    Recovery,
    /// Undoing a saga: nothing is run forward, least of all an irreversible step.
    Rollback,
}

/// What idem learned of a step in doubt.
pub(crate) enum Learned {
    /// It happened: its output.
    Happened(Vec<u8>),
    /// It did not happen (its `verify` said so): nothing to undo.
    DidNotHappen,
    /// Still unknown, and why.
    Unknown(String),
}

/// Asks the step's `verify`, or runs the step again under its key where that is safe, with
/// the saga's retry policy; a failure after the last try leaves the step in doubt.
pub(crate) async fn learn(
    run: &Run<'_>,
    step: &StepRecord,
    def: &'static StepDef,
    settling: Settling,
) -> Learned {
    let context = run.context(def.name(), step.key, true);
    let retry = run.policy.compensation_retry;
    // Before each try, the claim must still be this run's (a fenced heartbeat), as before each
    // compensation: an owner that was taken over stops, rather than run the step beside the
    // new one.
    let owned = || async {
        run.still_owner()
            .await
            .map_err(crate::saga::step::StepFailure::Idem)
    };
    // An output over the step's limit is not logged: the step stays in doubt.
    let within_limit = |output: Vec<u8>| match def.check_size(&step.key, "output", &output) {
        Ok(()) => Learned::Happened(output),
        Err(too_large) => Learned::Unknown(too_large.to_string()),
    };
    if let Some(verify) = def.verifier() {
        let asked = retry
            .run(def.name(), 0, || async {
                owned().await?;
                in_call(context.clone(), verify(step.args.clone())).await
            })
            .await;
        return match asked {
            Ok(Some(output)) => within_limit(output),
            Ok(None) => Learned::DidNotHappen,
            Err(failure) => Learned::Unknown(format!("its `verify` failed: {failure}")),
        };
    }
    if def.irreversible() && (settling == Settling::Rollback || !def.may_run_again()) {
        return Learned::Unknown(
            "it is irreversible, so it is not run again to find out; give it `verify = …`, or \
             `rerun_safe` if its service deduplicates by its key"
                .to_owned(),
        );
    }
    if let Some(argument) = def.secret_argument() {
        return Learned::Unknown(
            crate::saga::step::secret_refusal(def.name(), argument).to_string(),
        );
    }
    let rerun = retry
        .run(def.name(), 0, || async {
            owned().await?;
            in_call(context.clone(), def.run(step.args.clone())).await
        })
        .await;
    match rerun {
        Ok(output) => within_limit(output),
        Err(failure) => Learned::Unknown(format!(
            "running it again under its key failed, which does not say it did not happen: {failure}"
        )),
    }
}

/// Settles every step left in doubt (intent logged, outcome not), first to last, and logs what
/// was learned. A step that stays in doubt leaves the saga NEEDS_ATTENTION, "may have
/// happened", with nothing undone: `Ok(Err(…))`. `Err` only when the log cannot be written.
pub(crate) async fn settle_doubt(
    run: &Run<'_>,
    settling: Settling,
) -> Result<Result<(), SagaFailure>, Error> {
    let in_doubt: Vec<StepRecord> = run
        .state()
        .steps
        .iter()
        .filter(|s| s.state == StepState::Started)
        .cloned()
        .collect();
    for step in in_doubt {
        let learned = match registered(&step.name) {
            Ok(def) => learn(run, &step, def, settling).await,
            Err(unlinked) => Learned::Unknown(unlinked),
        };
        let (settled, outcome) = match learned {
            Learned::Happened(output) => (
                StepRecord {
                    state: StepState::Done,
                    output: Some(output),
                    error: None,
                    ..step
                },
                "resumed",
            ),
            Learned::DidNotHappen => (
                StepRecord {
                    state: StepState::Failed,
                    error: Some("its `verify` found that it did not happen".to_owned()),
                    ..step
                },
                "verified_absent",
            ),
            Learned::Unknown(why) => return still_in_doubt(run, step, &why).await.map(Err),
        };
        run.write(SagaWrite::Step(&settled)).await?;
        step_event(run, &settled, outcome);
    }
    Ok(Ok(()))
}

/// Leaves `step` in doubt, with why in its log entry, and the saga NEEDS_ATTENTION: nothing
/// before it is undone, since an operator must first learn whether it happened.
async fn still_in_doubt(run: &Run<'_>, step: StepRecord, why: &str) -> Result<SagaFailure, Error> {
    let problem = format!(
        "step `{}` (step {}) may have happened: {why}",
        step.name, step.index
    );
    let marked = StepRecord {
        error: Some(problem.clone()),
        ..step
    };
    run.write(SagaWrite::Step(&marked)).await?;
    step_event(run, &marked, "in_doubt");
    run.set_status(SagaStatus::NeedsAttention, Some(&problem))
        .await?;
    let pending = {
        let upto: Vec<StepRecord> = run
            .state()
            .steps
            .iter()
            .filter(|s| s.index <= marked.index)
            .cloned()
            .collect();
        Run::pending(&upto)
    };
    Ok(SagaFailure::needs_attention(problem, pending))
}

/// The error a step gets when it is in doubt and will not be run again.
pub(crate) fn in_doubt_error(run: &Run<'_>, step: &str, problem: String) -> Error {
    Error::StepInDoubt {
        saga: run.id.clone(),
        step: step.to_owned(),
        problem,
    }
}
