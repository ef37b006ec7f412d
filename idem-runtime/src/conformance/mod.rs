//! The conformance suite: the rules of the [`Store`] trait as tests, for every store.
//!
//! Each check is an `async fn` taking a fresh, empty store. A store's test file runs them all
//! with one line:
//!
//! ```ignore
//! idem_runtime::conformance_tests!(memory, async { idem_runtime::store::MemoryStore::new() });
//! ```
//!
//! which expands to one `#[tokio::test]` per check in a module named `memory` (the calling
//! crate needs `tokio` with its `macros` feature). The checks panic with a message on the
//! first broken rule. They use short leases and wait out durations measured after each
//! reply, so the store's clock may be set to any time: only its rate must be sane.
//!
//! The checks, by file (each re-exported here, as `idem_runtime::conformance::<check>`):
//!
//! - `claim.rs`: the claim protocol, one rule per check: claim, complete and replay;
//!   payloads; release; fencing; leases, takeover and review; heartbeats; TTL; cached
//!   errors; `wait`; purge; `get`; claims left in doubt; the shared handle; a lost lease;
//!   dead claims.
//! - `races.rs`: the races: 64 claims and 64 calls of one key at once, the same across two
//!   handles, a paused owner taken over, heartbeats keeping a long body owned.
//! - `saga_log.rs`: the saga log: fenced writes, reads, stale sagas, purge.
//! - `operator.rs`: the operators' queries: listings, counts, batched purge, resolving a saga.
//! - [`servers`]: the database servers the tests of the server stores start.
//!
//! This file holds the [`conformance_tests!`](crate::conformance_tests) macro and what the
//! checks share: the keys, claim requests and claims of one test action, the leases.

mod claim;
mod operator;
mod races;
mod saga_log;
pub mod servers;

pub use claim::{
    a_body_learns_that_its_lease_was_lost, a_claim_left_in_doubt_follows_on_stale_at_once,
    a_dead_claim_is_purged_after_its_lease_and_ttl, a_shared_handle_is_the_same_store,
    body_error_releases_the_key, cached_errors_are_replayed, claim_complete_replay,
    claim_without_expiry_answers_as_claim, expired_lease_is_taken_over,
    fencing_refuses_a_stale_owner, get_shows_the_record, heartbeat_extends_the_lease,
    interrupted_call_waits_for_review, payload_mismatch_is_refused,
    purge_removes_only_expired_results, release_frees_the_key, second_claim_sees_in_progress,
    stale_lease_parks_for_review, stale_lease_with_other_payload_is_not_taken_over,
    tokens_grow_across_release_and_expiry, ttl_expiry_frees_the_key,
    wait_returns_when_the_key_is_released,
};
pub use operator::{
    a_reclaimed_key_leaves_nothing_expired, forget_result_deletes_only_a_recorded_result,
    list_records_filters_and_orders, list_sagas_filters_by_status_and_id, purge_expired_in_batches,
    record_counts_by_action_and_kind, resolve_saga_settles_only_what_needs_attention,
};
pub use races::{
    heartbeats_keep_a_long_body_owned, paused_owner_loses_to_the_caller_that_took_over,
    race_of_64_calls_runs_the_body_once, race_of_64_claims_has_one_winner,
    races_across_two_handles,
};
pub use saga_log::{
    a_step_write_dates_the_log_but_not_its_listing, purge_removes_finished_saga_logs,
    saga_log_is_fenced, saga_log_round_trip, stale_sagas_are_the_dead_owners,
};

use std::time::Duration;

use crate::call::Action;
use crate::key::{Fingerprint, Key};
use crate::store::OnStale;
use crate::store::{Claim, ClaimRequest, FencingToken, Ownership, Store, StoredOutcome};

/// A lease short enough for tests to wait out.
pub(crate) const SHORT: Duration = Duration::from_millis(250);
/// A lease no test outlives.
pub(crate) const LONG: Duration = Duration::from_secs(60);

/// Generates one `#[tokio::test]` per conformance check, in a module named `$name`, each on a
/// fresh store made by `$make_store` (an expression giving a future of the store).
///
/// With `reopen = |store| …` (a closure giving a future of a second handle on the same
/// records: another connection, another client), the races are also run across two handles,
/// which is where a store's own atomicity (file locks, server-side scripts) is tested.
///
/// Attributes written before `$name` go on each test of a store on a server
/// (`available = …`): `#[cfg_attr(no_server, ignore = "why")]` lists the tests as ignored,
/// with the reason, where the server cannot run (see this repository's `build.rs`).
#[macro_export]
macro_rules! conformance_tests {
    // For stores on a server the tests start: `$make_store` gives a future of
    // `Option<store>`, `None` when the server cannot run here (each test then returns at
    // once; `servers::*::shared()` prints why, and fails instead under `CI=true`).
    ($(#[$attr:meta])* $name:ident, available = $make_store:expr, reopen = $reopen:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@all optional [$(#[$attr])*] $make_store);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn races_across_two_handles() {
                let Some(first) = $make_store.await else { return };
                let second = ($reopen)(&first).await;
                $crate::conformance::races_across_two_handles(&first, &second).await;
            }
        }
    };
    ($name:ident, $make_store:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@all required [] $make_store);
        }
    };
    ($name:ident, $make_store:expr, reopen = $reopen:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@all required [] $make_store);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn races_across_two_handles() {
                let first = $make_store.await;
                let second = ($reopen)(&first).await;
                $crate::conformance::races_across_two_handles(&first, &second).await;
            }
        }
    };
    (@all $mode:ident [$(#[$attr:meta])*] $make_store:expr) => {
        $crate::conformance_tests!(@each $mode [$(#[$attr])*] $make_store;
            claim_complete_replay,
            claim_without_expiry_answers_as_claim,
            second_claim_sees_in_progress,
            payload_mismatch_is_refused,
            release_frees_the_key,
            body_error_releases_the_key,
            fencing_refuses_a_stale_owner,
            expired_lease_is_taken_over,
            stale_lease_with_other_payload_is_not_taken_over,
            stale_lease_parks_for_review,
            heartbeat_extends_the_lease,
            ttl_expiry_frees_the_key,
            tokens_grow_across_release_and_expiry,
            cached_errors_are_replayed,
            wait_returns_when_the_key_is_released,
            purge_removes_only_expired_results,
            get_shows_the_record,
            race_of_64_claims_has_one_winner,
            race_of_64_calls_runs_the_body_once,
            heartbeats_keep_a_long_body_owned,
            paused_owner_loses_to_the_caller_that_took_over,
            interrupted_call_waits_for_review,
            saga_log_round_trip,
            saga_log_is_fenced,
            stale_sagas_are_the_dead_owners,
            a_step_write_dates_the_log_but_not_its_listing,
            purge_removes_finished_saga_logs,
            list_records_filters_and_orders,
            record_counts_by_action_and_kind,
            purge_expired_in_batches,
            list_sagas_filters_by_status_and_id,
            resolve_saga_settles_only_what_needs_attention,
            forget_result_deletes_only_a_recorded_result,
            a_reclaimed_key_leaves_nothing_expired,
            a_claim_left_in_doubt_follows_on_stale_at_once,
            a_shared_handle_is_the_same_store,
            a_body_learns_that_its_lease_was_lost,
            a_dead_claim_is_purged_after_its_lease_and_ttl,
        );
    };
    (@each required [] $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store = $make_store.await;
                $crate::conformance::$check(&store).await;
            }
        )*
    };
    (@each optional $attrs:tt $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            $crate::conformance_tests!(@one $attrs $make_store; $check);
        )*
    };
    (@one [$(#[$attr:meta])*] $make_store:expr; $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $check() {
            let Some(store) = $make_store.await else { return };
            $crate::conformance::$check(&store).await;
        }
    };
}

static ACTION: Action = Action::new("conformance");

fn key(n: u32) -> Key {
    ACTION.key(&(n,)).expect("a u32 has a canonical form")
}

fn fingerprint(n: u32) -> Fingerprint {
    ACTION
        .fingerprint(&("payload", n))
        .expect("a u32 has a canonical form")
}

fn request<'a>(
    key: &'a Key,
    fingerprint: &'a Fingerprint,
    lease: Duration,
    on_stale: OnStale,
) -> ClaimRequest<'a> {
    ClaimRequest {
        key,
        fingerprint,
        action: "conformance",
        lease,
        ttl: LONG,
        on_stale,
    }
}

async fn claim(store: &dyn Store, key: &Key, lease: Duration) -> Claim {
    let fp = Fingerprint::from(*key);
    store
        .claim(&request(key, &fp, lease, OnStale::TakeOver))
        .await
        .expect("claim")
}

fn acquired(claim: Claim) -> (FencingToken, bool) {
    match claim {
        Claim::Acquired { token, resumed } => (token, resumed),
        other => panic!("expected the claim to be acquired, got {other:?}"),
    }
}

pub(crate) async fn claim_token(store: &dyn Store, key: &Key, lease: Duration) -> FencingToken {
    acquired(claim(store, key, lease).await).0
}

async fn complete_ok(store: &dyn Store, key: &Key, token: FencingToken, bytes: &[u8]) -> Ownership {
    store
        .complete(key, token, StoredOutcome::Ok(bytes.to_vec()), LONG)
        .await
        .expect("complete")
}

/// How many of `keys` still have a record: what a purge has left to delete and count. A
/// store that deletes expired records itself, when they expire (Redis), has none left.
pub(crate) async fn still_stored(store: &dyn Store, keys: &[Key]) -> u64 {
    let mut left = 0;
    for key in keys {
        if store.get(key).await.expect("get").is_some() {
            left += 1;
        }
    }
    left
}

pub(crate) async fn past(duration: Duration) {
    tokio::time::sleep(duration + Duration::from_millis(40)).await;
}
