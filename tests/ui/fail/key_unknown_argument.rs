#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

pub struct Order {
    pub id: u64,
}

#[idem::idempotent(key = [customer_id, order.id])]
async fn send_invoice(customer: &str, order: &Order) -> Result<String, MailError> {
    Ok(format!("invoice {} to {customer}", order.id))
}

fn main() {
    let _ = send_invoice("customer-42", &Order { id: 7 });
}
