//! Feature `rmcp`: idem's errors as MCP errors, for `#[idempotent]` tools of `rmcp` (the
//! official Rust MCP SDK) that return `Result<CallToolResult, rmcp::ErrorData>`.
//!
//! The error reaches the client as a JSON-RPC error of `tools/call`: its message is the
//! error's own sentence, and its `data` says what the client can do with it:
//!
//! ```json
//! { "idem": "in_progress", "key": "3f2a…", "action": "AgentTools::send_email", "retry": true }
//! ```
//!
//! | idem error | MCP error | `data.idem` | `data.retry` |
//! |---|---|---|---|
//! | `InProgress` (another call of the same key is running) | `-32603` internal error | `in_progress` | `true`: the same call later gets its result |
//! | `PayloadMismatch` (the key was first used with other arguments) | `-32602` invalid params | `payload_mismatch` | `false` |
//! | `NeedsReview`, `StepInDoubt`, `SagaNeedsAttention` (an operator must look) | `-32603` internal error | `needs_review` | `false` |
//! | `Store` (the store failed, nothing ran) | `-32603` internal error | `store` | `true` |
//! | any other | `-32603` internal error | its name (`codec`, `lost_ownership`, …) | `false` |
//!
//! `key` is there when the error has one (a hash, never the arguments), `action` when it
//! has one; sagas' errors carry `saga` (and `step`) instead.

use ::rmcp::model::ErrorCode;
use ::rmcp::ErrorData;
use serde_json::{json, Map, Value};

use crate::Error;

/// The word `data.idem` gives for an error.
fn kind(error: &Error) -> &'static str {
    match error {
        Error::InProgress { .. } => "in_progress",
        Error::PayloadMismatch { .. } => "payload_mismatch",
        Error::NeedsReview { .. }
        | Error::StepInDoubt { .. }
        | Error::SagaNeedsAttention { .. } => "needs_review",
        Error::LostOwnership { .. } => "lost_ownership",
        Error::Store { .. } => "store",
        Error::Codec { .. } => "codec",
        Error::NoStore { .. } => "no_store",
        Error::SagaRolledBack { .. } => "saga_rolled_back",
        Error::SagaResolved { .. } => "saga_resolved",
        Error::ActionClash { .. } => "action_clash",
        Error::SagaLog { .. } => "saga_log",
        Error::TooLarge { .. } => "too_large",
    }
}

/// The names the error carries besides its key: its action, or its saga and step.
fn names(error: &Error, data: &mut Map<String, Value>) {
    match error {
        Error::InProgress { action, .. }
        | Error::PayloadMismatch { action, .. }
        | Error::LostOwnership { action, .. }
        | Error::NeedsReview { action, .. }
        | Error::NoStore { action } => {
            data.insert("action".into(), json!(action));
        }
        Error::ActionClash { action, .. } => {
            data.insert("action".into(), json!(action));
        }
        Error::StepInDoubt { saga, step, .. } => {
            data.insert("saga".into(), json!(saga));
            data.insert("step".into(), json!(step));
        }
        Error::SagaRolledBack { saga, .. }
        | Error::SagaNeedsAttention { saga, .. }
        | Error::SagaResolved { saga, .. }
        | Error::SagaLog { saga, .. } => {
            data.insert("saga".into(), json!(saga));
        }
        Error::Store { .. } | Error::Codec { .. } | Error::TooLarge { .. } => {}
    }
}

/// idem's error as the MCP error of the tool call: `-32602` (invalid params) for arguments
/// that do not fit the key's first call, `-32603` (internal error) for the others, with the
/// key, the action and whether the same call may succeed later in `data` (table in the
/// module's docs).
impl From<Error> for ErrorData {
    fn from(error: Error) -> Self {
        let mut data = Map::new();
        data.insert("idem".into(), json!(kind(&error)));
        if let Some(key) = error.key() {
            data.insert("key".into(), json!(key.to_string()));
        }
        names(&error, &mut data);
        data.insert("retry".into(), json!(error.is_transient()));
        let code = match error {
            Error::PayloadMismatch { .. } => ErrorCode::INVALID_PARAMS,
            _ => ErrorCode::INTERNAL_ERROR,
        };
        ErrorData::new(code, error.to_string(), Some(Value::Object(data)))
    }
}

#[cfg(test)]
mod tests {
    use ::rmcp::model::ErrorCode;
    use ::rmcp::ErrorData;
    use serde_json::json;

    use crate::{Action, Error};

    fn key() -> crate::key::Key {
        Action::new("send_email").key(&("ada",)).expect("a key")
    }

    #[test]
    fn in_progress_is_an_internal_error_the_client_may_retry() {
        let key = key();
        let error = ErrorData::from(Error::InProgress {
            key,
            action: "AgentTools::send_email",
        });
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert!(error.message.contains("in progress"), "{}", error.message);
        assert_eq!(
            error.data,
            Some(json!({
                "idem": "in_progress",
                "key": key.to_string(),
                "action": "AgentTools::send_email",
                "retry": true,
            }))
        );
    }

    #[test]
    fn payload_mismatch_is_invalid_params() {
        let key = key();
        let error = ErrorData::from(Error::PayloadMismatch {
            key,
            action: "charge_card",
        });
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert!(
            error.message.contains("different arguments"),
            "{}",
            error.message
        );
        assert_eq!(
            error.data,
            Some(json!({
                "idem": "payload_mismatch",
                "key": key.to_string(),
                "action": "charge_card",
                "retry": false,
            }))
        );
    }

    #[test]
    fn needs_review_asks_for_an_operator_with_the_key() {
        let key = key();
        let error = ErrorData::from(Error::NeedsReview {
            key,
            action: "charge_card",
        });
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert!(error.message.contains("operator"), "{}", error.message);
        assert_eq!(
            error.data,
            Some(json!({
                "idem": "needs_review",
                "key": key.to_string(),
                "action": "charge_card",
                "retry": false,
            }))
        );
    }

    #[test]
    fn a_step_in_doubt_asks_for_an_operator_with_the_saga_and_step() {
        let error = ErrorData::from(Error::StepInDoubt {
            saga: "order-42".into(),
            step: "charge".into(),
            problem: "its owner died".into(),
        });
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            error.data,
            Some(json!({
                "idem": "needs_review",
                "saga": "order-42",
                "step": "charge",
                "retry": false,
            }))
        );
    }

    #[test]
    fn a_store_failure_is_internal_and_may_be_retried() {
        let key = key();
        let error = ErrorData::from(Error::store("sqlite", Some(&key), "disk I/O error"));
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert!(
            error.message.contains("disk I/O error"),
            "{}",
            error.message
        );
        assert_eq!(
            error.data,
            Some(json!({ "idem": "store", "key": key.to_string(), "retry": true }))
        );
    }

    #[test]
    fn the_others_are_internal_errors() {
        let key = key();
        let lost = ErrorData::from(Error::LostOwnership {
            key,
            action: "send_email",
        });
        assert_eq!(lost.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            lost.data,
            Some(json!({
                "idem": "lost_ownership",
                "key": key.to_string(),
                "action": "send_email",
                "retry": false,
            }))
        );
        let codec = ErrorData::from(Error::codec("the recorded result", Some(&key), "eof"));
        assert_eq!(codec.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            codec.data,
            Some(json!({ "idem": "codec", "key": key.to_string(), "retry": false }))
        );
        let no_store = ErrorData::from(Error::NoStore {
            action: "send_email",
        });
        assert_eq!(no_store.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(
            no_store.data,
            Some(json!({ "idem": "no_store", "action": "send_email", "retry": false }))
        );
    }
}
