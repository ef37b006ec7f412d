#![deny(warnings)]

extern crate idem as my_idem;

#[derive(Debug)]
pub struct ToolError;

impl From<my_idem::Error> for ToolError {
    fn from(_: my_idem::Error) -> Self {
        ToolError
    }
}

#[my_idem::idempotent(crate = my_idem)]
pub async fn by_extern_crate(order_id: u64) -> Result<u64, ToolError> {
    Ok(order_id)
}

pub mod tools {
    use idem as renamed;

    use super::ToolError;

    #[renamed::idempotent(crate = renamed, ttl = "1h")]
    pub async fn by_use(order_id: u64) -> Result<u64, ToolError> {
        Ok(order_id)
    }

    #[renamed::idempotent(crate = ::idem)]
    pub async fn by_absolute_path(order_id: u64) -> Result<u64, ToolError> {
        Ok(order_id)
    }
}

fn main() {}
