//! The races of the claim protocol: many claims and calls of one key at once, from threads
//! of their own and across two handles on the same records, and owners that run long (kept
//! by their heartbeats) or stall (taken over).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Barrier;

use super::{claim, key, past, LONG, SHORT};
use crate::call::{Action, OnConflict};
use crate::call::{Disposition, Outcome};
use crate::store::{Claim, Store};
use crate::{current_call, observe, Error};

/// 64 claims of one key at the same moment, each from a thread of its own: exactly one is
/// acquired.
pub async fn race_of_64_claims_has_one_winner(store: &dyn Store) {
    let k = key(16);
    let start = Barrier::new(64);
    let claims = on_threads((0..64).map(|_| async {
        start.wait().await;
        claim(store, &k, LONG).await
    }));
    let winners = claims
        .iter()
        .filter(|c| matches!(c, Claim::Acquired { .. }))
        .count();
    assert_eq!(winners, 1, "claims: {claims:?}");
    assert!(claims
        .iter()
        .all(|c| matches!(c, Claim::Acquired { .. } | Claim::InProgress { .. })));
}

/// 64 calls of one key at once, each from a thread of its own, through the whole protocol:
/// the body runs once and every caller gets its result.
pub async fn race_of_64_calls_runs_the_body_once(store: &dyn Store) {
    static CHARGE: Action =
        Action::new("charge_card").on_conflict(OnConflict::Wait(Duration::from_secs(30)));
    let runs = AtomicUsize::new(0);
    let start = Barrier::new(64);
    let outcomes = on_threads((0..64).map(|_| async {
        start.wait().await;
        let call = CHARGE.call(&("customer-42", 1999)).expect("call");
        call.run::<_, Error, _>(store, async {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(format!("charge-{run}"))
        })
        .await
    }));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let executed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::Executed(_))))
        .count();
    assert_eq!(executed, 1);
    for outcome in outcomes {
        assert_eq!(
            outcome.expect("every caller gets the result").into_inner(),
            "charge-0"
        );
    }
}

/// Two handles on the same records (two connections, two clients): 64 claims of one key
/// from 64 threads, alternating handles, have one winner; 64 calls of another key run the
/// body once; and a result recorded through one handle is replayed through the other.
pub async fn races_across_two_handles(first: &dyn Store, second: &dyn Store) {
    let handles = [first, second];
    let k = key(17);
    let start = Barrier::new(64);
    let claims = on_threads((0..64).map(|i| {
        let (store, start, k) = (handles[i % 2], &start, &k);
        async move {
            start.wait().await;
            claim(store, k, LONG).await
        }
    }));
    let winners = claims
        .iter()
        .filter(|c| matches!(c, Claim::Acquired { .. }))
        .count();
    assert_eq!(winners, 1, "claims: {claims:?}");

    static PAY: Action =
        Action::new("pay_invoice").on_conflict(OnConflict::Wait(Duration::from_secs(30)));
    let runs = AtomicUsize::new(0);
    let start = Barrier::new(64);
    let outcomes = on_threads((0..64).map(|i| {
        let (store, start, runs) = (handles[i % 2], &start, &runs);
        async move {
            start.wait().await;
            PAY.call(&("invoice-9",))
                .expect("call")
                .run::<_, Error, _>(store, async {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok(format!("payment-{run}"))
                })
                .await
        }
    }));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for outcome in outcomes {
        assert_eq!(
            outcome.expect("every caller gets the result").into_inner(),
            "payment-0"
        );
    }
    for store in handles {
        let replay = PAY
            .call(&("invoice-9",))
            .expect("call")
            .run::<String, Error, _>(store, async { Ok("again".into()) })
            .await;
        assert_eq!(replay.expect("replay").into_inner(), "payment-0");
    }
}

/// A body that runs for several leases keeps its key: heartbeats renew the lease, so a
/// duplicate that comes after the first lease would have run out still finds it in progress.
pub async fn heartbeats_keep_a_long_body_owned(store: &dyn Store) {
    // Long enough that a loaded machine's stalls (a slow fsync, a starved runtime) do not
    // miss every beat of a lease: a beat goes every third of it.
    const LEASE: Duration = Duration::from_millis(1_500);
    static REPORT: Action = Action::new("long_report")
        .lease(LEASE)
        .on_conflict(OnConflict::Fail);
    let runs = AtomicUsize::new(0);
    let (started, body_started) = tokio::sync::oneshot::channel::<()>();
    let (finish, body_may_finish) = tokio::sync::oneshot::channel::<()>();
    let owner = async {
        REPORT
            .call(&("q3",))?
            .run::<_, Error, _>(store, async {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(());
                let _ = body_may_finish.await;
                Ok("report".to_string())
            })
            .await
    };
    let duplicate = async {
        let _ = body_started.await;
        // Past three leases: without heartbeats the claim would have expired long ago.
        past(LEASE * 3).await;
        let refused = REPORT
            .call(&("q3",))
            .expect("call")
            .run::<String, Error, _>(store, async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok("duplicate".to_string())
            })
            .await;
        let _ = finish.send(());
        refused
    };
    let (owner, refused) = tokio::join!(owner, duplicate);
    assert_eq!(owner.expect("the owner finishes").into_inner(), "report");
    assert!(
        matches!(refused, Err(Error::InProgress { .. })),
        "{refused:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// An owner that stalls past its lease (no heartbeat can run) is taken over; when it wakes,
/// its result is refused with `LostOwnership` and the new owner's result stands.
pub async fn paused_owner_loses_to_the_caller_that_took_over(store: &dyn Store) {
    static SEND: Action = Action::new("send_email")
        .lease(SHORT)
        .on_conflict(OnConflict::Wait(LONG));
    let (owns, owner_started) = std::sync::mpsc::channel::<()>();
    let (took_over, resume_owner) = std::sync::mpsc::channel::<()>();
    let paused = async move {
        SEND.call(&("quote-7",))?
            .run::<_, Error, _>(store, async move {
                let _ = owns.send(());
                // A stop-the-world pause: the thread blocks, so no heartbeat runs either.
                let _ = resume_owner.recv_timeout(LONG);
                Ok("from the paused owner".to_string())
            })
            .await
    };
    let next = async move {
        let _ = owner_started.recv_timeout(LONG);
        observe(async {
            SEND.call(&("quote-7",))?
                .run::<_, Error, _>(store, async {
                    let resumed = current_call().is_some_and(|c| c.resumed());
                    let _ = took_over.send(());
                    Ok(format!("from the new owner, resumed: {resumed}"))
                })
                .await
        })
        .await
    };
    // Each on a thread of its own: the paused owner blocks its thread.
    let runtime = tokio::runtime::Handle::current();
    let (paused, (next, how)) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let paused = scope.spawn(|| runtime.block_on(paused));
            let next = runtime.block_on(next);
            (
                paused.join().expect("the paused owner's thread panicked"),
                next,
            )
        })
    });
    assert!(
        matches!(paused, Err(Error::LostOwnership { .. })),
        "paused owner: {paused:?}"
    );
    assert_eq!(
        next.expect("next caller").into_inner(),
        "from the new owner, resumed: true"
    );
    assert_eq!(how, Some(Disposition::TookOver));
    let replay = SEND
        .call(&("quote-7",))
        .expect("call")
        .run::<String, Error, _>(store, async { Ok("x".into()) })
        .await;
    assert_eq!(
        replay.expect("replay").into_inner(),
        "from the new owner, resumed: true"
    );
}

/// Runs each future to completion on a thread of its own, so that they truly run at once
/// (and any of them can block its thread while the others go on); returns their outputs in
/// order.
fn on_threads<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = futures
                .into_iter()
                .map(|future| scope.spawn(|| runtime.block_on(future)))
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("a thread of the check panicked"))
                .collect()
        })
    })
}
