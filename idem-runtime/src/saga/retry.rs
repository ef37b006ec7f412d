//! How often, and after what pauses, a compensation (or a step past the pivot) is tried again.

use std::future::Future;
use std::time::Duration;

use crate::saga::step::StepFailure;

/// A retry policy: up to `attempts` tries, pausing `first` after the first failure and twice
/// as long after each next one, never more than `max`.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::Retry;
///
/// // Five tries over about three seconds: 100 ms, 200 ms, 400 ms, 800 ms between them …
/// let policy = Retry::new(5).backoff(Duration::from_millis(100), Duration::from_secs(2));
/// assert_eq!(policy.attempts(), 5);
/// assert_eq!(policy.pause_after(1), Duration::from_millis(100));
/// assert_eq!(policy.pause_after(3), Duration::from_millis(400));
/// // … and never longer than the cap.
/// assert_eq!(policy.pause_after(9), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    first: Duration,
    max: Duration,
}

impl Default for Retry {
    /// Five tries, pausing 100 ms, then doubling up to 5 s.
    fn default() -> Self {
        Retry::new(5)
    }
}

impl Retry {
    /// Up to `attempts` tries (at least one), pausing 100 ms after the first failure and
    /// doubling up to 5 s.
    pub const fn new(attempts: u32) -> Self {
        Retry {
            attempts: if attempts == 0 { 1 } else { attempts },
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    /// The same number of tries, pausing `first` after the first failure, doubling up to `max`.
    pub const fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first = first;
        self.max = max;
        self
    }

    /// How many tries at most.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The pause after the `failures`-th failure (from 1).
    pub fn pause_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// Runs `attempt` until it succeeds, fails for a reason a retry cannot mend (idem's own:
    /// a log that cannot be read), or the tries run out. `failed` tries were made already
    /// (a step past the pivot, whose first try was its own call): the first pause is the one
    /// after them, and they count.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &str,
        failed: u32,
        mut attempt: F,
    ) -> Result<T, StepFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepFailure>>,
    {
        let mut failures = failed;
        if failures > 0 {
            if failures >= self.attempts {
                return Err(StepFailure::Failed(format!("{what}: no tries left")));
            }
            tokio::time::sleep(self.pause_after(failures)).await;
        }
        loop {
            match attempt().await {
                Err(StepFailure::Failed(error)) if failures + 1 < self.attempts => {
                    failures += 1;
                    tracing::warn!(target: "idem", what, %error, failures, "failed; trying again");
                    tokio::time::sleep(self.pause_after(failures)).await;
                }
                done => return done,
            }
        }
    }
}
