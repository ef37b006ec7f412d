use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    id: String,
}

#[idem::saga_step(compensate = refund)]
async fn charge(customer: &str, cents: u64) -> Option<Charge> {
    Some(Charge {
        id: format!("{customer}/{cents}"),
    })
}

async fn refund(charge: Charge) -> Result<(), String> {
    let _ = charge.id;
    Ok(())
}

fn main() {
    let _ = charge("customer-42", 1999);
}
