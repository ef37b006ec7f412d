#[derive(Debug)]
enum PayError {
    Timeout,
    Idem(idem::Error),
}

impl From<idem::Error> for PayError {
    fn from(e: idem::Error) -> Self {
        PayError::Idem(e)
    }
}

fn is_ambiguous(status: u16) -> bool {
    status >= 500
}

#[idem::idempotent(in_doubt = is_ambiguous)]
async fn charge(order: u64) -> Result<u64, PayError> {
    if order == 0 {
        return Err(PayError::Timeout);
    }
    Ok(order)
}

fn main() {
    let _ = charge(7);
}
