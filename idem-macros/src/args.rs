//! The options of `#[idempotent(…)]`, parsed as tokens so that every error has a span.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{bracketed, parenthesized, Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::duration::parse_millis;
use crate::errors::Errors;

/// Every option, in the order the documentation gives them.
const OPTIONS: &[&str] = &[
    "key",
    "skip",
    "name",
    "namespace",
    "version",
    "ttl",
    "lease",
    "on_conflict",
    "cache_err",
    "on_stale",
    "store",
    "crate",
];

/// A duration option: its milliseconds and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Millis {
    pub(crate) millis: u64,
    pub(crate) span: Span,
}

/// `on_conflict = wait("10s") | fail`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnConflict {
    Wait(Millis),
    Fail,
}

/// `on_stale = takeover | review`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnStale {
    TakeOver,
    Review,
}

/// The options of one `#[idempotent]`.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) key: Option<Vec<Expr>>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) name: Option<LitStr>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) version: Option<u32>,
    pub(crate) ttl: Option<Millis>,
    pub(crate) lease: Option<Millis>,
    pub(crate) on_conflict: Option<OnConflict>,
    pub(crate) cache_err: Option<Expr>,
    pub(crate) on_stale: Option<OnStale>,
    pub(crate) store: Option<Expr>,
    pub(crate) krate: Option<Path>,
}

impl Args {
    /// Parses `name = value, …`, collecting every mistake.
    pub(crate) fn parse(tokens: TokenStream) -> Result<Args, syn::Error> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let parser = |input: ParseStream<'_>| {
            let mut seen = BTreeSet::new();
            while !input.is_empty() {
                let name = parse_option_name(input)?;
                let label = name.to_string();
                if !input.peek(Token![=]) {
                    let message = if OPTIONS.contains(&label.as_str()) {
                        format!("expected `{label} = …`: options are written `name = value`")
                    } else {
                        unknown_option(&label)
                    };
                    return Err(syn::Error::new(name.span(), message));
                }
                input.parse::<Token![=]>()?;
                if !seen.insert(label.clone()) {
                    errors.at(&name, format!("duplicate option `{label}`"));
                }
                args.parse_value(&label, &name, input, &mut errors)?;
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        // A syntax error stops the reading; the mistakes found before it are reported too.
        if let Err(error) = parser.parse2(tokens) {
            errors.push(error);
        }
        errors.finish(args)
    }

    fn parse_value(
        &mut self,
        label: &str,
        name: &Ident,
        input: ParseStream<'_>,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        match label {
            "key" => {
                let parts = parse_list(input, "key = [customer_id, order.id]", Expr::parse)?;
                if parts.is_empty() {
                    errors.at(
                        name,
                        "`key = []` makes every call the same action: name at least one argument",
                    );
                }
                self.key = Some(parts);
            }
            // `parse_any`: `skip = [self]` is read, to be answered that it is not needed.
            "skip" => self.skip = parse_list(input, "skip = [mailer, ctx]", Ident::parse_any)?,
            "name" => self.name = Some(non_empty(label, input.parse()?, errors)),
            "namespace" => self.namespace = Some(non_empty(label, input.parse()?, errors)),
            "version" => {
                // An expression, so that `-1` is refused as a whole, not at its `-`.
                let version: Expr = input.parse()?;
                self.version = match &version {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(number),
                        ..
                    }) => number.base10_parse().ok(),
                    _ => None,
                };
                if self.version.is_none() {
                    errors.at(
                        &version,
                        format!(
                            "`version` is a whole number from 0 to {}, as in `version = 2`",
                            u32::MAX
                        ),
                    );
                }
            }
            "ttl" => self.ttl = Some(parse_duration(input, errors)?),
            "lease" => self.lease = Some(parse_duration(input, errors)?),
            "on_conflict" => self.on_conflict = Some(parse_on_conflict(input, errors)?),
            "on_stale" => self.on_stale = Some(parse_on_stale(input)?),
            "cache_err" => self.cache_err = Some(input.parse()?),
            "store" => self.store = Some(input.parse()?),
            "crate" => self.krate = Some(input.call(Path::parse_mod_style)?),
            _ => {
                errors.at(name, unknown_option(label));
                // Skip the value so that the options after it are still read.
                input.parse::<Expr>()?;
            }
        }
        Ok(())
    }
}

/// `key`, `skip`, … or `crate`, which is a keyword.
fn parse_option_name(input: ParseStream<'_>) -> syn::Result<Ident> {
    if input.peek(Token![crate]) {
        let token: Token![crate] = input.parse()?;
        return Ok(Ident::new("crate", token.span));
    }
    input.parse::<Ident>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "expected an option, as in `ttl = \"24h\"`: one of {}",
                expected_options()
            ),
        )
    })
}

fn unknown_option(label: &str) -> String {
    format!(
        "unknown option `{label}`: expected one of {}",
        expected_options()
    )
}

fn expected_options() -> String {
    let quoted: Vec<String> = OPTIONS.iter().map(|o| format!("`{o}`")).collect();
    quoted.join(", ")
}

fn parse_list<T>(
    input: ParseStream<'_>,
    example: &str,
    item: fn(ParseStream<'_>) -> syn::Result<T>,
) -> syn::Result<Vec<T>> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!("expected a list in brackets, as in `{example}`")));
    }
    let content;
    bracketed!(content in input);
    let items = Punctuated::<T, Token![,]>::parse_terminated_with(&content, item)?;
    Ok(items.into_iter().collect())
}

fn non_empty(label: &str, text: LitStr, errors: &mut Errors) -> LitStr {
    if text.value().is_empty() {
        errors.at(&text, format!("`{label}` must not be empty"));
    }
    text
}

fn parse_duration(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Millis> {
    let text: LitStr = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a duration in quotes, such as \"10s\" or \"24h\"",
        )
    })?;
    let millis = parse_millis(&text.value()).unwrap_or_else(|message| {
        errors.at(&text, message);
        1
    });
    Ok(Millis {
        millis,
        span: text.span(),
    })
}

fn parse_on_conflict(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<OnConflict> {
    let word: Ident = input.parse()?;
    match word.to_string().as_str() {
        "fail" => Ok(OnConflict::Fail),
        "wait" => {
            let content;
            parenthesized!(content in input);
            let limit = parse_duration(&content, errors)?;
            if !content.is_empty() {
                return Err(content.error("expected one duration, as in `wait(\"10s\")`"));
            }
            Ok(OnConflict::Wait(limit))
        }
        _ => Err(syn::Error::new_spanned(
            word,
            "expected `wait(\"10s\")` (wait at most that long for the running call's result) or `fail` (refuse at once)",
        )),
    }
}

fn parse_on_stale(input: ParseStream<'_>) -> syn::Result<OnStale> {
    let word: Ident = input.parse()?;
    match word.to_string().as_str() {
        "takeover" => Ok(OnStale::TakeOver),
        "review" => Ok(OnStale::Review),
        _ => Err(syn::Error::new_spanned(
            word,
            "expected `takeover` (run the body again) or `review` (park the key for an operator)",
        )),
    }
}
