#![deny(warnings)]

use idem::idempotent;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

#[derive(Serialize)]
pub struct Order {
    pub id: u64,
    pub lines: Vec<String>,
}

#[idempotent]
pub async fn place(
    customer: String,
    order: &Order,
    tags: &[&str],
    metadata: HashMap<String, String>,
    mut attempts: u32,
    note: Option<&str>,
) -> Result<u64, ToolError> {
    attempts += 1;
    let _ = (customer, tags, metadata, note, attempts);
    Ok(order.id)
}

fn main() {}
