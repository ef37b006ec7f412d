#[idem::idempotent]
struct SendEmail {
    customer_id: String,
}

fn main() {
    let _ = SendEmail {
        customer_id: String::new(),
    }
    .customer_id;
}
