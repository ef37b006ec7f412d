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

#[saga_step(irreversible, verify = find_charge)]
pub async fn charge(customer: &str, #[secret] card: String) -> Result<u64, PayError> {
    Ok(customer.len() as u64 + card.len() as u64)
}

pub async fn find_charge(customer: &String, card: &String) -> Result<Option<u64>, PayError> {
    let _ = (customer, card);
    Ok(None)
}

fn main() {}
