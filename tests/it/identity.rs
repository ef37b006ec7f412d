//! Action identity (issue 12, case 1): two different tools never share keys.

use idem::store::{Inspect, MemoryStore, RecordQuery};
use idem::{idempotent, Error};

use crate::support::{Ledger, ToolError};

static EMAILS: Ledger = Ledger::new();
static CHARGES: Ledger = Ledger::new();

/// Two tools as rig, swarms-rs and AutoAgents write them: a type each, a method `call` each.
struct SendEmail {
    store: MemoryStore,
}

struct ChargeCard {
    store: MemoryStore,
}

impl SendEmail {
    #[idempotent(store = &self.store)]
    async fn call(&self, customer: &str) -> Result<String, ToolError> {
        Ok(format!("email {}", EMAILS.record()))
    }
}

impl ChargeCard {
    #[idempotent(store = &self.store)]
    async fn call(&self, customer: &str) -> Result<String, ToolError> {
        Ok(format!("charge {}", CHARGES.record()))
    }
}

/// Both tools were `call`: the charge, on the same store with the same argument, was
/// answered with the email's recorded result and never made.
#[tokio::test]
async fn two_tools_named_call_do_not_share_keys() {
    let store = MemoryStore::new();
    let email = SendEmail {
        store: store.clone(),
    };
    let card = ChargeCard { store };
    assert_eq!(email.call("id-42").await, Ok("email 1".into()));
    assert_eq!(card.call("id-42").await, Ok("charge 1".into()));
    assert_eq!((EMAILS.count(), CHARGES.count()), (1, 1));
    let records = card.store.list_records(&RecordQuery::new()).await.unwrap();
    let mut actions: Vec<String> = records.into_iter().map(|r| r.action).collect();
    actions.sort();
    assert_eq!(actions, ["ChargeCard::call", "SendEmail::call"]);
}

mod billing {
    use super::*;

    #[idempotent(store = store, skip = [store])]
    pub async fn refund(store: &MemoryStore, order: u32) -> Result<u32, ToolError> {
        Ok(order)
    }
}

mod shipping {
    use super::*;

    #[idempotent(store = store, skip = [store])]
    pub async fn refund(store: &MemoryStore, order: u32) -> Result<u32, ToolError> {
        Ok(order + 1000)
    }
}

/// Two free functions `refund` in two modules: the same action, so the same keys. Each call is
/// refused with an error naming both, before anything runs or is replayed.
#[tokio::test]
async fn two_functions_with_one_action_name_are_refused_naming_both() {
    let store = MemoryStore::new();
    for refused in [
        billing::refund(&store, 7).await,
        shipping::refund(&store, 7).await,
    ] {
        let Err(ToolError::Idem(message)) = refused else {
            panic!("refused, got {refused:?}");
        };
        assert!(message.contains("identity::billing::refund"), "{message}");
        assert!(message.contains("identity::shipping::refund"), "{message}");
        assert!(message.contains("name = "), "{message}");
    }
    let records = store.list_records(&RecordQuery::new()).await.unwrap();
    assert!(records.is_empty(), "nothing claimed: {records:?}");
}

#[test]
fn the_clash_error_names_both_functions() {
    let error = Error::ActionClash {
        action: "default/refund@1".into(),
        first: "billing::refund".into(),
        second: "shipping::refund".into(),
    };
    let text = error.to_string();
    assert!(
        text.contains("`billing::refund` and `shipping::refund`"),
        "{text}"
    );
}

/// Found in review: concrete impls on one generic type (`Handler<Email>`, `Handler<Charge>`)
/// each have a `static` action, and both were named `Handler::call` with one origin: equal
/// arguments shared keys, and the charge was answered with the email's result.
struct Handler<T> {
    store: MemoryStore,
    kind: std::marker::PhantomData<T>,
}

struct Email;
struct Charge;

static HANDLED: Ledger = Ledger::new();

impl Handler<Email> {
    #[idempotent(store = &self.store)]
    async fn call(&self, customer: &str) -> Result<String, ToolError> {
        Ok(format!("email #{}", HANDLED.record()))
    }
}

impl Handler<Charge> {
    #[idempotent(store = &self.store)]
    async fn call(&self, customer: &str) -> Result<String, ToolError> {
        Ok(format!("charge #{}", HANDLED.record()))
    }
}

#[tokio::test]
async fn impls_on_one_generic_type_do_not_share_keys() {
    let store = MemoryStore::new();
    let email = Handler::<Email> {
        store: store.clone(),
        kind: std::marker::PhantomData,
    };
    let charge = Handler::<Charge> {
        store: store.clone(),
        kind: std::marker::PhantomData,
    };
    assert!(email.call("id-7").await.unwrap().starts_with("email"));
    assert!(charge.call("id-7").await.unwrap().starts_with("charge"));
    let records = store.list_records(&RecordQuery::new()).await.unwrap();
    let mut actions: Vec<String> = records.into_iter().map(|r| r.action).collect();
    actions.sort();
    assert_eq!(actions, ["Handler<Charge>::call", "Handler<Email>::call"]);
}

/// Found in review: one `static` serves every implementor of a trait's default method, and
/// the first implementor called named it for all.
trait Tool {
    const EFFECT: &'static str;
    fn store(&self) -> &MemoryStore;

    #[idempotent(store = self.store())]
    async fn call(&self, customer: &str) -> Result<String, ToolError> {
        Ok(format!("{} #{}", Self::EFFECT, HANDLED.record()))
    }
}

struct Notify(MemoryStore);
struct Refund(MemoryStore);

impl Tool for Notify {
    const EFFECT: &'static str = "notify";
    fn store(&self) -> &MemoryStore {
        &self.0
    }
}

impl Tool for Refund {
    const EFFECT: &'static str = "refund";
    fn store(&self) -> &MemoryStore {
        &self.0
    }
}

#[tokio::test]
async fn implementors_of_a_default_method_do_not_share_keys() {
    let store = MemoryStore::new();
    let (notify, refund) = (Notify(store.clone()), Refund(store.clone()));
    assert!(notify.call("id-9").await.unwrap().starts_with("notify"));
    assert!(
        refund.call("id-9").await.unwrap().starts_with("refund"),
        "run, not replayed"
    );
    let again = refund.call("id-9").await.unwrap();
    assert!(
        again.starts_with("refund"),
        "its own result replayed: {again}"
    );
    let records = store.list_records(&RecordQuery::new()).await.unwrap();
    let mut actions: Vec<String> = records.into_iter().map(|r| r.action).collect();
    actions.sort();
    assert_eq!(actions, ["Notify::call", "Refund::call"]);
}
