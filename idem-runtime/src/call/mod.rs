//! One call of an action: the claim protocol around its body.

mod action;
mod codec;
pub(crate) mod context;
pub(crate) mod default_store;
mod give_back;
pub(crate) mod heartbeat;
mod identity;
pub(crate) mod metrics;
mod outcome;
mod owner;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

pub use action::{Action, ActionSettings, OnConflict};
pub(crate) use codec::FinalErrors;
pub use codec::{Codec, IdemReturn};
pub use context::{current_call, current_key, observe, CallContext};
pub use default_store::{default_store, set_default_store, set_default_store_shared};
pub use identity::ActionRegistration;
pub use outcome::{Disposition, Outcome};

use crate::key::{Fingerprint, Key};
use crate::store::{Claim, FencingToken, Store, StoredOutcome};
use crate::Error;
use codec::replay;
use context::{in_call, report};
use heartbeat::with_heartbeat;
use metrics::Meter;
use owner::Owner;

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

    /// As [`run`](Call::run), but an error for which `is_ambiguous` returns true leaves the
    /// key in doubt instead of releasing it: the effect may have happened (the connection was
    /// cut after the request went out, the service died mid-call), so the next call follows
    /// the action's `on_stale` (runs again with [`CallContext::resumed`] true, or waits for an
    /// operator's review) instead of running the body as if nothing had happened. This is
    /// `#[idempotent(in_doubt = …)]` without the macro.
    ///
    /// ```
    /// use idem_runtime::{store::MemoryStore, Action, Error, OnStale};
    ///
    /// #[derive(Debug)]
    /// enum SendError { Cut, Idem(Error) }
    /// impl From<Error> for SendError {
    ///     fn from(e: Error) -> Self { SendError::Idem(e) }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// static SEND: Action = Action::new("send_email").on_stale(OnStale::Review);
    /// let store = MemoryStore::new();
    /// let cut = |e: &SendError| matches!(e, SendError::Cut);
    ///
    /// // The connection was cut after the email went out: nobody knows whether it was sent.
    /// let first = SEND.call(&("ada@example.com", "quote-7")).unwrap();
    /// let sent = first.run_in_doubt_on::<String, _, _>(&store, cut, async { Err(SendError::Cut) }).await;
    /// assert!(matches!(sent, Err(SendError::Cut)));
    ///
    /// // The retry does not send it blind: the key waits for an operator.
    /// let retry = SEND.call(&("ada@example.com", "quote-7")).unwrap();
    /// let again = retry.run_in_doubt_on::<String, _, _>(&store, cut, async { Ok("msg-2".into()) }).await;
    /// assert!(matches!(again, Err(SendError::Idem(Error::NeedsReview { .. }))));
    /// # });
    /// ```
    pub async fn run_in_doubt_on<T, E, F>(
        self,
        store: &dyn Store,
        is_ambiguous: fn(&E) -> bool,
        body: F,
    ) -> Result<Outcome<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: Future<Output = Result<T, E>>,
    {
        let codec = Codec::<Result<T, E>, T, E>::new().in_doubt(is_ambiguous);
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

/// The protocol in the call's span, with the call's event, its metrics (feature `metrics`)
/// and the report to [`observe`](crate::observe).
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
    // installed while a call runs sees `elapsed_us = 0` for that call. The histograms of the
    // `metrics` feature share this read, or make their own (`Meter`); without the feature,
    // `Meter` is empty. The span is only built when a subscriber takes it.
    let started = call_event_enabled().then(Instant::now);
    let meter = Meter::start(started);
    let span = metrics::span(call.action.name(), &call.key);
    let result = Box::pin(protocol(call, store, codec, body, meter))
        .instrument(span)
        .await;
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
    metrics::count(call.action.name(), outcome, failed);
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
    let outcome = "error";
    metrics::count(action.name(), outcome, true);
    tracing::info!(
        target: "idem",
        action = action.name(),
        outcome,
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
    meter: Meter,
) -> Result<(T, Disposition), Failed<E>>
where
    F: Future<Output = R>,
{
    let claimed = claim(call, store).await;
    let meter = meter.claimed(call.action.name());
    match claimed? {
        // Boxed: the run's state (the body, its heartbeat, the settling of its outcome) is
        // the largest part of a call's future, and every layer above would copy it by value
        // (a few KB per move), replays included, which never run it.
        Claimed::Owner { token, resumed } => {
            Box::pin(run(call, store, codec, token, resumed, body, meter)).await
        }
        Claimed::Recorded { outcome, how } => replay(outcome, codec, &call.key, how),
    }
}

/// What the claim phase of a call ends with.
enum Claimed {
    /// The call owns the key under `token` and must run the body.
    Owner { token: FencingToken, resumed: bool },
    /// The key has a recorded outcome, to replay.
    Recorded {
        outcome: StoredOutcome,
        how: Disposition,
    },
}

/// Claims the call's key: owns it, or finds its recorded outcome; waits (bounded, by
/// `on_conflict`) while another caller holds it; refuses another payload under the key and a
/// key parked for review.
async fn claim<E>(call: Call<'_>, store: &dyn Store) -> Result<Claimed, Failed<E>> {
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
        lease: action.settings().lease,
        ttl: action.settings().ttl,
        on_stale: action.settings().on_stale,
    };
    let mut deadline = None;
    let mut waited = false;
    loop {
        match give_back::claim(store, &request).await.map_err(idem)? {
            Claim::Acquired { token, resumed } => return Ok(Claimed::Owner { token, resumed }),
            Claim::Completed {
                fingerprint,
                outcome,
                ..
            } => {
                same_payload(fingerprint)?;
                let how = if waited {
                    Disposition::WaitedThenReplayed
                } else {
                    Disposition::Replayed
                };
                return Ok(Claimed::Recorded { outcome, how });
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
                let OnConflict::Wait(limit) = action.settings().on_conflict else {
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
    }
}

/// Runs the body as the key's owner under `token`, its lease renewed by heartbeats, and
/// settles its outcome: recorded, released, or left in doubt.
async fn run<R, T, E, F>(
    call: Call<'_>,
    store: &dyn Store,
    codec: &Codec<R, T, E>,
    token: FencingToken,
    resumed: bool,
    body: F,
    meter: Meter,
) -> Result<(T, Disposition), Failed<E>>
where
    F: Future<Output = R>,
{
    let Call { action, key, .. } = call;
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
        fingerprint: call.fingerprint,
        token,
        action,
        name: action.name(),
        in_doubt: AtomicBool::new(false),
    };
    // The heartbeat covers recording the outcome too: a store that is slow to take it (a
    // busy file, retries) does not let the lease run out under a live owner. Boxed where it
    // is made: passed by value, the body and the settling would be kept twice in this
    // future (the heartbeat's argument, then the pinned value it polls).
    let run_and_settle = Box::pin(async {
        let output = in_call(context, body).await;
        meter.body_ended(action.name());
        owner.settle(codec, output, how, &shared).await
    });
    let lease = action.settings().lease;
    let settled = with_heartbeat(run_and_settle, store, &key, token, lease, &shared).await;
    // After the heartbeat has stopped, so that no beat in flight renews the lease again.
    if owner.is_in_doubt() {
        owner.leave_in_doubt().await;
    }
    settled
}
