use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Receipt {
    to: String,
}

#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

struct Mailer;

impl Mailer {
    fn send(&self, to: &str) -> Receipt {
        Receipt { to: to.to_owned() }
    }
}

#[idem::idempotent]
async fn send_email(customer_id: &str, mailer: &Mailer) -> Result<Receipt, MailError> {
    Ok(mailer.send(customer_id))
}

fn main() {
    let _ = send_email("customer-42", &Mailer);
}
