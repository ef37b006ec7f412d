use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    id: String,
}

#[derive(Debug)]
struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment failed")
    }
}

// Logged, but recovery could not read it back.
#[derive(Serialize, Clone, Copy)]
struct Cents(u64);

#[idem::saga_step(compensate = refund)]
async fn charge(customer: &str, cents: Cents) -> Result<Charge, PayError> {
    Ok(Charge {
        id: format!("{customer}/{}", cents.0),
    })
}

async fn refund(charge: Charge) -> Result<(), PayError> {
    let _ = charge.id;
    Ok(())
}

fn main() {
    let _ = charge("customer-42", Cents(1999));
}
