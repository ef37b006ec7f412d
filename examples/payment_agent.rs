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
//! Then three scenes where the answer is lost, each with one charge and none forgotten:
//!
//! 1. a crash after the charge: the tool server dies before idem records it; the retry finds
//!    the call in doubt and asks `verify` (the provider's lookup by Idempotency-Key), which
//!    finds the charge;
//! 2. an ambiguous answer: the provider charges but answers 504; `in_doubt = is_ambiguous`
//!    keeps the key in doubt instead of releasing it, and the retry goes through `verify`;
//! 3. a 409 on re-run: a provider that answers a reused key 409 Conflict. A call in doubt run
//!    again without `verify` gets that 409 and stays in doubt; with `verify` it is settled.
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
use idem::{idempotent, observe, Disposition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

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
    timeouts: &[Duration::from_millis(200), Duration::from_secs(5)],
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
    /// The provider's answer does not say whether it charged: a 504 after the request was
    /// sent, or a 409 for a key it has seen (the first request went through, or is going).
    Ambiguous(String),
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
            PaymentError::Ambiguous(answer) => write!(f, "{answer}"),
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
    /// How it misbehaves today (the later scenes).
    quirks: Mutex<Quirks>,
}

#[derive(Debug, Default)]
struct Quirks {
    /// The tool server "dies" right after the provider charges: this is told, and the call
    /// never returns.
    die_after_charging: Option<Arc<Notify>>,
    /// The next charge is made, but answered `504 Gateway Timeout`.
    time_out_after_charging: bool,
    /// A key seen before is answered `409 Conflict` instead of with its first charge.
    conflict_on_reuse: bool,
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
        let charged = answer.is_ok();
        let (die, time_out) = {
            let mut quirks = self.quirks.lock().expect("the provider's quirks");
            let die = quirks.die_after_charging.take().filter(|_| charged);
            let time_out = charged && std::mem::take(&mut quirks.time_out_after_charging);
            (die, time_out)
        };
        if let Some(died) = die {
            died.notify_one();
            std::future::pending::<()>().await;
        }
        if time_out {
            return Err(PaymentError::Ambiguous("504 Gateway Timeout".into()));
        }
        tokio::time::sleep(PROVIDER_LATENCY).await;
        answer
    }

    /// `GET /v1/charges?idempotency_key=…`: the charge made under a key, if any.
    fn find_charge(&self, idempotency_key: &str) -> Option<Charge> {
        let ledger = self.ledger.lock().expect("the provider's ledger");
        ledger
            .by_key
            .get(idempotency_key)
            .map(|(_, charge)| charge.clone())
    }

    fn charge_once(
        &self,
        idempotency_key: Option<&str>,
        request: ChargeRequest,
    ) -> Result<Charge, PaymentError> {
        let mut ledger = self.ledger.lock().expect("the provider's ledger");
        if let Some((first, charge)) = idempotency_key.and_then(|key| ledger.by_key.get(key)) {
            let conflict = self
                .quirks
                .lock()
                .expect("the provider's quirks")
                .conflict_on_reuse;
            return if conflict {
                Err(PaymentError::Ambiguous(
                    "409 Conflict: this Idempotency-Key was already used".into(),
                ))
            } else if *first == request {
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
    send_charge(&provider, customer_id, order_id, amount_cents).await
}

/// The body of every tool with idem: `POST /v1/charges` with the call's key.
async fn send_charge(
    provider: &PaymentProvider,
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

// ---- When the answer is lost: in doubt, and verify ----------------------------------------

/// How long a tool server that died holds a call in the later scenes, before another may
/// take it over (a live one renews it by heartbeat as long as the call runs).
const LEASE: &str = "300ms";

/// Errors after which the charge may have been made: idem keeps the key in doubt instead of
/// releasing it for a retry to charge blind.
fn is_ambiguous(error: &PaymentError) -> bool {
    matches!(error, PaymentError::Ambiguous(_))
}

/// The tool as a payment tool should be: a call left in doubt (its server died, or the
/// provider's answer was ambiguous) is not run again before `find_charge` has asked the
/// provider whether it charged under the call's key.
#[idempotent(
    key = [customer_id, order_id],
    ttl = "24h",
    lease = "300ms",
    on_conflict = wait("10s"),
    in_doubt = is_ambiguous,
    verify = find_charge,
    skip = [provider]
)]
async fn charge_order(
    provider: Arc<PaymentProvider>,
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
) -> Result<Charge, PaymentError> {
    send_charge(&provider, customer_id, order_id, amount_cents).await
}

/// `verify` of [`charge_order`]: the charge the provider made under the call's key, if any.
async fn find_charge(
    provider: &Arc<PaymentProvider>,
    _customer_id: &u64,
    _order_id: &u64,
    _amount_cents: &u64,
) -> Result<Option<Charge>, PaymentError> {
    let key = idem::current_key().expect("verify runs under the call's key");
    Ok(provider.find_charge(&key.to_string()))
}

/// The same tool without `verify`: a call in doubt is run again under its key.
#[idempotent(
    key = [customer_id, order_id],
    ttl = "24h",
    lease = "300ms",
    on_conflict = wait("10s"),
    in_doubt = is_ambiguous,
    skip = [provider]
)]
async fn charge_order_unverified(
    provider: Arc<PaymentProvider>,
    customer_id: u64,
    order_id: u64,
    amount_cents: u64,
) -> Result<Charge, PaymentError> {
    send_charge(&provider, customer_id, order_id, amount_cents).await
}

// ---- The agents ---------------------------------------------------------------------------

/// One agent's tool call: wait for an answer, stop waiting after the timeout, pause, retry.
/// The tool server runs each call as a task of its own, which finishes even when the agent
/// stopped waiting. `None` if no attempt was answered in time.
///
/// An attempt's deadline is set before the call is sent, and it comes first: an answer that
/// arrives after it is not taken, even when a busy machine gets to both at the same moment.
/// So an attempt whose answer takes longer than its timeout is always given up.
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
        let deadline = tokio::time::Instant::now() + timeout;
        let mut call = tokio::spawn(idem::observe(tool()));
        let answered_in_time = tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => None,
            answer = &mut call => Some(answer),
        };
        match answered_in_time {
            Some(Ok((Ok(charge), how))) => {
                println!(
                    "  [{label}] attempt {attempt}, {asked}: ok, {}{}",
                    charge.id,
                    answered(how)
                );
                answer = Some(Ok(charge));
                break;
            }
            Some(Ok((Err(error), _))) => {
                // An answer, not a timeout: asking again would get the same one.
                println!("  [{label}] attempt {attempt}, {asked}: failed: {error}");
                answer = Some(Err(error));
                break;
            }
            Some(Err(crash)) => {
                println!("  [{label}] attempt {attempt}: the tool crashed: {crash}")
            }
            None => {
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
        Some(Disposition::Verified) => {
            " (verified: the call was in doubt; the provider, asked by its Idempotency-Key, \
             had charged: not charged again)"
        }
        Some(Disposition::InDoubt) => {
            " (in_doubt: idem keeps the key in doubt, not released: the charge may have been made)"
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

// ---- The later scenes --------------------------------------------------------------------

/// One tool call of a later scene, as the agent sees it: its charge and how idem answered.
async fn ask<Fut>(what: &str, call: Fut) -> (Option<Charge>, Option<Disposition>)
where
    Fut: Future<Output = Result<Charge, PaymentError>>,
{
    let (result, how) = observe(call).await;
    match &result {
        Ok(charge) => println!("  [agent] {what}: ok, {}{}", charge.id, answered(how)),
        Err(error) => println!("  [agent] {what}: failed: {error}{}", answered(how)),
    }
    (result.ok(), how)
}

/// A provider that misbehaves as `quirks` say.
fn provider_with(quirks: Quirks) -> Arc<PaymentProvider> {
    Arc::new(PaymentProvider {
        quirks: Mutex::new(quirks),
        ..PaymentProvider::default()
    })
}

/// The end of a scene: the provider's ledger, and which charge the agent was told of.
/// Returns how many charges the provider made.
fn ledger(provider: &PaymentProvider, told: Option<&Charge>) -> usize {
    let charges = provider.charges();
    println!("  the provider made {}:", count(charges.len()));
    for (charge, _) in &charges {
        let known = if told.is_some_and(|told| told.id == charge.id) {
            "the agent holds its id"
        } else {
            "the agent was not told"
        };
        println!(
            "    {} {} for order {} ({known})",
            charge.id,
            money(charge.amount_cents),
            charge.order_id
        );
    }
    charges.len()
}

/// What a scene's summary says of it: the charges made, and how idem answered each call.
fn scene(charges: usize, dispositions: &[Option<Disposition>]) -> String {
    let how: Vec<&str> = dispositions
        .iter()
        .map(|how| how.map_or("none", Disposition::as_str))
        .collect();
    format!("{} ({})", count(charges), how.join(", "))
}

/// Scene 1: the tool server dies after the provider charged, before idem recorded it.
async fn crash_after_the_charge(order: u64) -> String {
    println!(
        "\nScene 1, a crash after the charge: the tool server dies once the provider has \
         charged, before idem records the charge."
    );
    let died = Arc::new(Notify::new());
    let provider = provider_with(Quirks {
        die_after_charging: Some(Arc::clone(&died)),
        ..Quirks::default()
    });
    let call = || charge_order(Arc::clone(&provider), CUSTOMER, order, AMOUNT_CENTS);
    let asked = format!("charge {} for order {order}", money(AMOUNT_CENTS));
    tokio::select! {
        answer = call() => println!("  [agent] {asked}: answered before the crash: {answer:?}"),
        () = died.notified() => println!(
            "  [agent] {asked}: no answer, the tool server died (the provider had charged)"
        ),
    }
    println!("  [agent] retries; idem waits for the dead server's {LEASE} lease to run out");
    let (charge, how) = ask("retry", call()).await;
    let charges = ledger(&provider, charge.as_ref());
    scene(charges, &[how])
}

/// Scene 2: the provider charges, but answers 504.
async fn ambiguous_answer(order: u64) -> String {
    println!(
        "\nScene 2, an ambiguous answer: the provider charges, but answers 504 Gateway Timeout."
    );
    let provider = provider_with(Quirks {
        time_out_after_charging: true,
        ..Quirks::default()
    });
    let call = || charge_order(Arc::clone(&provider), CUSTOMER, order, AMOUNT_CENTS);
    let asked = format!("charge {} for order {order}", money(AMOUNT_CENTS));
    let (_, first) = ask(&asked, call()).await;
    let (charge, retry) = ask("retry", call()).await;
    println!(
        "  without `in_doubt = is_ambiguous` the 504 would have released the key and the retry \
         run the charge blind: a second charge at a provider that does not deduplicate by \
         Idempotency-Key, a 409 at one that refuses a reused key (scene 3)"
    );
    let charges = ledger(&provider, charge.as_ref());
    scene(charges, &[first, retry])
}

/// Scene 3: the provider answers a reused key 409 Conflict, not with its first charge. A call
/// in doubt run again gets that 409: without `verify` it stays in doubt; with it, it is settled.
async fn conflict_on_rerun(order: u64, verified_order: u64) -> (String, String) {
    println!(
        "\nScene 3, a 409 on re-run: the provider charges and answers 504, and answers a reused \
         Idempotency-Key 409 Conflict instead of with the first charge."
    );
    let quirks = || Quirks {
        time_out_after_charging: true,
        conflict_on_reuse: true,
        ..Quirks::default()
    };
    println!("  a tool without `verify`, which runs a call in doubt again under its key:");
    let provider = provider_with(quirks());
    let call = || charge_order_unverified(Arc::clone(&provider), CUSTOMER, order, AMOUNT_CENTS);
    let asked = format!("charge {} for order {order}", money(AMOUNT_CENTS));
    let (_, first) = ask(&asked, call()).await;
    let (charge, retry) = ask("retry", call()).await;
    let charges = ledger(&provider, charge.as_ref());
    println!(
        "  not forgotten: the key of order {order} stays in doubt (never released, never \
         reported \"not charged\"): each retry sends the charge again under the same key and \
         gets 409, and an operator sees the key in `idem keys --status in-progress`"
    );
    let unverified = scene(charges, &[first, retry]);

    println!("  the same with `verify = find_charge`:");
    let provider = provider_with(quirks());
    let order = verified_order;
    let call = || charge_order(Arc::clone(&provider), CUSTOMER, order, AMOUNT_CENTS);
    let asked = format!("charge {} for order {order}", money(AMOUNT_CENTS));
    let (_, first) = ask(&asked, call()).await;
    let (charge, retry) = ask("retry", call()).await;
    let charges = ledger(&provider, charge.as_ref());
    (unverified, scene(charges, &[first, retry]))
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

    let crash = crash_after_the_charge(ORDER + 1).await;
    let ambiguous = ambiguous_answer(ORDER + 2).await;
    let (conflict, conflict_verified) = conflict_on_rerun(ORDER + 3, ORDER + 4).await;
    println!(
        "\nsummary in doubt: crash after the charge {crash}, ambiguous answer {ambiguous}, \
         409 on re-run without verify {conflict}, with verify {conflict_verified}"
    );

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
