use serde::Serialize;

#[derive(Serialize)]
struct Receipt {
    id: u64,
}

#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

#[idem::idempotent]
async fn send_email(order_id: u64) -> Result<Receipt, MailError> {
    Ok(Receipt { id: order_id })
}

fn main() {
    let _ = send_email(7);
}
