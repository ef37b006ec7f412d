#[derive(Debug)]
struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

// Returns the charge, not `Option` of it: it cannot say "not found".
async fn find_charge(order: &u64) -> Result<u64, PayError> {
    Ok(*order)
}

#[idem::idempotent(verify = find_charge)]
async fn charge(order: u64) -> Result<u64, PayError> {
    Ok(order)
}

fn main() {
    let _ = charge(7);
}
