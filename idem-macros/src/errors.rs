//! Errors collected while reading an attribute, reported all at once.

use proc_macro2::TokenStream;
use std::fmt::Display;

/// The errors of one expansion, so that each mistake is reported, not only the first.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    all: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    pub(crate) fn at(&mut self, tokens: impl quote::ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// `Ok(value)` when nothing went wrong, else every error.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, syn::Error> {
        match self.all {
            Some(all) => Err(all),
            None => Ok(value),
        }
    }
}

/// The item as the user wrote it, followed by the errors: the function still exists, so its
/// callers compile and only the real mistake is reported.
pub(crate) fn with_errors(item: TokenStream, error: &syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote::quote!(#item #errors)
}
