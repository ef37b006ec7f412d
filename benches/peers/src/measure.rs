//! One round of one row: `callers` Tokio tasks call in a loop; after a warm-up, the calls
//! finished in a window of `secs` give the calls per second.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Numbers never handed out twice in a run: the fresh keys of every system, and the key of
/// each replay round.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A number no other call or round of this run has.
pub fn next_number() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What one caller does, over and over: one call of one system. `n` is a number of its own
/// (the order of a fresh key; a replay ignores it and calls its round's key).
pub trait Call: Send + Sync + 'static {
    fn call(&self, n: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long a round is.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Calls before the window, not counted in the rate (the first call of a replay key,
    /// connections being opened, caches warming).
    pub warm_up: Duration,
    /// The measured window.
    pub window: Duration,
}

/// What a round measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Calls per second in the window.
    pub rate: f64,
    /// Calls that returned, warm-up included: what the body counts are checked against.
    pub calls: u64,
    /// The first failed call, if any (its caller stopped there).
    pub failure: Option<String>,
}

/// Runs `callers` tasks calling `call` in a loop; see the module's docs.
pub async fn measure<C: Call>(call: Arc<C>, callers: usize, timing: Timing) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (call, stop, done, failure) =
                (call.clone(), stop.clone(), done.clone(), failure.clone());
            tokio::spawn(async move {
                let mut made = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A call that never waits (the plain call, a memory store) would keep its
                    // worker forever: let the timer and the other tasks in now and then.
                    made += 1;
                    if made.is_multiple_of(32) {
                        tokio::task::yield_now().await;
                    }
                    match call.call(next_number()).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            let mut first = failure.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert(error);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(timing.warm_up).await;
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(timing.window).await;
    let (after, elapsed) = (done.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut failed = None;
    for task in tasks {
        if let Err(error) = task.await {
            failed.get_or_insert(format!("a caller panicked: {error}"));
        }
    }
    let failure = failed.or_else(|| failure.lock().unwrap_or_else(|e| e.into_inner()).take());
    Measured {
        rate: (after - before) as f64 / elapsed.as_secs_f64(),
        calls: done.load(Ordering::Relaxed),
        failure,
    }
}

/// For the peers that answer a duplicate of a running call with "in progress" instead of
/// waiting for it (`idempotent`, agent-effects): the caller asks again, yielding in between,
/// as a user's retry loop would (without its sleep). Gives up after 10 s.
pub struct Retrying {
    started: Instant,
}

impl Retrying {
    pub fn start() -> Self {
        Retrying {
            started: Instant::now(),
        }
    }

    /// Waits before the next try; `Err` once 10 s have gone by.
    pub async fn again(&self, what: &str) -> Result<(), String> {
        if self.started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{what}: still in progress after 10 s"));
        }
        tokio::task::yield_now().await;
        Ok(())
    }
}
