//! The world the saga tests run in: a contract database, a payment provider and a mailer
//! that, like real services, deduplicate by the idempotency key they are handed
//! (`idem::current_key()`), and a ledger of every side effect they made.
//!
//! Saga steps are free functions (recovery calls them by name), so the services are statics;
//! each test works for its own customer, and reads only that customer's effects.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use std::time::Duration;

use idem::store::Store;
use idem::{current_key, saga_step, Key, Recover, RecoveryReport, Retry};
use serde::{Deserialize, Serialize};

use crate::support::ToolError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
    pub customer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub customer: String,
    pub amount_cents: u64,
}

/// How the world misbehaves for one customer.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The payment provider declines every charge.
    pub decline_charge: bool,
    /// The next this-many refunds fail.
    pub failing_refunds: usize,
    /// The next this-many archive calls fail.
    pub failing_archives: usize,
}

#[derive(Default)]
struct World {
    /// Every side effect, in order: (customer, what).
    effects: Vec<(String, String)>,
    /// What each service answered per idempotency key: a second call with the same key gets
    /// the same answer and makes no new effect.
    answered: HashMap<Key, String>,
    faults: HashMap<String, Faults>,
    /// The keys the step bodies saw, per customer and step.
    keys_seen: Vec<(String, &'static str, Key)>,
    contracts: HashSet<String>,
    /// Steps that hang once they have made their effect, as a process killed there would.
    hangs: HashMap<(String, &'static str), Arc<Notify>>,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn world() -> MutexGuard<'static, Option<World>> {
    WORLD.lock().unwrap_or_else(PoisonError::into_inner)
}

fn with_world<T>(f: impl FnOnce(&mut World) -> T) -> T {
    f(world().get_or_insert_with(World::default))
}

/// Sets how the world misbehaves for `customer`.
pub fn set_faults(customer: &str, faults: Faults) {
    with_world(|w| w.faults.insert(customer.to_owned(), faults));
}

/// The side effects made for `customer`, in order.
pub fn effects(customer: &str) -> Vec<String> {
    with_world(|w| {
        w.effects
            .iter()
            .filter(|(c, _)| c == customer)
            .map(|(_, what)| what.clone())
            .collect()
    })
}

/// The keys the step bodies of `customer`'s sagas saw, by step.
pub fn keys_seen(customer: &str) -> Vec<(&'static str, Key)> {
    with_world(|w| {
        w.keys_seen
            .iter()
            .filter(|(c, _, _)| c == customer)
            .map(|(_, step, key)| (*step, *key))
            .collect()
    })
}

/// Whether `customer` has a contract on record.
pub fn has_contract(customer: &str) -> bool {
    with_world(|w| w.contracts.contains(customer))
}

/// Makes `customer`'s next `step` hang forever once it has made its effect; the returned
/// notification fires when it does, so that a test can drop the saga there.
pub fn hang_after(customer: &str, step: &'static str) -> Arc<Notify> {
    let hang = Arc::new(Notify::new());
    with_world(|w| {
        w.hangs
            .insert((customer.to_owned(), step), Arc::clone(&hang))
    });
    hang
}

async fn maybe_hang(customer: &str, step: &'static str) {
    let hang = with_world(|w| w.hangs.remove(&(customer.to_owned(), step)));
    if let Some(hang) = hang {
        hang.notify_one();
        std::future::pending::<()>().await;
    }
}

/// A service call: deduplicated by the caller's key when there is one (inside a saga);
/// `effect` runs (and is recorded) only for a key not seen before.
async fn serve(
    customer: &str,
    step: &'static str,
    effect: impl FnOnce(&mut World) -> Result<String, ToolError>,
) -> Result<String, ToolError> {
    let key = current_key();
    let answer = with_world(|w| {
        if let Some(key) = key {
            w.keys_seen.push((customer.to_owned(), step, key));
            if let Some(answer) = w.answered.get(&key) {
                return Ok::<_, ToolError>(answer.clone());
            }
        }
        let answer = effect(w)?;
        w.effects.push((customer.to_owned(), answer.clone()));
        if let Some(key) = key {
            w.answered.insert(key, answer.clone());
        }
        Ok(answer)
    })?;
    maybe_hang(customer, step).await;
    Ok(answer)
}

fn faults<'w>(w: &'w mut World, customer: &str) -> &'w mut Faults {
    w.faults.entry(customer.to_owned()).or_default()
}

#[saga_step(compensate = delete_contract)]
pub async fn create_contract(customer: &str, amount_cents: u64) -> Result<Contract, ToolError> {
    let id = serve(customer, "create_contract", |w| {
        w.contracts.insert(customer.to_owned());
        Ok(format!("contract for {customer} ({amount_cents})"))
    })
    .await?;
    Ok(Contract {
        id,
        customer: customer.to_owned(),
    })
}

pub async fn delete_contract(contract: Contract) -> Result<(), ToolError> {
    serve(&contract.customer, "delete_contract", |w| {
        w.contracts.remove(&contract.customer);
        Ok(format!("delete {}", contract.id))
    })
    .await?;
    Ok(())
}

#[saga_step(compensate = refund)]
pub async fn charge(customer: &str, amount_cents: u64) -> Result<Charge, ToolError> {
    let id = serve(customer, "charge", |w| {
        if faults(w, customer).decline_charge {
            return Err(ToolError::Declined("card declined".into()));
        }
        Ok(format!("charge {amount_cents} to {customer}"))
    })
    .await?;
    Ok(Charge {
        id,
        customer: customer.to_owned(),
        amount_cents,
    })
}

/// Takes the charge by reference and the step's arguments too: every form of compensation
/// is exercised somewhere.
pub async fn refund(charge: &Charge, customer: &str, amount_cents: u64) -> Result<(), ToolError> {
    serve(customer, "refund", |w| {
        let faults = faults(w, customer);
        if faults.failing_refunds > 0 {
            faults.failing_refunds -= 1;
            return Err(ToolError::Transient("the payment provider is down".into()));
        }
        Ok(format!("refund {amount_cents} of {}", charge.id))
    })
    .await?;
    Ok(())
}

/// The mail service deduplicates by the caller's key, so an email in doubt may be sent again
/// under it (`rerun_safe`) to learn whether it went out.
#[saga_step(irreversible, rerun_safe)]
pub async fn send_email(customer: &str) -> Result<(), ToolError> {
    serve(customer, "send_email", |_| {
        Ok(format!("email to {customer}"))
    })
    .await?;
    Ok(())
}

/// A step after the pivot (the email): it cannot be compensated away, so it is retried
/// forward.
#[saga_step(compensate = unarchive)]
pub async fn archive_order(customer: &str) -> Result<(), ToolError> {
    serve(customer, "archive_order", |w| {
        let faults = faults(w, customer);
        if faults.failing_archives > 0 {
            faults.failing_archives -= 1;
            return Err(ToolError::Transient("the archive is busy".into()));
        }
        Ok(format!("archive order of {customer}"))
    })
    .await?;
    Ok(())
}

pub async fn unarchive(_: (), customer: &str) -> Result<(), ToolError> {
    serve(customer, "unarchive", |_| {
        Ok(format!("unarchive order of {customer}"))
    })
    .await?;
    Ok(())
}

/// Retries that do not slow the tests down.
pub fn quick(attempts: u32) -> Retry {
    Retry::new(attempts).backoff(Duration::from_millis(1), Duration::from_millis(5))
}

/// Runs `recover` until it has taken on something (a dead owner's lease must run out
/// first), for at most ten seconds.
pub async fn recover_when_stale(store: &dyn Store) -> RecoveryReport {
    recover_when_stale_with(Recover::new(store).compensation_retry(quick(3))).await
}

/// [`recover_when_stale`] with a recovery of the caller's settings.
pub async fn recover_when_stale_with(recover: Recover<'_>) -> RecoveryReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = recover.run().await.expect("recover");
        if !report.is_empty() || tokio::time::Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drops the saga `run` once `hung` fires (a step hangs there): the process "dies".
pub async fn crash<F: std::future::Future>(run: F, hung: &Notify) {
    tokio::select! {
        _ = run => panic!("the saga cannot finish"),
        _ = hung.notified() => {}
    }
}
