//! The expansion names only `::core`, `::std` and `::idem::__private`, and its own names
//! cannot clash with the user's: it compiles next to items that shadow the prelude, under
//! strict lints.
#![deny(
    warnings,
    unused_qualifications,
    unused_results,
    missing_docs,
    unused_extern_crates
)]
#![allow(non_camel_case_types)]

/// Shadows the `core` crate for relative paths.
pub mod core {}
/// Shadows the `std` crate for relative paths.
pub mod std {}
/// Shadows the prelude's `idem`-like names.
pub mod __private {}
/// Shadows `inventory`.
pub mod inventory {}

/// Shadows the prelude's `Result`.
pub struct Result;
/// Shadows the prelude's `Option`.
pub struct Option;
/// Shadows the prelude's `Ok`.
pub struct Ok;
/// Shadows the prelude's `Err`.
pub struct Err;
/// Shadows the prelude's `Some`.
pub struct Some;
/// Shadows `None`.
pub struct None;
/// Shadows `Box`.
pub struct Box;
/// Shadows `Vec`.
pub struct Vec;
/// Shadows `String`.
pub struct String;
/// Shadows `Send`.
pub trait Send {}
/// Shadows `Sized`.
pub trait Sized {}
/// Shadows `Future`.
pub trait Future {}
/// A constant named as a closure parameter would be: a binding whose name is not the
/// expansion's own would match it instead of binding.
#[allow(non_upper_case_globals)]
pub const all: u8 = 0;
/// Names the generated functions' type parameters would have without their prefix.
pub struct T0;
/// Same, for the future.
pub struct F;

/// The error of the steps.
#[derive(Debug)]
pub struct PayError;

impl From<idem::Error> for PayError {
    fn from(_: idem::Error) -> Self {
        PayError
    }
}

impl ::core::fmt::Display for PayError {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.write_str("payment failed")
    }
}

/// A charge.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Charge {
    /// Its id.
    pub id: ::std::string::String,
}

/// Arguments named as the expansion's own variables.
#[idem::saga_step(compensate = refund, name = "hygiene_charge")]
pub async fn charge(
    __idem_args: &str,
    __idem_arg0: u64,
    __idem_output: &[u32],
    __idem_slot: u16,
    __idem_def: ::core::option::Option<u64>,
    __idem_body: &T0,
) -> ::core::result::Result<Charge, PayError> {
    const __IDEM_STEP: u64 = 1;
    let _ = (
        __idem_arg0,
        __idem_output,
        __idem_slot,
        __idem_def,
        __idem_body,
        __IDEM_STEP,
    );
    ::core::result::Result::Ok(Charge {
        id: __idem_args.to_owned(),
    })
}

/// Undoes `charge`, with its arguments.
pub async fn refund(
    charge: Charge,
    __idem_args: &str,
    __idem_arg0: u64,
    __idem_output: &[u32],
    __idem_slot: u16,
    __idem_def: ::core::option::Option<u64>,
    __idem_body: &T0,
) -> ::core::result::Result<(), PayError> {
    let _ = (
        charge.id,
        __idem_args,
        __idem_arg0,
        __idem_output,
        __idem_slot,
        __idem_def,
        __idem_body,
    );
    ::core::result::Result::Ok(())
}

/// Returns a type named as a generated type parameter, and takes no argument.
#[idem::saga_step(irreversible)]
pub async fn unit() -> ::core::result::Result<F, PayError> {
    ::core::result::Result::Ok(F)
}

impl serde::Serialize for T0 {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> ::core::result::Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for T0 {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> ::core::result::Result<Self, D::Error> {
        <() as serde::Deserialize>::deserialize(deserializer).map(|()| T0)
    }
}

impl serde::Serialize for F {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> ::core::result::Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for F {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> ::core::result::Result<Self, D::Error> {
        <() as serde::Deserialize>::deserialize(deserializer).map(|()| F)
    }
}

fn main() {}
