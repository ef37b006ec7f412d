#![deny(warnings)]

use async_trait::async_trait;
use idem::idempotent;
use idem::store::MemoryStore;

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

#[async_trait]
pub trait Tool {
    async fn call(&self, input: String) -> Result<String, ToolError>;
    async fn call_mut(&mut self, input: String, attempt: u32) -> Result<u32, ToolError>;
}

pub struct Echo {
    store: MemoryStore,
    calls: u32,
}

#[async_trait]
impl Tool for Echo {
    #[idempotent(store = self.store.clone())]
    async fn call(&self, input: String) -> Result<String, ToolError> {
        Ok(input)
    }

    #[idempotent(store = self.store.clone(), skip = [attempt])]
    async fn call_mut(&mut self, input: String, attempt: u32) -> Result<u32, ToolError> {
        self.calls += attempt;
        Ok(self.calls + input.len() as u32)
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let echo = Echo {
        store: MemoryStore::new(),
        calls: 0,
    };
    assert_send(echo.call("hi".to_owned()));
}
