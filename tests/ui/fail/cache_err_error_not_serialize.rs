#[derive(Debug)]
enum ChargeError {
    Declined,
    Idem(idem::Error),
}

impl From<idem::Error> for ChargeError {
    fn from(e: idem::Error) -> Self {
        ChargeError::Idem(e)
    }
}

fn is_final(error: &ChargeError) -> bool {
    matches!(error, ChargeError::Declined)
}

#[idem::idempotent(cache_err = is_final)]
async fn charge(order_id: u64) -> Result<u64, ChargeError> {
    if order_id == 0 {
        return Err(ChargeError::Declined);
    }
    Ok(order_id)
}

fn main() {
    let _ = charge(7);
}
