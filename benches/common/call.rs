//! The call the store benches (`stores`, `footprint`, `allocations`) make: a small serde
//! struct back, as a mail or payment API would answer. Taken in by each with
//! `#[path = "common/call.rs"] mod call;`.

use serde::{Deserialize, Serialize};

/// What the call returns, recorded and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: String,
    pub amount_cents: u64,
}

/// The call's error: idem's, carried.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
pub struct BenchError(idem::Error);

impl From<idem::Error> for BenchError {
    fn from(error: idem::Error) -> Self {
        BenchError(error)
    }
}
