#![deny(warnings)]

use idem::{idempotent, saga_step};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pay error")
    }
}

/// A secret is never logged, so it need not be `Serialize` or `Deserialize`.
pub struct ApiToken(pub String);

#[derive(Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
}

/// The compensation takes the output alone, by value or by reference.
#[saga_step(compensate = refund, max_value_bytes = 65_536)]
pub async fn charge(customer: &str, #[secret] token: &ApiToken, cents: u64) -> Result<Charge, PayError> {
    Ok(Charge { id: format!("{customer}/{}/{cents}", token.0.len()) })
}

pub async fn refund(charge: &Charge) -> Result<(), PayError> {
    let _ = &charge.id;
    Ok(())
}

#[saga_step(irreversible)]
pub async fn notify(#[secret] webhook_secret: String) -> Result<(), PayError> {
    let _ = webhook_secret;
    Ok(())
}

/// On `#[idempotent]`, `#[secret]` is accepted and changes nothing: only hashes of the
/// arguments are stored.
#[idempotent(max_value_bytes = 4096)]
pub async fn send(to: &str, #[secret] password: &str) -> Result<String, PayError> {
    Ok(format!("{to}:{}", password.len()))
}

fn main() {}
