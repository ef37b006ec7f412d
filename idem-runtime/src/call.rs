//! One call of an action: the claim protocol around its body.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::action::{Action, OnConflict};
use crate::context::{in_call, report, CallContext, CallShared, Verified};
use crate::give_back;
use crate::heartbeat::with_heartbeat;
use crate::key::{Fingerprint, Key};
use crate::outcome::{Disposition, Outcome};
use crate::private::IdemReturn;
use crate::store::{Claim, FencingToken, Ownership, Store, StoredOutcome};
use crate::Error;

/// One call of an [`Action`]: its key and payload fingerprint, ready to [`run`](Call::run).
///
/// ```
/// use idem_runtime::{store::MemoryStore, Action, Error};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// static SEND_INVOICE: Action = Action::new("send_invoice");
/// let store = MemoryStore::new();
///
/// // The key is the customer and the order; the amount is part of the payload.
/// let call = SEND_INVOICE.call(&("customer-42", 7))?.with_payload(&("customer-42", 7, 1999))?;
/// let first = call.run::<_, Error, _>(&store, async { Ok("invoice-1".to_string()) }).await?;
/// assert!(!first.is_replayed());
///
/// // The same order with another amount is refused, not answered with the first result.
/// let other = SEND_INVOICE.call(&("customer-42", 7))?.with_payload(&("customer-42", 7, 2999))?;
/// let refused = other.run::<String, Error, _>(&store, async { Ok("invoice-2".into()) }).await;
/// assert!(matches!(refused, Err(Error::PayloadMismatch { .. })));
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    action: &'a Action,
    key: Key,
    fingerprint: Fingerprint,
}

impl Action {
    /// A call whose key is made of `key_args` (a tuple or an array, in a fixed order). Its
    /// payload is the same arguments unless [`Call::with_payload`] says more.
    pub fn call<A: Serialize + ?Sized>(&self, key_args: &A) -> Result<Call<'_>, Error> {
        let key = self.key(key_args)?;
        Ok(Call::new(self, key, Fingerprint::from(key)))
    }
}

impl<'a> Call<'a> {
    pub(crate) fn new(action: &'a Action, key: Key, fingerprint: Fingerprint) -> Self {
        Call {
            action,
            key,
            fingerprint,
        }
    }

    /// The same call, whose payload (everything the caller asks for, of which the key is a
    /// part) is `payload`: a later call with the same key and another payload is refused
    /// with [`Error::PayloadMismatch`].
    pub fn with_payload<P: Serialize + ?Sized>(self, payload: &P) -> Result<Self, Error> {
        let fingerprint = self.action.fingerprint(payload)?;
        Ok(Call {
            fingerprint,
            ..self
        })
    }

    /// The call's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The call's action.
    pub fn action(&self) -> &'a Action {
        self.action
    }

    /// Runs `body` once for this key in `store`, and returns its result, or the
    /// result recorded by an earlier call. Errors of the body release the key so that a
    /// retry runs it again.
    pub async fn run<T, E, F>(self, store: &dyn Store, body: F) -> Result<Outcome<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: Future<Output = Result<T, E>>,
    {
        let codec = Codec::<Result<T, E>, T, E>::new();
        answer(execute(self, store, &codec, body).await, &codec)
    }

    /// As [`run`](Call::run), but an error for which `is_final` returns true is recorded and
    /// replayed like a result (a declined card stays declined), instead of releasing the key.
    pub async fn run_caching_errors<T, E, F>(
        self,
        store: &dyn Store,
        is_final: fn(&E) -> bool,
        body: F,
    ) -> Result<Outcome<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: Serialize + DeserializeOwned + From<Error>,
        F: Future<Output = Result<T, E>>,
    {
        let codec = Codec::<Result<T, E>, T, E>::new().caching_errors(is_final);
        answer(execute(self, store, &codec, body).await, &codec)
    }
}

fn answer<R, T, E>(
    result: Result<(T, Disposition), Failed<E>>,
    codec: &Codec<R, T, E>,
) -> Result<Outcome<T>, E> {
    match result {
        Ok((value, disposition)) if disposition.executed() => Ok(Outcome::Executed(value)),
        Ok((value, _)) => Ok(Outcome::Replayed(value)),
        Err(failed) => Err(failed.into_error(codec)),
    }
}

/// How a call converts and records the values of one function: plain function pointers,
/// made where the types are known to fit, so that the protocol itself has no trait bounds
/// (and a type that does not fit is reported once, where the user wrote it).
#[derive(Debug)]
pub struct Codec<R, T, E> {
    pub(crate) into_result: fn(R) -> Result<T, E>,
    pub(crate) from_result: fn(Result<T, E>) -> R,
    pub(crate) from_error: fn(Error) -> E,
    pub(crate) encode: fn(&T) -> serde_json::Result<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> serde_json::Result<T>,
    pub(crate) final_errors: Option<FinalErrors<E>>,
    /// Errors after which the effect may have happened (`in_doubt = …`): the claim is kept,
    /// in doubt, rather than released.
    pub(crate) in_doubt: Option<fn(&E) -> bool>,
    /// Errors after which the claim is neither recorded nor released, but left to run out
    /// (then `on_stale` decides): a saga whose rollback could not finish, for recovery.
    pub(crate) keeps_claim: fn(&E) -> bool,
}

/// How errors that an action declares final are recognised and recorded.
#[derive(Debug)]
pub(crate) struct FinalErrors<E> {
    pub(crate) is_final: fn(&E) -> bool,
    pub(crate) encode: fn(&E) -> serde_json::Result<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> serde_json::Result<E>,
}

impl<R> Codec<R, R::Ok, R::Err>
where
    R: IdemReturn,
    R::Ok: Serialize + DeserializeOwned,
    R::Err: From<Error>,
{
    pub(crate) fn new() -> Self {
        Codec {
            into_result: R::into_result,
            from_result: R::from_result,
            from_error: R::Err::from,
            encode: |value| serde_json::to_vec(value),
            decode: |bytes| serde_json::from_slice(bytes),
            final_errors: None,
            in_doubt: None,
            keeps_claim: |_| false,
        }
    }
}

impl<R, T, E> Codec<R, T, E> {
    /// The same codec, keeping the key in doubt after the errors for which `is_ambiguous` is
    /// true (a timeout after the request was sent, a reset, a 5xx): the effect may have
    /// happened, so the key is not released; the next call follows `verify`, then
    /// `on_stale`.
    pub fn in_doubt(mut self, is_ambiguous: fn(&E) -> bool) -> Self {
        self.in_doubt = Some(is_ambiguous);
        self
    }

    /// The same codec, recording the errors for which `is_final` is true.
    pub fn caching_errors(mut self, is_final: fn(&E) -> bool) -> Self
    where
        E: Serialize + DeserializeOwned,
    {
        self.final_errors = Some(FinalErrors {
            is_final,
            encode: |error| serde_json::to_vec(error),
            decode: |bytes| serde_json::from_slice(bytes),
        });
        self
    }
}

/// Why a call did not return a value.
pub(crate) enum Failed<E> {
    /// idem refused or failed.
    Idem(Error),
    /// The body ran and returned an error.
    Body(E, Disposition),
    /// An earlier call's final error was replayed.
    Replayed(E, Disposition),
}

impl<E> Failed<E> {
    pub(crate) fn into_error<R, T>(self, codec: &Codec<R, T, E>) -> E {
        match self {
            Failed::Idem(error) => (codec.from_error)(error),
            Failed::Body(error, _) | Failed::Replayed(error, _) => error,
        }
    }

    /// The word for the `outcome` field of the call's event.
    fn outcome(&self) -> &'static str {
        match self {
            Failed::Body(_, disposition) | Failed::Replayed(_, disposition) => disposition.as_str(),
            Failed::Idem(Error::InProgress { .. }) => "conflict",
            Failed::Idem(Error::PayloadMismatch { .. }) => "payload_mismatch",
            Failed::Idem(Error::NeedsReview { .. }) => "needs_review",
            Failed::Idem(Error::LostOwnership { .. }) => "lost_ownership",
            Failed::Idem(_) => "error",
        }
    }
}

/// The protocol, with the call's event and the report to [`observe`](crate::observe).
pub(crate) async fn execute<R, T, E, F>(
    call: Call<'_>,
    store: &dyn Store,
    codec: &Codec<R, T, E>,
    body: F,
) -> Result<(T, Disposition), Failed<E>>
where
    F: Future<Output = R>,
{
    // Two reads of the clock are a good part of a fast call's cost: skip them when nobody
    // listens to the event (no subscriber, or one that filters `idem` out). A subscriber
    // installed while a call runs sees `elapsed_us = 0` for that call.
    let started = call_event_enabled().then(Instant::now);
    let result = protocol(call, store, codec, body).await;
    let (outcome, failed) = match &result {
        Ok((_, disposition)) => {
            report(*disposition);
            (disposition.as_str(), false)
        }
        Err(failed @ (Failed::Body(_, disposition) | Failed::Replayed(_, disposition))) => {
            report(*disposition);
            (failed.outcome(), true)
        }
        Err(failed) => (failed.outcome(), true),
    };
    tracing::info!(
        target: "idem",
        action = call.action.name(),
        key = %call.key,
        outcome,
        failed,
        elapsed_us = started.map_or(0, |started| {
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
        }),
        "idempotent call",
    );
    result
}

/// The event of a call that failed before it could claim its key (no store, arguments with
/// no JSON form): the same event as [`execute`]'s, without the key it never had.
pub(crate) fn failed_before_claim(action: &Action, error: &Error) {
    tracing::info!(
        target: "idem",
        action = action.name(),
        outcome = "error",
        failed = true,
        error = %error,
        "idempotent call",
    );
}

/// Whether the event of [`execute`] would be recorded: same target, level and fields.
fn call_event_enabled() -> bool {
    tracing::event_enabled!(
        target: "idem",
        tracing::Level::INFO,
        { action, key, outcome, failed, elapsed_us }
    )
}

async fn protocol<R, T, E, F>(
    call: Call<'_>,
    store: &dyn Store,
    codec: &Codec<R, T, E>,
    body: F,
) -> Result<(T, Disposition), Failed<E>>
where
    F: Future<Output = R>,
{
    let Call {
        action,
        key,
        fingerprint,
    } = call;
    let idem = |error: Error| Failed::Idem(error.with_key(&key));
    let same_payload = |found: Fingerprint| {
        if found == fingerprint {
            Ok(())
        } else {
            Err(Failed::Idem(Error::PayloadMismatch {
                key,
                action: action.name(),
            }))
        }
    };
    let request = give_back::Request {
        key,
        fingerprint,
        action: action.name(),
        lease: action.lease_duration(),
        ttl: action.ttl_duration(),
        on_stale: action.stale_policy(),
    };
    let mut deadline = None;
    let mut waited = false;
    let (token, resumed) = loop {
        match give_back::claim(store, request).await.map_err(idem)? {
            Claim::Acquired { token, resumed } => break (token, resumed),
            Claim::Completed {
                fingerprint,
                outcome,
            } => {
                same_payload(fingerprint)?;
                let how = if waited {
                    Disposition::WaitedThenReplayed
                } else {
                    Disposition::Replayed
                };
                return replay(outcome, codec, &key, how);
            }
            Claim::InProgress {
                fingerprint, token, ..
            } => {
                same_payload(fingerprint)?;
                let in_progress = || {
                    Failed::Idem(Error::InProgress {
                        key,
                        action: action.name(),
                    })
                };
                let OnConflict::Wait(limit) = action.conflict_policy() else {
                    return Err(in_progress());
                };
                // A limit too large for the clock (`Duration::MAX`) means no limit.
                let deadline = *deadline.get_or_insert_with(|| Instant::now().checked_add(limit));
                let left = deadline.map_or(limit, |d| d.saturating_duration_since(Instant::now()));
                if left.is_zero() {
                    return Err(in_progress());
                }
                store.wait(&key, token, left).await.map_err(idem)?;
                waited = true;
            }
            Claim::NeedsReview { fingerprint } => {
                same_payload(fingerprint)?;
                return Err(Failed::Idem(Error::NeedsReview {
                    key,
                    action: action.name(),
                }));
            }
        }
    };

    let how = if resumed {
        Disposition::TookOver
    } else {
        Disposition::Executed
    };
    let context = CallContext::new(action.name(), key, token, resumed);
    let shared = Arc::clone(context.shared());
    let owner = Owner {
        store,
        key,
        token,
        action,
        in_doubt: AtomicBool::new(false),
    };
    // The heartbeat covers recording the outcome too: a store that is slow to take it (a
    // busy file, retries) does not let the lease run out under a live owner.
    let run_and_settle = async {
        let output = in_call(context, body).await;
        owner.settle(codec, output, how, &shared).await
    };
    let lease = action.lease_duration();
    let settled = with_heartbeat(run_and_settle, store, &key, token, lease, &shared).await;
    // After the heartbeat has stopped, so that no beat in flight renews the lease again.
    if owner.in_doubt.load(Ordering::Acquire) {
        owner.leave_in_doubt().await;
    }
    settled
}

fn replay<R, T, E>(
    outcome: StoredOutcome,
    codec: &Codec<R, T, E>,
    key: &Key,
    how: Disposition,
) -> Result<(T, Disposition), Failed<E>> {
    let corrupt = |error: serde_json::Error| {
        Failed::Idem(Error::codec("the recorded result", Some(key), error))
    };
    match outcome {
        StoredOutcome::Ok(bytes) => (codec.decode)(&bytes).map(|value| (value, how)).map_err(corrupt),
        StoredOutcome::Err(bytes) => match &codec.final_errors {
            Some(errors) => match (errors.decode)(&bytes) {
                Ok(error) => Err(Failed::Replayed(error, how)),
                Err(error) => Err(corrupt(error)),
            },
            None => Err(Failed::Idem(Error::codec(
                "the recorded error",
                Some(key),
                "a final error is recorded for this key, but the action does not cache errors (`cache_err`)",
            ))),
        },
    }
}

/// The caller that holds a key, and the three ways it lets go of it.
struct Owner<'a> {
    store: &'a dyn Store,
    key: Key,
    token: FencingToken,
    action: &'a Action,
    /// The body's outcome is unknown: the claim is to be left in doubt, not released.
    in_doubt: AtomicBool,
}

/// Whether an outcome reached the store.
enum Recorded {
    Yes,
    /// The store kept failing: the side effect happened but nothing says so.
    No,
}

/// How often, and after what pauses, recording a result is tried again when the store fails.
/// A retry after an attempt that did commit (its answer was lost) finds the result recorded
/// under its own token, which counts as recorded.
const RECORD_RETRIES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(250),
];

impl Owner<'_> {
    /// What the body's output leaves behind: a recorded result, a recorded final error, or a
    /// released key.
    async fn settle<R, T, E>(
        &self,
        codec: &Codec<R, T, E>,
        output: R,
        how: Disposition,
        shared: &CallShared,
    ) -> Result<(T, Disposition), Failed<E>> {
        let key = self.key;
        let verified = shared.verified();
        let how = if verified == Verified::Happened {
            Disposition::Verified
        } else {
            how
        };
        match (codec.into_result)(output) {
            Ok(value) => match (codec.encode)(&value) {
                Ok(bytes) => {
                    let again = || (codec.encode)(&value).ok().map(StoredOutcome::Ok);
                    match self.record(StoredOutcome::Ok(bytes), again).await? {
                        Recorded::Yes => Ok((value, how)),
                        Recorded::No => Ok((value, Disposition::ExecutedUnrecorded)),
                    }
                }
                // The side effect happened: releasing the key would invite every retry to
                // run it again. The claim is left to run out and then follows `on_stale`.
                Err(error) => Err(Failed::Idem(Error::codec("the result", Some(&key), error))),
            },
            Err(error) if (codec.keeps_claim)(&error) => Err(Failed::Body(error, how)),
            // The effect may have happened: `verify` could not tell, or the error itself says
            // so (`in_doubt = …`). Released, the key would let a retry run it blind.
            Err(error)
                if verified == Verified::Failed
                    || codec
                        .in_doubt
                        .is_some_and(|is_ambiguous| is_ambiguous(&error)) =>
            {
                self.in_doubt.store(true, Ordering::Release);
                Err(Failed::Body(error, Disposition::InDoubt))
            }
            Err(error) => {
                let final_errors = codec
                    .final_errors
                    .as_ref()
                    .filter(|errors| (errors.is_final)(&error));
                let Some(errors) = final_errors else {
                    self.release().await;
                    return Err(Failed::Body(error, how));
                };
                match (errors.encode)(&error) {
                    Ok(bytes) => {
                        let again = || (errors.encode)(&error).ok().map(StoredOutcome::Err);
                        let how = match self.record(StoredOutcome::Err(bytes), again).await? {
                            Recorded::Yes => how,
                            Recorded::No => Disposition::ExecutedUnrecorded,
                        };
                        Err(Failed::Body(error, how))
                    }
                    Err(codec_error) => {
                        tracing::warn!(target: "idem", key = %key, error = %codec_error, "a final error could not be encoded; the key is released instead");
                        self.release().await;
                        Err(Failed::Body(error, how))
                    }
                }
            }
        }
    }

    /// Record the outcome, trying again a few times if the store fails (a busy file, a
    /// dropped connection); the heartbeat keeps the lease meanwhile. If the store still
    /// fails, the side effect has happened but is not recorded: the value still goes to the
    /// caller, with [`Disposition::ExecutedUnrecorded`] and an error event, and the key stays
    /// claimed until its lease runs out (then the next caller resumes it, or it waits for
    /// review).
    ///
    /// `again` encodes the outcome anew for a retry, so that the first try can hand its bytes
    /// to the store without a copy.
    async fn record<E>(
        &self,
        outcome: StoredOutcome,
        again: impl Fn() -> Option<StoredOutcome>,
    ) -> Result<Recorded, Failed<E>> {
        let ttl = self.action.ttl_duration();
        let mut pauses = RECORD_RETRIES.iter();
        let mut next = Some(outcome);
        while let Some(outcome) = next.take() {
            let attempt = self
                .store
                .complete(&self.key, self.token, outcome, ttl)
                .await;
            match attempt {
                Ok(Ownership::Held) => return Ok(Recorded::Yes),
                Ok(Ownership::Lost) => {
                    return Err(Failed::Idem(Error::LostOwnership {
                        key: self.key,
                        action: self.action.name(),
                    }))
                }
                Err(error) => match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(target: "idem", key = %self.key, %error, "recording the result failed; trying again");
                        tokio::time::sleep(*pause).await;
                        next = again();
                    }
                    None => {
                        tracing::error!(target: "idem", key = %self.key, %error, "the result could not be confirmed as recorded (a store that kept failing, or replicas that did not acknowledge it); unless the store did record it, the key stays claimed until its lease runs out");
                    }
                },
            }
        }
        Ok(Recorded::No)
    }

    /// Keep the claim, with its lease ended: the next call finds it in doubt and follows
    /// `verify`, then `on_stale`. Should the store fail, the lease runs out by itself.
    async fn leave_in_doubt(&self) {
        match self.store.leave_in_doubt(&self.key, self.token).await {
            Ok(Ownership::Held) => {
                tracing::warn!(target: "idem", key = %self.key, "the call's outcome is unknown; the key is left in doubt");
            }
            Ok(Ownership::Lost) => {
                tracing::warn!(target: "idem", key = %self.key, "the key was taken over before it could be left in doubt");
            }
            Err(error) => {
                tracing::warn!(target: "idem", key = %self.key, %error, "the key could not be marked in doubt; it is in doubt once its lease runs out");
            }
        }
    }

    /// Let the next call run the body again (the body failed in a way worth retrying).
    async fn release(&self) {
        match self.store.release(&self.key, self.token).await {
            Ok(Ownership::Held) => {}
            Ok(Ownership::Lost) => {
                tracing::warn!(target: "idem", key = %self.key, "the key was taken over before it could be released");
            }
            Err(error) => {
                tracing::warn!(target: "idem", key = %self.key, %error, "the key could not be released; it frees itself when its lease runs out");
            }
        }
    }
}
