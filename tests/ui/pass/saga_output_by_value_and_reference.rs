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
pub struct Charge {
    pub id: String,
}

#[derive(Serialize, Deserialize)]
pub struct Reservation {
    pub sku: String,
    pub count: u32,
}

/// The compensation takes the step's output by value.
#[saga_step(compensate = refund)]
pub async fn charge(customer: &str, cents: u64) -> Result<Charge, ShopError> {
    Ok(Charge {
        id: format!("{customer}/{cents}"),
    })
}

pub async fn refund(charge: Charge) -> Result<(), ShopError> {
    let _ = charge.id;
    Ok(())
}

/// The compensation takes the step's output by reference; its error type is its own.
#[saga_step(compensate = release)]
pub async fn reserve(sku: &str, count: u32) -> Result<Reservation, ShopError> {
    Ok(Reservation {
        sku: sku.to_owned(),
        count,
    })
}

pub async fn release(reservation: &Reservation) -> Result<(), String> {
    if reservation.count == 0 {
        return Err(format!("nothing reserved for {}", reservation.sku));
    }
    Ok(())
}

fn main() {}
