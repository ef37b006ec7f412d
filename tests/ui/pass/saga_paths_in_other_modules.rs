#![deny(warnings)]

pub mod errors {
    #[derive(Debug)]
    pub struct PayError;

    impl From<idem::Error> for PayError {
        fn from(_: idem::Error) -> Self {
            PayError
        }
    }

    impl std::fmt::Display for PayError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("payment failed")
        }
    }
}

pub mod billing {
    use crate::errors::PayError;

    pub mod model {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Charge {
            pub id: String,
        }
    }

    pub async fn refund(charge: model::Charge) -> Result<(), PayError> {
        let _ = charge.id;
        Ok(())
    }

    pub async fn void(charge: &model::Charge, customer: &str) -> Result<(), PayError> {
        let _ = (&charge.id, customer);
        Ok(())
    }
}

pub mod steps {
    use crate::billing;
    use crate::errors::PayError;

    #[idem::saga_step(compensate = billing::refund)]
    pub async fn charge(customer: &str) -> Result<billing::model::Charge, PayError> {
        Ok(billing::model::Charge {
            id: customer.to_owned(),
        })
    }

    #[idem::saga_step(compensate = crate::billing::void)]
    pub async fn authorize(customer: &str) -> Result<crate::billing::model::Charge, PayError> {
        Ok(crate::billing::model::Charge {
            id: customer.to_owned(),
        })
    }

    #[idem::saga_step(compensate = super::billing::refund)]
    pub async fn capture(customer: &str) -> Result<billing::model::Charge, PayError> {
        Ok(billing::model::Charge {
            id: customer.to_owned(),
        })
    }
}

pub mod saga {
    use crate::errors::PayError;
    use crate::steps;

    pub async fn order(s: &idem::Steps<'_>, customer: &str) -> Result<String, PayError> {
        let charge = s.step(steps::charge(customer)).await?;
        let _ = s.step(steps::authorize(customer)).await?;
        let _ = s.step(steps::capture(customer)).await?;
        Ok(charge.id)
    }
}

fn main() {}
