//! Fills a SQLite store with what a night of agents leaves behind, for trying the `idem`
//! command on: results, a declined card, a key whose agent was killed mid-call, a payment
//! parked for review, and three sagas (one done, one rolled back, one that needs attention).
//!
//! ```sh
//! cargo run -p idem-cli --example ops_demo -- /tmp/idem-ops.db
//! cargo run -p idem-cli -- --store sqlite:///tmp/idem-ops.db keys
//! ```

use std::time::Duration;

use idem::store::{SqliteStore, Store};
use idem::{saga_step, Retry, Saga};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

mod tools;

use tools::{Receipt, ToolError};

#[idem::idempotent(skip = [store], store = store)]
async fn send_quote_email(
    store: &dyn Store,
    customer: &str,
    quote: &str,
) -> Result<Receipt, ToolError> {
    Ok(Receipt {
        message_id: format!("<{quote}.{customer}@mail.example.com>"),
        to: format!("{customer}@example.com"),
    })
}

#[idem::idempotent(skip = [store], store = store, cache_err = ToolError::is_final)]
async fn charge_card(
    store: &dyn Store,
    customer: &str,
    amount_cents: u64,
) -> Result<String, ToolError> {
    Err(ToolError::Declined(format!(
        "insufficient funds on the card of {customer} ({amount_cents} cents)"
    )))
}

/// The agent is killed inside this one: its claim holds for ten minutes.
#[idem::idempotent(skip = [store, killed], store = store, lease = "10m")]
async fn export_invoices(store: &dyn Store, killed: &Notify, month: &str) -> Result<(), ToolError> {
    killed.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

/// A payment: an agent killed inside it leaves the key for an operator.
#[idem::idempotent(skip = [store, killed], store = store, lease = "300ms", on_stale = review)]
async fn wire_transfer(
    store: &dyn Store,
    killed: Option<&Notify>,
    supplier: &str,
    amount_cents: u64,
) -> Result<String, ToolError> {
    if let Some(killed) = killed {
        killed.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(format!("wire of {amount_cents} to {supplier}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    id: String,
    amount_cents: u64,
}

#[saga_step(compensate = delete_contract)]
async fn create_contract(customer: &str) -> Result<String, ToolError> {
    Ok(format!("contract-{customer}"))
}

async fn delete_contract(_contract: String) -> Result<(), ToolError> {
    Ok(())
}

#[saga_step(compensate = refund)]
async fn charge(customer: &str, amount_cents: u64) -> Result<Charge, ToolError> {
    if customer == "grace" {
        return Err(ToolError::Declined("card declined".into()));
    }
    Ok(Charge {
        id: format!("ch_{customer}"),
        amount_cents,
    })
}

async fn refund(charge: Charge) -> Result<(), ToolError> {
    if charge.id == "ch_linus" {
        return Err(ToolError::Unavailable(
            "payment provider answered 503".into(),
        ));
    }
    Ok(())
}

#[saga_step(compensate = cancel_shipment)]
async fn ship(customer: &str) -> Result<String, ToolError> {
    if customer == "linus" {
        return Err(ToolError::Unavailable("warehouse API timed out".into()));
    }
    Ok(format!("shipment-{customer}"))
}

async fn cancel_shipment(_shipment: String) -> Result<(), ToolError> {
    Ok(())
}

async fn order(store: &dyn Store, id: &str, customer: &str) -> Result<String, ToolError> {
    let quick = Retry::new(3).backoff(Duration::from_millis(5), Duration::from_millis(20));
    Saga::new(id)
        .store(store)
        .compensation_retry(quick)
        .run(|s| async move {
            let contract = s.step(create_contract(customer)).await?;
            s.step(charge(customer, 4900)).await?;
            s.step(ship(customer)).await?;
            Ok(contract)
        })
        .await
}

/// Drops `call` once its body has started: the agent is killed there.
async fn kill_inside<F: std::future::Future>(call: F, killed: &Notify) {
    tokio::select! {
        _ = call => unreachable!("the body hangs"),
        () = killed.notified() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "idem-ops.db".to_owned());
    let store = SqliteStore::open(&path).await?;
    let store: &dyn Store = &store;

    for (customer, quote) in [("ada", "Q-1041"), ("alan", "Q-1042"), ("grace", "Q-1043")] {
        send_quote_email(store, customer, quote).await?;
    }
    let declined = charge_card(store, "grace", 12_900).await;
    println!("charge_card(grace): {}", declined.unwrap_err());

    let killed = Notify::new();
    kill_inside(export_invoices(store, &killed, "2025-05"), &killed).await;
    println!("export_invoices: agent killed mid-call");

    kill_inside(
        wire_transfer(store, Some(&killed), "acme", 250_000),
        &killed,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let parked = wire_transfer(store, None, "acme", 250_000).await;
    println!(
        "wire_transfer(acme), after its agent died: {}",
        parked.unwrap_err()
    );

    for (id, customer) in [
        ("order-1001", "ada"),
        ("order-1002", "grace"),
        ("order-1003", "linus"),
    ] {
        match order(store, id, customer).await {
            Ok(contract) => println!("{id}: done, {contract}"),
            Err(error) => println!("{id}: {error}"),
        }
    }
    println!("filled {path}");
    Ok(())
}
