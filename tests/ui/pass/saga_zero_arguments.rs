#![deny(warnings)]

use idem::saga_step;

#[derive(Debug)]
pub struct BankError;

impl From<idem::Error> for BankError {
    fn from(_: idem::Error) -> Self {
        BankError
    }
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bank error")
    }
}

#[saga_step(compensate = close_account)]
pub async fn open_account() -> Result<String, BankError> {
    Ok("account-1".to_owned())
}

pub async fn close_account(account: String) -> Result<(), BankError> {
    let _ = account;
    Ok(())
}

#[saga_step(irreversible)]
pub async fn ring_bell() -> Result<(), BankError> {
    Ok(())
}

fn main() {}
