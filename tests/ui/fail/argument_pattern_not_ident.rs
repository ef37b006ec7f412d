#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

#[idem::idempotent]
async fn transfer((from, to): (u32, u32)) -> Result<String, MailError> {
    Ok(format!("{from} -> {to}"))
}

fn main() {
    let _ = transfer((1, 2));
}
