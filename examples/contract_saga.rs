//! A sales agent closes a deal in three steps: it creates the contract record, charges the
//! customer's card, and emails the confirmation. If the charge fails, the contract must not
//! stay behind; if the agent's process is killed half-way, the next process must finish the
//! job from the log, without charging twice.
//!
//! Three orders, one run each:
//!
//! 1. Ada's goes through: contract, charge, email.
//! 2. Grace's card is declined: the contract record is deleted again.
//! 3. Alan's agent is killed with SIGKILL right after the charge (this example starts itself
//!    again as that agent and kills it). A fresh process runs `idem::recover`: the charge is
//!    refunded and the contract deleted, once each.
//!
//! ```text
//! cargo run --example contract_saga
//! ```
//!
//! The three services (contract database, payment provider, mailer) are small fakes that keep
//! their records in a file, so that every process sees them, and that deduplicate by the
//! idempotency key they are sent, as real payment APIs do: `idem::current_key()` is that key.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use idem::store::{SagaStatus, SqliteStore, Store};
use idem::{current_key, saga_step, Saga};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContractData {
    product: String,
    seats: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Contract {
    id: String,
    customer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charge {
    id: String,
    amount_cents: u64,
}

/// What the services answer when something goes wrong.
#[derive(Debug)]
enum ServiceError {
    Declined(String),
    Idem(idem::Error),
}

impl From<idem::Error> for ServiceError {
    fn from(error: idem::Error) -> Self {
        ServiceError::Idem(error)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Declined(why) => write!(f, "declined: {why}"),
            ServiceError::Idem(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ServiceError {}

// ---- The services: one record file, deduplicated by idempotency key -------------------------

static RECORDS: OnceLock<PathBuf> = OnceLock::new();

/// Makes `effect` happen once per idempotency key (the one idem gives the running step):
/// a second request with the same key gets the first answer.
fn service(effect: &str) -> String {
    let records = RECORDS.get().expect("the record file is set at start-up");
    let key = current_key().map(|k| k.short()).unwrap_or_default();
    let seen = std::fs::read_to_string(records).unwrap_or_default();
    if let Some(answer) = seen
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} ")))
    {
        return answer.to_owned();
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(records)
        .expect("the record file");
    writeln!(file, "{key} {effect}").expect("write a record");
    effect.to_owned()
}

fn effects() -> Vec<String> {
    let records = RECORDS.get().expect("the record file");
    std::fs::read_to_string(records)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, effect)| effect.to_owned()))
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---- The saga's steps ---------------------------------------------------------------------

#[saga_step(compensate = delete_contract_record)]
async fn create_contract_record(
    customer: &str,
    data: &ContractData,
) -> Result<Contract, ServiceError> {
    let id = service(&format!(
        "contract {customer}: {} x{}",
        data.product, data.seats
    ));
    say(&format!("    → created {id}"));
    Ok(Contract {
        id,
        customer: customer.to_owned(),
    })
}

async fn delete_contract_record(contract: Contract) -> Result<(), ServiceError> {
    service(&format!("deleted {}", contract.id));
    say(&format!("    ← deleted {}", contract.id));
    Ok(())
}

#[saga_step(compensate = refund_payment)]
async fn charge_payment(customer: &str, amount_cents: u64) -> Result<Charge, ServiceError> {
    if customer == "grace" {
        say("    ✗ charge declined: insufficient funds");
        return Err(ServiceError::Declined("insufficient funds".into()));
    }
    let id = service(&format!("charge {amount_cents} to {customer}"));
    if idem::current_call().is_some_and(|call| call.resumed()) {
        // Run again by recovery: the step was in doubt. Same key, so no second charge.
        say(&format!("    → {id} (asked again under the same key: the provider answers with the first charge)"));
    } else {
        say(&format!("    → {id}"));
    }
    if std::env::var("CONTRACT_SAGA_DIE_AFTER_CHARGE").is_ok() {
        say("DYING");
        std::future::pending::<()>().await;
    }
    Ok(Charge { id, amount_cents })
}

async fn refund_payment(charge: Charge) -> Result<(), ServiceError> {
    service(&format!("refund {}", charge.id));
    say(&format!("    ← refunded {}", charge.id));
    Ok(())
}

#[saga_step(irreversible)] // an email cannot be unsent
async fn send_confirmation_email(customer: &str) -> Result<(), ServiceError> {
    let sent = service(&format!("email to {customer}"));
    say(&format!("    → {sent}"));
    Ok(())
}

/// The agent's tool: the whole deal, as one saga.
async fn close_deal(
    store: &dyn Store,
    order: &str,
    customer: &str,
    amount: u64,
) -> Result<String, ServiceError> {
    let data = ContractData {
        product: "idem enterprise".into(),
        seats: 5,
    };
    Saga::new(order)
        .store(store)
        .lease(Duration::from_millis(500))
        .run(|s| async move {
            let contract = s.step(create_contract_record(customer, &data)).await?;
            s.step(charge_payment(customer, amount)).await?;
            s.step(send_confirmation_email(customer)).await?;
            Ok(contract.id)
        })
        .await
}

async fn status(store: &dyn Store, order: &str) -> SagaStatus {
    let key = idem::Action::new("saga").key(&(order,)).expect("a key");
    store
        .read_saga(&key)
        .await
        .expect("read the log")
        .map_or(SagaStatus::Running, |log| log.status)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = std::env::var_os("CONTRACT_SAGA_FOLDER").map_or_else(
        || std::env::temp_dir().join(format!("idem-contract-saga-{}", std::process::id())),
        PathBuf::from,
    );
    std::fs::create_dir_all(&folder)?;
    RECORDS.get_or_init(|| folder.join("services.log"));
    let store = SqliteStore::open(folder.join("idem.db")).await?;

    if std::env::var_os("CONTRACT_SAGA_DIE_AFTER_CHARGE").is_some() {
        // The agent that gets killed: it never returns from the charge.
        let _ = close_deal(&store, "order-3", "alan", 4900).await;
        return Ok(());
    }

    say("1. ada's order goes through");
    let contract = close_deal(&store, "order-1", "ada", 9900).await?;
    say(&format!("   saga completed: {contract}"));

    say("2. grace's card is declined");
    match close_deal(&store, "order-2", "grace", 9900).await {
        Err(error) => say(&format!("   saga rolled back: {error}")),
        Ok(_) => return Err("a declined card must roll the saga back".into()),
    }

    say("3. alan's agent is killed with SIGKILL right after the charge");
    kill_an_agent_after_the_charge(&folder)?;
    say("   a new process starts and runs idem::recover");
    let report = loop {
        // The dead agent's lease (500 ms) must run out before anyone may take over.
        let report = idem::recover(&store).await?;
        if !report.is_empty() {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    say(&format!("   recovery: {report}"));

    let effects = effects();
    let count = |prefix: &str| effects.iter().filter(|e| e.starts_with(prefix)).count();
    let alan = |prefix: &str| {
        effects
            .iter()
            .filter(|e| e.starts_with(prefix) && e.contains("alan"))
            .count()
    };
    say("");
    say("what the services recorded:");
    for effect in &effects {
        say(&format!("  {effect}"));
    }
    say("");
    say(&format!(
        "summary: order-1 {}, order-2 {} (contract deleted: {}), order-3 {} after SIGKILL ({} charge, {} refund); charges {}, refunds {}",
        status(&store, "order-1").await,
        status(&store, "order-2").await,
        count("deleted contract grace") == 1,
        status(&store, "order-3").await,
        alan("charge"),
        alan("refund"),
        count("charge"),
        count("refund"),
    ));
    let _ = std::fs::remove_dir_all(&folder);
    Ok(())
}

/// Starts this example again as an agent that dies right after charging, and kills it there.
fn kill_an_agent_after_the_charge(folder: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut agent = Command::new(std::env::current_exe()?)
        .env("CONTRACT_SAGA_FOLDER", folder)
        .env("CONTRACT_SAGA_DIE_AFTER_CHARGE", "1")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = agent.stdout.take().ok_or("the agent's output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "DYING" {
            break;
        }
        say(&line);
    }
    agent.kill()?; // SIGKILL on Unix: no clean-up, no goodbye
    agent.wait()?;
    say("    ✝ agent killed");
    Ok(())
}
