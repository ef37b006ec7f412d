use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    id: String,
}

// Can be logged, but cannot carry idem's own errors.
#[derive(Debug)]
struct PayError;

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment failed")
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
