#[idem::idempotent]
async fn notify(customer_id: String) {
    println!("{customer_id}");
}

fn main() {
    let _ = notify("customer-42".to_owned());
}
