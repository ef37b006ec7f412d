#![deny(warnings)]

use idem::idempotent;
use serde::Serialize;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

#[idempotent]
pub async fn record<T: Serialize>(event: T) -> Result<(), ToolError> {
    let _ = event;
    Ok(())
}

#[idempotent]
pub async fn record_where<T>(event: &T, count: u32) -> Result<u32, ToolError>
where
    T: Serialize + ?Sized,
{
    let _ = event;
    Ok(count)
}

fn main() {}
