//! What `idem mcp-proxy` adds to a `tools/call`: the same calls to the same server, direct
//! and through the proxy, on stdio and on streamable HTTP, one caller, in one run.
//!
//! ```text
//! cargo bench -p idem-cli --bench mcp_proxy            # IDEM_BENCH_CALLS=2000 by default
//! ```
//!
//! The server is this binary itself (run again with `IDEM_BENCH_ECHO=stdio`, or served in
//! this process on HTTP): one tool, `echo`, that answers at once, so that what is measured
//! is the transport and the proxy. Through the proxy a call is `fresh` (new arguments: a
//! claim, the call, the result recorded) or a `replay` (arguments already answered: one
//! read of the store). The proxy's store is a SQLite file (the default, durable) or
//! `memory:` (the proxy's own work, no disk).

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;

#[path = "../src/mcp_proxy/listener.rs"]
mod listener;

const IDEM: &str = env!("CARGO_BIN_EXE_idem");

/// The server: one tool that answers its argument back.
#[derive(Debug, Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::default();
        info.capabilities = ServerCapabilities::builder().enable_tools().build();
        info.server_info.name = "echo".into();
        info
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({ "type": "object", "properties": { "n": { "type": "integer" } } });
        let schema = schema.as_object().cloned().unwrap_or_default();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Answers its argument back.",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let n = params
            .arguments
            .and_then(|a| a.get("n").cloned())
            .unwrap_or_default();
        Ok(CallToolResponse::Complete(CallToolResult::structured(
            json!({ "n": n }),
        )))
    }
}

type Client = RunningService<RoleClient, ()>;

async fn call(client: &Client, n: u64) {
    let arguments = json!({ "n": n }).as_object().cloned().unwrap_or_default();
    let result = client
        .peer()
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
        .await
        .expect("the echo call");
    assert_eq!(
        result.structured_content,
        Some(json!({ "n": n })),
        "the answer of call {n}"
    );
}

/// Median and 99th percentile of `calls` calls, in µs; `first` numbers the arguments (a
/// fresh call has arguments never sent before), `same` sends one argument every time.
async fn measure(client: &Client, calls: u64, first: u64, same: bool) -> (f64, f64) {
    let mut took = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    for i in 0..calls {
        let n = if same { first } else { first + i };
        let started = Instant::now();
        call(client, n).await;
        took.push(started.elapsed());
    }
    took.sort();
    let at = |q: f64| {
        let index = ((took.len() as f64 - 1.0) * q).round() as usize;
        took[index].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

async fn stdio_client(command: tokio::process::Command) -> Client {
    let child = TokioChildProcess::new(command).expect("start the server");
    ().serve(child).await.expect("an MCP session on stdio")
}

async fn http_client(url: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_uri(url);
    ().serve(transport).await.expect("an MCP session on HTTP")
}

/// The echo server on HTTP in this process; its URL.
async fn echo_on_http() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("the address");
    tokio::spawn(listener::serve(listener, || Echo));
    format!("http://{address}/mcp")
}

/// `idem --store STORE mcp-proxy ARGS`.
fn proxy(store: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(IDEM);
    command.args(["--store", store, "mcp-proxy"]).args(args);
    command
}

/// Starts `idem mcp-proxy --listen 127.0.0.1:0` and returns it with its URL.
async fn proxy_on_http(store: &str, upstream: &str) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = proxy(store, &["--listen", "127.0.0.1:0", "--upstream", upstream])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = lines
        .next_line()
        .await
        .expect("read")
        .expect("the proxy's first line");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .to_owned();
    (child, url)
}

struct Row {
    path: &'static str,
    store: &'static str,
    direct: (f64, f64),
    fresh: (f64, f64),
    replay: (f64, f64),
}

fn main() {
    if std::env::var("IDEM_BENCH_ECHO").as_deref() == Ok("stdio") {
        return serve_echo_on_stdio();
    }
    let calls: u64 = std::env::var("IDEM_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let rows = runtime.block_on(run(calls));
    print_table(&rows, calls);
}

fn serve_echo_on_stdio() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let server = Echo.serve(rmcp::transport::stdio()).await.expect("serve");
        let _ = server.waiting().await;
    });
}

async fn run(calls: u64) -> Vec<Row> {
    let dir = std::env::temp_dir().join(format!("idem-bench-mcp-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let sqlite = format!("sqlite://{}", dir.join("proxy.db").display());
    let me = std::env::current_exe().expect("this binary");
    let echo_stdio = || {
        let mut command = tokio::process::Command::new(&me);
        command.env("IDEM_BENCH_ECHO", "stdio");
        command
    };
    let warm = calls / 10 + 1;
    let mut rows = Vec::new();

    // stdio: the client starts the server, or the proxy that starts it.
    let direct = stdio_client(echo_stdio()).await;
    measure(&direct, warm, 0, false).await;
    let direct_stdio = measure(&direct, calls, 0, false).await;
    let _ = direct.cancel().await;
    for (label, store) in [("sqlite", sqlite.as_str()), ("memory", "memory:")] {
        let me = me.display().to_string();
        let mut command = proxy(store, &["--", &me]);
        command.env("IDEM_BENCH_ECHO", "stdio");
        let through = stdio_client(command).await;
        // Numbers of their own per row: every fresh call is new to the store.
        let base = rows.len() as u64 * 10_000_000;
        measure(&through, warm, base, false).await;
        let fresh = measure(&through, calls, base + warm, false).await;
        let replay = measure(&through, calls, base, true).await;
        let _ = through.cancel().await;
        rows.push(Row {
            path: "stdio",
            store: label,
            direct: direct_stdio,
            fresh,
            replay,
        });
    }

    // Streamable HTTP: the server in this process; the proxy listening, fronting it.
    let echo = echo_on_http().await;
    let direct = http_client(&echo).await;
    measure(&direct, warm, 0, false).await;
    let direct_http = measure(&direct, calls, 0, false).await;
    let _ = direct.cancel().await;
    for (label, store) in [("sqlite", sqlite.as_str()), ("memory", "memory:")] {
        let (proxy, url) = proxy_on_http(store, &echo).await;
        let through = http_client(&url).await;
        let base = rows.len() as u64 * 10_000_000;
        measure(&through, warm, base, false).await;
        let fresh = measure(&through, calls, base + warm, false).await;
        let replay = measure(&through, calls, base, true).await;
        let _ = through.cancel().await;
        drop(proxy);
        rows.push(Row {
            path: "http",
            store: label,
            direct: direct_http,
            fresh,
            replay,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

fn print_table(rows: &[Row], calls: u64) {
    println!(
        "`idem mcp-proxy`: one caller, {calls} calls per cell, median (p99) in µs per tools/call"
    );
    println!();
    println!("| transport | proxy store | direct | via proxy, fresh | added | via proxy, replay | added |");
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} ({:.0}) | {:.0} ({:.0}) | +{:.0} | {:.0} ({:.0}) | +{:.0} |",
            row.path,
            row.store,
            row.direct.0,
            row.direct.1,
            row.fresh.0,
            row.fresh.1,
            row.fresh.0 - row.direct.0,
            row.replay.0,
            row.replay.1,
            row.replay.0 - row.direct.0,
        );
    }
}
