//! Keeping a claim alive while the body runs.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{sleep, Instant, Sleep};

use crate::context::CallShared;
use crate::key::Key;
use crate::store::{FencingToken, Ownership, Store};
use crate::Error;

type Beat<'a> = Pin<Box<dyn Future<Output = Result<Ownership, Error>> + Send + 'a>>;

/// Runs `body` to completion, renewing the lease of `token` every third of `lease` for as
/// long as the body is pending.
///
/// A body that finishes on its first poll never starts a timer: the fast path costs nothing.
/// A lost heartbeat (taken over) stops the renewals but not the body: a side effect that is
/// under way is not cut in half; `watch` tells the body (`CallContext::lease_lost`), and the
/// body's result is refused by the fencing token when it is recorded. A failing store is retried at the next beat.
pub(crate) async fn with_heartbeat<F: Future>(
    body: F,
    store: &dyn Store,
    key: &Key,
    token: FencingToken,
    lease: Duration,
    watch: &CallShared,
) -> F::Output {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut body = pin!(body);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut beat: Option<Beat<'_>> = None;
    let mut lost = false;
    poll_fn(|cx| {
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        loop {
            if let Some(in_flight) = beat.as_mut() {
                let Poll::Ready(result) = in_flight.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                beat = None;
                match result {
                    Ok(Ownership::Held) => {}
                    Ok(Ownership::Lost) => {
                        lost = true;
                        watch.lose();
                        tracing::warn!(target: "idem", key = %key, "lease lost to another caller while the body ran");
                    }
                    Err(error) => {
                        tracing::warn!(target: "idem", key = %key, %error, "heartbeat failed; retrying at the next beat");
                    }
                }
            }
            if lost {
                return Poll::Pending;
            }
            let timer = timer.get_or_insert_with(|| Box::pin(sleep(every)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            timer.as_mut().reset(Instant::now() + every);
            beat = Some(store.heartbeat(key, token, lease));
        }
    })
    .await
}
