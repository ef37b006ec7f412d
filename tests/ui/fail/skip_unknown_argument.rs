#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

pub struct Mailer;

#[idem::idempotent(skip = [mailer])]
async fn send_email(customer_id: &str, client: &Mailer) -> Result<String, MailError> {
    let _ = client;
    Ok(format!("sent to {customer_id}"))
}

fn main() {
    let _ = send_email("customer-42", &Mailer);
}
