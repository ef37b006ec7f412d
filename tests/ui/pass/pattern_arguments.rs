#![deny(warnings)]

use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

/// An extractor, as MCP and web frameworks hand a tool its input.
pub struct Parameters<T>(pub T);

#[derive(Serialize, Deserialize)]
pub struct SendEmail {
    pub to: String,
    pub subject: String,
}

pub struct Mailer;

// The key is made of what the pattern binds.
#[idempotent]
pub async fn send_email(Parameters(req): Parameters<SendEmail>) -> Result<String, ToolError> {
    Ok(format!("{}: {}", req.to, req.subject))
}

// Tuple and struct patterns; `key` and `skip` name the bindings.
#[idempotent(key = [from], skip = [mailer])]
pub async fn transfer(
    (from, to): (u32, u32),
    Holder { mailer, .. }: Holder,
) -> Result<String, ToolError> {
    let _ = &mailer;
    Ok(format!("{from} -> {to}"))
}

pub struct Holder {
    pub mailer: Mailer,
    pub note: String,
}

fn main() {}
