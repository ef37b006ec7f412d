#![deny(warnings)]

use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
}

#[derive(Serialize)]
pub struct Order {
    pub id: u64,
    pub total_cents: u64,
}

impl Order {
    pub fn reference(&self) -> String {
        format!("order-{}", self.id)
    }
}

/// A client: not `Serialize`, never part of a key.
pub struct Mailer;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

#[idempotent(key = [customer_id, order.id], skip = [mailer])]
pub async fn send_invoice(
    mailer: &Mailer,
    customer_id: &str,
    order: &Order,
) -> Result<Receipt, ToolError> {
    let _ = mailer;
    Ok(Receipt {
        id: format!("{customer_id}-{}", order.total_cents),
    })
}

#[idempotent(key = [order.reference(), &customer_id], skip = [mailer])]
pub async fn send_reminder(
    customer_id: String,
    order: Order,
    mailer: Mailer,
) -> Result<Receipt, ToolError> {
    let _ = mailer;
    Ok(Receipt {
        id: format!("{customer_id}-{}", order.id),
    })
}

fn main() {}
