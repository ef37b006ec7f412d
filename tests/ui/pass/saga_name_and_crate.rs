#![deny(warnings)]

extern crate idem as my_idem;

#[derive(Debug)]
pub struct PayError;

impl From<my_idem::Error> for PayError {
    fn from(_: my_idem::Error) -> Self {
        PayError
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment failed")
    }
}

/// Logged and registered as `charge_card`, whatever the function is called.
#[my_idem::saga_step(crate = my_idem, compensate = refund, name = "charge_card")]
pub async fn charge(customer: &str, cents: u64) -> Result<String, PayError> {
    Ok(format!("{customer}/{cents}"))
}

pub async fn refund(charge: String) -> Result<(), PayError> {
    let _ = charge;
    Ok(())
}

pub mod steps {
    use idem as renamed;

    use super::PayError;

    #[renamed::saga_step(crate = renamed, irreversible)]
    pub async fn r#move(to: &str) -> Result<(), PayError> {
        let _ = to;
        Ok(())
    }

    #[renamed::saga_step(crate = ::idem, irreversible)]
    pub async fn notify(to: &str) -> Result<(), PayError> {
        let _ = to;
        Ok(())
    }
}

fn main() {
    assert_eq!(charge("customer-42", 1999).name(), "charge_card");
    assert_eq!(steps::r#move("warehouse").name(), "move");
}
