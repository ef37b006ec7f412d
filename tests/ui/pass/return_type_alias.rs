#![deny(warnings)]

use idem::idempotent;

#[derive(Debug)]
pub struct MyError;

impl From<idem::Error> for MyError {
    fn from(_: idem::Error) -> Self {
        MyError
    }
}

pub type R<T> = Result<T, MyError>;
pub type Outcome = std::result::Result<Vec<String>, MyError>;

#[idempotent]
pub async fn with_alias(order_id: u64) -> R<u64> {
    Ok(order_id)
}

#[idempotent]
pub async fn with_full_alias(order_id: u64) -> Outcome {
    Ok(vec![order_id.to_string()])
}

#[idempotent]
pub async fn with_path(order_id: u64) -> std::result::Result<u64, MyError> {
    Ok(order_id)
}

fn main() {}
