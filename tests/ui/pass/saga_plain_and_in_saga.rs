#![deny(warnings)]

use std::sync::atomic::{AtomicUsize, Ordering};

use idem::store::MemoryStore;
use idem::{saga_step, Saga};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub enum PayError {
    Declined,
    Idem(idem::Error),
}

impl From<idem::Error> for PayError {
    fn from(e: idem::Error) -> Self {
        PayError::Idem(e)
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayError::Declined => f.write_str("declined"),
            PayError::Idem(e) => e.fmt(f),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub cents: u64,
}

static CHARGED: AtomicUsize = AtomicUsize::new(0);
static REFUNDED: AtomicUsize = AtomicUsize::new(0);

#[saga_step(compensate = refund)]
pub async fn charge(customer: &str, cents: u64) -> Result<Charge, PayError> {
    CHARGED.fetch_add(1, Ordering::SeqCst);
    Ok(Charge {
        id: format!("{customer}/{cents}"),
        cents,
    })
}

pub async fn refund(charge: Charge, customer: &str, cents: u64) -> Result<(), PayError> {
    assert_eq!(charge.id, format!("{customer}/{cents}"));
    REFUNDED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[saga_step(irreversible)]
pub async fn ship(customer: &str) -> Result<(), PayError> {
    let _ = customer;
    Err(PayError::Declined)
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // Awaited on its own: a plain call, nothing logged.
            let plain = charge("ada", 100).await.unwrap();
            assert_eq!(plain.cents, 100);

            // The same step inside a saga: logged, and undone when a later step fails.
            let store = MemoryStore::new();
            let outcome = Saga::new("order-42")
                .store(&store)
                .run(|s| async move {
                    let charged = s.step(charge("bob", 250)).await?;
                    s.step(ship("bob")).await?;
                    Ok::<_, PayError>(charged.id)
                })
                .await;
            assert!(matches!(outcome, Err(PayError::Declined)), "{outcome:?}");
            assert_eq!(CHARGED.load(Ordering::SeqCst), 2);
            assert_eq!(REFUNDED.load(Ordering::SeqCst), 1);
        });
}
