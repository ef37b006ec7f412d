use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Receipt {
    id: u64,
}

#[derive(Debug)]
enum MailError {
    Rejected,
}

#[idem::idempotent]
async fn send_email(order_id: u64) -> Result<Receipt, MailError> {
    if order_id == 0 {
        return Err(MailError::Rejected);
    }
    Ok(Receipt { id: order_id })
}

fn main() {
    let _ = send_email(7);
}
