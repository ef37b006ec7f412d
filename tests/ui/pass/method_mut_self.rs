#![deny(warnings)]

use idem::idempotent;
use idem::store::MemoryStore;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

pub struct Counter {
    store: MemoryStore,
    sent: u32,
}

impl Counter {
    #[idempotent(store = self.store.clone())]
    pub async fn send(&mut self, order_id: u64) -> Result<u32, ToolError> {
        self.sent += 1;
        Ok(self.sent + order_id as u32)
    }
}

fn main() {}
