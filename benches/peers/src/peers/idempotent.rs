//! `idempotent` 0.3: its `IdempotencyStore` driven as its README shows (`try_insert`, the
//! side effect, `complete` with the claim's fencing token), on its `MemoryStore` or its
//! `ValkeyStore` (Redis).
//!
//! The key is the tool's name and the call's arguments; the fingerprint is its default
//! (xxh3) over the arguments' JSON; the response is the result's JSON as the cached body. A
//! duplicate of a call in progress gets `Exists(Processing)` at once (the crate has no
//! waiting): the caller asks again, yielding in between.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use idempotent::entry::ExistingEntry;
use idempotent::fingerprint::{DefaultFingerprintStrategy, FingerprintStrategy};
use idempotent::store::{IdempotencyStore, InsertResult};
use idempotent::{CachedResponse, IdempotencyEntry, IdempotencyKey, Metadata};

use crate::call::{body, Receipt, AMOUNT, CUSTOMER, REPLAY_TTL};
use crate::measure::{Call, Retrying};

/// One call through `store`, with entries kept `ttl`.
pub async fn idempotent_call<S: IdempotencyStore>(
    store: &S,
    ttl: Duration,
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, String> {
    let key =
        IdempotencyKey::new(format!("send_quote:{customer}:{order}")).map_err(|e| e.to_string())?;
    let payload =
        serde_json::to_vec(&(customer, order, amount_cents)).map_err(|e| e.to_string())?;
    let fingerprint = DefaultFingerprintStrategy.compute("send_quote", &payload);
    let retrying = Retrying::start();
    loop {
        let entry = IdempotencyEntry::new(fingerprint, ttl);
        match store
            .try_insert(&key, entry.clone())
            .await
            .map_err(|e| format!("try_insert: {e}"))?
        {
            InsertResult::Claimed { fencing_token } => {
                let receipt = body(bodies, customer, order, amount_cents);
                let response = CachedResponse {
                    status_code: 200,
                    metadata: Metadata::default(),
                    body: serde_json::to_vec(&receipt)
                        .map_err(|e| e.to_string())?
                        .into(),
                };
                store
                    .complete(&key, entry.complete(response), fencing_token)
                    .await
                    .map_err(|e| format!("complete: {e}"))?;
                return Ok(receipt);
            }
            InsertResult::Exists(ExistingEntry::Completed(done)) => {
                if !done.fingerprint_matches(fingerprint) {
                    return Err("the key was used with other arguments".into());
                }
                return serde_json::from_slice(&done.response().body).map_err(|e| e.to_string());
            }
            InsertResult::Exists(ExistingEntry::Processing(_)) => {
                retrying.again("idempotent").await?;
            }
        }
    }
}

/// A caller through an `idempotent` store: a new key each call (`replay: None`), or the
/// round's key.
pub struct IdempotentCall<S> {
    pub store: Arc<S>,
    pub ttl: Duration,
    pub bodies: Arc<AtomicU64>,
    pub replay: Option<u64>,
}

impl<S> IdempotentCall<S> {
    /// `idempotent`'s call on `store`: entries kept `fresh_ttl` for a fresh row, or
    /// [`REPLAY_TTL`] for the replay of `order`.
    pub fn new(
        store: Arc<S>,
        fresh_ttl: Duration,
        bodies: &Arc<AtomicU64>,
        replay: Option<u64>,
    ) -> Self {
        IdempotentCall {
            store,
            ttl: replay.map_or(fresh_ttl, |_| REPLAY_TTL),
            bodies: Arc::clone(bodies),
            replay,
        }
    }
}

impl<S: IdempotencyStore> Call for IdempotentCall<S> {
    async fn call(&self, n: u64) -> Result<(), String> {
        let order = self.replay.unwrap_or(n);
        let receipt = idempotent_call(
            &*self.store,
            self.ttl,
            &self.bodies,
            CUSTOMER,
            order,
            AMOUNT,
        )
        .await?;
        if receipt.is_for(order) {
            Ok(())
        } else {
            Err(format!("a wrong answer for order {order}: {receipt:?}"))
        }
    }
}
