//! Action identity: which function an action's keys belong to, and the rule that two
//! different functions never share them.
//!
//! Every key is derived from (namespace, name, version). Two functions with the same triple
//! would answer each other's calls with their recorded results: `SendEmail::call` replaying
//! to `ChargeCard::call`, and the card never charged. So:
//!
//! - a method's default name includes its `Self` type (`SendEmail::call`), learned at its
//!   first call (a proc macro on a method cannot see the type it is implemented for);
//! - each `#[idempotent]` function registers its action at link time; the first call of any
//!   of them reads the registry once, and a call of an action whose triple another function
//!   also has is refused with [`Error::ActionClash`], naming both. A method's triple joins
//!   the registry at its first call.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::call::Action;
use crate::Error;

/// The link-time registration of an `#[idempotent]` function's action (`inventory::submit!`).
#[derive(Debug)]
pub struct ActionRegistration(pub &'static Action);

inventory::collect!(ActionRegistration);

/// The functions that have each action's triple, by the triple (`namespace/name@version`).
#[derive(Default)]
struct Registry {
    owners: HashMap<String, String>,
    /// Triples that two functions registered at link time: (first, second).
    clashes: HashMap<String, (String, String)>,
}

impl Registry {
    /// Adds `origin` as the function of `identity`; the clash it makes, if any.
    fn enter(&mut self, identity: &str, origin: &str) -> Option<(String, String)> {
        if let Some(clash) = self.clashes.get(identity) {
            return Some(clash.clone());
        }
        match self.owners.get(identity) {
            Some(first) if first != origin => Some((first.clone(), origin.to_owned())),
            Some(_) => None,
            None => {
                self.owners.insert(identity.to_owned(), origin.to_owned());
                None
            }
        }
    }
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Registry::default();
        for ActionRegistration(action) in inventory::iter::<ActionRegistration> {
            // A method without `name = …` has its full name only once it is called.
            let (Some(identity), Some(origin)) = (action.static_identity(), action.origin()) else {
                continue;
            };
            if let Some(clash) = registry.enter(&identity, origin) {
                registry.clashes.insert(identity, clash);
            }
        }
        Mutex::new(registry)
    })
}

/// Whether `action` may derive keys: `Err` when another function has its triple. Checked once
/// per action (the answer is kept in it).
pub(crate) fn check(identity: String, origin: &str) -> Result<(), Error> {
    let clash = registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .enter(&identity, origin);
    match clash {
        None => Ok(()),
        Some((first, second)) => Err(Error::ActionClash {
            action: identity,
            first,
            second,
        }),
    }
}

/// `crate::tools::Handler<crate::tools::SendEmail>` → `Handler<SendEmail>`: the type as
/// written in its own module, every path shortened to its last segment (generic arguments
/// kept: `Handler<SendEmail>` and `Handler<ChargeCard>` are two tools).
pub(crate) fn short_type_name(full: &str) -> String {
    let mut short = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear(); // a path segment before `::`: dropped
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            short.push_str(&segment);
            segment.clear();
            short.push(c);
        }
    }
    short.push_str(&segment);
    short
}

/// The actions made for each method's `Self` types beyond the first (see
/// `Action::for_self`), by the method's `static` and the type's name.
pub(crate) fn for_self(method: &'static Action, type_name: &'static str) -> &'static Action {
    static MADE: OnceLock<Mutex<HashMap<(usize, &'static str), &'static Action>>> = OnceLock::new();
    let made = MADE.get_or_init(Mutex::default);
    let mut made = made.lock().unwrap_or_else(PoisonError::into_inner);
    let at = std::ptr::from_ref(method) as usize;
    made.entry((at, type_name))
        .or_insert_with(|| Box::leak(Box::new(method.made_for(type_name))))
}

/// `crate::tools::SendEmail<crate::Mail>` → `crate::tools::SendEmail`.
pub(crate) fn type_path(full: &str) -> &str {
    full.split('<').next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_path_and_generics() {
        assert_eq!(short_type_name("app::tools::SendEmail"), "SendEmail");
        assert_eq!(
            short_type_name("app::Wrapper<alloc::string::String>"),
            "Wrapper<String>"
        );
        assert_eq!(
            short_type_name("app::Handler<app::tools::Pair<u8, &str>>"),
            "Handler<Pair<u8, &str>>"
        );
        assert_eq!(short_type_name("Plain"), "Plain");
        assert_eq!(type_path("app::Wrapper<app::Inner>"), "app::Wrapper");
    }

    #[test]
    fn a_second_function_with_the_same_triple_clashes() {
        let mut registry = Registry::default();
        assert_eq!(registry.enter("default/refund@1", "billing::refund"), None);
        assert_eq!(registry.enter("default/refund@1", "billing::refund"), None);
        assert_eq!(
            registry.enter("default/refund@1", "shipping::refund"),
            Some(("billing::refund".into(), "shipping::refund".into()))
        );
    }
}
