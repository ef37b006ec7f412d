//! A `tools/call` through idem's claim protocol: its key, the call to the server as the body,
//! and what each way the server answers means for the key.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use idem_runtime::{Action, Error};
use rmcp::model::{CallToolResponse, CallToolResult, ErrorCode, JsonObject};
use rmcp::ErrorData;
use serde_json::{json, Value};

use super::config::{Config, ToolPolicy};

/// The `data.idem` of idem's own MCP errors that say the call did not run (feature `rmcp`,
/// `idem_runtime::rmcp`): another call holds the key, other arguments under it, a key
/// waiting for review.
const IDEM_REFUSALS: [&str; 3] = ["in_progress", "payload_mismatch", "needs_review"];

/// Why the server gave no result for a call.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// The call could not be sent (the server is gone): it never ran.
    NotSent(ErrorData),
    /// The server answered with an MCP error.
    Error(ErrorData),
    /// The call was sent and no answer will come: the connection was lost, the agent
    /// cancelled it, or the answer was not a tool call's.
    Lost(ErrorData),
}

impl Unanswered {
    /// The error the agent gets for a call passed through.
    pub(crate) fn into_error(self) -> ErrorData {
        match self {
            Unanswered::NotSent(error) | Unanswered::Error(error) | Unanswered::Lost(error) => {
                error
            }
        }
    }
}

impl From<Unanswered> for NotRecorded {
    fn from(unanswered: Unanswered) -> Self {
        match unanswered {
            Unanswered::NotSent(error) => NotRecorded::Refused(error),
            Unanswered::Error(error) => NotRecorded::from_server(error),
            Unanswered::Lost(error) => NotRecorded::InDoubt(error),
        }
    }
}

/// Why a deduplicated call did not end with a result to record.
#[derive(Debug)]
pub(crate) enum NotRecorded {
    /// The server answered with an MCP error that says the call was refused before it ran
    /// (an invalid request or arguments, an unknown tool, a question declined): the key is
    /// released and the error passed on.
    Refused(ErrorData),
    /// A result with `isError: true`, not to be recorded (`record_errors = false`): the key
    /// is released, the result passed on, and a retry runs the tool again.
    ToolError(Box<CallToolResult>),
    /// The server asks for more input (MRTR's `input_required`): not the call's answer.
    /// The key is released; the retry that brings the input runs it.
    NotFinal(Box<CallToolResponse>),
    /// The call's effect may have happened, and nobody can tell: the server's connection was
    /// lost mid-call, the agent cancelled it after it was sent, or the server failed with an
    /// internal error. The key is left in doubt.
    InDoubt(ErrorData),
    /// idem refused the call or failed (another call holds the key, other arguments under
    /// the key, a key waiting for review, the store failed).
    Idem(Error),
}

impl From<Error> for NotRecorded {
    fn from(error: Error) -> Self {
        NotRecorded::Idem(error)
    }
}

impl NotRecorded {
    /// For `Call::run_in_doubt_on`.
    pub(crate) fn is_in_doubt(&self) -> bool {
        matches!(self, NotRecorded::InDoubt(_))
    }

    /// An MCP error from the server: refused before anything ran, or in doubt. The codes of
    /// JSON-RPC's own refusals (parse error, invalid request, unknown method, invalid params)
    /// say the request never reached the tool's effect; an internal error or a server's own
    /// code may come after it (as an HTTP 5xx may).
    fn from_server(error: ErrorData) -> Self {
        let refused = [
            ErrorCode::PARSE_ERROR,
            ErrorCode::INVALID_REQUEST,
            ErrorCode::METHOD_NOT_FOUND,
            ErrorCode::INVALID_PARAMS,
        ];
        // An idem-wrapped server's own refusal: nothing ran, that server holds the truth.
        let idem_refusal = error
            .data
            .as_ref()
            .and_then(|data| data.get("idem"))
            .and_then(Value::as_str)
            .is_some_and(|kind| IDEM_REFUSALS.contains(&kind));
        if refused.contains(&error.code) || idem_refusal {
            NotRecorded::Refused(error)
        } else {
            NotRecorded::InDoubt(error)
        }
    }

    /// What the agent gets: the server's own answer where there is one, else an MCP error
    /// that says what idem knows (the key, and whether the same call may succeed later).
    pub(crate) fn into_answer(
        self,
        key: &str,
        policy: &ToolPolicy,
    ) -> Result<CallToolResponse, ErrorData> {
        match self {
            NotRecorded::Refused(error) => Err(error),
            NotRecorded::ToolError(result) => Ok(CallToolResponse::Complete(*result)),
            NotRecorded::NotFinal(response) => Ok(*response),
            NotRecorded::Idem(error) => Err(ErrorData::from(error)),
            NotRecorded::InDoubt(cause) => {
                let next = match policy.on_stale {
                    idem_runtime::OnStale::Review => "the key waits for an operator (`idem show`, `idem settle`, `idem unlock`)",
                    _ => "the next call with the same arguments runs the tool again (a takeover in idem's record)",
                };
                Err(ErrorData::new(
                    ErrorCode::INTERNAL_ERROR,
                    format!(
                        "whether the tool call took effect is unknown ({}): {next}",
                        cause.message
                    ),
                    Some(json!({
                        "idem": "in_doubt",
                        "key": key,
                        "retry": policy.on_stale != idem_runtime::OnStale::Review,
                        "cause": { "code": cause.code.0, "message": cause.message, "data": cause.data },
                    })),
                ))
            }
        }
    }
}

/// The answer of a deduplicated call's body: a result to record, or why not.
pub(crate) fn judge(
    response: CallToolResponse,
    policy: &ToolPolicy,
) -> Result<CallToolResult, NotRecorded> {
    match response {
        CallToolResponse::Complete(result)
            if result.is_error == Some(true) && !policy.record_errors =>
        {
            Err(NotRecorded::ToolError(Box::new(result)))
        }
        CallToolResponse::Complete(result) => Ok(result),
        input @ CallToolResponse::InputRequired(_) => Err(NotRecorded::NotFinal(Box::new(input))),
        // A task is work the server has started, which the proxy cannot follow (it offers
        // its agents no tasks): the effect may happen, the key stays in doubt.
        _ => Err(NotRecorded::InDoubt(ErrorData::internal_error(
            "the server answered the tool call with a task, which idem mcp-proxy does not follow",
            None,
        ))),
    }
}

/// The deduplicated tools of one upstream: each tool's action (whose namespace, name and
/// version make its keys) and policy, made once per tool name.
#[derive(Debug)]
pub(crate) struct Tools {
    /// The upstream's identity in keys.
    server: &'static str,
    version: u32,
    made: Mutex<HashMap<String, &'static Tool>>,
}

/// One tool's action and policy.
#[derive(Debug)]
pub(crate) struct Tool {
    pub(crate) action: Action,
    pub(crate) policy: ToolPolicy,
}

impl Tools {
    pub(crate) fn new(server: &str, version: u32) -> Self {
        Tools {
            // An action's names are `'static`; these live as long as the proxy (one per tool
            // the server lists).
            server: Box::leak(format!("mcp:{server}").into_boxed_str()),
            version,
            made: Mutex::new(HashMap::new()),
        }
    }

    /// The tool `name` (which the server lists, `read_only` by its annotations), made on its
    /// first call.
    pub(crate) fn tool(&self, config: &Config, name: &str, read_only: bool) -> &'static Tool {
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tool) = made.get(name) {
            return tool;
        }
        let policy = config.policy(name, read_only);
        let action = Action::new(Box::leak(name.to_owned().into_boxed_str()))
            .namespace(self.server)
            .version(self.version)
            .ttl(policy.ttl)
            .lease(policy.lease)
            .on_conflict(policy.on_conflict)
            .on_stale(policy.on_stale);
        let tool: &'static Tool = Box::leak(Box::new(Tool { action, policy }));
        made.insert(name.to_owned(), tool);
        tool
    }
}

impl Tool {
    /// The call's key and payload: the key is made of the arguments the policy names (all of
    /// them by default; a pointer to nothing counts as `null`), the payload of all of them, so
    /// that the same key with other arguments is refused, never answered with another call's
    /// result. Omitted arguments are `{}`.
    pub(crate) fn call(
        &self,
        arguments: Option<&JsonObject>,
    ) -> Result<idem_runtime::Call<'_>, Error> {
        let all = arguments.map_or(Value::Null, |a| Value::Object(a.clone()));
        let Some(pointers) = &self.policy.key else {
            return self.action.call(&all);
        };
        let picked: Vec<&Value> = pointers
            .iter()
            .map(|pointer| all.pointer(pointer).unwrap_or(&Value::Null))
            .collect();
        self.action.call(&picked)?.with_payload(&all)
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ContentBlock, InputRequiredResult};

    use super::*;

    fn policy(record_errors: bool) -> ToolPolicy {
        let text = format!("[defaults]\nrecord_errors = {record_errors}");
        Config::parse(&text).unwrap().policy("send_email", false)
    }

    #[test]
    fn only_a_final_answer_is_recorded() {
        let ok = CallToolResult::success(vec![ContentBlock::text("sent")]);
        let failed = CallToolResult::error(vec![ContentBlock::text("declined")]);
        assert!(judge(CallToolResponse::Complete(ok), &policy(false)).is_ok());
        // An error result releases the key, unless the configuration records it.
        let released = judge(CallToolResponse::Complete(failed.clone()), &policy(false));
        assert!(matches!(released, Err(NotRecorded::ToolError(_))));
        assert!(judge(CallToolResponse::Complete(failed), &policy(true)).is_ok());
        // A call that ends asking for input is not the call's answer: never recorded.
        let asking =
            CallToolResponse::InputRequired(InputRequiredResult::new(None, Some("s".into())));
        assert!(matches!(
            judge(asking, &policy(true)),
            Err(NotRecorded::NotFinal(_))
        ));
    }

    #[test]
    fn a_servers_refusal_releases_the_key_and_its_failure_leaves_it_in_doubt() {
        let from = |error: ErrorData| NotRecorded::from(Unanswered::Error(error));
        assert!(!from(ErrorData::invalid_params("no such order", None)).is_in_doubt());
        assert!(!from(ErrorData::invalid_request("the user said no", None)).is_in_doubt());
        // An idem-wrapped server's own refusal: that server holds the truth.
        let busy = ErrorData::internal_error("in progress", Some(json!({ "idem": "in_progress" })));
        assert!(!from(busy).is_in_doubt());
        // An internal error may come after the effect, as an HTTP 5xx may.
        assert!(from(ErrorData::internal_error("database down", None)).is_in_doubt());
        assert!(
            NotRecorded::from(Unanswered::Lost(ErrorData::internal_error("cut", None)))
                .is_in_doubt()
        );
        assert!(
            !NotRecorded::from(Unanswered::NotSent(ErrorData::internal_error("gone", None)))
                .is_in_doubt()
        );
    }

    #[test]
    fn the_key_is_the_named_arguments_and_the_payload_all_of_them() {
        let config = Config::parse("[tools.send_email]\nkey = [\"/to\", \"/missing\"]").unwrap();
        let tools = Tools::new("mail", 1);
        let tool = tools.tool(&config, "send_email", false);
        let args = |body: &str| {
            json!({ "to": "ada@example.com", "body": body })
                .as_object()
                .cloned()
        };
        let first = tool.call(args("hello").as_ref()).unwrap();
        let other = tool.call(args("hi").as_ref()).unwrap();
        assert_eq!(first.key(), other.key(), "the body is not part of the key");
        let unnamed = tools.tool(&Config::default(), "create_ticket", false);
        let a = unnamed.call(args("hello").as_ref()).unwrap();
        let b = unnamed.call(args("hi").as_ref()).unwrap();
        assert_ne!(a.key(), b.key(), "without `key`, every argument is");
        // The same tool and arguments of another server, or another version: another key.
        let elsewhere = Tools::new("other", 1).tool(&Config::default(), "create_ticket", false);
        assert_ne!(
            elsewhere.call(args("hello").as_ref()).unwrap().key(),
            a.key()
        );
        let later = Tools::new("mail", 2).tool(&Config::default(), "create_ticket", false);
        assert_ne!(later.call(args("hello").as_ref()).unwrap().key(), a.key());
    }
}
