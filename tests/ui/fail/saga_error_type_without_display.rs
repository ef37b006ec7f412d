use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    id: String,
}

// Carries idem's errors, but its text cannot be logged.
#[derive(Debug)]
struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

#[idem::saga_step(irreversible)]
async fn charge(customer: &str, cents: u64) -> Result<Charge, PayError> {
    Ok(Charge {
        id: format!("{customer}/{cents}"),
    })
}

fn main() {
    let _ = charge("customer-42", 1999);
}
