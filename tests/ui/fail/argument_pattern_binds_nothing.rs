#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

// `_` binds nothing: the argument could be neither in the key nor skipped.
#[idem::idempotent]
async fn send(_: u32, to: String) -> Result<String, MailError> {
    Ok(to)
}

fn main() {
    let _ = send(1, String::new());
}
