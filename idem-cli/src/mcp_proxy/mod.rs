//! `idem mcp-proxy`: idem in front of any MCP server, for agents in any language.
//!
//! The proxy is an MCP server to the agent (on stdio, or streamable HTTP with `--listen`) and
//! an MCP client to the real server (a command it starts, or `--upstream URL`). A
//! `tools/call` runs through the same claim protocol as `#[idempotent]`: once per key, the
//! result recorded and replayed to every duplicate; everything else passes through.
//!
//! - `config.rs`: the TOML file: per-tool `off`, `ttl`, `lease`, `key`, `on_conflict`,
//!   `on_stale`, `record_errors`.
//! - `dedup.rs`: a call's key, and what each answer of the server means for it.
//! - `front.rs`: the server the agent talks to.
//! - `upstream.rs`: the client the server talks to, and the routing of what it sends back.

// Sampling, roots, logging and `resources/subscribe` are deprecated by the MCP spec
// (SEP-2577), not gone: agents and servers of older protocol versions use them, and the proxy
// passes them on.
#![allow(deprecated)]

mod config;
mod dedup;
mod front;
mod listener;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use idem_runtime::store;
use rmcp::ServiceExt;

use crate::Failure;
use config::Config;
use front::{Front, Shared};
use upstream::{Agents, Upstream};

/// A peer's MCP error as it is, or the proxy's word for a peer (`the server`, `the agent`)
/// that gave no answer (its connection closed, the request could not be sent).
fn not_answered_by(peer: &str, error: rmcp::ServiceError) -> rmcp::ErrorData {
    match error {
        rmcp::ServiceError::McpError(error) => error,
        other => rmcp::ErrorData::internal_error(
            format!("idem mcp-proxy: {peer} did not answer: {other}"),
            None,
        ),
    }
}

/// The help of `idem mcp-proxy`.
pub(crate) const MCP_PROXY_HELP: &str = "\
Put idem in front of an MCP server: every tools/call of the same tool with the same arguments
runs the tool once; its result is recorded and replayed to retries, to other sessions and to
other copies of the agent. Read-only tools (readOnlyHint) and everything that is not a tool
call pass through.

In an MCP client's configuration, put `idem mcp-proxy --` before the server's command:

  \"command\": \"idem\", \"args\": [\"mcp-proxy\", \"--\", \"python\", \"server.py\"]

The store is --store (or IDEM_STORE); without one, a SQLite file in
$XDG_STATE_HOME/idem/mcp-proxy.db (~/.local/state/idem/mcp-proxy.db). Every proxy of the same
server (its name and its command line or URL, or `server = \"…\"` in --config) on the same
store shares its results; use redis:// or postgres:// across machines.

A call whose effect may have happened but whose answer never came (the server died, the
connection was cut, the agent cancelled it after it was sent, an internal error) is left in
doubt: the next call with the same arguments runs the tool again, as a takeover in idem's
record (on_stale = \"takeover\", the default) or waits for an operator (on_stale = \"review\"). A
result with isError: true is not recorded unless record_errors = true.";

/// `idem mcp-proxy [--config FILE] [--upstream URL] [--listen ADDR] -- COMMAND…`
#[derive(Debug, Args)]
pub(crate) struct McpProxyArgs {
    /// A TOML file of per-tool settings (off, ttl, lease, key, on_conflict, on_stale,
    /// record_errors) and the server's name and version in keys
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Front the streamable-HTTP MCP server at this URL instead of starting a command
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream: Option<String>,
    /// Serve agents on streamable HTTP at this address (127.0.0.1:8931; port 0 picks one)
    /// instead of on stdin and stdout
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The MCP server's command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// How long the proxy waits, when the server has exited, for the calls in flight to answer
/// their agents with their errors before it exits too.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the proxy until the agent (stdio) or the server goes away.
pub(crate) async fn run(store_url: Option<&str>, args: McpProxyArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(Failure::usage)?,
        None => Config::default(),
    };
    let upstream =
        match (args.upstream, args.command.is_empty()) {
            (Some(url), true) => Upstream::Url(url),
            (None, false) => Upstream::Command(args.command),
            _ => return Err(Failure::usage(
                "give the MCP server's command after `--` (idem mcp-proxy -- python server.py), \
                 or --upstream URL",
            )),
        };
    let store_url = match store_url.map(str::trim).filter(|url| !url.is_empty()) {
        Some(url) => url.to_owned(),
        None => default_store()?,
    };
    let store = store::open(&store_url).await.map_err(|error| {
        Failure::refused(format!(
            "cannot open the store at {}: {error}",
            crate::redact(&store_url)
        ))
    })?;

    let agents = Arc::new(Agents::default());
    let server = upstream
        .connect(Arc::clone(&agents))
        .await
        .map_err(Failure::refused)?;
    let told = server
        .peer()
        .peer_info()
        .ok_or_else(|| Failure::refused("the MCP server did not say what it is"))?;
    let id = match &config.server {
        Some(name) => name.clone(),
        None => default_identity(
            told.server_info.as_ref().map(|i| i.name.as_str()),
            &upstream,
        ),
    };
    let info = server_config(&told)?;
    let shared = Arc::new(Shared::new(
        store,
        config,
        &id,
        server.peer().clone(),
        info,
        Arc::clone(&agents),
    ));
    warn_of_unknown_tools(&shared).await;

    let server_stopped = server.cancellation_token();
    let mut server_ended = pin!(server.waiting());
    let served = match args.listen {
        Some(address) => tokio::select! {
            served = listen(address, Arc::clone(&shared)) => served,
            _ = &mut server_ended => {
                // As on stdio: the calls in flight end (in doubt) and are answered first.
                shared.agents.until_idle(DRAIN).await;
                return Err(Failure::refused("the MCP server exited"));
            }
        },
        None => serve_stdio(&shared, &agents, &mut server_ended).await,
    };
    server_stopped.cancel();
    if served.is_ok() {
        // The agent left: the server is stopped (a child is killed if it does not exit).
        let _ = server_ended.await;
    }
    served
}

/// Serves one agent on stdin and stdout, until it leaves (`Ok`) or the server exits.
async fn serve_stdio(
    shared: &Arc<Shared>,
    agents: &Agents,
    server_ended: &mut (impl std::future::Future + Unpin),
) -> Result<(), Failure> {
    let agent = Front::new(Arc::clone(shared))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|error| {
            Failure::refused(format!("the agent did not start an MCP session: {error}"))
        })?;
    let agent_stopped = agent.cancellation_token();
    let mut agent_ended = pin!(agent.waiting());
    tokio::select! {
        _ = &mut agent_ended => Ok(()),
        _ = server_ended => {
            // The calls in flight end first (in doubt, their keys marked), and rmcp sends
            // the answers of ended calls before it closes the session.
            agents.until_idle(DRAIN).await;
            agent_stopped.cancel();
            let _ = agent_ended.await;
            Err(Failure::refused("the MCP server exited"))
        }
    }
}

/// Serves agents on streamable HTTP at `address`, each session (or, for agents without
/// sessions, each request) with a front of its own over the one server.
async fn listen(address: SocketAddr, shared: Arc<Shared>) -> Result<(), Failure> {
    if !address.ip().is_loopback() {
        // The proxy has no authentication of its own, and rmcp's listener takes only
        // loopback hosts (DNS rebinding): serving others is a reverse proxy's job.
        return Err(Failure::usage(format!(
            "--listen {address}: give a loopback address (127.0.0.1:PORT); to serve other \
             machines, put an HTTP server with authentication in front of it"
        )));
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| Failure::refused(format!("cannot listen on {address}: {error}")))?;
    let bound = listener.local_addr().unwrap_or(address);
    note!("idem mcp-proxy: listening on http://{bound}/mcp");
    let failed = listener::serve(listener, move || Front::new(Arc::clone(&shared))).await;
    Err(Failure::refused(format!(
        "cannot accept on {bound}: {failed}"
    )))
}

/// The server's identity in keys: its name and a digest of how it is reached (its command
/// line or URL), so that two servers of the same name, or one server started against two
/// databases, never share results. `server = "…"` in the configuration replaces it, for a
/// fleet whose machines start the same server with different paths.
fn default_identity(name: Option<&str>, upstream: &Upstream) -> String {
    use sha2::Digest as _;
    let launch: Vec<u8> = match upstream {
        Upstream::Command(argv) => argv.join("\0").into_bytes(),
        Upstream::Url(url) => url.clone().into_bytes(),
    };
    let digest = sha2::Sha256::digest(&launch);
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}@{short}", name.unwrap_or("mcp-server"))
}

/// What the agents are told of the server: what it told the proxy, without the extensions
/// (tasks, skills, …) whose methods the proxy does not pass on.
fn server_config(told: &rmcp::model::ServerPeerInfo) -> Result<rmcp::model::ServerConfig, Failure> {
    let mut value = serde_json::to_value(told).map_err(|error| {
        Failure::refused(format!("cannot read the server's description: {error}"))
    })?;
    if let Some(capabilities) = value
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    {
        capabilities.remove("extensions");
    }
    if value.get("serverInfo").is_none() {
        value["serverInfo"] = serde_json::json!({ "name": "mcp-server", "version": "" });
    }
    serde_json::from_value(value)
        .map_err(|error| Failure::refused(format!("cannot read the server's description: {error}")))
}

/// Tools named in the configuration that the server does not list are most likely typos.
async fn warn_of_unknown_tools(shared: &Shared) {
    for name in shared.config.tool_names() {
        if let Ok(None) = shared.tool_listed(name).await {
            note!("idem mcp-proxy: the configuration names tool `{name}`, which the server does not list");
        }
    }
}

/// The store of a proxy given none: a SQLite file in the user's state directory, so that
/// every proxy an MCP client starts (in whatever directory) shares it.
fn default_store() -> Result<String, Failure> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .ok_or_else(|| {
            Failure::usage("no store given and no HOME to keep one in: pass --store URL")
        })?;
    let dir = base.join("idem");
    std::fs::create_dir_all(&dir)
        .map_err(|error| Failure::refused(format!("cannot create {}: {error}", dir.display())))?;
    let path = dir.join("mcp-proxy.db");
    Ok(format!("sqlite://{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{default_identity, Upstream};

    #[test]
    fn servers_reached_differently_never_share_an_identity() {
        let command =
            |args: &[&str]| Upstream::Command(args.iter().map(|a| (*a).to_owned()).collect());
        let a = default_identity(Some("sql"), &command(&["sql-server", "--db", "a.db"]));
        let b = default_identity(Some("sql"), &command(&["sql-server", "--db", "b.db"]));
        assert_ne!(a, b, "one server against two databases");
        assert!(a.starts_with("sql@"), "{a}");
        assert_eq!(
            a,
            default_identity(Some("sql"), &command(&["sql-server", "--db", "a.db"]))
        );
        // Arguments are not run together: `a b` and `ab` differ.
        let joined = default_identity(Some("sql"), &command(&["sql-server", "--dba.db"]));
        assert_ne!(a, joined);
        let url = default_identity(None, &Upstream::Url("http://127.0.0.1:9/mcp".into()));
        assert!(url.starts_with("mcp-server@"), "{url}");
    }
}
