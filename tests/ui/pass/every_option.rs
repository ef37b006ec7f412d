#![deny(warnings)]

use std::sync::Arc;

use idem::store::{MemoryStore, Store};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PaymentError {
    Declined { reason: String },
    Unavailable,
    Idem(String),
}

impl From<idem::Error> for PaymentError {
    fn from(e: idem::Error) -> Self {
        PaymentError::Idem(e.to_string())
    }
}

fn is_final(error: &PaymentError) -> bool {
    matches!(error, PaymentError::Declined { .. })
}

#[derive(Serialize)]
pub struct Order {
    pub id: u64,
    pub total_cents: u64,
}

pub struct Gateway;

pub struct Payments {
    store: Arc<dyn Store>,
}

impl Payments {
    #[idem::idempotent(
        key = [customer_id, order.id],
        skip = [gateway],
        name = "charge",
        namespace = "billing",
        version = 2,
        ttl = "7d",
        lease = "1m30s",
        on_conflict = wait("10s"),
        cache_err = is_final,
        on_stale = review,
        store = self.store,
        crate = idem,
    )]
    pub async fn charge(
        &self,
        gateway: &Gateway,
        customer_id: &str,
        order: &Order,
    ) -> Result<Charge, PaymentError> {
        let _ = gateway;
        Ok(Charge {
            id: format!("{customer_id}-{}", order.total_cents),
        })
    }
}

#[idem::idempotent(
    on_conflict = fail,
    on_stale = takeover,
    cache_err = |e: &PaymentError| matches!(e, PaymentError::Unavailable),
    store = MemoryStore::new(),
)]
pub async fn refund(charge_id: String) -> Result<Charge, PaymentError> {
    Ok(Charge { id: charge_id })
}

fn main() {
    let _ = Payments {
        store: Arc::new(MemoryStore::new()),
    };
}
