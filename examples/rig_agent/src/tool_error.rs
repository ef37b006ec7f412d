//! The tools' error, shared by the program and its tests (`tests/tools.rs` includes this file).

/// What a tool fails with. rig needs a `std::error::Error + Send + Sync`; idem needs
/// `From<idem::Error>`, how its refusals (another call in progress, the same key with other
/// arguments, a store that is down) reach the agent as this tool's error.
#[derive(Debug)]
pub(crate) enum ToolError {
    Idem(idem::Error),
    Context(rig::tool::ToolContextError),
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        ToolError::Idem(error)
    }
}

impl From<rig::tool::ToolContextError> for ToolError {
    fn from(error: rig::tool::ToolContextError) -> Self {
        ToolError::Context(error)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Idem(error) => write!(f, "{error}"),
            ToolError::Context(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ToolError {}
