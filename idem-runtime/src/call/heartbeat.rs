//! Keeping a claim alive while the body runs.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{sleep, Instant, Sleep};

use crate::call::context::CallShared;
use crate::key::Key;
use crate::store::{FencingToken, Ownership, Store};
use crate::Error;

type Beat<'a> = Pin<Box<dyn Future<Output = Result<Ownership, Error>> + Send + 'a>>;

/// When heartbeats are written, from the lease `L` they keep.
///
/// Say a renewal lands on the store at `r`: the lease then runs to `r + L`.
/// - A beat starts every `L/3`, counted from the start of the one before, so the next one
///   starts by `r + L/3`.
/// - A write gets `L/3` to answer. One that takes longer (a busy store: another process holds
///   the file, a server stalls) is given up, not waited for: it may still land, which is
///   harmless (same token), but the owner no longer counts on it.
/// - After a failure or a write given up, the next try starts `L/12` later, not at the next
///   third.
///
/// So at worst the next beat starts at `r + L/3`, is given up at `r + 2L/3`, and its retry
/// starts by `r + 3L/4`, with a quarter of the lease left to land; a store that fails fast (a
/// refused connection) is tried about every `L/12`, some eight times before the lease ends.
/// Writes that keep taking longer than a third of the lease lose it: such a store cannot keep
/// a lease that short, and the fencing token refuses the late owner's result.
#[derive(Debug, Clone, Copy)]
struct Rhythm {
    every: Duration,
    deadline: Duration,
    retry: Duration,
}

impl Rhythm {
    fn of(lease: Duration) -> Self {
        let at_least_1ms = |d: Duration| d.max(Duration::from_millis(1));
        Rhythm {
            every: at_least_1ms(lease / 3),
            deadline: at_least_1ms(lease / 3),
            retry: at_least_1ms(lease / 12),
        }
    }
}

/// Runs `body` to completion, renewing the lease of `token` for as long as the body is
/// pending, on the [`Rhythm`] of `lease`.
///
/// A body that finishes on its first poll never starts a timer: the fast path costs nothing.
/// A lost heartbeat (taken over) stops the renewals but not the body: a side effect that is
/// under way is not cut in half; `watch` tells the body (`CallContext::lease_lost`), and the
/// body's result is refused by the fencing token when it is recorded. A failing or slow store
/// is tried again soon, not at the next beat.
pub(crate) async fn with_heartbeat<F: Future>(
    body: F,
    store: &dyn Store,
    key: &Key,
    token: FencingToken,
    lease: Duration,
    watch: &CallShared,
) -> F::Output {
    let rhythm = Rhythm::of(lease);
    let mut body = pin!(body);
    // When the next beat starts.
    let mut next: Option<Pin<Box<Sleep>>> = None;
    // The write under way, and when it is given up.
    let mut beat: Option<Beat<'_>> = None;
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    let mut lost = false;
    poll_fn(|cx| {
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        loop {
            if let Some(in_flight) = beat.as_mut() {
                let answer = match in_flight.as_mut().poll(cx) {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => match deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                        Some(Poll::Ready(())) => None,
                        _ => return Poll::Pending,
                    },
                };
                beat = None;
                let failed = match answer {
                    Some(Ok(Ownership::Held)) => false,
                    Some(Ok(Ownership::Lost)) => {
                        lost = true;
                        watch.lose();
                        tracing::warn!(target: "idem", key = %key, "lease lost to another caller while the body ran");
                        false
                    }
                    Some(Err(error)) => {
                        tracing::warn!(target: "idem", key = %key, %error, "heartbeat failed; retrying soon");
                        true
                    }
                    None => {
                        tracing::warn!(target: "idem", key = %key, waited = ?rhythm.deadline, "heartbeat unanswered; retrying soon");
                        true
                    }
                };
                if let (true, Some(next)) = (failed, next.as_mut()) {
                    let sooner = Instant::now() + rhythm.retry;
                    if sooner < next.deadline() {
                        next.as_mut().reset(sooner);
                    }
                }
            }
            if lost {
                return Poll::Pending;
            }
            let next = next.get_or_insert_with(|| Box::pin(sleep(rhythm.every)));
            if next.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            next.as_mut().reset(now + rhythm.every);
            match deadline.as_mut() {
                Some(deadline) => deadline.as_mut().reset(now + rhythm.deadline),
                None => deadline = Some(Box::pin(sleep(rhythm.deadline))),
            }
            beat = Some(store.heartbeat(key, token, lease));
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use crate::key::Fingerprint;
    use crate::store::OnStale;
    use crate::store::{
        Claim, ClaimRequest, MemoryStore, Record, SagaLog, SagaWrite, StaleSaga, StoredOutcome,
    };
    use crate::store::{Inspect, SagaStore};

    /// A memory store whose first heartbeat never answers: a store stuck on one write.
    #[derive(Debug)]
    struct FirstBeatHangs {
        store: MemoryStore,
        beats: AtomicU32,
    }

    #[async_trait]
    impl Store for FirstBeatHangs {
        fn name(&self) -> &'static str {
            "first-beat-hangs"
        }

        async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
            self.store.claim(request).await
        }

        async fn complete(
            &self,
            key: &Key,
            token: FencingToken,
            outcome: StoredOutcome,
            ttl: Duration,
        ) -> Result<Ownership, Error> {
            self.store.complete(key, token, outcome, ttl).await
        }

        async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
            self.store.release(key, token).await
        }

        async fn heartbeat(
            &self,
            key: &Key,
            token: FencingToken,
            lease: Duration,
        ) -> Result<Ownership, Error> {
            if self.beats.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            self.store.heartbeat(key, token, lease).await
        }

        async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
            self.store.get(key).await
        }

        async fn purge_expired(&self) -> Result<u64, Error> {
            self.store.purge_expired().await
        }
    }

    #[async_trait]
    impl SagaStore for FirstBeatHangs {
        async fn write_saga(
            &self,
            saga: &Key,
            id: &str,
            token: FencingToken,
            write: SagaWrite<'_>,
        ) -> Result<Ownership, Error> {
            self.store.write_saga(saga, id, token, write).await
        }

        async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
            self.store.read_saga(saga).await
        }

        async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
            self.store.stale_sagas(limit).await
        }
    }

    #[async_trait]
    impl Inspect for FirstBeatHangs {}

    /// A heartbeat that never answers is given up and tried again in time: the lease of a
    /// body that runs three leases long never runs out.
    #[tokio::test]
    async fn a_heartbeat_stuck_in_the_store_is_given_up_and_retried_in_time() {
        let lease = Duration::from_millis(1200);
        let store = FirstBeatHangs {
            store: MemoryStore::new(),
            beats: AtomicU32::new(0),
        };
        let key = Key::from_bytes([9; 32]);
        let fingerprint = Fingerprint::from(key);
        let request = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "stuck_beat",
            lease,
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        };
        let Claim::Acquired { token, .. } = store.claim(&request).await.expect("claim") else {
            panic!("a free key is acquired");
        };
        let body = async {
            let mut lapsed = false;
            // Look at the lease every tenth of it, for three leases.
            for _ in 0..30 {
                tokio::time::sleep(lease / 10).await;
                let record = store.get(&key).await.expect("get").expect("the claim");
                let ends = record.expires_at.expect("a lease");
                lapsed |= ends <= std::time::SystemTime::now();
            }
            lapsed
        };
        let lapsed = with_heartbeat(body, &store, &key, token, lease, &CallShared::default()).await;
        assert!(!lapsed, "the lease never ran out");
        assert!(
            store.beats.load(Ordering::SeqCst) >= 3,
            "beats went on after the stuck one"
        );
    }

    #[test]
    fn a_retry_after_a_beat_given_up_still_has_a_quarter_of_the_lease() {
        for lease in [
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::from_secs(10),
        ] {
            let rhythm = Rhythm::of(lease);
            // The latest a retry starts, counted from the last renewal that landed.
            let retry_starts = rhythm.every + rhythm.deadline + rhythm.retry;
            assert!(
                lease - retry_starts >= lease / 4 - Duration::from_millis(1),
                "{lease:?}"
            );
        }
        let tiny = Rhythm::of(Duration::from_millis(1));
        assert!(!tiny.every.is_zero() && !tiny.deadline.is_zero() && !tiny.retry.is_zero());
    }
}
