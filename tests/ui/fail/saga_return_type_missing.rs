#[idem::saga_step(irreversible)]
async fn notify(customer: String) {
    let _ = customer;
}

fn main() {
    let _ = notify(String::new());
}
