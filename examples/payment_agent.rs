//! Two agents, one order, one charge.
//!
//! An orchestrator hands the same task, "charge customer 42 for order 7", to two agents at
//! once. The payment provider is slow today: it charges the card at once, but answers after
//! 300 ms. Agent A waits for it; agent B's runtime gives a tool call 200 ms, then retries.
//! Later agent A re-prices the order with a coupon and asks for the charge again, with a new
//! amount. Tool calls run as tasks of a tool server, so a call an agent gave up on still
//! finishes.
//!
//! Without idem every one of those calls is a charge: four charges for one order, and the two
//! agents hold different charge ids. With `#[idempotent]`, keyed by (customer, order): one
//! charge, both agents get its id, and the request with the changed amount is refused with
//! `idem::Error::PayloadMismatch` instead of charging again.
//!
//! The provider is a small in-process fake that honours an `Idempotency-Key` as Stripe does:
//! the same key gets the first charge back, the same key with other parameters is refused.
//! The tool sends it `idem::current_key()`. That is the downstream half of the story: if the
//! tool server died after the provider charged and before idem recorded the charge, the call
//! that runs the body again sends the same key and gets the first charge back.
//!
//! ```text
//! cargo run --example payment_agent
//! ```

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::store::SqliteStore;
use idem::{idempotent, Disposition};
use serde::{Deserialize, Serialize};

/// How long the payment provider takes to answer today.
const PROVIDER_LATENCY: Duration = Duration::from_millis(300);

const CUSTOMER: u64 = 42;
const ORDER: u64 = 7;
const AMOUNT_CENTS: u64 = 4999;
/// What agent A asks for when it asks again, after applying a coupon.
const CHANGED_AMOUNT_CENTS: u64 = 4499;

/// How an agent's runtime waits for a tool call: one timeout per attempt, a pause between.
#[derive(Debug)]
struct Patience {
    agent: &'static str,
    timeouts: &'static [Duration],
    backoff: Duration,
}

/// The orchestrating agent waits as long as a payment takes.
const AGENT_A: Patience = Patience {
    agent: "agent A",
    timeouts: &[Duration::from_secs(5)],
    backoff: Duration::ZERO,
};

/// The impatient one: 200 ms, then one retry after a pause, with a longer timeout.
const AGENT_B: Patience = Patience {
    agent: "agent B",
    timeouts: &[Duration::from_millis(200), Duration::from_secs(1)],
    backoff: Duration::from_millis(500),
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    id: String,
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
}

#[derive(Debug)]
enum PaymentError {
    /// The provider refused the request.
    Refused(String),
    Idem(idem::Error),
}

impl From<idem::Error> for PaymentError {
    fn from(error: idem::Error) -> Self {
        PaymentError::Idem(error)
    }
}

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaymentError::Refused(why) => write!(f, "refused by the provider: {why}"),
            PaymentError::Idem(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for PaymentError {}

// ---- The payment provider -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct ChargeRequest {
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
}

/// A payment API: it charges at once and answers late, and deduplicates by `Idempotency-Key`.
#[derive(Debug, Default)]
struct PaymentProvider {
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Every charge made, with the idempotency key it was made under.
    charges: Vec<(Charge, Option<String>)>,
    /// Each key's first request, and the charge it made.
    by_key: HashMap<String, (ChargeRequest, Charge)>,
}

impl PaymentProvider {
    /// `POST /v1/charges`.
    async fn create_charge(
        &self,
        idempotency_key: Option<&str>,
        request: ChargeRequest,
    ) -> Result<Charge, PaymentError> {
        let answer = self.charge_once(idempotency_key, request);
        tokio::time::sleep(PROVIDER_LATENCY).await;
        answer
    }

    fn charge_once(
        &self,
        idempotency_key: Option<&str>,
        request: ChargeRequest,
    ) -> Result<Charge, PaymentError> {
        let mut ledger = self.ledger.lock().expect("the provider's ledger");
        if let Some((first, charge)) = idempotency_key.and_then(|key| ledger.by_key.get(key)) {
            return if *first == request {
                Ok(charge.clone())
            } else {
                Err(PaymentError::Refused(
                    "this Idempotency-Key was first used with other parameters".into(),
                ))
            };
        }
        let charge = Charge {
            id: format!(
                "ch_{:016x}",
                RandomState::new().hash_one(ledger.charges.len())
            ),
            customer_id: request.customer_id,
            order_id: request.order_id,
            amount_cents: request.amount_cents,
        };
        if let Some(key) = idempotency_key {
            ledger
                .by_key
                .insert(key.to_owned(), (request, charge.clone()));
        }
        ledger
            .charges
            .push((charge.clone(), idempotency_key.map(str::to_owned)));
        Ok(charge)
    }

    fn charges(&self) -> Vec<(Charge, Option<String>)> {
        self.ledger
            .lock()
            .expect("the provider's ledger")
            .charges
            .clone()
    }
}

// ---- The tool, without and with idem ------------------------------------------------------

/// The tool, as most agents have it today: every call is a new charge.
async fn charge_customer_unprotected(
    provider: Arc<PaymentProvider>,
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
) -> Result<Charge, PaymentError> {
    let request = ChargeRequest {
        customer_id,
        order_id,
        amount_cents,
    };
    provider.create_charge(None, request).await
}

/// The same tool with idem. The key is (customer, order), because that is what the task
/// names; the amount is payload, so a request for the same order with another amount is
/// refused rather than charged again or answered with a charge of the wrong amount. A
/// duplicate that arrives while the charge runs waits for it.
///
/// The provider gets the call's key as its `Idempotency-Key`: if the tool server dies between
/// the charge and idem's record, the next call runs the body again (`on_stale = takeover`, the
/// default) and the provider answers it with the first charge. Without a key to send
/// downstream, `on_stale = review` would be the safe choice for payments.
#[idempotent(key = [customer_id, order_id], ttl = "24h", on_conflict = wait("10s"), skip = [provider])]
async fn charge_customer(
    provider: Arc<PaymentProvider>,
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
) -> Result<Charge, PaymentError> {
    let key = idem::current_key().map(|key| key.to_string());
    let request = ChargeRequest {
        customer_id,
        order_id,
        amount_cents,
    };
    provider.create_charge(key.as_deref(), request).await
}

// ---- The agents ---------------------------------------------------------------------------

/// One agent's tool call: wait for an answer, stop waiting after the timeout, pause, retry.
/// The tool server runs each call as a task of its own, which finishes even when the agent
/// stopped waiting. `None` if no attempt was answered in time.
async fn agent<F, Fut>(
    patience: &Patience,
    amount_cents: u64,
    tool: F,
) -> Option<Result<Charge, PaymentError>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Charge, PaymentError>> + Send + 'static,
{
    let label = patience.agent;
    let mut abandoned = Vec::new();
    let mut answer = None;
    for (attempt, &timeout) in (1..).zip(patience.timeouts) {
        if attempt > 1 {
            tokio::time::sleep(patience.backoff).await;
        }
        let asked = format!("charge {} for order {ORDER}", money(amount_cents));
        let mut call = tokio::spawn(idem::observe(tool()));
        match tokio::time::timeout(timeout, &mut call).await {
            Ok(Ok((Ok(charge), how))) => {
                println!(
                    "  [{label}] attempt {attempt}, {asked}: ok, {}{}",
                    charge.id,
                    answered(how)
                );
                answer = Some(Ok(charge));
                break;
            }
            Ok(Ok((Err(error), _))) => {
                // An answer, not a timeout: asking again would get the same one.
                println!("  [{label}] attempt {attempt}, {asked}: failed: {error}");
                answer = Some(Err(error));
                break;
            }
            Ok(Err(crash)) => println!("  [{label}] attempt {attempt}: the tool crashed: {crash}"),
            Err(_) => {
                let next = if attempt < patience.timeouts.len() {
                    format!(", retrying in {} ms", patience.backoff.as_millis())
                } else {
                    ", giving up".to_owned()
                };
                println!(
                    "  [{label}] attempt {attempt}, {asked}: no answer after {} ms{next}",
                    timeout.as_millis()
                );
                abandoned.push(call);
            }
        }
    }
    for call in abandoned {
        let _ = call.await;
    }
    answer
}

/// How idem answered a call, for the agent's log (nothing without idem).
fn answered(how: Option<Disposition>) -> &'static str {
    match how {
        Some(Disposition::Replayed) => " (replayed from idem's record: no new charge)",
        Some(Disposition::WaitedThenReplayed) => {
            " (waited for the same call, already charging, and got its charge)"
        }
        Some(how) if how.executed() => " (this call made the charge)",
        _ => "",
    }
}

/// What one run of the scenario left behind.
struct Run {
    provider: Arc<PaymentProvider>,
    agent_a: Option<Result<Charge, PaymentError>>,
    agent_b: Option<Result<Charge, PaymentError>>,
    changed: Option<Result<Charge, PaymentError>>,
}

impl Run {
    fn same_charge_for_both_agents(&self) -> bool {
        match (&self.agent_a, &self.agent_b) {
            (Some(Ok(a)), Some(Ok(b))) => a.id == b.id,
            _ => false,
        }
    }
}

/// Both agents get the task at once; when both are done, agent A asks again with a coupon.
async fn scenario<T, Fut>(tool: T) -> Run
where
    T: Fn(Arc<PaymentProvider>, u64, u64, u64) -> Fut + Copy,
    Fut: Future<Output = Result<Charge, PaymentError>> + Send + 'static,
{
    let provider = Arc::new(PaymentProvider::default());
    let task = |amount_cents| {
        let provider = Arc::clone(&provider);
        move || tool(Arc::clone(&provider), CUSTOMER, ORDER, amount_cents)
    };
    let (agent_a, agent_b) = tokio::join!(
        agent(&AGENT_A, AMOUNT_CENTS, task(AMOUNT_CENTS)),
        agent(&AGENT_B, AMOUNT_CENTS, task(AMOUNT_CENTS)),
    );
    println!("  [agent A] applies a coupon and asks again");
    let changed = agent(&AGENT_A, CHANGED_AMOUNT_CENTS, task(CHANGED_AMOUNT_CENTS)).await;

    let told: Vec<&str> = [&agent_a, &agent_b, &changed]
        .into_iter()
        .filter_map(|answer| answer.as_ref()?.as_ref().ok())
        .map(|charge| charge.id.as_str())
        .collect();
    let charges = provider.charges();
    println!("  the provider made {}:", count(charges.len()));
    for (charge, key) in &charges {
        let key = key.as_deref().map_or_else(
            || "no Idempotency-Key".to_owned(),
            |key| format!("Idempotency-Key {}…", &key[..12]),
        );
        // A call an agent stopped waiting for still charged: nobody holds its id.
        let orphan = if told.contains(&charge.id.as_str()) {
            ""
        } else {
            ", no agent was told"
        };
        println!(
            "    {} {} to customer {} for order {} ({key}{orphan})",
            charge.id,
            money(charge.amount_cents),
            charge.customer_id,
            charge.order_id
        );
    }
    Run {
        provider,
        agent_a,
        agent_b,
        changed,
    }
}

fn money(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn count(charges: usize) -> String {
    match charges {
        1 => "1 charge".to_owned(),
        n => format!("{n} charges"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "Two agents get the same task at once: charge customer {CUSTOMER} for order {ORDER} ({}).",
        money(AMOUNT_CENTS)
    );
    println!(
        "The provider charges at once and answers after {} ms. Agent A waits {} s; agent B \
         waits {} ms, then retries once after {} ms.",
        PROVIDER_LATENCY.as_millis(),
        AGENT_A.timeouts[0].as_secs(),
        AGENT_B.timeouts[0].as_millis(),
        AGENT_B.backoff.as_millis()
    );
    println!(
        "Then agent A applies a coupon and asks for {} for the same order.\n",
        money(CHANGED_AMOUNT_CENTS)
    );

    println!("Without idem:");
    let plain = scenario(charge_customer_unprotected).await;
    println!(
        "  same charge id for both agents: {}\n",
        plain.same_charge_for_both_agents()
    );

    // The embedded durable store: one SQLite file, nothing to install.
    let path = std::env::temp_dir().join(format!("idem-payment-agent-{}.db", std::process::id()));
    idem::set_default_store(SqliteStore::open(&path).await?);
    println!("With idem (SQLite store at {}):", path.display());
    let protected = scenario(charge_customer).await;
    let same_charge = protected.same_charge_for_both_agents();
    println!("  same charge id for both agents: {same_charge}");
    let changed_refused = matches!(
        protected.changed,
        Some(Err(PaymentError::Idem(idem::Error::PayloadMismatch { .. })))
    );

    // The downstream half. Had the tool server died after the provider charged and before
    // idem recorded the charge, the next call would run the body again under the same key.
    // Send the provider what that call would send.
    let provider = &protected.provider;
    let first = provider.charges().into_iter().next();
    if let Some((charge, Some(key))) = first {
        println!("\nIf the tool server had died between the charge and idem's record:");
        let request = ChargeRequest {
            customer_id: charge.customer_id,
            order_id: charge.order_id,
            amount_cents: charge.amount_cents,
        };
        match provider.create_charge(Some(&key), request).await {
            Ok(again) => println!(
                "  the body, run again under the same key, gets {} back (the first charge)",
                again.id
            ),
            Err(error) => println!("  the body, run again under the same key: {error}"),
        }
        let changed = ChargeRequest {
            amount_cents: CHANGED_AMOUNT_CENTS,
            ..request
        };
        if let Err(error) = provider.create_charge(Some(&key), changed).await {
            println!(
                "  the same key with {}: {error}",
                money(CHANGED_AMOUNT_CENTS)
            );
        }
        println!(
            "  the provider made {} in all",
            count(provider.charges().len())
        );
    }

    let charge_id = match &protected.agent_a {
        Some(Ok(charge)) => charge.id.as_str(),
        _ => "none",
    };
    println!(
        "\nsummary: without idem {}, with idem {} ({charge_id}), same charge id for both \
         agents: {same_charge}, changed amount refused: {changed_refused}",
        count(plain.provider.charges().len()),
        count(provider.charges().len()),
    );

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
