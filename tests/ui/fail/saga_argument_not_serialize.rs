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

// Read back from the log, but never written to it.
#[derive(Deserialize)]
struct Card {
    number: String,
}

#[idem::saga_step(irreversible)]
async fn charge(customer: &str, card: &Card) -> Result<Charge, PayError> {
    Ok(Charge {
        id: format!("{customer}/{}", card.number),
    })
}

fn main() {
    let card = Card {
        number: "4242".to_owned(),
    };
    let _ = charge("customer-42", &card);
}
