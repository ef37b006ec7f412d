#![deny(warnings)]

use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: String,
}

#[derive(Debug)]
pub enum EmailError {
    Idem(idem::Error),
}

impl From<idem::Error> for EmailError {
    fn from(e: idem::Error) -> Self {
        EmailError::Idem(e)
    }
}

#[idempotent]
pub async fn send_quote_email(customer_id: &str, quote_id: &str) -> Result<Receipt, EmailError> {
    Ok(Receipt {
        message_id: format!("{customer_id}/{quote_id}"),
    })
}

fn main() {}
