use idem::saga_step;

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

#[saga_step(irreversible)]
pub async fn charge(#[secret(vault = "cards")] card: String) -> Result<u64, PayError> {
    Ok(card.len() as u64)
}

fn main() {}
