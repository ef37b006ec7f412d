#![deny(warnings)]

use idem::saga_step;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct ShopError;

impl From<idem::Error> for ShopError {
    fn from(_: idem::Error) -> Self {
        ShopError
    }
}

impl std::fmt::Display for ShopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("shop error")
    }
}

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Shipment {
    pub tracking: String,
}

/// The output by value, then every argument of the step, in order, as the step takes them.
#[saga_step(compensate = cancel_shipment)]
pub async fn ship(
    customer: &str,
    order: &Order,
    skus: &[String],
    priority: u8,
) -> Result<Shipment, ShopError> {
    Ok(Shipment {
        tracking: format!("{customer}/{}/{}/{priority}", order.id, skus.len()),
    })
}

pub async fn cancel_shipment(
    shipment: Shipment,
    customer: &str,
    order: &Order,
    skus: &[String],
    priority: u8,
) -> Result<(), ShopError> {
    let _ = (shipment.tracking, customer, order.id, skus, priority);
    Ok(())
}

/// The output by reference, then the arguments.
#[saga_step(compensate = unlabel)]
pub async fn label(order: &Order, carrier: &str) -> Result<u64, ShopError> {
    Ok(order.id + carrier.len() as u64)
}

pub async fn unlabel(label: &u64, order: &Order, carrier: &str) -> Result<(), ShopError> {
    let _ = (label, order.id, carrier);
    Ok(())
}

fn main() {}
