#[derive(Debug)]
struct MailError;

impl From<idem::Error> for MailError {
    fn from(_: idem::Error) -> Self {
        MailError
    }
}

pub struct Mailer {
    from: String,
}

impl Mailer {
    #[idem::idempotent(skip = [self])]
    pub async fn send_email(&self, customer_id: &str) -> Result<String, MailError> {
        Ok(format!("{} to {customer_id}", self.from))
    }
}

fn main() {
    let mailer = Mailer {
        from: "billing".to_owned(),
    };
    let _ = mailer.send_email("customer-42");
}
