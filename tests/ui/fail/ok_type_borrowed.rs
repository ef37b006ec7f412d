#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

#[idem::idempotent]
async fn send_email(order_id: u64) -> Result<&'static str, MailError> {
    Ok(if order_id > 0 { "sent" } else { "skipped" })
}

fn main() {
    let _ = send_email(7);
}
