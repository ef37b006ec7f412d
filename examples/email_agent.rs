//! The quote email that a timeout sent three times, now sent once.
//!
//! An agent asks a tool to email a quote to a customer. The mail provider is slow today: it
//! delivers the message, but answers after the agent's tool-call timeout. The agent does
//! what agents do and retries. Tool calls run as tasks of a tool server, so a call the agent
//! gave up on still finishes.
//!
//! Without idem every attempt sends another email. With `#[idempotent]` the first attempt
//! sends it, the retries wait for its result, and the customer gets one email.
//!
//! ```text
//! cargo run --example email_agent
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::idempotent;
use idem::store::SqliteStore;
use serde::{Deserialize, Serialize};

/// What the agent's tool-call runtime waits for an answer.
const TOOL_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the mail provider takes to answer today.
const PROVIDER_LATENCY: Duration = Duration::from_millis(750);
const ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Serialize)]
struct Quote {
    id: String,
    total_cents: u64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
}

#[derive(Debug)]
enum EmailError {
    Idem(idem::Error),
}

impl From<idem::Error> for EmailError {
    fn from(error: idem::Error) -> Self {
        EmailError::Idem(error)
    }
}

impl std::fmt::Display for EmailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmailError::Idem(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for EmailError {}

/// A mail provider: it delivers at once and answers late.
#[derive(Debug, Default)]
struct MailProvider {
    delivered: Mutex<Vec<String>>,
    next_id: AtomicUsize,
}

impl MailProvider {
    async fn send(&self, to: &str, subject: &str, message_id: Option<String>) -> Receipt {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let message_id = message_id.unwrap_or_else(|| format!("<msg-{n}@mail.example.com>"));
        self.delivered
            .lock()
            .expect("the provider's log")
            .push(format!("to {to}: {subject} {message_id}"));
        tokio::time::sleep(PROVIDER_LATENCY).await;
        Receipt { message_id }
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().expect("the provider's log").clone()
    }
}

/// The tool, as most agents have it today.
async fn send_quote_email_unprotected(
    mail: Arc<MailProvider>,
    customer: &str,
    quote: &Quote,
) -> Result<Receipt, EmailError> {
    let subject = format!("Your quote {}", quote.id);
    Ok(mail.send(customer, &subject, None).await)
}

/// The same tool with idem: the body runs once per (customer, quote); the message id is the
/// call's key, so even the provider could tell a duplicate.
#[idempotent(ttl = "24h", on_conflict = wait("10s"), skip = [mail])]
async fn send_quote_email(
    mail: Arc<MailProvider>,
    customer: &str,
    quote: &Quote,
) -> Result<Receipt, EmailError> {
    let subject = format!("Your quote {}", quote.id);
    let message_id = idem::current_key().map(|key| format!("<{key}@quotes.example.com>"));
    Ok(mail.send(customer, &subject, message_id).await)
}

/// The agent's side: call the tool, stop waiting after the timeout, retry. The tool server
/// runs each call as a task of its own, which finishes even when the agent stopped waiting.
async fn agent<F, Fut>(label: &str, tool: F) -> Option<Receipt>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Receipt, EmailError>> + Send + 'static,
{
    let mut abandoned = Vec::new();
    let mut answer = None;
    for attempt in 1..=ATTEMPTS {
        let mut call = tokio::spawn(tool());
        match tokio::time::timeout(TOOL_TIMEOUT, &mut call).await {
            Ok(Ok(Ok(receipt))) => {
                println!(
                    "  [{label}] attempt {attempt}: ok, receipt {}",
                    receipt.message_id
                );
                answer = Some(receipt);
                break;
            }
            Ok(Ok(Err(error))) => println!("  [{label}] attempt {attempt}: failed: {error}"),
            Ok(Err(crash)) => println!("  [{label}] attempt {attempt}: the tool crashed: {crash}"),
            Err(_) => {
                let next = if attempt < ATTEMPTS { ", retrying" } else { "" };
                println!(
                    "  [{label}] attempt {attempt}: no answer after {} ms{next}",
                    TOOL_TIMEOUT.as_millis()
                );
                abandoned.push(call);
            }
        }
    }
    if answer.is_none() {
        println!("  [{label}] gave up after {ATTEMPTS} attempts");
    }
    for call in abandoned {
        let _ = call.await;
    }
    answer
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quote = Quote {
        id: "Q-2026-0042".into(),
        total_cents: 124_900,
        currency: "EUR".into(),
    };
    let customer = "ada@example.com";
    println!(
        "The agent emails quote {} ({} {}) to {customer}.",
        quote.id,
        quote.total_cents / 100,
        quote.currency
    );
    println!(
        "The mail provider answers after {} ms; the agent waits {} ms per attempt.\n",
        PROVIDER_LATENCY.as_millis(),
        TOOL_TIMEOUT.as_millis()
    );

    println!("Without idem:");
    let mail = Arc::new(MailProvider::default());
    let (m, q) = (Arc::clone(&mail), quote.clone());
    agent("plain", move || {
        let (m, q) = (Arc::clone(&m), q.clone());
        async move { send_quote_email_unprotected(m, customer, &q).await }
    })
    .await;
    let unprotected = mail.delivered();
    println!(
        "  emails sent: {} for {ATTEMPTS} attempts\n",
        unprotected.len()
    );

    // The embedded durable store: one SQLite file, nothing to install.
    let path = std::env::temp_dir().join(format!("idem-email-agent-{}.db", std::process::id()));
    idem::set_default_store(SqliteStore::open(&path).await?);
    println!("With idem (SQLite store at {}):", path.display());
    let mail = Arc::new(MailProvider::default());
    let (m, q) = (Arc::clone(&mail), quote.clone());
    agent("idem", move || {
        let (m, q) = (Arc::clone(&m), q.clone());
        async move { send_quote_email(m, customer, &q).await }
    })
    .await;
    let protected = mail.delivered();
    println!("  emails sent: {} for {ATTEMPTS} attempts", protected.len());
    for line in &protected {
        println!("    {line}");
    }

    // A restarted agent, hours later, asks again: answered from the record.
    let again = send_quote_email(Arc::clone(&mail), customer, &quote).await?;
    println!(
        "  a restarted agent asking again gets {} and sends nothing",
        again.message_id
    );
    println!(
        "\nsummary: without idem {} emails, with idem {} email",
        unprotected.len(),
        mail.delivered().len()
    );

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
