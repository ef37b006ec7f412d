//! A claim whose caller is dropped while the claim is on its way to the store is given back.
//!
//! An agent's `timeout` around a tool drops the call wherever it is. Dropped while its claim
//! is in flight, the claim may still land in the store (the request went out; SQLite's write
//! runs on a thread of its own), with nobody left to run the body or let go of the key: a
//! duplicate would wait a whole lease and then run as a retry of an interrupted call, or,
//! under `on_stale = review`, find the key parked for an operator though the body never ran.
//! So the claim is made as a task-independent future over an owned handle to the store; if
//! the call is dropped first, that future is finished on the runtime and its claim given
//! back: released when it was fresh, left in doubt (as it was found) when it took over a
//! call whose outcome is unknown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::key::{Fingerprint, Key};
use crate::store::OnStale;
use crate::store::{Claim, ClaimRequest, Ownership, Store};
use crate::Error;

type Claiming = Pin<Box<dyn Future<Output = (Arc<dyn Store>, Result<Claim, Error>)> + Send>>;

/// What a call claims: its request, owned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) action: &'static str,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
    pub(crate) on_stale: OnStale,
}

impl Request {
    fn borrowed(&self) -> ClaimRequest<'_> {
        ClaimRequest {
            key: &self.key,
            fingerprint: &self.fingerprint,
            action: self.action,
            lease: self.lease,
            ttl: self.ttl,
            on_stale: self.on_stale,
        }
    }
}

/// Claims `request` in `store`; if the caller is dropped before the answer, the claim is
/// given back. Stores without an owned handle ([`Store::shared`]: the memory store, whose
/// claim is one synchronous step) are claimed directly.
///
/// `request` is borrowed, not moved in: the caller's future (part of the call's, which is
/// boxed) would otherwise hold it twice, and a block over 1032 bytes is one glibc's thread
/// cache does not keep.
pub(crate) async fn claim(store: &dyn Store, request: &Request) -> Result<Claim, Error> {
    let Some(shared) = store.shared() else {
        return store.claim_without_expiry(&request.borrowed()).await;
    };
    let request = *request;
    let claiming: Claiming = Box::pin(async move {
        let claim = shared.claim_without_expiry(&request.borrowed()).await;
        (shared, claim)
    });
    GiveBackIfDropped {
        claiming: Some(claiming),
        key: request.key,
    }
    .await
}

struct GiveBackIfDropped {
    claiming: Option<Claiming>,
    key: Key,
}

impl Future for GiveBackIfDropped {
    type Output = Result<Claim, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(claiming) = self.claiming.as_mut() else {
            return Poll::Ready(Err(Error::codec(
                "a claim",
                Some(&self.key),
                "the claim's future was polled after it finished",
            )));
        };
        match claiming.as_mut().poll(cx) {
            Poll::Ready((_, claim)) => {
                self.claiming = None;
                Poll::Ready(claim)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for GiveBackIfDropped {
    fn drop(&mut self) {
        let Some(claiming) = self.claiming.take() else {
            return;
        };
        // Outside a runtime nothing can finish it: the claim's lease runs out by itself.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key = self.key;
        runtime.spawn(async move {
            let (store, claim) = claiming.await;
            let given = match claim {
                Ok(Claim::Acquired {
                    token,
                    resumed: false,
                }) => store.release(&key, token).await,
                // It took over a call whose outcome is unknown: still unknown.
                Ok(Claim::Acquired {
                    token,
                    resumed: true,
                }) => store.leave_in_doubt(&key, token).await,
                _ => return,
            };
            match given {
                Ok(Ownership::Held) => {
                    tracing::info!(target: "idem", key = %key, "a call dropped while claiming gave its claim back");
                }
                Ok(Ownership::Lost) => {}
                Err(error) => {
                    tracing::warn!(target: "idem", key = %key, %error, "a call dropped while claiming could not give its claim back; it frees itself when its lease runs out");
                }
            }
        });
    }
}
