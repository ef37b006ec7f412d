#![deny(warnings)]

use idem::idempotent;
use tracing::instrument;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

#[instrument(skip_all)]
#[idempotent]
pub async fn instrumented_outside(order_id: u64) -> Result<u64, ToolError> {
    Ok(order_id)
}

#[idempotent]
#[instrument(skip_all)]
pub async fn instrumented_inside(order_id: u64) -> Result<u64, ToolError> {
    Ok(order_id)
}

#[idempotent(ttl = "1h")]
#[instrument(fields(order_id), err(Debug))]
pub async fn instrumented_with_fields(order_id: u64) -> Result<u64, ToolError> {
    Ok(order_id)
}

fn main() {}
