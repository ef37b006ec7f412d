#![deny(warnings)]

use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub enum PayError {
    Timeout,
    Idem(idem::Error),
}

impl From<idem::Error> for PayError {
    fn from(e: idem::Error) -> Self {
        PayError::Idem(e)
    }
}

fn is_ambiguous(error: &PayError) -> bool {
    matches!(error, PayError::Timeout)
}

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
}

pub struct Provider;

// A free function: every argument by reference, `&T` ones as they are.
#[idempotent(skip = [provider], in_doubt = is_ambiguous, verify = find_charge)]
pub async fn charge(provider: &Provider, customer: &str, order: Order, cents: u64) -> Result<String, PayError> {
    let _ = provider;
    Ok(format!("{customer}/{}/{cents}", order.id))
}

async fn find_charge(
    _provider: &Provider,
    _customer: &str,
    _order: &Order,
    _cents: &u64,
) -> Result<Option<String>, PayError> {
    Ok(None)
}

pub struct PaymentTool {
    provider: Provider,
}

// A method: `&self` first.
impl PaymentTool {
    #[idempotent(in_doubt = is_ambiguous, verify = Self::find)]
    pub async fn call(&self, order_id: u64) -> Result<u64, PayError> {
        let _ = &self.provider;
        Ok(order_id)
    }

    async fn find(&self, order_id: &u64) -> Result<Option<u64>, PayError> {
        let _ = &self.provider;
        Ok(Some(*order_id))
    }
}

fn main() {}
