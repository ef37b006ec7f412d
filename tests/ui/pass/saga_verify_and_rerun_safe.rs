#![deny(warnings)]

use idem::saga_step;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tool error")
    }
}

#[derive(Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
}

#[saga_step(compensate = refund, verify = find_charge)]
pub async fn charge(customer: &str, cents: u64) -> Result<Charge, ToolError> {
    Ok(Charge {
        id: format!("{customer}/{cents}"),
    })
}

async fn refund(charge: Charge) -> Result<(), ToolError> {
    let _ = charge.id;
    Ok(())
}

async fn find_charge(customer: &str, cents: &u64) -> Result<Option<Charge>, ToolError> {
    Ok(Some(Charge {
        id: format!("{customer}/{cents}"),
    }))
}

// The mailer deduplicates by the key it is handed: an email in doubt may be sent again.
#[saga_step(irreversible, rerun_safe)]
pub async fn send_receipt(customer: &str) -> Result<(), ToolError> {
    let _ = customer;
    Ok(())
}

// An irreversible step that can be looked up instead.
#[saga_step(irreversible, verify = find_ticket)]
pub async fn issue_ticket(customer: &str) -> Result<String, ToolError> {
    Ok(format!("ticket for {customer}"))
}

async fn find_ticket(customer: &str) -> Result<Option<String>, ToolError> {
    Ok(Some(format!("ticket for {customer}")))
}

fn main() {}
