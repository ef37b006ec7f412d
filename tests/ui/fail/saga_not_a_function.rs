#[idem::saga_step(irreversible)]
struct SendEmail {
    customer: String,
}

fn main() {
    let _ = SendEmail {
        customer: String::new(),
    }
    .customer;
}
