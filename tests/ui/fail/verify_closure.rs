#[derive(Debug)]
struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

#[idem::idempotent(verify = |order: &u64| async move { Ok::<_, PayError>(Some(*order)) })]
async fn charge(order: u64) -> Result<u64, PayError> {
    Ok(order)
}

fn main() {
    let _ = charge(7);
}
