//! The tools' error and receipt types, shared by the `ops_demo` example and the command's
//! tests (`tests/cli.rs` includes this file), so that both fill stores with the same records.

use serde::{Deserialize, Serialize};

/// The error of the tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToolError {
    /// Worth retrying (a service down, a timeout): the key is released.
    Unavailable(String),
    /// Final: recorded with `cache_err`.
    Declined(String),
    /// idem refused or failed.
    Idem(String),
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        ToolError::Idem(error.to_string())
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Unavailable(why) => write!(f, "unavailable: {why}"),
            ToolError::Declined(why) => write!(f, "declined: {why}"),
            ToolError::Idem(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ToolError {}

impl ToolError {
    /// Whether the error will not change: recorded and replayed (`cache_err`).
    pub fn is_final(&self) -> bool {
        matches!(self, ToolError::Declined(_))
    }

    /// Whether the service may have acted before failing (`in_doubt`).
    #[allow(dead_code)] // used by the tests, not by the example
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ToolError::Unavailable(_))
    }
}

/// What the quote email tool returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The message's id.
    pub message_id: String,
    /// Its recipient.
    pub to: String,
}
