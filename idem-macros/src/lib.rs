//! The attributes of [idem](https://docs.rs/idem). Use them through the `idem` crate, which
//! documents them: this crate only parses and rewrites; the generated code calls the runtime
//! through `::idem::__private`.
//!
//! The pipeline, for each attribute: `args` (`step_args`) parses the attribute's options,
//! `function` (`step_function`) reads the function and checks the options against it,
//! `expand` (`step_expand`) writes the new function. The grammar of options (unknown and
//! duplicate ones), the error collection and the span helpers are shared (`args`, `errors`,
//! `spans`). Every error is collected and spanned on the offending tokens; on error, the
//! function is emitted unchanged next to the `compile_error!`s, so one mistake gives one
//! error.
#![warn(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    missing_debug_implementations
)]
#![forbid(unsafe_code)]

mod args;
mod duration;
mod errors;
mod expand;
mod function;
mod spans;
mod step_args;
mod step_expand;
mod step_function;

use proc_macro::TokenStream;

/// `#[idempotent]`, as the `idem` crate re-exports and documents it.
#[proc_macro_attribute]
pub fn idempotent(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::idempotent(attr.into(), item.into()).into()
}

/// `#[saga_step]`, as the `idem` crate re-exports and documents it.
#[proc_macro_attribute]
pub fn saga_step(attr: TokenStream, item: TokenStream) -> TokenStream {
    step_expand::saga_step(attr.into(), item.into()).into()
}
