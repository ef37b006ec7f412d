//! The proxy's side towards the agent: an MCP server that answers `tools/call` through idem
//! and passes every other request to the real server unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use idem_runtime::store::Store;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    CancelledNotificationParam, ClientRequest, CompleteRequestParams, CompleteResult,
    CustomNotification, CustomRequest, CustomResult, GetPromptRequestParams, GetPromptResponse,
    InitializeRequestParams, InitializeResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerConfig, ServerResult, SetLevelRequestParams,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext};
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError};

use super::config::Config;
use super::dedup::{judge, NotRecorded, Tools, Unanswered};
use super::upstream::Agents;

/// What every session of the proxy shares: the store, the configuration, the server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    pub(crate) server: Peer<RoleClient>,
    /// What the server said of itself at `initialize`: what the agents are told.
    pub(crate) info: ServerConfig,
    pub(crate) agents: Arc<Agents>,
    pub(crate) tools: Tools,
    /// The server's tools by name: whether each is read-only by its annotations.
    listed: Mutex<HashMap<String, bool>>,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: Config,
        id: &str,
        server: Peer<RoleClient>,
        info: ServerConfig,
        agents: Arc<Agents>,
    ) -> Self {
        let tools = Tools::new(id, config.version);
        Shared {
            store,
            config,
            server,
            info,
            agents,
            tools,
            listed: Mutex::new(HashMap::new()),
        }
    }

    /// Learns the server's tools (and whether each is read-only) from a listing.
    fn learn(&self, listing: &ListToolsResult) {
        let mut listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        for tool in &listing.tools {
            let read_only = tool
                .annotations
                .as_ref()
                .is_some_and(|a| a.read_only_hint == Some(true));
            listed.insert(tool.name.to_string(), read_only);
        }
    }

    fn known(&self, name: &str) -> Option<bool> {
        let listed = self.listed.lock().unwrap_or_else(PoisonError::into_inner);
        listed.get(name).copied()
    }

    /// Whether the server lists tool `name`, and if so whether it is read-only: asked of the
    /// server again when the name is new (its list may have changed).
    pub(crate) async fn tool_listed(&self, name: &str) -> Result<Option<bool>, ErrorData> {
        if let Some(read_only) = self.known(name) {
            return Ok(Some(read_only));
        }
        let tools = self.server.list_all_tools().await.map_err(unanswered)?;
        self.learn(&ListToolsResult::with_all_items(tools));
        Ok(self.known(name))
    }
}

/// One agent's session with the proxy (a stdio proxy has one).
#[derive(Debug, Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    session: u64,
}

impl Front {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let session = shared.agents.new_session();
        Front { shared, session }
    }

    /// Sends the call to the server and waits for its answer, passing on its progress, and
    /// the agent's cancellation.
    async fn send(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, Unanswered> {
        let mut in_flight = self
            .shared
            .agents
            .call_started(self.session, context.peer.clone());
        if context.ct.is_cancelled() {
            // Given up before it was sent (while it waited for a duplicate, say): nothing ran.
            return Err(Unanswered::NotSent(ErrorData::invalid_request(
                "idem mcp-proxy: the agent cancelled the call before it was sent",
                None,
            )));
        }
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let handle = self
            .shared
            .server
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(|error| Unanswered::NotSent(unanswered(error)))?;
        if let Some(theirs) = context.meta.get_progress_token() {
            in_flight.forward_progress(handle.progress_token.clone(), theirs);
        }
        let id = handle.id.clone();
        let answer = tokio::select! {
            answer = handle.await_response() => answer,
            () = context.ct.cancelled() => {
                // The agent gave up: the server is told, but the call may already have
                // taken effect.
                let _ = self
                    .shared
                    .server
                    .notify_cancelled(CancelledNotificationParam::new(
                        Some(id),
                        Some("cancelled by the agent".into()),
                    ))
                    .await;
                return Err(Unanswered::Lost(ErrorData::internal_error(
                    "the agent cancelled the call after it was sent to the server",
                    None,
                )));
            }
        };
        match answer {
            Ok(ServerResult::CallToolResult(result)) => Ok(CallToolResponse::Complete(result)),
            Ok(ServerResult::InputRequiredResult(result)) => {
                Ok(CallToolResponse::InputRequired(result))
            }
            Ok(ServerResult::CreateTaskResult(result)) => Ok(CallToolResponse::Task(result)),
            Ok(other) => Err(Unanswered::Lost(ErrorData::internal_error(
                format!("the server answered the tool call with something else: {other:?}"),
                None,
            ))),
            Err(ServiceError::McpError(error)) => Err(Unanswered::Error(error)),
            Err(error) => Err(Unanswered::Lost(ErrorData::internal_error(
                format!("the server did not answer: {error}"),
                None,
            ))),
        }
    }

    /// A call passed through as it is, recorded nowhere.
    async fn pass(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.send(params, context)
            .await
            .map_err(Unanswered::into_error)
    }
}

/// The server's error as it is, or the proxy's word for a server that did not answer.
fn unanswered(error: ServiceError) -> ErrorData {
    super::not_answered_by("the server", error)
}

impl ServerHandler for Front {
    fn get_info(&self) -> ServerConfig {
        self.shared.info.clone()
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        self.shared
            .agents
            .session_started(self.session, context.peer.clone());
        self.negotiate_initialize(&request)
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let shared = &*self.shared;
        let _answering = shared.agents.tool_call();
        // A tool the server does not list goes to it as it is (and its answer says so).
        let Some(read_only) = shared.tool_listed(&params.name).await? else {
            return self.pass(params, &context).await;
        };
        let tool = shared.tools.tool(&shared.config, &params.name, read_only);
        if tool.policy.off {
            return self.pass(params, &context).await;
        }
        let call = tool
            .call(params.arguments.as_ref())
            .map_err(ErrorData::from)?;
        let key = call.key().to_string();
        let outcome = call
            .run_in_doubt_on::<CallToolResult, NotRecorded, _>(
                &*shared.store,
                NotRecorded::is_in_doubt,
                async {
                    let response = self.send(params, &context).await?;
                    judge(response, &tool.policy)
                },
            )
            .await;
        match outcome {
            Ok(outcome) => Ok(CallToolResponse::Complete(outcome.into_inner())),
            Err(not_recorded) => not_recorded.into_answer(&key, &tool.policy),
        }
    }

    async fn list_tools(
        &self,
        params: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let listing = self
            .shared
            .server
            .list_tools(params)
            .await
            .map_err(unanswered)?;
        self.shared.learn(&listing);
        Ok(listing)
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.shared
            .server
            .complete(params)
            .await
            .map_err(unanswered)
    }

    async fn set_level(
        &self,
        params: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared
            .server
            .set_level(params)
            .await
            .map_err(unanswered)
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.shared
            .server
            .get_prompt_once(params)
            .await
            .map_err(unanswered)
    }

    async fn list_prompts(
        &self,
        params: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.shared
            .server
            .list_prompts(params)
            .await
            .map_err(unanswered)
    }

    async fn list_resources(
        &self,
        params: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.shared
            .server
            .list_resources(params)
            .await
            .map_err(unanswered)
    }

    async fn list_resource_templates(
        &self,
        params: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.shared
            .server
            .list_resource_templates(params)
            .await
            .map_err(unanswered)
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.shared
            .server
            .read_resource_once(params)
            .await
            .map_err(unanswered)
    }

    async fn subscribe(
        &self,
        params: SubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared
            .server
            .subscribe(params)
            .await
            .map_err(unanswered)
    }

    async fn unsubscribe(
        &self,
        params: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared
            .server
            .unsubscribe(params)
            .await
            .map_err(unanswered)
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let answer = self
            .shared
            .server
            .send_request(ClientRequest::CustomRequest(request))
            .await
            .map_err(unanswered)?;
        match answer {
            ServerResult::CustomResult(result) => Ok(result),
            other => Ok(CustomResult::new(
                serde_json::to_value(other).unwrap_or_default(),
            )),
        }
    }

    async fn on_roots_list_changed(&self, _: NotificationContext<RoleServer>) {
        let _ = self.shared.server.notify_roots_list_changed().await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _: NotificationContext<RoleServer>,
    ) {
        let _ = self
            .shared
            .server
            .send_notification(rmcp::model::ClientNotification::CustomNotification(
                notification,
            ))
            .await;
    }
}
