#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

#[idem::idempotent(name = "")]
async fn send_email(customer_id: &str) -> Result<String, MailError> {
    Ok(format!("sent to {customer_id}"))
}

fn main() {
    let _ = send_email("customer-42");
}
