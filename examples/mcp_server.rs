//! An MCP tool server whose tools are safe to call twice.
//!
//! Agents reach their tools over the Model Context Protocol, and MCP clients retry: a request
//! that timed out is sent again, a session that dropped is opened again, a restarted agent
//! replays the step it was on, two copies of an agent work the same task. This server offers
//! three tools with real side effects, `send_email`, `charge_card` and `create_ticket`, over
//! stdio with `rmcp`, the official Rust SDK. Each tool calls an `#[idempotent]` function
//! on a SQLite store, so every duplicate, from the same session or from another server
//! process on the same file, gets the first call's answer (the same message, charge or ticket
//! id) and nothing is sent, charged or filed twice. The tools say so to the client
//! (`idempotentHint`).
//!
//! The mail relay, the payment provider and the ticket tracker are fakes that append one line
//! per real effect to a ledger file, so the effects of every server process can be counted.
//!
//! ```text
//! cargo build --example mcp_server
//! target/debug/examples/mcp_server --db /tmp/idem-mcp.db --ledger /tmp/idem-mcp-ledger.log
//! ```
//!
//! It speaks MCP on stdin/stdout (logs go to stderr), so it is started by an MCP client, not
//! by hand. Register it with an MCP-capable agent (Claude Desktop, an IDE, any client that
//! reads an `mcpServers` table), an absolute path for each file:
//!
//! ```json
//! {
//!   "mcpServers": {
//!     "idem-tools": {
//!       "command": "/path/to/idem/target/debug/examples/mcp_server",
//!       "args": ["--db", "/var/lib/agent/idem.db", "--ledger", "/var/lib/agent/ledger.log"]
//!     }
//!   }
//! }
//! ```
//!
//! or drive it with the official Python SDK, as the test does (`pip install mcp`):
//!
//! ```text
//! python3 tests/mcp/client.py target/debug/examples/mcp_server --db /tmp/idem-mcp.db --ledger /tmp/idem-mcp-ledger.log
//! ```
//!
//! `--db` (or `IDEM_MCP_DB`) is the SQLite file of idem's records; every server process that
//! should share the answers opens the same file. `--ledger` (or `IDEM_MCP_LEDGER`) is where
//! the fake services write down what they did. Both default to files in the temp directory.
//! `docs/wiring.md` walks through the same wiring step by step.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idem::idempotent;
use idem::store::SqliteStore;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::stdio;
use rmcp::{tool, tool_handler, tool_router, Json, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

const USAGE: &str = "usage: mcp_server [--db PATH] [--ledger PATH]

An MCP tool server on stdio whose tools (send_email, charge_card, create_ticket) act once
per distinct call, however often the call is repeated.
  --db PATH      idem's SQLite store (env IDEM_MCP_DB; default: idem-mcp-server.db in the temp dir)
  --ledger PATH  where the fake services record each real effect
                 (env IDEM_MCP_LEDGER; default: idem-mcp-ledger.log in the temp dir)";

// ---- What the tools answer ----------------------------------------------------------------
//
// These are recorded by idem and replayed to duplicates: an answer with the same id as the
// first one is a replay, not a second email, charge or ticket.

/// The mail relay's receipt for a sent email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct EmailReceipt {
    /// The message id the relay gave the email.
    message_id: String,
    to: String,
}

/// A charge made by the payment provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Charge {
    /// The provider's charge id.
    charge_id: String,
    order_id: String,
    amount_cents: u64,
}

/// A ticket filed in the tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Ticket {
    /// The tracker's ticket id.
    ticket_id: String,
    title: String,
}

/// What goes wrong in a tool: idem refusing a call, or a service failing.
#[derive(Debug)]
enum ToolError {
    Idem(idem::Error),
    Service(std::io::Error),
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        ToolError::Idem(error)
    }
}

impl From<std::io::Error> for ToolError {
    fn from(error: std::io::Error) -> Self {
        ToolError::Service(error)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Idem(error) => write!(f, "{error}"),
            ToolError::Service(error) => write!(f, "the service failed: {error}"),
        }
    }
}

impl std::error::Error for ToolError {}

// ---- The services: fakes that write down every real effect ---------------------------------

/// The outside world the tools act on: a mail relay, a payment provider, a ticket tracker.
/// Each real effect is one line in the ledger file, shared by every server process. None of
/// them deduplicates anything: every line is an effect that idem let through.
#[derive(Debug, Clone)]
struct Services {
    ledger: Arc<Path>,
}

impl Services {
    async fn send_mail(&self, to: &str, subject: &str, body: &str) -> Result<String, ToolError> {
        let message_id = format!("<{}@mail.example.com>", fresh_hex());
        self.record(&format!(
            "email {message_id} to={to} subject={subject:?} bytes={}",
            body.len()
        ))
        .await?;
        tracing::info!(target: "mcp_server", %message_id, %to, "mail relay: sent");
        Ok(message_id)
    }

    /// The provider is told the call's idempotency key, as real payment APIs are; this fake
    /// only writes it down.
    async fn charge(
        &self,
        customer_id: &str,
        order_id: &str,
        amount_cents: u64,
        idempotency_key: &str,
    ) -> Result<String, ToolError> {
        let charge_id = format!("ch_{}", fresh_hex());
        self.record(&format!(
            "charge {charge_id} customer={customer_id} order={order_id} \
             amount_cents={amount_cents} idempotency_key={idempotency_key}"
        ))
        .await?;
        tracing::info!(target: "mcp_server", %charge_id, %customer_id, amount_cents, "payments: charged");
        Ok(charge_id)
    }

    async fn open_ticket(&self, title: &str, body: &str) -> Result<String, ToolError> {
        let ticket_id = format!("TCK-{}", fresh_hex()[..8].to_uppercase());
        self.record(&format!(
            "ticket {ticket_id} title={title:?} bytes={}",
            body.len()
        ))
        .await?;
        tracing::info!(target: "mcp_server", %ticket_id, "tracker: filed");
        Ok(ticket_id)
    }

    /// Appends one line, in one write: processes appending at once do not interleave.
    async fn record(&self, line: &str) -> std::io::Result<()> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*self.ledger)
            .await?;
        file.write_all(format!("{line}\n").as_bytes()).await?;
        file.sync_data().await
    }
}

/// Hex digits no other call gets, for the ids a service hands out: an answer with the same
/// id as an earlier one is that earlier result, replayed.
fn fresh_hex() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

// ---- The side effects, each run once per key -----------------------------------------------
//
// Plain async functions, independent of MCP: the tools below are thin adapters. Each has a
// fixed `name`, so that renaming the function keeps its keys, and leaves the service handle
// out of the key (`skip`).

/// The same email to the same person (recipient, subject and body) is sent once a day.
#[idempotent(name = "send_email", ttl = "24h", skip = [mail])]
async fn send_email(
    mail: &Services,
    to: &str,
    subject: &str,
    body: &str,
) -> Result<EmailReceipt, ToolError> {
    let message_id = mail.send_mail(to, subject, body).await?;
    Ok(EmailReceipt {
        message_id,
        to: to.to_owned(),
    })
}

/// An order is charged once. The key is the customer and the order; the amount is the
/// payload, so the same order with another amount is refused (`PayloadMismatch`) instead of
/// charged again or answered with the first charge. A charge interrupted by a crash waits for
/// an operator (`on_stale = review`) rather than risk a second one.
#[idempotent(
    name = "charge_card",
    key = [customer_id, order_id],
    skip = [payments],
    ttl = "30d",
    on_stale = review
)]
async fn charge_card(
    payments: &Services,
    customer_id: &str,
    order_id: &str,
    amount_cents: u64,
) -> Result<Charge, ToolError> {
    let key = idem::current_key()
        .map(|key| key.to_string())
        .unwrap_or_default();
    let charge_id = payments
        .charge(customer_id, order_id, amount_cents, &key)
        .await?;
    Ok(Charge {
        charge_id,
        order_id: order_id.to_owned(),
        amount_cents,
    })
}

/// The same ticket (title and body) is filed once a day.
#[idempotent(name = "create_ticket", ttl = "24h", skip = [tracker])]
async fn create_ticket(tracker: &Services, title: &str, body: &str) -> Result<Ticket, ToolError> {
    let ticket_id = tracker.open_ticket(title, body).await?;
    Ok(Ticket {
        ticket_id,
        title: title.to_owned(),
    })
}

// ---- The MCP server ------------------------------------------------------------------------

#[derive(Debug, Deserialize, JsonSchema)]
struct SendEmailParams {
    /// The recipient's address.
    to: String,
    subject: String,
    body: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct ChargeCardParams {
    /// The customer whose card on file is charged.
    customer_id: String,
    /// The order this charge pays for: one charge per order.
    order_id: String,
    /// The amount in cents.
    amount_cents: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct CreateTicketParams {
    title: String,
    body: String,
}

/// The tool server: MCP in front, idempotent functions behind.
#[derive(Debug, Clone)]
struct AgentTools {
    services: Services,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl AgentTools {
    fn new(services: Services) -> Self {
        AgentTools {
            services,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Send an email. Safe to retry: the same recipient, subject and body \
                       are sent once, and every retry gets the first call's receipt.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn send_email(
        &self,
        Parameters(email): Parameters<SendEmailParams>,
    ) -> Result<Json<EmailReceipt>, String> {
        send_email(&self.services, &email.to, &email.subject, &email.body)
            .await
            .map(Json)
            .map_err(|error| error.to_string())
    }

    #[tool(
        description = "Charge the customer's card for an order. Safe to retry: an order is \
                       charged once, and every retry gets the first charge. The same order \
                       with another amount is refused.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn charge_card(
        &self,
        Parameters(charge): Parameters<ChargeCardParams>,
    ) -> Result<Json<Charge>, String> {
        let (customer, order) = (&charge.customer_id, &charge.order_id);
        charge_card(&self.services, customer, order, charge.amount_cents)
            .await
            .map(Json)
            .map_err(|error| match error {
                // Said so that the model can tell what to do next.
                ToolError::Idem(idem::Error::PayloadMismatch { .. }) => format!(
                    "order {order} of {customer} was already charged with another amount: \
                     refused, nothing charged ({error})"
                ),
                error => error.to_string(),
            })
    }

    #[tool(
        description = "File a support ticket. Safe to retry: the same title and body are \
                       filed once, and every retry gets the first ticket.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn create_ticket(
        &self,
        Parameters(ticket): Parameters<CreateTicketParams>,
    ) -> Result<Json<Ticket>, String> {
        create_ticket(&self.services, &ticket.title, &ticket.body)
            .await
            .map(Json)
            .map_err(|error| error.to_string())
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "idem-mcp-server",
    instructions = "Tools with side effects that are safe to retry: a repeated call with the \
                    same arguments returns the first call's result and does nothing again."
)]
impl ServerHandler for AgentTools {}

// ---- Start-up ------------------------------------------------------------------------------

struct Config {
    db: PathBuf,
    ledger: PathBuf,
}

/// `--db` and `--ledger`, else their environment variables, else files in the temp dir.
fn config() -> Result<Config, String> {
    let from_env = |name: &str, default: &str| {
        std::env::var_os(name).map_or_else(|| std::env::temp_dir().join(default), PathBuf::from)
    };
    let mut db = from_env("IDEM_MCP_DB", "idem-mcp-server.db");
    let mut ledger = from_env("IDEM_MCP_LEDGER", "idem-mcp-ledger.log");
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{} needs a path\n\n{USAGE}", arg.to_string_lossy()))
        };
        match arg.to_str() {
            Some("--db") => db = value()?,
            Some("--ledger") => ledger = value()?,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    Ok(Config { db, ledger })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    // Stdout carries MCP messages: every log line goes to stderr, which MCP clients show
    // as the server's log. One line per idempotent call (target `idem`: action, key,
    // `executed` or `replayed`) and one per real effect.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(
            Targets::new()
                .with_target("idem", LevelFilter::INFO)
                .with_target("mcp_server", LevelFilter::INFO)
                .with_default(LevelFilter::WARN),
        )
        .init();

    let config = match config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };

    // Every process that opens this file shares the records: a second server, or this one
    // restarted, answers a repeated call from the record instead of running it again.
    idem::set_default_store(SqliteStore::open(&config.db).await?);
    tracing::info!(
        target: "mcp_server",
        db = %config.db.display(),
        ledger = %config.ledger.display(),
        "serving send_email, charge_card, create_ticket on stdio"
    );

    let services = Services {
        ledger: config.ledger.into(),
    };
    // rmcp runs each tool call as a task of its own: a call the client cancelled or stopped
    // waiting for still finishes and records its answer for the retry, and when the client
    // disconnects, the calls in flight get a few seconds to finish before `waiting` returns.
    let server = AgentTools::new(services).serve(stdio()).await?;
    let reason = server.waiting().await?;
    tracing::info!(target: "mcp_server", ?reason, "the client went away");
    Ok(())
}
