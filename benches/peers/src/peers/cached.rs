//! `cached` 4.1: what a user writes to dedupe an async call in one process.
//!
//! `#[cached]` with `sync_writes = "by_key"` (without it, concurrent first calls of one key
//! each run the body), bounded (`max_size`: an LRU), keyed by the call's arguments through
//! `convert` (the arguments are borrowed, the key must own them). It is memoization: no
//! fingerprint of a payload, no lease, no record that outlives the process.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use cached::macros::cached;

use crate::call::{body, checked, PeerError, Receipt, AMOUNT, CUSTOMER};
use crate::measure::Call;

#[cached(
    max_size = 100_000,
    sync_writes = "by_key",
    key = "(String, u64, u64)",
    convert = r#"{ (customer.to_owned(), order, amount_cents) }"#
)]
async fn cached_call(
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// A caller of the cached function: a new key each call (`replay: None`), or the round's key.
pub struct CachedCall {
    pub bodies: Arc<AtomicU64>,
    pub replay: Option<u64>,
}

impl Call for CachedCall {
    async fn call(&self, n: u64) -> Result<(), String> {
        let order = self.replay.unwrap_or(n);
        checked(
            cached_call(&self.bodies, CUSTOMER, order, AMOUNT).await,
            order,
        )
    }
}
