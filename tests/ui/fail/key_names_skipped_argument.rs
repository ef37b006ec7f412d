#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

pub struct Mailer;

#[idem::idempotent(key = [customer_id, mailer], skip = [mailer])]
async fn send_email(customer_id: &str, mailer: &Mailer) -> Result<String, MailError> {
    let _ = mailer;
    Ok(format!("sent to {customer_id}"))
}

fn main() {
    let _ = send_email("customer-42", &Mailer);
}
