//! A saga step as `#[saga_step]` makes it: the call it returns, and what it registers at
//! link time so that a process that never ran the saga can re-run or compensate the step.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::Error;

/// A boxed future of a registered step: what a process that recovers a saga runs.
pub type StepFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a registered step or compensation did not succeed.
#[derive(Debug)]
pub enum StepFailure {
    /// The function ran and returned this error (its `Display` text).
    Failed(String),
    /// Its arguments or output could not be read or written: the function's result, if it
    /// ran, is unknown.
    Idem(Error),
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepFailure::Failed(error) => f.write_str(error),
            StepFailure::Idem(error) => fmt::Display::fmt(error, f),
        }
    }
}

/// Re-runs a step from its logged arguments (JSON) and returns its output (JSON).
pub type RunStep = fn(Vec<u8>) -> StepFuture<Result<Vec<u8>, StepFailure>>;

/// Undoes a step from its logged output and arguments (both JSON).
pub type CompensateStep = fn(Vec<u8>, Vec<u8>) -> StepFuture<Result<(), StepFailure>>;

/// Asks the step's downstream service whether the step happened, from its logged arguments
/// (JSON): its output (JSON) if it did, `None` if it did not.
pub type VerifyStep = fn(Vec<u8>) -> StepFuture<Result<Option<Vec<u8>>, StepFailure>>;

/// What `#[saga_step]` knows of one step: its name, how to run it again, how to undo it
/// (`None`: irreversible), how to find out whether it happened (`verify`), and whether running
/// it again under its key is safe although it is irreversible (`rerun_safe`).
#[derive(Debug)]
pub struct StepDef {
    name: &'static str,
    run: RunStep,
    compensate: Option<CompensateStep>,
    verify: Option<VerifyStep>,
    rerun_safe: bool,
    max_value_bytes: usize,
    secret: Option<&'static str>,
}

impl StepDef {
    /// A step named `name`.
    pub const fn new(name: &'static str, run: RunStep, compensate: Option<CompensateStep>) -> Self {
        StepDef {
            name,
            run,
            compensate,
            verify: None,
            rerun_safe: false,
            max_value_bytes: crate::Action::DEFAULT_MAX_VALUE_BYTES,
            secret: None,
        }
    }

    /// The same step, whose arguments and output (each serialized) may be up to `bytes`
    /// long (`#[saga_step(max_value_bytes = …)]`; default
    /// [`Action::DEFAULT_MAX_VALUE_BYTES`](crate::Action::DEFAULT_MAX_VALUE_BYTES), 1 MiB).
    pub const fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The same step, one of whose arguments (`name`, the first so marked) is `#[secret]`:
    /// the log keeps a placeholder for it, so the step cannot be run again from the log.
    pub const fn secret(mut self, name: &'static str) -> Self {
        self.secret = Some(name);
        self
    }

    /// The first `#[secret]` argument, if the step has one: its logged arguments are
    /// redacted.
    pub fn secret_argument(&self) -> Option<&'static str> {
        self.secret
    }

    /// The largest arguments or output, serialized, the step logs.
    pub fn value_limit(&self) -> usize {
        self.max_value_bytes
    }

    /// `Err(TooLarge)` when `bytes` (the step's `what`) is over the step's limit.
    pub(crate) fn check_size(
        &self,
        key: &crate::key::Key,
        what: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if bytes.len() <= self.max_value_bytes {
            return Ok(());
        }
        Err(Error::TooLarge {
            key: *key,
            what: format!("the {what} of saga step `{}`", self.name),
            size: bytes.len(),
            limit: self.max_value_bytes,
        })
    }

    /// The same step, whose doubt `verify` settles (`#[saga_step(verify = …)]`).
    pub const fn verify(mut self, verify: VerifyStep) -> Self {
        self.verify = Some(verify);
        self
    }

    /// The same step, which may run again under its key although it cannot be undone: its
    /// service deduplicates by the key (`#[saga_step(irreversible, rerun_safe)]`).
    pub const fn rerun_safe(mut self) -> Self {
        self.rerun_safe = true;
        self
    }

    /// Whether running the step again, under the key of a run that may have happened, cannot
    /// make a second effect: every reversible step is re-run that way to learn its output
    /// (its compensation undoes it), an irreversible one only when it says so.
    pub fn may_run_again(&self) -> bool {
        !self.irreversible() || self.rerun_safe
    }

    /// The step's name, as logged.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the step has nothing to undo (`#[saga_step(irreversible)]`).
    pub fn irreversible(&self) -> bool {
        self.compensate.is_none()
    }

    pub(crate) fn run(&self, args: Vec<u8>) -> StepFuture<Result<Vec<u8>, StepFailure>> {
        (self.run)(args)
    }

    pub(crate) fn compensation(&self) -> Option<CompensateStep> {
        self.compensate
    }

    pub(crate) fn verifier(&self) -> Option<VerifyStep> {
        self.verify
    }
}

/// The link-time registration of a step (`inventory::submit!`).
#[derive(Debug)]
pub struct StepRegistration(pub &'static StepDef);

inventory::collect!(StepRegistration);

/// The steps linked into this program, by name; `Err` for a name that two steps share.
fn registry() -> &'static HashMap<&'static str, Result<&'static StepDef, ()>> {
    static REGISTRY: OnceLock<HashMap<&'static str, Result<&'static StepDef, ()>>> =
        OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut steps = HashMap::new();
        for StepRegistration(def) in inventory::iter::<StepRegistration> {
            steps
                .entry(def.name)
                .and_modify(|found| *found = Err(()))
                .or_insert(Ok(*def));
        }
        steps
    })
}

/// The step registered under `name`.
pub(crate) fn registered(name: &str) -> Result<&'static StepDef, String> {
    match registry().get(name) {
        Some(Ok(def)) => Ok(def),
        Some(Err(())) => Err(format!(
            "two saga steps are named `{name}`; give one another name with `#[saga_step(name = \"…\")]`"
        )),
        None => Err(format!(
            "no saga step named `{name}` is linked into this program"
        )),
    }
}

/// One call of a `#[saga_step]` function: `.await` it for a plain call, or hand it to
/// [`Steps::step`](crate::Steps::step) to run it as a logged step of a saga. Only the
/// attribute makes these; its manual (the `idem` crate's `saga_step`) has the examples.
#[must_use = "a step does nothing until it is awaited or passed to `Steps::step`"]
pub struct StepCall<F> {
    pub(crate) def: &'static StepDef,
    pub(crate) args: Result<Vec<u8>, Error>,
    pub(crate) body: F,
}

impl<F> fmt::Debug for StepCall<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepCall")
            .field("step", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl<F> StepCall<F> {
    /// The step's name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }
}

impl<F: Future> IntoFuture for StepCall<F> {
    type Output = F::Output;
    type IntoFuture = F;

    /// The body, as a plain call: nothing is logged.
    fn into_future(self) -> F {
        self.body
    }
}

impl<F> StepCall<F> {
    /// A call of `def` with these arguments (encoded for the log) and this body.
    pub(crate) fn new(def: &'static StepDef, args: Result<Vec<u8>, Error>, body: F) -> Self {
        StepCall { def, args, body }
    }
}

/// The owned form in which a step's argument of type `&Self` is logged and read back:
/// `String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read back from the saga log: a step's argument must be `Deserialize` in its owned form",
    label = "recovery reads this argument back from the saga log",
    note = "a step's arguments must be `Serialize`, and `Deserialize` in their owned form (`String` for `&str`, `T` for `&T`)"
)]
pub trait ArgOwned {
    /// The owned form.
    type Owned: DeserializeOwned + Borrow<Self>;
}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> ArgOwned for T {
    type Owned = T;
}

impl ArgOwned for str {
    type Owned = String;
}

impl<T: DeserializeOwned> ArgOwned for [T] {
    type Owned = Vec<T>;
}

/// The three ways a compensation can take what the step left: the output, by value…
#[derive(Debug)]
pub struct Whole;
/// … or by reference …
#[derive(Debug)]
pub struct Borrowed;

/// A function that can undo a step whose output is `O` and whose arguments are `A`: it takes
/// the output (by value or by reference), then optionally every argument of the step, in
/// order. `M` tells the forms apart; it is inferred.
#[diagnostic::on_unimplemented(
    message = "this function cannot compensate a step whose output is `{O}`",
    label = "a compensation takes the step's output `{O}` (by value or by reference), optionally followed by all of the step's arguments `{A}`",
    note = "for example `async fn undo(output: {O}) -> Result<(), E>`"
)]
pub trait Compensation<'a, O, A, M> {
    /// The compensation's future.
    type Future: Future;
    /// Calls the compensation with the output in `output` (always `Some`) and `args`.
    fn call(self, output: &'a mut Option<O>, args: A) -> Self::Future;
}

/// The output, for a compensation that takes it by value. The slot is filled by the code
/// `#[saga_step]` writes, right before the one call that empties it.
fn take<O>(output: &mut Option<O>) -> O {
    output
        .take()
        .expect("a compensation's output slot is filled once, for one call")
}

fn borrow<O>(output: &mut Option<O>) -> &O {
    output
        .as_ref()
        .expect("a compensation's output slot is filled once, for one call")
}

impl<'a, F, Fut, O, A> Compensation<'a, O, A, (Whole,)> for F
where
    F: FnOnce(O) -> Fut,
    Fut: Future,
{
    type Future = Fut;
    fn call(self, output: &'a mut Option<O>, _: A) -> Fut {
        self(take(output))
    }
}

impl<'a, F, Fut, O: 'a, A> Compensation<'a, O, A, (Borrowed,)> for F
where
    F: FnOnce(&'a O) -> Fut,
    Fut: Future,
{
    type Future = Fut;
    fn call(self, output: &'a mut Option<O>, _: A) -> Fut {
        self(borrow(output))
    }
}

/// Compensations that also take the step's arguments, for steps of one to eight arguments.
macro_rules! with_arguments {
    ($($arg:ident)+) => {
        impl<'a, F, Fut, O, $($arg),+> Compensation<'a, O, ($($arg,)+), (Whole, $($arg),+)> for F
        where
            F: FnOnce(O, $($arg),+) -> Fut,
            Fut: Future,
        {
            type Future = Fut;
            #[allow(non_snake_case)]
            fn call(self, output: &'a mut Option<O>, ($($arg,)+): ($($arg,)+)) -> Fut {
                self(take(output), $($arg),+)
            }
        }

        impl<'a, F, Fut, O: 'a, $($arg),+> Compensation<'a, O, ($($arg,)+), (Borrowed, $($arg),+)> for F
        where
            F: FnOnce(&'a O, $($arg),+) -> Fut,
            Fut: Future,
        {
            type Future = Fut;
            #[allow(non_snake_case)]
            fn call(self, output: &'a mut Option<O>, ($($arg,)+): ($($arg,)+)) -> Fut {
                self(borrow(output), $($arg),+)
            }
        }
    };
}

/// A function that can undo a step with a `#[secret]` argument: it takes the step's output
/// alone (by value or by reference), since the saga log keeps no secret argument to give it.
/// `M` tells the forms apart; it is inferred.
#[diagnostic::on_unimplemented(
    message = "this function cannot compensate a step with a `#[secret]` argument: it must take the step's output `{O}` alone",
    label = "the saga log keeps no `#[secret]` argument, so the compensation gets the output `{O}` (by value or by reference) and nothing else",
    note = "return what the undo needs in the step's output (a charge id, not the card), or fetch the secret inside the compensation (from your vault or configuration)"
)]
pub trait CompensationFromOutput<'a, O, M> {
    /// The compensation's future.
    type Future: Future;
    /// Calls the compensation with the output in `output` (always `Some`).
    fn call(self, output: &'a mut Option<O>) -> Self::Future;
}

impl<'a, F, Fut, O> CompensationFromOutput<'a, O, (Whole,)> for F
where
    F: FnOnce(O) -> Fut,
    Fut: Future,
{
    type Future = Fut;
    fn call(self, output: &'a mut Option<O>) -> Fut {
        self(take(output))
    }
}

impl<'a, F, Fut, O: 'a> CompensationFromOutput<'a, O, (Borrowed,)> for F
where
    F: FnOnce(&'a O) -> Fut,
    Fut: Future,
{
    type Future = Fut;
    fn call(self, output: &'a mut Option<O>) -> Fut {
        self(borrow(output))
    }
}

/// Why a step with a `#[secret]` argument is not run again from the log.
pub(crate) fn secret_refusal(step: &str, argument: &str) -> Error {
    Error::codec(
        "the logged arguments of a saga step",
        None,
        format!(
            "step `{step}` cannot be run again from the saga log: its argument `{argument}` is `#[secret]`, and the log keeps only a placeholder for it"
        ),
    )
}

with_arguments!(A1);
with_arguments!(A1 A2);
with_arguments!(A1 A2 A3);
with_arguments!(A1 A2 A3 A4);
with_arguments!(A1 A2 A3 A4 A5);
with_arguments!(A1 A2 A3 A4 A5 A6);
with_arguments!(A1 A2 A3 A4 A5 A6 A7);
with_arguments!(A1 A2 A3 A4 A5 A6 A7 A8);
