//! The world the agents work in: a mail provider, a payment provider and a contract database
//! that make real (counted) side effects, and the ways this world misbehaves.
//!
//! The misbehaviour is planned per task before the run starts, so every run tells the same
//! story; only the order in which concurrent agents print their lines varies.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long an agent waits for a tool's answer before it gives up on that attempt.
pub const TOOL_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a provider takes to answer, as an API across the network does.
const LATENCY: Duration = Duration::from_millis(15);

/// How long a provider takes to answer a request planned to be slow: longer than the agent
/// waits, but the side effect is already made when the agent gives up.
const SLOW_ANSWER: Duration = Duration::from_millis(1500);

/// How long the payment provider holds the answer to a charge whose agent is to be killed:
/// the kill comes long before (at once), so only a kill that went wrong ends it.
const KILL_GRACE: Duration = Duration::from_secs(20);

/// What a provider does with a task's first request, besides doing its job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// The side effect is made, the answer comes after the agent stopped waiting.
    pub slow_first_answer: bool,
    /// The queue hands the task to two agents at once (an at-least-once queue redelivers).
    pub assigned_twice: bool,
    /// The agent's process is killed right after the payment provider made the charge.
    pub killed_after_charge: bool,
    /// The customer's card is declined.
    pub card_declined: bool,
}

/// A provider's answer to a charge it refused.
#[derive(Debug, Clone)]
pub struct Declined(pub String);

/// A request that should kill the agent working on `reference`.
#[derive(Debug)]
pub struct KillRequest {
    pub reference: String,
}

/// The three services and their ledger of what they really did.
#[derive(Debug)]
pub struct World {
    plan: HashMap<String, Misbehaviour>,
    first_requests: Mutex<HashSet<String>>,
    kills: mpsc::UnboundedSender<KillRequest>,
    emails: Mutex<Vec<String>>,
    charges: Mutex<Charges>,
    contracts: Mutex<BTreeMap<String, String>>,
    contracts_created: AtomicUsize,
    contracts_deleted: AtomicUsize,
}

#[derive(Debug, Default)]
struct Charges {
    made: Vec<String>,
    by_idempotency_key: HashMap<String, String>,
    refunded: Vec<String>,
}

impl World {
    /// A world with the given plan (task reference → misbehaviour); kill requests go to
    /// `kills`.
    pub fn new(
        plan: HashMap<String, Misbehaviour>,
        kills: mpsc::UnboundedSender<KillRequest>,
    ) -> Self {
        World {
            plan,
            first_requests: Mutex::default(),
            kills,
            emails: Mutex::default(),
            charges: Mutex::default(),
            contracts: Mutex::default(),
            contracts_created: AtomicUsize::new(0),
            contracts_deleted: AtomicUsize::new(0),
        }
    }

    /// What is planned for the task `reference`.
    pub fn plan_for(&self, reference: &str) -> Misbehaviour {
        self.plan.get(reference).copied().unwrap_or_default()
    }

    /// The mail provider sends one message. Like most mail APIs, it has no idempotency key:
    /// two requests are two emails.
    pub async fn send_email(&self, reference: &str, to: &str, subject: &str) -> String {
        let message_id = {
            let mut emails = lock(&self.emails);
            emails.push(format!("{to}: {subject}"));
            format!("msg-{:04}", emails.len())
        };
        self.answer(reference).await;
        message_id
    }

    /// The payment provider charges a card. Like Stripe, it honours an `Idempotency-Key`: a
    /// request with a key it has seen gets the first charge back instead of a new one.
    pub async fn charge(
        &self,
        reference: &str,
        idempotency_key: Option<String>,
        customer: &str,
        amount_cents: u64,
    ) -> Result<String, Declined> {
        if self.plan_for(reference).card_declined {
            self.answer(reference).await;
            return Err(Declined(format!("card of {customer} declined")));
        }
        let charge_id = {
            let mut charges = lock(&self.charges);
            match idempotency_key
                .as_ref()
                .and_then(|key| charges.by_idempotency_key.get(key))
            {
                Some(first) => first.clone(),
                None => {
                    let id = format!("ch_{:04}", charges.made.len() + 1);
                    charges.made.push(format!("{id} {customer} {amount_cents}"));
                    if let Some(key) = idempotency_key {
                        charges.by_idempotency_key.insert(key, id.clone());
                    }
                    id
                }
            }
        };
        if self.plan_for(reference).killed_after_charge && self.first(reference, "kill") {
            let _ = self.kills.send(KillRequest {
                reference: reference.to_owned(),
            });
            // The process is killed while the answer is on its way: it never arrives. (Were
            // the kill not carried out, the answer would come after KILL_GRACE, late.)
            tokio::time::sleep(KILL_GRACE).await;
        }
        self.answer(reference).await;
        Ok(charge_id)
    }

    /// The payment provider refunds a charge.
    pub async fn refund(&self, charge_id: &str) {
        lock(&self.charges).refunded.push(charge_id.to_owned());
    }

    /// The contract database stores a contract.
    pub async fn create_contract(&self, reference: &str, customer: &str, product: &str) -> String {
        let number = self.contracts_created.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("ct_{number:04}");
        lock(&self.contracts).insert(id.clone(), format!("{customer}: {product}"));
        self.answer(reference).await;
        id
    }

    /// The contract database deletes a contract.
    pub async fn delete_contract(&self, id: &str) {
        if lock(&self.contracts).remove(id).is_some() {
            self.contracts_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the services did, for the final count.
    pub fn ledger(&self) -> Ledger {
        let charges = lock(&self.charges);
        Ledger {
            emails: lock(&self.emails).len(),
            charges: charges.made.len(),
            refunds: charges.refunded.len(),
            contracts: lock(&self.contracts).len(),
            contracts_deleted: self.contracts_deleted.load(Ordering::Relaxed),
        }
    }

    /// Answers a request: slowly if it is the first of a task planned to be slow.
    async fn answer(&self, reference: &str) {
        tokio::time::sleep(LATENCY).await;
        if self.plan_for(reference).slow_first_answer && self.first(reference, "answer") {
            tokio::time::sleep(SLOW_ANSWER).await;
        }
    }

    /// Whether this is the first time `what` happens for the task `reference`.
    fn first(&self, reference: &str, what: &str) -> bool {
        lock(&self.first_requests).insert(format!("{reference}/{what}"))
    }
}

/// What the services did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub emails: usize,
    pub charges: usize,
    pub refunds: usize,
    pub contracts: usize,
    pub contracts_deleted: usize,
}

tokio::task_local! {
    /// Set by a tool body when it starts, inside [`watch_bodies`].
    static BODY_RAN: Cell<bool>;
}

/// A tool body starts (called first thing by every body, protected or not).
pub fn body_started() {
    let _ = BODY_RAN.try_with(|ran| ran.set(true));
}

/// Runs a tool call and tells whether any tool body ran inside it: the difference between a
/// call that did the work and one answered from idem's record.
pub async fn watch_bodies<F: Future>(call: F) -> (F::Output, bool) {
    BODY_RAN
        .scope(Cell::new(false), async move {
            let output = call.await;
            (output, BODY_RAN.with(Cell::get))
        })
        .await
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
