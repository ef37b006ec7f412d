#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

#[idem::idempotent(ttl = "1h", lease = "30s", ttl = "2h")]
async fn send_email(customer_id: &str) -> Result<String, MailError> {
    Ok(format!("sent to {customer_id}"))
}

fn main() {
    let _ = send_email("customer-42");
}
