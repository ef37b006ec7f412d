//! Names and spans of generated code, shared by the attributes: generated names the user's
//! code cannot see, and generated tokens shown at the user's tokens in errors.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::ToTokens;

/// An identifier the user's code cannot see or shadow.
pub(crate) fn internal(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// A span that shows `user`'s tokens in errors but still reads as generated code to lints
/// (`unused_qualifications`, clippy) and to name resolution.
pub(crate) fn located(user: Span) -> Span {
    Span::call_site().located_at(user)
}

/// Where `written` starts and ends. rustc shows an expression from its first token to its
/// last, so generated code that starts at `first` and ends at `last` is reported on all of
/// `written` (`Span::join` is not stable).
pub(crate) fn first_and_last(written: &dyn ToTokens) -> (Span, Span) {
    let mut spans = written.to_token_stream().into_iter().map(|t| t.span());
    let first = spans.next().map_or_else(Span::call_site, located);
    let last = spans.last().map_or(first, located);
    (first, last)
}

/// `tokens` (a path such as `::idem::__private`) shown at `user`, each token keeping its own
/// hygiene: an error about a call through it then points at the user's code, not at the
/// attribute.
pub(crate) fn respan(tokens: &TokenStream, user: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(token.span().located_at(user));
            token
        })
        .collect()
}

/// `tokens` (a type the user wrote) with each token shown where it was written but read as
/// generated code, as `located` does for one span: rustc then sees one place where the type
/// and the generated code around it meet, and reports what is wrong there once.
pub(crate) fn located_tokens(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut located_group =
                    Group::new(group.delimiter(), located_tokens(group.stream()));
                located_group.set_span(located(group.span()));
                TokenTree::Group(located_group)
            }
            mut other => {
                other.set_span(located(other.span()));
                other
            }
        })
        .collect()
}
