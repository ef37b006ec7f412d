//! rig tools (rig-core 0.44) with `#[idempotent]` on their `call`: the context-free
//! `PortableTool::call(&self, args)` and the contextual `Tool::call(&self, context: &mut
//! ToolContext, args)`, called twice as an agent's retry, directly and through rig's JSON
//! dispatch (`ErasedTool::execute`); and keys under rig's `serde_json/preserve_order`, which
//! this package has on, as every rig program does (`preserve_order_is_on_in_this_build`).
//! Run by `tests/it/example_rig_agent.rs` of the workspace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use idem::store::{MemoryStore, SqliteStore};
use idem::{idempotent, observe, Disposition};
use rig::tool::{ContextValue, ErasedTool, PortableTool, Tool, ToolContext};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[path = "../src/tool_error.rs"]
mod tool_error;

use tool_error::ToolError;

/// Arguments with free-form fields: a `serde_json::Map`, kept in insertion order here.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailArgs {
    to: String,
    headers: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sent {
    n: usize,
    /// The call's key, as its body saw it.
    key: String,
}

fn key_now() -> String {
    idem::current_key()
        .map(|key| key.to_string())
        .unwrap_or_default()
}

// A context-free rig tool, on the memory store.

struct SendEmail {
    store: MemoryStore,
    runs: Arc<AtomicUsize>,
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
        json!({ "type": "object" })
    }

    #[idempotent(store = self.store.clone())]
    async fn call(&self, args: Self::Args) -> Result<Self::Output, Self::Error> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Sent { n, key: key_now() })
    }
}

// A contextual rig tool, on a SQLite store.

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Requester(String);

impl ContextValue for Requester {
    const KEY: &'static str = "requester";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Opened(usize);

impl ContextValue for Opened {
    const KEY: &'static str = "opened";
}

struct OpenTicket {
    store: SqliteStore,
    runs: Arc<AtomicUsize>,
}

impl Tool for OpenTicket {
    const NAME: &'static str = "open_ticket";
    type Args = EmailArgs;
    type Output = Sent;
    type Error = ToolError;

    fn description(&self) -> String {
        "Open a ticket.".to_owned()
    }

    fn parameters(&self) -> Value {
        json!({ "type": "object" })
    }

    #[idempotent(skip = [context], store = self.store.clone())]
    async fn call(
        &self,
        context: &mut ToolContext,
        args: Self::Args,
    ) -> Result<Self::Output, Self::Error> {
        context.require::<Requester>()?;
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        context.insert_result(Opened(n))?;
        Ok(Sent { n, key: key_now() })
    }
}

/// The same arguments, their headers inserted in the order given.
fn args(order: &[(&str, Value)]) -> EmailArgs {
    let mut headers = Map::new();
    for (name, value) in order {
        headers.insert((*name).to_owned(), value.clone());
    }
    EmailArgs {
        to: "ada@example.com".to_owned(),
        headers,
    }
}

fn in_order() -> EmailArgs {
    args(&[
        ("subject", json!("Your refund")),
        ("cc", json!(["ops@example.com"])),
        ("priority", json!(1)),
    ])
}

fn reversed() -> EmailArgs {
    args(&[
        ("priority", json!(1)),
        ("cc", json!(["ops@example.com"])),
        ("subject", json!("Your refund")),
    ])
}

/// A future the caller can hand to `tokio::spawn`: rig's `call` is `impl Future + Send`.
fn send<F: std::future::Future + Send>(future: F) -> F {
    future
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "idem-rig-{name}-{}-{unique}.db",
        std::process::id()
    ))
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn preserve_order_is_on_in_this_build() {
    // rig-core turns it on; without it, serde_json sorts a Map and the tests below would not
    // be testing what a rig program does.
    let written = |a: &EmailArgs| serde_json::to_string(&a.headers).unwrap();
    assert_ne!(written(&in_order()), written(&reversed()));
}

#[test]
fn a_map_in_two_orders_has_one_canonical_form() {
    let canonical = |a: &EmailArgs| idem::canonical_json(a).unwrap();
    assert_eq!(canonical(&in_order()), canonical(&reversed()));
    assert_eq!(
        canonical(&in_order()),
        r#"{"headers":{"cc":["ops@example.com"],"priority":1,"subject":"Your refund"},"to":"ada@example.com"}"#
    );
}

#[tokio::test]
async fn a_portable_tool_retried_runs_once_and_replays() {
    let runs = Arc::new(AtomicUsize::new(0));
    let tool = SendEmail {
        store: MemoryStore::new(),
        runs: runs.clone(),
    };
    let (first, how) = observe(send(PortableTool::call(&tool, in_order()))).await;
    let first = first.unwrap();
    assert_eq!(how, Some(Disposition::Executed));
    // The agent's retry, its map written in the other order: the same key, the first answer.
    let (again, how) = observe(send(PortableTool::call(&tool, reversed()))).await;
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(again.unwrap(), first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!first.key.is_empty(), "the body saw its key");

    // Other arguments are another call.
    let mut other = in_order();
    other.to = "grace@example.com".to_owned();
    let third = PortableTool::call(&tool, other).await.unwrap();
    assert_eq!(third.n, 2);
    assert_ne!(third.key, first.key);
}

#[tokio::test]
async fn a_contextual_tool_retried_runs_once_its_context_outside_the_key() {
    let path = temp_db("contextual");
    let store = SqliteStore::open(&path).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let tool = OpenTicket {
        store,
        runs: runs.clone(),
    };

    let mut context = ToolContext::new();
    context.insert(Requester("ada".to_owned())).unwrap();
    let first = send(Tool::call(&tool, &mut context, in_order()))
        .await
        .unwrap();
    assert_eq!(context.result::<Opened>().unwrap(), Some(Opened(1)));

    // Another requester, another context: not part of the key, so the same call, replayed;
    // the body does not run, so it writes nothing into this context.
    let mut other = ToolContext::new();
    other.insert(Requester("grace".to_owned())).unwrap();
    let (again, how) = observe(send(Tool::call(&tool, &mut other, reversed()))).await;
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(again.unwrap(), first);
    assert_eq!(other.result::<Opened>().unwrap(), None);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    drop(tool);
    remove_db(&path);
}

#[tokio::test]
async fn rigs_json_dispatch_of_a_retried_call_replays() {
    let runs = Arc::new(AtomicUsize::new(0));
    let path = temp_db("dispatch");
    let tool: Box<dyn ErasedTool> = Box::new(OpenTicket {
        store: SqliteStore::open(&path).await.unwrap(),
        runs: runs.clone(),
    });
    // As the model writes the call, then writes it again with its members reordered.
    let first =
        r#"{"to": "ada@example.com", "headers": {"subject": "Your refund", "priority": 1}}"#;
    let again =
        r#"{"headers": {"priority": 1, "subject": "Your refund"}, "to": "ada@example.com"}"#;
    let mut answers = Vec::new();
    for args in [first, again] {
        let mut context = ToolContext::new();
        context.insert(Requester("ada".to_owned())).unwrap();
        let output = tool
            .execute(args.to_owned(), &mut context)
            .await
            .into_result()
            .unwrap();
        answers.push(output.as_json().cloned().unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The tool's error reaches rig's dispatch as a failed result, not a panic: no requester.
    let output = tool
        .execute(
            r#"{"to": "grace@example.com", "headers": {}}"#.to_owned(),
            &mut ToolContext::new(),
        )
        .await
        .into_result();
    assert!(output.is_err());

    drop(tool);
    remove_db(&path);
}
