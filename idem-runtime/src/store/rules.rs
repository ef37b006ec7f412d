//! The claim rule, in one place for the stores that run it in Rust.
//!
//! Stores that run the rule inside a server (a Lua script, one SQL statement) implement the
//! same table; the conformance suite checks that they agree.

use crate::key::Fingerprint;
use crate::store::OnStale;
use crate::store::{Claim, ClaimRequest, FencingToken, Status, StoredOutcome};

/// A record as the rules see it, in a store's own clock (milliseconds of any epoch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) status: Status,
    pub(crate) token: FencingToken,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) expires_at_ms: Option<i64>,
    /// The action's TTL as the claim recorded it ([`ClaimRequest::ttl`]), for a record in
    /// progress; `None` when the store does not read it here (its purge runs in SQL or in the
    /// server) or a claim of an older idem did not record it.
    pub(crate) claim_ttl_ms: Option<i64>,
}

impl Found {
    fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// What a claim that changes nothing reports: the result, the owner, or the review.
    pub(crate) fn report(&self, outcome: Option<StoredOutcome>, now_ms: i64) -> Claim {
        match (self.status, outcome) {
            (Status::Completed, Some(outcome)) => Claim::Completed {
                fingerprint: self.fingerprint,
                outcome,
                expires_in: self.expires_at_ms.map(|at| remaining(Some(at), now_ms)),
            },
            (Status::NeedsReview, _) => Claim::NeedsReview {
                fingerprint: self.fingerprint,
            },
            _ => Claim::InProgress {
                fingerprint: self.fingerprint,
                token: self.token,
                lease_remaining: remaining(self.expires_at_ms, now_ms),
            },
        }
    }

    /// Whether `token` may complete or release the record: it is the last claim's, and the
    /// record is in progress, or parked for review because that owner was slow, not dead
    /// (then what it says settles the review).
    pub(crate) fn settled_by(&self, token: FencingToken) -> bool {
        self.token == token && matches!(self.status, Status::InProgress | Status::NeedsReview)
    }

    /// Whether the record is already completed under `token`: a second `complete` of the same
    /// owner (a retry after an answer that was lost) finds its own result, and that is held.
    pub(crate) fn completed_by(&self, token: FencingToken) -> bool {
        self.token == token && self.status == Status::Completed
    }

    /// Whether `token` may renew the lease: it owns the record, which is in progress.
    pub(crate) fn renewed_by(&self, token: FencingToken) -> bool {
        self.token == token && self.status == Status::InProgress
    }

    /// Whether `token` still holds a live lease: what a waiter waits on.
    pub(crate) fn held_by(&self, token: FencingToken, now_ms: i64) -> bool {
        self.renewed_by(token) && !self.expired(now_ms)
    }

    /// A claim whose owner's lease ran out with no result: the owner died (or stalled).
    pub(crate) fn is_stale_claim(&self, now_ms: i64) -> bool {
        self.status == Status::InProgress && self.expired(now_ms)
    }

    /// A recorded result that is still replayed.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn is_live_result(&self, now_ms: i64) -> bool {
        self.status == Status::Completed && !self.expired(now_ms)
    }

    /// A recorded result whose TTL ran out.
    pub(crate) fn is_expired_result(&self, now_ms: i64) -> bool {
        self.status == Status::Completed && self.expired(now_ms)
    }

    /// A claim whose owner died (its lease ended, or it was left in doubt) and which nobody
    /// claimed again for the action's TTL after that: `lease end + ttl <= now`. Each
    /// heartbeat moves the lease end, so a live claim never gets there.
    pub(crate) fn is_dead_claim(&self, now_ms: i64) -> bool {
        let purge_at = self
            .expires_at_ms
            .zip(self.claim_ttl_ms)
            .map(|(lease_end, ttl)| lease_end.saturating_add(ttl));
        self.status == Status::InProgress && purge_at.is_some_and(|at| at <= now_ms)
    }

    /// What a purge deletes at `now_ms`: a result whose TTL ran out, or a dead claim
    /// ([`Found::is_dead_claim`]) that has no saga log (`has_saga_log`: recovery and
    /// operators find a saga through its claim, so that claim stays). Never a record parked
    /// for review (it waits for its operator) nor a claim whose lease still runs. Stores
    /// whose purge runs in SQL or in a server implement the same rule; the conformance suite
    /// checks that they agree.
    pub(crate) fn is_purgeable(&self, has_saga_log: bool, now_ms: i64) -> bool {
        self.is_expired_result(now_ms) || (!has_saga_log && self.is_dead_claim(now_ms))
    }
}

/// What a claim must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Change the record.
    Write(Write),
    /// Report the record as it is.
    Report,
}

/// How a claim changes the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// No live record: create one (replacing an expired result) under a new token.
    Insert,
    /// The owner's lease ran out: the caller becomes owner under a new token.
    TakeOver,
    /// The owner's lease ran out and the action wants a person to look: NEEDS_REVIEW.
    Park,
}

/// The claim rule for a key that has a record, `found`, at `now_ms`. (A key with no record is
/// always [`Write::Insert`].)
pub(crate) fn decide(found: &Found, request: &ClaimRequest<'_>, now_ms: i64) -> Verdict {
    let expired = found.expired(now_ms);
    match found.status {
        Status::Completed if expired => Verdict::Write(Write::Insert),
        Status::Completed | Status::NeedsReview => Verdict::Report,
        Status::InProgress if !expired => Verdict::Report,
        // A key whose dead owner had another payload is not this caller's to resume.
        Status::InProgress if found.fingerprint != *request.fingerprint => Verdict::Report,
        Status::InProgress => match request.on_stale {
            OnStale::TakeOver => Verdict::Write(Write::TakeOver),
            OnStale::Review => Verdict::Write(Write::Park),
        },
    }
}

/// How long the lease of a record still runs at `now_ms`.
pub(crate) fn remaining(expires_at_ms: Option<i64>, now_ms: i64) -> std::time::Duration {
    let left = expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms).max(0));
    std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

/// A duration in whole milliseconds, rounded up so that a lease never ends early.
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}
