//! The proxy's side towards the real server: connecting to it (a child process on stdio, or a
//! streamable-HTTP URL), and passing what it asks of the client (elicitation, sampling,
//! roots) and what it tells it (progress, log messages, changed lists) to the agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::model::{
    CancelledNotificationParam, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
    CreateMessageResult, CustomNotification, CustomRequest, CustomResult, ElicitRequestParams,
    ElicitResult, Implementation, ListRootsResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProgressToken, ResourceUpdatedNotificationParam,
};
use rmcp::model::{ClientResult, Request, RequestNoParam, ServerRequest};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServiceExt};

/// Where the real server is.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// A command started as a child, spoken to on its stdin and stdout.
    Command(Vec<String>),
    /// A streamable-HTTP MCP endpoint.
    Url(String),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Command(argv) => write!(f, "{}", argv.join(" ")),
            Upstream::Url(url) => write!(f, "{url}"),
        }
    }
}

impl Upstream {
    /// Starts or reaches the server and initializes a session with it.
    pub(crate) async fn connect(
        &self,
        agents: Arc<Agents>,
    ) -> Result<RunningService<RoleClient, ToAgents>, String> {
        let client = ToAgents { agents };
        match self {
            Upstream::Command(argv) => {
                let (program, args) = argv.split_first().ok_or("no server command after `--`")?;
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let child = TokioChildProcess::new(command)
                    .map_err(|error| format!("cannot start `{self}`: {error}"))?;
                client
                    .serve(child)
                    .await
                    .map_err(|error| format!("`{self}` did not start as an MCP server: {error}"))
            }
            Upstream::Url(url) => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                client
                    .serve(transport)
                    .await
                    .map_err(|error| format!("no MCP server answered at {url}: {error}"))
            }
        }
    }
}

/// The agents the proxy serves, for routing what the server sends them: the sessions, the
/// tool calls in flight (whose agent a question from the server belongs to), and the
/// progress tokens the proxy put on the server's calls in place of the agents' own.
#[derive(Debug, Default)]
pub(crate) struct Agents {
    next: AtomicU64,
    state: Mutex<Routes>,
    /// Tool calls being answered (from the agent's request to the proxy's answer, store
    /// writes included), and a wake-up when the last one ends.
    tool_calls: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// A tool call being answered, counted until it is dropped.
#[derive(Debug)]
pub(crate) struct ToolCall<'a>(&'a Agents);

impl Drop for ToolCall<'_> {
    fn drop(&mut self) {
        if self.0.tool_calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[derive(Debug, Default)]
struct Routes {
    /// Sessions that sent `initialize` (a stdio proxy has one), for notifications that go
    /// with no call.
    sessions: Vec<(u64, Peer<RoleServer>)>,
    /// Calls waiting for the server: the session and the agent that made each.
    in_flight: HashMap<u64, (u64, Peer<RoleServer>)>,
    /// The proxy's progress token on a call to the server → the agent and its own token.
    progress: HashMap<ProgressToken, (Peer<RoleServer>, ProgressToken)>,
}

/// A call registered in flight, unregistered when dropped (however the call ends).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    agents: &'a Agents,
    id: u64,
    progress: Option<ProgressToken>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut routes = self.agents.routes();
        routes.in_flight.remove(&self.id);
        if let Some(token) = &self.progress {
            routes.progress.remove(token);
        }
    }
}

impl InFlight<'_> {
    /// The server's progress on this call (under `ours`) reaches the agent under `theirs`.
    pub(crate) fn forward_progress(&mut self, ours: ProgressToken, theirs: ProgressToken) {
        let mut routes = self.agents.routes();
        let Some((_, agent)) = routes.in_flight.get(&self.id).cloned() else {
            return;
        };
        routes.progress.insert(ours.clone(), (agent, theirs));
        self.progress = Some(ours);
    }
}

impl Agents {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A number for a new session (a stdio proxy has one; the HTTP listener makes one per
    /// session, or per request for agents without sessions).
    pub(crate) fn new_session(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Session `session` initialized: notifications that go with no call reach it.
    pub(crate) fn session_started(&self, session: u64, agent: Peer<RoleServer>) {
        let mut routes = self.routes();
        // A session of the HTTP listener whose transport has closed is gone.
        routes
            .sessions
            .retain(|(id, peer)| *id != session && !peer.is_transport_closed());
        routes.sessions.push((session, agent));
    }

    /// A tool call starts: counted until the returned guard is dropped.
    pub(crate) fn tool_call(&self) -> ToolCall<'_> {
        self.tool_calls.fetch_add(1, Ordering::AcqRel);
        ToolCall(self)
    }

    /// Waits, at most `at_most`, until no tool call is being answered.
    pub(crate) async fn until_idle(&self, at_most: std::time::Duration) {
        let waiting = async {
            loop {
                let idle = self.idle.notified();
                if self.tool_calls.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(at_most, waiting).await;
    }

    /// A call of `agent`, in session `session`, now waits for the server.
    pub(crate) fn call_started(&self, session: u64, agent: Peer<RoleServer>) -> InFlight<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.routes().in_flight.insert(id, (session, agent));
        InFlight {
            agents: self,
            id,
            progress: None,
        }
    }

    /// The agent a request from the server is for: the session whose calls are in flight,
    /// or, with none in flight, the only session. With calls of several sessions in flight
    /// the request could belong to any of them: it is refused rather than sent to a guess.
    fn agent_for_request(&self, what: &str) -> Result<Peer<RoleServer>, ErrorData> {
        let routes = self.routes();
        let mut sessions = routes.in_flight.values().map(|(session, _)| *session);
        let refused = |why: String| {
            Err(ErrorData::internal_error(
                format!("idem mcp-proxy: {why}"),
                None,
            ))
        };
        match sessions.next() {
            Some(first) if sessions.all(|other| other == first) => {
                let (_, agent) = routes.in_flight.values().next().cloned().expect("one call");
                Ok(agent)
            }
            Some(_) => refused(format!(
                "the server's {what} could be for any of several agents with tool calls in \
                 flight; it is sent on only when the calls in flight are one agent's"
            )),
            None => match routes.sessions.as_slice() {
                [(_, only)] => Ok(only.clone()),
                _ => refused(format!("no single agent to send the server's {what} to")),
            },
        }
    }

    /// The agent a notification from the server is for (as a request's), or `None` to drop it.
    fn agent_for_notification(&self) -> Option<Peer<RoleServer>> {
        self.agent_for_request("notification").ok()
    }
}

/// The proxy as the server's client: what the server asks of its client goes to the agent.
#[derive(Debug, Clone)]
pub(crate) struct ToAgents {
    agents: Arc<Agents>,
}

/// The agent's error, or the transport's, as the answer to the server.
fn passed_back(error: rmcp::ServiceError) -> ErrorData {
    super::not_answered_by("the agent", error)
}

impl ToAgents {
    /// Sends the server's request to the agent it is for (see [`Agents::agent_for_request`])
    /// and returns the agent's answer. If the server gives up on its request first, the
    /// agent is told so, under the id the proxy gave the request (not the server's).
    async fn ask(
        &self,
        what: &str,
        request: ServerRequest,
        context: &RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let agent = self.agents.agent_for_request(what)?;
        let handle = agent
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(passed_back)?;
        let id = handle.id.clone();
        tokio::select! {
            answer = handle.await_response() => answer.map_err(passed_back),
            () = context.ct.cancelled() => {
                let cancelled = CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the server".into()),
                );
                let _ = agent.notify_cancelled(cancelled).await;
                Err(ErrorData::internal_error("idem mcp-proxy: the server cancelled its request", None))
            }
        }
    }
}

/// An answer of the agent that is not the one its request asks for.
fn unexpected(answer: &ClientResult) -> ErrorData {
    ErrorData::internal_error(
        format!("idem mcp-proxy: the agent answered with something else: {answer:?}"),
        None,
    )
}

impl ClientHandler for ToAgents {
    fn get_info(&self) -> ClientConfig {
        // The proxy cannot know what its agents support before they connect: it offers the
        // server everything, and an agent that lacks it answers the server with an error.
        let capabilities: ClientCapabilities = serde_json::from_value(serde_json::json!({
            "elicitation": {},
            "sampling": {},
            "roots": { "listChanged": true },
        }))
        .unwrap_or_default();
        let implementation: Implementation = serde_json::from_value(serde_json::json!({
            "name": "idem-mcp-proxy",
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .unwrap_or_default();
        ClientConfig::new(capabilities, implementation)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(Request::new(request));
        match self
            .ask("question (elicitation)", request, &context)
            .await?
        {
            ClientResult::ElicitResult(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(Request::new(params));
        match self.ask("sampling request", request, &context).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            other => Err(unexpected(&other)),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(RequestNoParam {
            method: Default::default(),
            extensions: Default::default(),
        });
        match self.ask("roots request", request, &context).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            other => Err(unexpected(&other)),
        }
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<CustomResult, ErrorData> {
        let request = ServerRequest::CustomRequest(request);
        match self.ask("request", request, &context).await? {
            ClientResult::CustomResult(result) => Ok(result),
            other => Ok(CustomResult::new(
                serde_json::to_value(other).unwrap_or_default(),
            )),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let route = self
            .agents
            .routes()
            .progress
            .get(&params.progress_token)
            .cloned();
        if let Some((agent, theirs)) = route {
            let mut params = params;
            params.progress_token = theirs;
            let _ = agent.notify_progress(params).await;
        }
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent.notify_logging_message(params).await;
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent.notify_resource_updated(params).await;
        }
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent.notify_resource_list_changed().await;
        }
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent.notify_tool_list_changed().await;
        }
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent.notify_prompt_list_changed().await;
        }
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _: NotificationContext<RoleClient>,
    ) {
        if let Some(agent) = self.agents.agent_for_notification() {
            let _ = agent
                .send_notification(rmcp::model::ServerNotification::CustomNotification(
                    notification,
                ))
                .await;
        }
    }
}
