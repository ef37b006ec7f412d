//! Running a saga's steps, one at a time, each logged before and after its side effect.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::context::in_call;
use crate::saga::doubt::in_doubt_error;
use crate::saga::run::Run;
use crate::saga::step::{registered, StepDef};
use crate::saga::StepCall;
use crate::store::{SagaWrite, StepRecord, StepState};
use crate::Error;

/// The handle a saga's code runs its steps through. Cheap to clone; every clone is the same
/// run of the same saga.
///
/// See [`Saga`](crate::Saga) and the `idem` crate's `saga_step` for examples.
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
/// `armed` (its intent is logged and its outcome is not: its future was dropped, its output
/// could not be logged, or it stays in doubt), marks the run so that no later step runs.
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
            state.unsettled.get_or_insert_with(|| self.name.to_owned());
        }
    }
}

/// What the log says of the step about to run.
enum Plan {
    /// Nothing: its first run.
    First,
    /// It failed in an earlier run (its own error said it did not happen): a new run.
    Again(StepRecord),
    /// It may have happened: its doubt is settled before anything else.
    InDoubt(StepRecord),
}

impl<'a> Steps<'a> {
    pub(crate) fn new(run: Arc<Run<'a>>) -> Self {
        Steps { run }
    }

    /// The saga's id.
    pub fn saga_id(&self) -> &str {
        &self.run.id
    }

    /// Runs `call` (a call of a `#[saga_step]` function) as the saga's next step: its intent
    /// and arguments are logged before its body runs (every run of it, first or again), its
    /// output after. A step the log already has is replayed (its output, without running it).
    /// A step left in doubt by a crash (intent logged, outcome not) is settled first: its
    /// `verify` is asked, or, where no `verify` is given and running it twice cannot make a
    /// second effect (a reversible step, or `rerun_safe`), it runs again under the same key;
    /// a run again that fails leaves it in doubt, and the saga is then settled by rollback
    /// (NEEDS_ATTENTION when the doubt stays). A step logged as failed by an earlier run runs
    /// again under the same key. Await each step before the next: the steps' places in the
    /// log must come out the same on every run. A step whose future is dropped before it
    /// finishes (a timeout) ends the saga: it is undone once its code returns.
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
        let (index, logged) = self.take_place(name).map_err(E::from)?;
        let mut running = Running {
            run,
            name,
            armed: false,
        };
        the_registered_step(run, def).map_err(E::from)?;
        let args = args.map_err(|e| E::from(e.with_key(&run.key)))?;
        // Refused before its intent is logged: nothing ran, and nothing reached the store.
        if args.len() > def.value_limit() {
            let key = run.step_key(index, name).map_err(E::from)?;
            def.check_size(&key, "arguments", &args).map_err(E::from)?;
        }
        let plan = match logged {
            None => Plan::First,
            Some(logged) => match Self::read_log(run, index, name, &args, logged)? {
                Ok(replayed) => return Ok(replayed),
                Err(plan) => plan,
            },
        };
        let (intent, in_doubt) = match intent(run, def, index, args, plan, &mut running).await? {
            Intent::Run { record, in_doubt } => (record, in_doubt),
            Intent::Learned(value) => return Ok(value),
        };
        // The intent, before the side effect, on every run of the step.
        if let Err(error) = run.write(SagaWrite::Step(&intent)).await {
            return Err(E::from(run.broke(error)));
        }
        running.armed = true;
        let (result, happened) = run_body(run, def, &intent, in_doubt, body).await;
        log_outcome(
            run,
            def,
            intent,
            in_doubt || happened,
            &result,
            &mut running,
        )
        .await?;
        result
    }

    /// Takes the next place in the saga for step `name`, and what the log has there; refuses
    /// a step while another runs, after a step that stayed unsettled, or once the log broke.
    fn take_place(&self, name: &str) -> Result<(u32, Option<StepRecord>), Error> {
        let run = &*self.run;
        let mut state = run.state();
        if state.busy {
            return Err(run.log_problem(format!(
                "step `{name}` started while another step was running; await each step before the next"
            )));
        }
        if let Some(unsettled) = &state.unsettled {
            return Err(run.log_problem(format!(
                "step `{name}` cannot run: step `{unsettled}` ended before its outcome was logged, so the saga is undone"
            )));
        }
        if state.broken.is_some() {
            return Err(run.log_problem(format!(
                "step `{name}` cannot run: the saga's log could not be written"
            )));
        }
        state.busy = true;
        let index = state.next;
        state.next += 1;
        let logged = state.steps.iter().find(|s| s.index == index).cloned();
        Ok((index, logged))
    }

    /// What the log's entry at this place means for this run: its output to replay
    /// (`Ok(Ok(value))`), or how the step runs (`Ok(Err(plan))`).
    fn read_log<T: DeserializeOwned, E: From<Error>>(
        run: &Run<'_>,
        index: u32,
        name: &'static str,
        args: &[u8],
        logged: StepRecord,
    ) -> Result<Result<T, Plan>, E> {
        if logged.name != name || logged.args != args {
            return Err(E::from(run.log_problem(format!(
                "step {index} is logged as `{}` with arguments {}, but the saga now calls `{name}` with {}; a saga must call the same steps with the same arguments on every run",
                logged.name,
                String::from_utf8_lossy(&logged.args),
                String::from_utf8_lossy(args),
            ))));
        }
        match (logged.state, &logged.output) {
            (StepState::Done, Some(output)) => {
                step_event(run, &logged, "replayed");
                decode(&logged, output).map(Ok).map_err(E::from)
            }
            (StepState::Started, _) => Ok(Err(Plan::InDoubt(logged))),
            // Failed in an earlier run that then went on (the saga handled the error).
            (StepState::Failed, _) => Ok(Err(Plan::Again(logged))),
            (state, _) => Err(E::from(run.log_problem(format!(
                "step {index} (`{name}`) is {state} in the log; the saga is being undone"
            )))),
        }
    }
}

/// The step `def` is the one registered under its name: two steps of one name would make the
/// log ambiguous for recovery.
fn the_registered_step(run: &Run<'_>, def: &'static StepDef) -> Result<(), Error> {
    let name = def.name();
    match registered(name) {
        Ok(found) if std::ptr::eq(found, def) => Ok(()),
        Ok(_) => Err(run.log_problem(format!(
            "two saga steps are named `{name}`; give one another name with `#[saga_step(name = \"…\")]`"
        ))),
        Err(problem) => Err(run.log_problem(problem)),
    }
}

/// What a step does after reading its place in the log: run (with this intent; `in_doubt`
/// when it runs again under the key of a run that may have happened), or return the output
/// its `verify` learned.
enum Intent<T> {
    Run { record: StepRecord, in_doubt: bool },
    Learned(T),
}

/// The intent of this run of the step, from its plan; a step in doubt is settled first
/// (its `verify`, or whether it may run again), and an early return leaves it in doubt.
async fn intent<T, E>(
    run: &Run<'_>,
    def: &'static StepDef,
    index: u32,
    args: Vec<u8>,
    plan: Plan,
    running: &mut Running<'_, '_>,
) -> Result<Intent<T>, E>
where
    T: DeserializeOwned,
    E: From<Error>,
{
    let name = def.name();
    let logged = match plan {
        Plan::First => {
            let key = run.step_key(index, name).map_err(E::from)?;
            let record = StepRecord {
                index,
                name: name.to_owned(),
                key,
                irreversible: def.irreversible(),
                args,
                state: StepState::Started,
                output: None,
                error: None,
            };
            return Ok(Intent::Run {
                record,
                in_doubt: false,
            });
        }
        Plan::Again(logged) => {
            return Ok(Intent::Run {
                record: fresh_intent(logged),
                in_doubt: false,
            })
        }
        Plan::InDoubt(logged) => logged,
    };
    // From here on, an early return leaves the step in doubt for rollback.
    running.armed = true;
    let forward = match settle_forward(run, def, &logged).await {
        Forward::Happened(output) => match def.check_size(&logged.key, "output", &output) {
            Ok(()) => Forward::Happened(output),
            Err(too_large) => Forward::Unknown(too_large.to_string()),
        },
        other => other,
    };
    let (record, in_doubt) = match forward {
        Forward::Happened(output) => {
            let value = decode::<T>(&logged, &output).map_err(E::from)?;
            let done = StepRecord {
                state: StepState::Done,
                output: Some(output),
                error: None,
                ..logged
            };
            run.write(SagaWrite::Step(&done))
                .await
                .map_err(|error| E::from(run.broke(error)))?;
            running.armed = false;
            step_event(run, &done, "verified");
            return Ok(Intent::Learned(value));
        }
        Forward::DidNotHappen => (fresh_intent(logged), false),
        Forward::RunAgain => (fresh_intent(logged), true),
        Forward::Unknown(problem) => return Err(E::from(in_doubt_error(run, name, problem))),
    };
    Ok(Intent::Run { record, in_doubt })
}

/// Logs how the run of the step ended: its output (done), its error (failed), or, for a run
/// again of a step in doubt that failed, still in doubt (a 409 or a timeout does not say the
/// first run did not happen: the step is left for rollback, and no later step runs).
async fn log_outcome<T, E>(
    run: &Run<'_>,
    def: &'static StepDef,
    intent: StepRecord,
    in_doubt: bool,
    result: &Result<T, E>,
    running: &mut Running<'_, '_>,
) -> Result<(), E>
where
    T: Serialize,
    E: From<Error> + Display,
{
    let (record, outcome) = match result {
        Ok(value) => {
            let output = serde_json::to_vec(value).map_err(|e| {
                E::from(Error::codec(
                    "the output of a saga step",
                    Some(&intent.key),
                    e,
                ))
            })?;
            // The step ran and its output cannot be logged: it stays in doubt (`running` is
            // still armed), as for an output that does not encode.
            def.check_size(&intent.key, "output", &output)
                .map_err(E::from)?;
            let event = if in_doubt { "resumed" } else { "executed" };
            let done = StepRecord {
                state: StepState::Done,
                output: Some(output),
                error: None,
                ..intent
            };
            (done, event)
        }
        Err(error) if in_doubt => {
            let still = StepRecord {
                error: Some(format!(
                    "may have happened; running it again failed: {error}"
                )),
                ..intent
            };
            run.write(SagaWrite::Step(&still))
                .await
                .map_err(|error| E::from(run.broke(error)))?;
            step_event(run, &still, "in_doubt");
            return Ok(());
        }
        Err(error) => {
            let failed = StepRecord {
                state: StepState::Failed,
                error: Some(error.to_string()),
                ..intent
            };
            (failed, "failed")
        }
    };
    run.write(SagaWrite::Step(&record))
        .await
        .map_err(|error| E::from(run.broke(error)))?;
    running.armed = false;
    step_event(run, &record, outcome);
    Ok(())
}

/// A logged step's entry as the intent of a new run of it: in doubt until its outcome is
/// logged.
fn fresh_intent(logged: StepRecord) -> StepRecord {
    StepRecord {
        state: StepState::Started,
        output: None,
        error: None,
        ..logged
    }
}

fn decode<T: DeserializeOwned>(step: &StepRecord, output: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(output)
        .map_err(|e| Error::codec("the logged output of a saga step", Some(&step.key), e))
}

/// How a step in doubt goes on in a run of its saga's code.
enum Forward {
    /// Its `verify` found its output.
    Happened(Vec<u8>),
    /// Its `verify` found that it did not happen: it runs as new.
    DidNotHappen,
    /// It runs again under its key (safe: reversible or `rerun_safe`): its service answers
    /// with the first run's result.
    RunAgain,
    /// It may not run again, and its `verify` could not tell: it stays in doubt.
    Unknown(String),
}

/// Settles a step in doubt before the saga goes on: its `verify` first (once: the saga's code
/// cannot go on past a step in doubt: it is settled by the rollback, with retries), else a run
/// again where that is safe.
async fn settle_forward(run: &Run<'_>, def: &'static StepDef, step: &StepRecord) -> Forward {
    if let Some(verify) = def.verifier() {
        let context = run.context(def.name(), step.key, true);
        return match in_call(context, verify(step.args.clone())).await {
            Ok(Some(output)) => Forward::Happened(output),
            Ok(None) => Forward::DidNotHappen,
            Err(failure) => Forward::Unknown(format!("its `verify` failed: {failure}")),
        };
    }
    if def.may_run_again() {
        Forward::RunAgain
    } else {
        Forward::Unknown(
            "it is irreversible, so it is not run again to find out; give it `verify = …`, or \
             `rerun_safe` if its service deduplicates by its key"
                .to_owned(),
        )
    }
}

/// Runs the step's body under its key; past an irreversible step that succeeded, a failure is
/// retried forward with the saga's `forward_retry` policy (nothing can be undone there). The
/// flag says that an error may hide an effect that happened (a retry whose output does not
/// read back): the step is then left in doubt, not logged as failed.
async fn run_body<F, T, E>(
    run: &Run<'_>,
    def: &'static StepDef,
    intent: &StepRecord,
    resumed: bool,
    body: F,
) -> (Result<T, E>, bool)
where
    F: Future<Output = Result<T, E>>,
    T: DeserializeOwned,
    E: From<Error>,
{
    let name = def.name();
    let context = run.context(name, intent.key, resumed);
    match in_call(context, body).await {
        // A step with a `#[secret]` argument cannot be called again from its logged
        // arguments: its error is returned as it is, for the saga's code to retry.
        Err(error) if run.pivot().is_some() && def.secret_argument().is_none() => {
            let again = run.context(name, intent.key, true);
            let retried = run
                .policy
                .forward_retry
                .run(name, 1, || async {
                    run.still_owner()
                        .await
                        .map_err(crate::saga::step::StepFailure::Idem)?;
                    in_call(again.clone(), def.run(intent.args.clone())).await
                })
                .await;
            match retried.map(|bytes| serde_json::from_slice::<T>(&bytes)) {
                Ok(Ok(value)) => (Ok(value), false),
                // The retry ran the step, and its output does not read back: it happened, so
                // it is not logged as failed (a rollback would skip it), but left in doubt.
                Ok(Err(decode)) => (
                    Err(E::from(Error::codec(
                        "the output of a saga step run again",
                        Some(&intent.key),
                        decode,
                    ))),
                    true,
                ),
                Err(_) => (Err(error), false),
            }
        }
        result => (result, false),
    }
}

/// The event of a step (target `idem`, INFO): the saga's id, the step's name, place and key,
/// and what happened (`executed`, `resumed`, `replayed`, `verified`, `verified_absent`,
/// `in_doubt`, `failed`, `compensated`, `compensation_failed`). Arguments and outputs are not
/// in it.
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
