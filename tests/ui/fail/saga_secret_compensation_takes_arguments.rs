use idem::saga_step;
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

#[derive(Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
}

#[saga_step(compensate = refund)]
pub async fn charge(customer: &str, #[secret] card: String) -> Result<Charge, PayError> {
    Ok(Charge { id: format!("{customer}/{}", card.len()) })
}

// The log keeps no card number to hand back: a compensation of a step with a secret argument
// takes the output alone.
pub async fn refund(charge: Charge, customer: &str, card: String) -> Result<(), PayError> {
    let _ = (charge, customer, card);
    Ok(())
}

fn main() {}
