//! What a call tells the outside besides its value: its span, and with the `metrics` feature
//! its counter and histograms through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The names are stable: the constants below, listed in [`crate::metrics`] and in the
//! `#[idempotent]` manual. The `outcome` label is the word of the call's `tracing` event
//! ([`Disposition::as_str`](crate::Disposition::as_str) and the refusals' words in
//! `call/mod.rs`), so that there is one place for the words.

use std::fmt;
use std::time::Instant;

use crate::key::Key;

/// Calls, a counter; labels `action`, `outcome` and `failed` (`"true"` or `"false"`).
#[cfg(feature = "metrics")]
pub const CALLS_TOTAL: &str = "idem_calls_total";
/// How long the claim phase took, a histogram in seconds; label `action`. The claim phase
/// ends when the call owns its key, found its record, or is refused; it includes a wait for
/// another caller holding the key (`on_conflict = wait`).
#[cfg(feature = "metrics")]
pub const CLAIM_SECONDS: &str = "idem_claim_seconds";
/// How long the body ran, a histogram in seconds; label `action`. Only calls whose body ran;
/// recording its outcome in the store is not part of it.
#[cfg(feature = "metrics")]
pub const BODY_SECONDS: &str = "idem_body_seconds";

/// Describes the three metrics (unit, one line of help) to the recorder installed now, for
/// exporters that show them (Prometheus' `# HELP`). Optional: the metrics are recorded
/// without it.
#[cfg(feature = "metrics")]
pub fn describe() {
    use ::metrics::Unit;
    ::metrics::describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        "Idempotent calls, by action, outcome and whether they failed."
    );
    ::metrics::describe_histogram!(
        CLAIM_SECONDS,
        Unit::Seconds,
        "Time to claim the key, find its record, or be refused (waits included)."
    );
    ::metrics::describe_histogram!(
        BODY_SECONDS,
        Unit::Seconds,
        "Time the body of an idempotent call ran."
    );
}

/// The span of one call: target `idem`, level INFO, fields `action` and `key`, the key's
/// first 12 hex digits (as [`Key::short`]). Never the arguments. Its fields are only
/// formatted when a subscriber takes the span.
pub(super) fn span(action: &'static str, key: &Key) -> tracing::Span {
    tracing::info_span!(target: "idem", "idem", action, key = %Short(key))
}

/// The first 12 hex digits of a key, written without allocating.
struct Short<'a>(&'a Key);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_bytes()[..6]
            .iter()
            .try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The clock of one call's histograms: nothing at all (zero-sized, every method empty)
/// without the `metrics` feature, so that the call path does not change.
///
/// The facade cannot tell whether a recorder is installed (its no-op recorder is private),
/// so with the feature the clock is read at the start (shared with the call's event when
/// that one reads it), when the claim phase ends, and when the body ends: three reads for a
/// call that runs its body, two for one answered or refused by the claim.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meter {
    #[cfg(feature = "metrics")]
    since: Instant,
}

impl Meter {
    /// Starts the claim's clock, at `started` if the call's event already read it.
    #[inline(always)]
    pub(super) fn start(started: Option<Instant>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = started;
        Meter {
            #[cfg(feature = "metrics")]
            since: started.unwrap_or_else(Instant::now),
        }
    }

    /// The claim phase ended (the key owned, a record found, or the call refused): records
    /// `idem_claim_seconds`, and returns the body's clock, started now.
    #[inline(always)]
    pub(super) fn claimed(self, action: &'static str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = action;
        Meter {
            #[cfg(feature = "metrics")]
            since: record::since(CLAIM_SECONDS, action, self.since),
        }
    }

    /// The body ended (before its outcome is recorded): records `idem_body_seconds`.
    #[inline(always)]
    pub(super) fn body_ended(self, action: &'static str) {
        #[cfg(not(feature = "metrics"))]
        let _ = (self, action);
        #[cfg(feature = "metrics")]
        record::since(BODY_SECONDS, action, self.since);
    }
}

/// Counts one call in `idem_calls_total`, by action, outcome (the event's word) and whether
/// it failed.
#[inline(always)]
pub(super) fn count(action: &'static str, outcome: &'static str, failed: bool) {
    #[cfg(not(feature = "metrics"))]
    let _ = (action, outcome, failed);
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        CALLS_TOTAL,
        "action" => action,
        "outcome" => outcome,
        "failed" => if failed { "true" } else { "false" },
    )
    .increment(1);
}

#[cfg(feature = "metrics")]
mod record {
    use super::Instant;

    /// Records the seconds since `since` in the histogram `name` of `action`; returns now.
    pub(super) fn since(name: &'static str, action: &'static str, since: Instant) -> Instant {
        let now = Instant::now();
        ::metrics::histogram!(name, "action" => action)
            .record(now.saturating_duration_since(since).as_secs_f64());
        now
    }
}
