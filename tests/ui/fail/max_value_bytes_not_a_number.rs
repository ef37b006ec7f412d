use idem::idempotent;

#[derive(Debug)]
pub struct SendError;

impl From<idem::Error> for SendError {
    fn from(_: idem::Error) -> Self {
        SendError
    }
}

#[idempotent(max_value_bytes = "1MiB")]
pub async fn send(to: &str) -> Result<String, SendError> {
    Ok(to.to_owned())
}

fn main() {}
