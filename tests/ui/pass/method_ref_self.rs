#![deny(warnings)]

use idem::idempotent;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

pub struct InvoiceTool {
    prefix: String,
}

impl InvoiceTool {
    #[idempotent]
    pub async fn send_invoice(&self, order_id: u64) -> Result<String, ToolError> {
        Ok(format!("{}-{order_id}", self.prefix))
    }
}

fn main() {}
