//! An MCP tool server whose tools are safe to call twice.
//!
//! Agents reach their tools over the Model Context Protocol, and MCP clients retry: a request
//! that timed out is sent again, a session that dropped is opened again, a restarted agent
//! replays the step it was on, two copies of an agent work the same task. This server offers
//! four tools with real side effects, `send_email`, `charge_card`, `create_ticket` and
//! `refund_charge` (which asks the user first), over stdio with `rmcp`, the official Rust SDK. Each tool is one method, `#[idempotent]` and
//! `#[tool]` stacked, on a SQLite store, so every duplicate `tools/call` (a new JSON-RPC id,
//! the same arguments), from the same session or from another server process on the same
//! file, gets the first call's `CallToolResult` (the same message, charge, decline or ticket
//! id) and nothing is sent, charged, filed or refunded twice. The tools say so to the client
//! (`idempotentHint`). idem's refusals reach the client as MCP errors naming the key (feature
//! `rmcp`).
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
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::ElicitationError;
use rmcp::transport::stdio;
use rmcp::{
    tool, tool_handler, tool_router, ErrorData, Peer, RoleServer, ServerHandler, ServiceExt,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

const USAGE: &str = "usage: mcp_server [--db PATH] [--ledger PATH]

An MCP tool server on stdio whose tools (send_email, charge_card, create_ticket,
refund_charge) act once per distinct call, however often the call is repeated.
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

/// A refund of a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Refund {
    /// The provider's refund id.
    refund_id: String,
    charge_id: String,
    amount_cents: u64,
}

// ---- The services: fakes that write down every real effect ---------------------------------

/// The outside world the tools act on: a mail relay, a payment provider, a ticket tracker.
/// Each real effect is one line in the ledger file, shared by every server process. None of
/// them deduplicates anything: every line is an effect that idem let through.
#[derive(Debug, Clone)]
struct Services {
    ledger: Arc<Path>,
}

impl Services {
    async fn send_mail(&self, to: &str, subject: &str, body: &str) -> std::io::Result<String> {
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
    ) -> std::io::Result<String> {
        let charge_id = format!("ch_{}", fresh_hex());
        self.record(&format!(
            "charge {charge_id} customer={customer_id} order={order_id} \
             amount_cents={amount_cents} idempotency_key={idempotency_key}"
        ))
        .await?;
        tracing::info!(target: "mcp_server", %charge_id, %customer_id, amount_cents, "payments: charged");
        Ok(charge_id)
    }

    /// The provider declines a charge over the card's limit; a decline is written down too.
    async fn decline(
        &self,
        customer_id: &str,
        order_id: &str,
        amount_cents: u64,
        idempotency_key: &str,
    ) -> std::io::Result<String> {
        let decline_id = format!("dc_{}", fresh_hex());
        self.record(&format!(
            "decline {decline_id} customer={customer_id} order={order_id} amount_cents={amount_cents} \
             idempotency_key={idempotency_key}"
        ))
        .await?;
        tracing::info!(target: "mcp_server", %decline_id, %customer_id, amount_cents, "payments: declined");
        Ok(decline_id)
    }

    async fn refund(&self, charge_id: &str, amount_cents: u64) -> std::io::Result<String> {
        let refund_id = format!("re_{}", fresh_hex());
        self.record(&format!(
            "refund {refund_id} charge={charge_id} amount_cents={amount_cents}"
        ))
        .await?;
        tracing::info!(target: "mcp_server", %refund_id, %charge_id, amount_cents, "payments: refunded");
        Ok(refund_id)
    }

    async fn open_ticket(&self, title: &str, body: &str) -> std::io::Result<String> {
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

// ---- The MCP server: each tool one definition, `#[idempotent]` above `#[tool]` ---------------
//
// `#[idempotent]` is written above `#[tool]`: attributes apply top first, and `#[tool]` turns
// the `async fn` into one returning a boxed future, which `#[idempotent]` would not take. The
// key is made of what `Parameters(…)` binds (the request's fields, as JSON); the service handle
// is `&self`, never part of a key. Each tool has a fixed `name`, so that renaming the method
// keeps its keys. A tool returns `Result<CallToolResult, ErrorData>`: the `CallToolResult` is
// recorded and replayed as it is, and idem's own errors (`In progress`, other arguments under
// the same key, waiting for review) become MCP errors through the `rmcp` feature's
// `From<idem::Error> for ErrorData`.

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct SendEmailParams {
    /// The recipient's address.
    to: String,
    subject: String,
    body: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ChargeCardParams {
    /// The customer whose card on file is charged.
    customer_id: String,
    /// The order this charge pays for: one charge per order.
    order_id: String,
    /// The amount in cents.
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct CreateTicketParams {
    title: String,
    body: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct RefundChargeParams {
    /// The charge to refund, as `charge_card` answered it.
    charge_id: String,
    /// The amount to give back, in cents.
    amount_cents: u64,
}

/// The question `refund_charge` asks the user (an MCP elicitation) before any money moves.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct RefundApproval {
    /// Yes to give the money back.
    approve: bool,
}
rmcp::elicit_safe!(RefundApproval);

/// The largest charge the fake provider accepts: above it, the card is declined.
const CARD_LIMIT_CENTS: u64 = 1_000_000;

/// A failing service, as the MCP error of the call: the key is released, so a retry runs
/// the tool again.
fn service_failed(error: std::io::Error) -> ErrorData {
    ErrorData::internal_error(format!("the service failed: {error}"), None)
}

/// A structured answer (its text too, for clients that read only text).
fn answer(value: &impl Serialize) -> Result<CallToolResult, ErrorData> {
    let value = serde_json::to_value(value)
        .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
    Ok(CallToolResult::structured(value))
}

/// The tool server: each tool is idempotent itself.
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

    /// The same email to the same person (recipient, subject and body) is sent once a day.
    #[idempotent(name = "send_email", ttl = "24h")]
    #[tool(
        description = "Send an email. Safe to retry: the same recipient, subject and body \
                       are sent once, and every retry gets the first call's receipt.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        ),
        output_schema = schema_for_output::<EmailReceipt>()
    )]
    async fn send_email(
        &self,
        Parameters(email): Parameters<SendEmailParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let message_id = self
            .services
            .send_mail(&email.to, &email.subject, &email.body)
            .await
            .map_err(service_failed)?;
        answer(&EmailReceipt {
            message_id,
            to: email.to,
        })
    }

    /// An order is charged once. The key is the customer and the order; the amount is the
    /// payload, so the same order with another amount is refused (`PayloadMismatch`, an
    /// `invalid_params` error) instead of charged again or answered with the first charge. A
    /// charge interrupted by a crash waits for an operator (`on_stale = review`) rather than
    /// risk a second one. A declined card is an answer (`isError`), recorded like a charge:
    /// a retry is told the same decline, and the card is not tried again.
    #[idempotent(
        name = "charge_card",
        key = [charge.customer_id, charge.order_id],
        ttl = "30d",
        on_stale = review
    )]
    #[tool(
        description = "Charge the customer's card for an order. Safe to retry: an order is \
                       charged once, and every retry gets the first charge (or the first \
                       decline). The same order with another amount is refused.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        ),
        output_schema = schema_for_output::<Charge>()
    )]
    async fn charge_card(
        &self,
        Parameters(charge): Parameters<ChargeCardParams>,
    ) -> Result<CallToolResult, ErrorData> {
        // The provider is told the call's key, as real payment APIs are.
        let key = idem::current_key()
            .map(|key| key.to_string())
            .unwrap_or_default();
        let payments = &self.services;
        if charge.amount_cents > CARD_LIMIT_CENTS {
            let decline_id = payments
                .decline(
                    &charge.customer_id,
                    &charge.order_id,
                    charge.amount_cents,
                    &key,
                )
                .await
                .map_err(service_failed)?;
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "card declined ({decline_id}): {} cents for order {} is over the card's \
                 limit; nothing was charged",
                charge.amount_cents, charge.order_id
            ))]));
        }
        let charge_id = payments
            .charge(
                &charge.customer_id,
                &charge.order_id,
                charge.amount_cents,
                &key,
            )
            .await
            .map_err(service_failed)?;
        answer(&Charge {
            charge_id,
            order_id: charge.order_id,
            amount_cents: charge.amount_cents,
        })
    }

    /// A charge is refunded once, and only after the user says yes. The tool asks them inside
    /// the call (an MCP elicitation, a request to the client), holding the key while they
    /// answer: only the call's final answer is recorded, never the question. A "no" (declined,
    /// cancelled, or `approve: false`) is an `Err`, so nothing is recorded and the key is
    /// released: the agent's retry asks again. Once a refund is made, every retry gets it
    /// back without asking the user a second time. `peer` (the client's session) is skipped:
    /// it is how the tool reaches the user, not part of what the call does.
    #[idempotent(
        name = "refund_charge",
        key = [refund.charge_id],
        skip = [peer],
        ttl = "30d",
        on_stale = review
    )]
    #[tool(
        description = "Refund a charge, once the user approves it. Safe to retry: a charge \
                       is refunded once, and every retry gets the first refund without \
                       asking again. A refund the user did not approve is an error.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        ),
        output_schema = schema_for_output::<Refund>()
    )]
    async fn refund_charge(
        &self,
        peer: Peer<RoleServer>,
        Parameters(refund): Parameters<RefundChargeParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let question = format!(
            "Refund {} cents of charge {} to the customer?",
            refund.amount_cents, refund.charge_id
        );
        match peer.elicit::<RefundApproval>(question).await {
            Ok(Some(RefundApproval { approve: true })) => {}
            Ok(_) | Err(ElicitationError::UserDeclined | ElicitationError::UserCancelled) => {
                return Err(ErrorData::invalid_request(
                    format!(
                        "the user did not approve the refund of {}: nothing was refunded",
                        refund.charge_id
                    ),
                    None,
                ));
            }
            Err(error) => {
                return Err(ErrorData::internal_error(
                    format!("cannot ask the user to approve the refund: {error}"),
                    None,
                ));
            }
        }
        let refund_id = self
            .services
            .refund(&refund.charge_id, refund.amount_cents)
            .await
            .map_err(service_failed)?;
        answer(&Refund {
            refund_id,
            charge_id: refund.charge_id,
            amount_cents: refund.amount_cents,
        })
    }

    /// The same ticket (title and body) is filed once a day.
    #[idempotent(name = "create_ticket", ttl = "24h")]
    #[tool(
        description = "File a support ticket. Safe to retry: the same title and body are \
                       filed once, and every retry gets the first ticket.",
        annotations(
            idempotent_hint = true,
            destructive_hint = false,
            open_world_hint = true
        ),
        output_schema = schema_for_output::<Ticket>()
    )]
    async fn create_ticket(
        &self,
        Parameters(ticket): Parameters<CreateTicketParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let ticket_id = self
            .services
            .open_ticket(&ticket.title, &ticket.body)
            .await
            .map_err(service_failed)?;
        answer(&Ticket {
            ticket_id,
            title: ticket.title,
        })
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
        "serving send_email, charge_card, create_ticket, refund_charge on stdio"
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
