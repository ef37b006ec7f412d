//! An agent whose tools are rig tools, each one definition with `#[idempotent]` on its `call`.
//!
//! Two tools, in rig-core 0.44's two shapes: `SendEmail`, a context-free `PortableTool`
//! (`call(&self, args)`), and `OpenTicket`, a contextual `Tool` (`call(&self, context: &mut
//! ToolContext, args)`), whose context (who asked, and what the tool reports back to the host)
//! is `skip`ped: it is never part of a key.
//!
//! No model and no network: the model's tool calls are scripted, and dispatched as rig
//! dispatches them, as JSON text through `ErasedTool::execute`. The agent retries each step,
//! as an agent does after a timeout or a restart, and the model writes the retried arguments'
//! fields in another order. rig builds `serde_json` with `preserve_order`, so the two
//! `serde_json::Map`s keep their different orders; idem's keys are RFC 8785 canonical JSON
//! (members sorted), so the retry has the first call's key and gets its answer.
//!
//! ```text
//! cargo run --manifest-path examples/rig_agent/Cargo.toml
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use idem::idempotent;
use idem::store::SqliteStore;
use rig::tool::{ContextValue, ErasedTool, PortableTool, Tool, ToolContext};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

mod tool_error;

use tool_error::ToolError;

/// Everything the side effects did, as the outside world would see it.
#[derive(Debug, Default)]
struct World {
    emails: Mutex<Vec<String>>,
    tickets: Mutex<Vec<String>>,
}

// ---------------------------------------------------------------------------------------
// A context-free rig tool: `PortableTool::call(&self, args)`.

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailArgs {
    to: String,
    subject: String,
    body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sent {
    message_id: String,
}

struct SendEmail {
    store: SqliteStore,
    world: Arc<World>,
}

impl PortableTool for SendEmail {
    const NAME: &'static str = "send_email";
    type Args = EmailArgs;
    type Output = Sent;
    type Error = ToolError;

    fn description(&self) -> String {
        "Send an email.".to_owned()
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "to": { "type": "string" },
                "subject": { "type": "string" },
                "body": { "type": "string" }
            },
            "required": ["to", "subject", "body"]
        })
    }

    /// The action is `SendEmail::call`; the key is the arguments.
    #[idempotent(store = self.store.clone())]
    async fn call(&self, args: Self::Args) -> Result<Self::Output, Self::Error> {
        let mut emails = self.world.emails.lock().expect("the outbox");
        emails.push(format!("to {}: {}", args.to, args.subject));
        Ok(Sent {
            message_id: format!("<msg-{}@mail.example.com>", emails.len()),
        })
    }
}

// ---------------------------------------------------------------------------------------
// A contextual rig tool: `Tool::call(&self, context: &mut ToolContext, args)`.

/// Who the agent works for: an inbound value of the tool's context, set by the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Requester(String);

impl ContextValue for Requester {
    const KEY: &'static str = "requester";
}

/// What the tool reports back to the host beside its answer (result metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Opened {
    by: String,
}

impl ContextValue for Opened {
    const KEY: &'static str = "opened";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TicketArgs {
    title: String,
    /// Free-form fields, as the model writes them: a `serde_json::Map`, whose order under
    /// rig's `preserve_order` is the model's.
    fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ticket {
    id: String,
    /// The call's key, as the body saw it (`idem::current_key`).
    key: String,
}

struct OpenTicket {
    store: SqliteStore,
    world: Arc<World>,
}

impl Tool for OpenTicket {
    const NAME: &'static str = "open_ticket";
    type Args = TicketArgs;
    type Output = Ticket;
    type Error = ToolError;

    fn description(&self) -> String {
        "Open a support ticket.".to_owned()
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "title": { "type": "string" },
                "fields": { "type": "object" }
            },
            "required": ["title", "fields"]
        })
    }

    /// The action is `OpenTicket::call`; the context is `skip`ped, the key is the arguments.
    /// What the body writes into the context is not recorded: a replayed call returns the
    /// ticket, and leaves the context as it found it.
    #[idempotent(skip = [context], store = self.store.clone())]
    async fn call(
        &self,
        context: &mut ToolContext,
        args: Self::Args,
    ) -> Result<Self::Output, Self::Error> {
        let requester = context.require::<Requester>()?;
        let id = {
            let mut tickets = self.world.tickets.lock().expect("the ticket system");
            tickets.push(format!("{} for {}", args.title, requester.0));
            format!("T-{}", tickets.len())
        };
        context.insert_result(Opened { by: requester.0 })?;
        let key = idem::current_key()
            .map(|key| key.to_string())
            .unwrap_or_default();
        Ok(Ticket { id, key })
    }
}

// ---------------------------------------------------------------------------------------
// The agent: a scripted model, rig's JSON dispatch, a retry of every step.

/// The model's tool calls: a name and its arguments as JSON text, each written twice, the
/// second time with its members in another order (as a model writing the call again does).
fn script() -> Vec<(&'static str, String, String)> {
    let ticket_first = r#"{"title": "Refund order 7", "fields": {"priority": "high", "order": 7, "channel": "email"}}"#;
    let ticket_again = r#"{"fields": {"channel": "email", "order": 7, "priority": "high"}, "title": "Refund order 7"}"#;
    let email_first =
        r#"{"to": "ada@example.com", "subject": "Your refund", "body": "Ticket opened."}"#;
    let email_again =
        r#"{"body": "Ticket opened.", "subject": "Your refund", "to": "ada@example.com"}"#;
    vec![
        (
            "open_ticket",
            ticket_first.to_owned(),
            ticket_again.to_owned(),
        ),
        ("send_email", email_first.to_owned(), email_again.to_owned()),
    ]
}

/// Serialized as serde_json writes it: under rig's `preserve_order`, in the model's order.
fn as_written(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .map(|value| value.to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("idem-rig-agent-{}.db", std::process::id()))
        });
    let fresh = !path.exists();
    let store = SqliteStore::open(&path).await?;
    let world = Arc::new(World::default());

    // The tool set, as rig's runtime holds it: by name, behind the object-safe `ErasedTool`.
    let mut tools: BTreeMap<&str, Box<dyn ErasedTool>> = BTreeMap::new();
    let email = SendEmail {
        store: store.clone(),
        world: world.clone(),
    };
    let ticket = OpenTicket {
        store: store.clone(),
        world: world.clone(),
    };
    tools.insert(<SendEmail as PortableTool>::NAME, Box::new(email));
    tools.insert(<OpenTicket as Tool>::NAME, Box::new(ticket));

    let mut identical = true;
    for (name, first, again) in script() {
        let tool = &tools[name];
        let mut answers = Vec::new();
        for (attempt, args) in [("call", first), ("retry", again)] {
            let mut context = ToolContext::new();
            context.insert(Requester("ada".to_owned()))?;
            let result = tool.execute(args.clone(), &mut context).await;
            let output = result.into_result().map_err(|error| error.to_string())?;
            let answer = output.as_json().cloned().unwrap_or(Value::Null).to_string();
            let opened = context.result::<Opened>()?.map(|opened| opened.by);
            println!("{name} {attempt}: args {}", as_written(&args));
            println!("{name} {attempt}: answer {answer} (context's result: {opened:?})");
            answers.push(answer);
        }
        identical &= answers[0] == answers[1];
    }

    let emails = world.emails.lock().expect("the outbox").len();
    let tickets = world.tickets.lock().expect("the ticket system").len();
    println!(
        "summary: {tickets} ticket and {emails} email for two calls each, retries answered with the first answers: {identical}"
    );
    if fresh {
        drop(tools);
        drop(store);
        let _ = std::fs::remove_file(&path);
        for suffix in ["-wal", "-shm"] {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(side);
        }
    }
    Ok(())
}
