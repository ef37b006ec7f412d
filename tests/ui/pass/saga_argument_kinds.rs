#![deny(warnings)]

use std::collections::BTreeMap;

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

/// `&str`, `&[T]`, `&T` (read back as `String`, `Vec<T>`, `T`) and values, one `mut`.
#[saga_step(irreversible)]
pub async fn place(
    customer: &str,
    lines: &[u32],
    order: &Order,
    tags: &Vec<String>,
    metadata: &BTreeMap<String, String>,
    discount: Option<u8>,
    mut attempts: u32,
) -> Result<u64, ShopError> {
    attempts += 1;
    let _ = (customer, lines, tags, metadata, discount, attempts);
    Ok(order.id)
}

/// Owned values that are not `Copy` move into the body, as they do into an `async fn`.
#[saga_step(compensate = unbook)]
pub async fn book(customer: String, order: Order, seats: Vec<u32>) -> Result<u64, ShopError> {
    Ok(order.id + seats.len() as u64 + customer.len() as u64)
}

pub async fn unbook(booking: u64, customer: String, order: Order, seats: Vec<u32>) -> Result<(), ShopError> {
    let _ = (booking, customer, order, seats);
    Ok(())
}

/// Named lifetimes, and `'_`, are the step's own.
#[saga_step(irreversible)]
pub async fn quote<'a, 'b: 'a>(
    customer: &'a str,
    order: &'b Order,
    lines: &'_ [u64],
) -> Result<String, ShopError> {
    Ok(format!("{customer}/{}/{}", order.id, lines.len()))
}

/// The returned future borrows its arguments, as the `async fn`'s did.
pub async fn both(order: Order) -> Result<String, ShopError> {
    let customer = String::from("customer-42");
    let id = place(
        &customer,
        &[1, 2],
        &order,
        &Vec::new(),
        &BTreeMap::new(),
        None,
        0,
    )
    .await?;
    let booked = book(customer.clone(), Order { id }, vec![1, 2]).await?;
    quote(&customer, &order, &[booked]).await
}

fn main() {}
