#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

pub struct Parameters<T>(pub T);

pub struct Mailbox {
    pub address: String,
}

#[idem::idempotent]
async fn send(Parameters(mailbox): Parameters<Mailbox>) -> Result<String, MailError> {
    Ok(mailbox.address)
}

fn main() {
    let _ = send(Parameters(Mailbox { address: String::new() }));
}
