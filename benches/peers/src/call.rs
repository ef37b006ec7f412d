//! The one call every row makes: three small arguments (`customer: &str, order: u64,
//! amount_cents: u64`) returning a small serde struct, and the body each system wraps.
//!
//! Every body counts its executions in an `AtomicU64` of the round, so that each row can
//! check that it really deduplicated: a fresh call runs its body once, a replayed key runs it
//! once in all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem::idempotent;
use idem::store::Store;
use serde::{Deserialize, Serialize};

use crate::measure::Call;

/// The customer of every call.
pub const CUSTOMER: &str = "cus_42";
/// The amount of every call.
pub const AMOUNT: u64 = 1999;

/// What the call returns: two fields, as a tool's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: String,
    pub amount_cents: u64,
}

impl Receipt {
    /// Whether this receipt is the one the body makes for `order`: every system's answer is
    /// checked, so that a row cannot pass by returning something else.
    pub fn is_for(&self, order: u64) -> bool {
        self.amount_cents == AMOUNT
            && self
                .message_id
                .strip_prefix("msg-cus_42-")
                .and_then(|n| n.parse::<u64>().ok())
                == Some(order)
    }
}

/// The body: counts its execution, makes the receipt.
pub fn body(bodies: &AtomicU64, customer: &str, order: u64, amount_cents: u64) -> Receipt {
    bodies.fetch_add(1, Ordering::Relaxed);
    Receipt {
        message_id: format!("msg-{customer}-{order}"),
        amount_cents,
    }
}

/// The error of the idem functions (idem's own errors, and nothing else can fail).
#[derive(Debug)]
pub struct PeerError(pub String);

impl From<idem::Error> for PeerError {
    fn from(error: idem::Error) -> Self {
        PeerError(error.to_string())
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The plain call: the same async fn with no deduplication (the baseline of the memory rows).
pub async fn plain(
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// idem, fresh keys on the memory store: results kept 100 ms, so that the store stays at a
/// steady size (it sweeps expired results as new keys come in) of the order of `cached`'s
/// LRU bound (100,000).
#[idempotent(skip = [store, bodies], store = store, ttl = "100ms", name = "peers_fresh_memory")]
pub async fn idem_fresh_memory(
    store: &dyn Store,
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// idem, fresh keys on Redis: results kept 2 s, so that the store works in its steady state
/// (as many results expire as are made: Redis expires them natively, idem trims its index).
#[idempotent(skip = [store, bodies], store = store, ttl = "2s", name = "peers_fresh_redis")]
pub async fn idem_fresh_redis(
    store: &dyn Store,
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// idem, fresh keys on SQLite and PostgreSQL: the default TTL (a day), so that nothing
/// expires during a round and no purge has work, as for agent-effects, which has no TTL; the
/// tables are emptied between rounds, for every system alike.
#[idempotent(skip = [store, bodies], store = store, name = "peers_fresh_kept")]
pub async fn idem_fresh_kept(
    store: &dyn Store,
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// idem, replays: the default TTL; one key per round, called by every caller.
#[idempotent(skip = [store, bodies], store = store, name = "peers_replay")]
pub async fn idem_replay(
    store: &dyn Store,
    bodies: &AtomicU64,
    customer: &str,
    order: u64,
    amount_cents: u64,
) -> Result<Receipt, PeerError> {
    Ok(body(bodies, customer, order, amount_cents))
}

/// The answer of a call, checked: an error or a wrong receipt is a failed call.
pub fn checked(answer: Result<Receipt, PeerError>, order: u64) -> Result<(), String> {
    match answer {
        Ok(receipt) if receipt.is_for(order) => Ok(()),
        Ok(receipt) => Err(format!("a wrong answer for order {order}: {receipt:?}")),
        Err(error) => Err(error.0),
    }
}

/// Which idem function a caller calls.
#[derive(Debug, Clone, Copy)]
pub enum IdemFn {
    /// [`idem_fresh_memory`], a new key each call.
    FreshMemory,
    /// [`idem_fresh_redis`], a new key each call.
    FreshRedis,
    /// [`idem_fresh_kept`], a new key each call.
    FreshKept,
    /// [`idem_replay`] of the round's key.
    Replay { order: u64 },
}

/// A caller of an idem function on a store.
/// How long a replayed key is kept, by every system that has a TTL: longer than any round.
pub const REPLAY_TTL: Duration = Duration::from_secs(24 * 3600);

/// idem's call of a row (see [`IdemFn`]).
pub struct IdemCall {
    pub store: Arc<dyn Store>,
    pub bodies: Arc<AtomicU64>,
    pub function: IdemFn,
}

impl IdemCall {
    /// idem's call on `store`: `fresh` for a fresh row, the replay of `order` for a replay
    /// row.
    pub fn new(
        store: Arc<dyn Store>,
        bodies: &Arc<AtomicU64>,
        fresh: IdemFn,
        replay: Option<u64>,
    ) -> Self {
        IdemCall {
            store,
            bodies: Arc::clone(bodies),
            function: replay.map_or(fresh, |order| IdemFn::Replay { order }),
        }
    }
}

impl Call for IdemCall {
    async fn call(&self, n: u64) -> Result<(), String> {
        let (store, bodies) = (&*self.store, &*self.bodies);
        match self.function {
            IdemFn::FreshMemory => checked(
                idem_fresh_memory(store, bodies, CUSTOMER, n, AMOUNT).await,
                n,
            ),
            IdemFn::FreshRedis => checked(
                idem_fresh_redis(store, bodies, CUSTOMER, n, AMOUNT).await,
                n,
            ),
            IdemFn::FreshKept => {
                checked(idem_fresh_kept(store, bodies, CUSTOMER, n, AMOUNT).await, n)
            }
            IdemFn::Replay { order } => checked(
                idem_replay(store, bodies, CUSTOMER, order, AMOUNT).await,
                order,
            ),
        }
    }
}

/// A caller of the plain call.
pub struct PlainCall {
    pub bodies: Arc<AtomicU64>,
}

impl Call for PlainCall {
    async fn call(&self, n: u64) -> Result<(), String> {
        checked(plain(&self.bodies, CUSTOMER, n, AMOUNT).await, n)
    }
}
