#[idem::idempotent]
async fn charge(order_id: u64) -> u32 {
    order_id as u32
}

fn main() {
    let _ = charge(7);
}
