//! The agents' tools: a quote email, a payment, and a contract deal (contract → charge →
//! welcome email) as a saga. Each tool has one body; idem wraps it, `--unprotected` calls it
//! as most agents do today.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use idem::store::Store;
use idem::{idempotent, saga_step, Saga};
use serde::{Deserialize, Serialize};

use crate::world::{body_started, World};

/// Which way the agents call their tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through idem: `#[idempotent]` tools and a saga for the deal.
    Idem,
    /// Plain calls: what an agent without idem does.
    Unprotected,
}

/// A customer task from the queue.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its number in the queue, for people.
    pub number: u32,
    /// The customer.
    pub customer: String,
    /// What to do.
    pub job: Job,
}

/// The work a task asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Email a quote.
    QuoteEmail(Quote),
    /// Charge for an order.
    Payment(Order),
    /// Close a deal: contract, charge, welcome email.
    Deal(Deal),
}

/// A quote to email.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quote {
    pub reference: String,
    pub total_cents: u64,
}

/// An order to charge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub reference: String,
    pub amount_cents: u64,
}

/// A deal to close.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deal {
    pub reference: String,
    pub product: String,
    pub amount_cents: u64,
}

/// A contract the deal created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
}

impl Job {
    /// The task's reference: the quote, order or deal it is about.
    pub fn reference(&self) -> &str {
        match self {
            Job::QuoteEmail(quote) => &quote.reference,
            Job::Payment(order) => &order.reference,
            Job::Deal(deal) => &deal.reference,
        }
    }

    /// What kind of task it is, in a word.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::QuoteEmail(_) => "quote email",
            Job::Payment(_) => "payment",
            Job::Deal(_) => "deal",
        }
    }
}

/// Why a tool failed.
#[derive(Debug)]
pub enum ToolError {
    /// The card was declined: final, the agent does not retry.
    Declined(String),
    /// idem refused the call or its store failed.
    Idem(idem::Error),
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        ToolError::Idem(error)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Declined(why) => write!(f, "declined: {why}"),
            ToolError::Idem(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ToolError {}

static WORLD: OnceLock<Arc<World>> = OnceLock::new();
static STORE: OnceLock<Arc<dyn Store>> = OnceLock::new();

/// Sets the world the tools act on (and, with idem, the store they record in): once, at
/// start-up, as a tool server would read its configuration.
pub fn install(world: Arc<World>, store: Option<Arc<dyn Store>>) {
    WORLD.set(world).expect("the tools are installed once");
    if let Some(store) = store {
        idem::set_default_store_shared(Arc::clone(&store));
        STORE.set(store).expect("the tools are installed once");
    }
}

fn world() -> &'static World {
    WORLD.get().expect("the tools are installed at start-up")
}

/// The idempotency key passed downstream: idem's key for this call, if idem runs it.
fn idempotency_key() -> Option<String> {
    idem::current_key().map(|key| key.to_string())
}

/// Runs the task's tool once, in `mode`; answers with the id of what it made.
pub async fn call(mode: Mode, task: &Task) -> Result<String, ToolError> {
    let customer = task.customer.as_str();
    match (&task.job, mode) {
        (Job::QuoteEmail(quote), Mode::Idem) => send_quote_email(customer, quote).await,
        (Job::QuoteEmail(quote), Mode::Unprotected) => quote_email(customer, quote).await,
        (Job::Payment(order), Mode::Idem) => charge_customer(customer, order).await,
        (Job::Payment(order), Mode::Unprotected) => charge(customer, order).await,
        (Job::Deal(deal), Mode::Idem) => close_deal(customer, deal).await,
        (Job::Deal(deal), Mode::Unprotected) => close_deal_unprotected(customer, deal).await,
    }
}

// ---- Quote email ----------------------------------------------------------------------------

/// The quote email tool with idem: once per (customer, quote).
#[idempotent(ttl = "24h", lease = "2s", on_conflict = wait("20s"))]
async fn send_quote_email(customer: &str, quote: &Quote) -> Result<String, ToolError> {
    quote_email(customer, quote).await
}

async fn quote_email(customer: &str, quote: &Quote) -> Result<String, ToolError> {
    body_started();
    let subject = format!(
        "Your quote {}: {:.2} EUR",
        quote.reference,
        quote.total_cents as f64 / 100.0
    );
    Ok(world()
        .send_email(&quote.reference, customer, &subject)
        .await)
}

// ---- Payment --------------------------------------------------------------------------------

/// The payment tool with idem: once per (customer, order); the amount is the payload, so a
/// replay with another amount is refused. The provider is sent idem's key as its
/// `Idempotency-Key`, which also covers a body run again after its agent was killed.
#[idempotent(key = [customer, order.reference], ttl = "24h", lease = "2s", on_conflict = wait("20s"))]
async fn charge_customer(customer: &str, order: &Order) -> Result<String, ToolError> {
    charge(customer, order).await
}

async fn charge(customer: &str, order: &Order) -> Result<String, ToolError> {
    body_started();
    tell_if_resumed(&order.reference);
    world()
        .charge(
            &order.reference,
            idempotency_key(),
            customer,
            order.amount_cents,
        )
        .await
        .map_err(|declined| ToolError::Declined(declined.0))
}

/// A charge run again after its agent died: idem says so, and the provider gets the same
/// `Idempotency-Key` as the first time.
fn tell_if_resumed(reference: &str) {
    if idem::current_call().is_some_and(|call| call.resumed()) {
        let number = reference.rsplit('-').next().unwrap_or(reference);
        crate::report::say(&format!(
            "  ↻ task {}: the dead agent's lease ran out and its call is taken over; the provider \
             gets the same Idempotency-Key and answers with the first charge",
            number.trim_start_matches('0')
        ));
    }
}

// ---- Deal: a saga of three steps -------------------------------------------------------------

/// The deal tool with idem: a saga, so a declined card deletes the contract again, and an
/// agent killed half-way is resumed from the saga's log by the next agent given the task.
async fn close_deal(customer: &str, deal: &Deal) -> Result<String, ToolError> {
    let store = STORE.get().expect("idem's store is installed at start-up");
    Saga::new(deal.reference.as_str())
        .store(store.as_ref())
        .lease(Duration::from_secs(2))
        .on_conflict(idem::OnConflict::Wait(Duration::from_secs(20)))
        .run(|s| async move {
            let contract = s.step(create_contract(customer, deal)).await?;
            s.step(charge_for_deal(customer, deal)).await?;
            s.step(send_welcome_email(customer, deal)).await?;
            Ok(contract.id)
        })
        .await
}

/// The same steps as plain calls: nothing undoes the contract when the charge fails.
async fn close_deal_unprotected(customer: &str, deal: &Deal) -> Result<String, ToolError> {
    let contract = create_contract(customer, deal).await?;
    charge_for_deal(customer, deal).await?;
    send_welcome_email(customer, deal).await?;
    Ok(contract.id)
}

#[saga_step(compensate = delete_contract)]
async fn create_contract(customer: &str, deal: &Deal) -> Result<Contract, ToolError> {
    body_started();
    let id = world()
        .create_contract(&deal.reference, customer, &deal.product)
        .await;
    Ok(Contract { id })
}

async fn delete_contract(contract: Contract) -> Result<(), ToolError> {
    world().delete_contract(&contract.id).await;
    Ok(())
}

#[saga_step(compensate = refund)]
async fn charge_for_deal(customer: &str, deal: &Deal) -> Result<String, ToolError> {
    body_started();
    tell_if_resumed(&deal.reference);
    world()
        .charge(
            &deal.reference,
            idempotency_key(),
            customer,
            deal.amount_cents,
        )
        .await
        .map_err(|declined| ToolError::Declined(declined.0))
}

async fn refund(charge_id: String) -> Result<(), ToolError> {
    world().refund(&charge_id).await;
    Ok(())
}

#[saga_step(irreversible)] // an email cannot be unsent
async fn send_welcome_email(customer: &str, deal: &Deal) -> Result<(), ToolError> {
    body_started();
    let subject = format!("Welcome to {}", deal.product);
    world()
        .send_email(&deal.reference, customer, &subject)
        .await;
    Ok(())
}
