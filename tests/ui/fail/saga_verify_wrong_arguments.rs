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
// Takes the amount by value: a step's `verify` takes its arguments by reference.
async fn find_charge(customer: &str, cents: u64) -> Result<Option<Charge>, PayError> {
    Ok(Some(Charge {
        id: format!("{customer}/{cents}"),
    }))
}

#[idem::saga_step(compensate = refund, verify = find_charge)]
async fn charge(customer: &str, cents: u64) -> Result<Charge, PayError> {
    Ok(Charge {
        id: format!("{customer}/{cents}"),
    })
}

async fn refund(charge: Charge) -> Result<(), PayError> {
    drop(charge);
    Ok(())
}

fn main() {
    let _ = charge("ada", 1999);
}
