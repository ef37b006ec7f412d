//! What the tests share: a tool error type, a counter of side effects, a receipt.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// The error type of the tools under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToolError {
    /// A failure worth retrying: the key is released.
    Transient(String),
    /// A failure that will not change: recorded with `cache_err`.
    Declined(String),
    /// idem refused or failed.
    Idem(String),
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        ToolError::Idem(error.to_string())
    }
}

impl ToolError {
    pub fn is_final(&self) -> bool {
        matches!(self, ToolError::Declined(_))
    }
}

/// What a tool returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
}

/// Counts how often a body ran: the side effects.
#[derive(Debug, Default)]
pub struct Ledger(AtomicUsize);

impl Ledger {
    pub const fn new() -> Self {
        Ledger(AtomicUsize::new(0))
    }

    /// Records one side effect and returns its number, from 1.
    pub fn record(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Transient(why) => write!(f, "transient: {why}"),
            ToolError::Declined(why) => write!(f, "declined: {why}"),
            ToolError::Idem(why) => write!(f, "idem: {why}"),
        }
    }
}
