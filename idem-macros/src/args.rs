//! The options of `#[idempotent(…)]`, parsed as tokens so that every error has a span, and
//! the grammar that both attributes' options share (`Grammar`: names, unknown and duplicate
//! options).

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{bracketed, parenthesized, Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::duration::parse_millis;
use crate::errors::Errors;

/// Every option, in the order the documentation gives them.
const GRAMMAR: Grammar = Grammar {
    options: &[
        ("key", Form::Value),
        ("skip", Form::Value),
        ("name", Form::Value),
        ("namespace", Form::Value),
        ("version", Form::Value),
        ("ttl", Form::Value),
        ("lease", Form::Value),
        ("on_conflict", Form::Value),
        ("cache_err", Form::Value),
        ("in_doubt", Form::Value),
        ("on_stale", Form::Value),
        ("verify", Form::Value),
        ("max_value_bytes", Form::Value),
        ("store", Form::Value),
        ("crate", Form::Value),
    ],
    example: "ttl = \"24h\"",
};

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
    pub(crate) in_doubt: Option<Expr>,
    pub(crate) on_stale: Option<OnStale>,
    pub(crate) verify: Option<Path>,
    pub(crate) max_value_bytes: Option<u64>,
    pub(crate) store: Option<Expr>,
    pub(crate) krate: Option<Path>,
}

impl Args {
    /// Parses `name = value, …`, collecting every mistake.
    pub(crate) fn parse(tokens: TokenStream) -> Result<Args, syn::Error> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        GRAMMAR.parse(tokens, &mut errors, |label, name, input, errors| {
            args.parse_value(label, name, input, errors)
        });
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
            "in_doubt" => self.in_doubt = Some(input.parse()?),
            "verify" => {
                self.verify = parse_function(
                    input,
                    errors,
                    "`verify` names a function, as in `verify = find_charge`: it is called with the same arguments (by reference) before a call left in doubt runs again",
                )?
            }
            "max_value_bytes" => self.max_value_bytes = parse_byte_limit(input, errors)?,
            "store" => self.store = Some(input.parse()?),
            "crate" => self.krate = Some(input.call(Path::parse_mod_style)?),
            _ => errors.at(name, GRAMMAR.unknown(label)),
        }
        Ok(())
    }
}

/// `option = path`: a function named by its path, not any expression (a closure could not
/// be called from the log by a process that never ran the call); `None` after reporting an
/// expression that is not a path.
pub(crate) fn parse_function(
    input: ParseStream<'_>,
    errors: &mut Errors,
    message: &str,
) -> syn::Result<Option<Path>> {
    match Expr::parse(input)? {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => Ok(Some(path.path)),
        other => {
            errors.at(other, message);
            Ok(None)
        }
    }
}

/// `max_value_bytes = 4_194_304`: a whole number of bytes, at least 1; `None` after
/// reporting anything else.
pub(crate) fn parse_byte_limit(
    input: ParseStream<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<u64>> {
    // An expression, so that `-1` or `"1MiB"` is refused as a whole.
    let limit: Expr = input.parse()?;
    let bytes = match &limit {
        Expr::Lit(ExprLit {
            lit: Lit::Int(number),
            ..
        }) if number.suffix().is_empty() || number.suffix() == "usize" => {
            number.base10_parse::<u64>().ok().filter(|bytes| *bytes > 0)
        }
        _ => None,
    };
    if bytes.is_none() {
        errors.at(
            &limit,
            "`max_value_bytes` is a whole number of bytes, at least 1, as in `max_value_bytes = 4_194_304`",
        );
    }
    Ok(bytes)
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

pub(crate) fn non_empty(label: &str, text: LitStr, errors: &mut Errors) -> LitStr {
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

/// How an option is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `name = value`.
    Value,
    /// The name alone, as `irreversible`.
    Word,
}

/// The options one attribute takes.
pub(crate) struct Grammar {
    /// Each option and how it is written, in the order the documentation gives them.
    pub(crate) options: &'static [(&'static str, Form)],
    /// One option as written, for the error about a token that is not an option.
    pub(crate) example: &'static str,
}

impl Grammar {
    /// Reads `name = value, word, …` into `errors` and `value`, which reads what follows
    /// `name =` for each known option (nothing for a word). Unknown and duplicate options
    /// are reported here, for every attribute, and the reading goes on after them; a syntax
    /// error stops it, and the mistakes found before it are reported too.
    pub(crate) fn parse(
        &self,
        tokens: TokenStream,
        errors: &mut Errors,
        mut value: impl FnMut(&str, &Ident, ParseStream<'_>, &mut Errors) -> syn::Result<()>,
    ) {
        let parser = |input: ParseStream<'_>| {
            let mut seen = BTreeSet::new();
            while !input.is_empty() {
                let name = self.parse_name(input)?;
                let label = name.to_string();
                let has_value = input.peek(Token![=]);
                match self.form(&label) {
                    Some(Form::Value) if !has_value => {
                        return Err(syn::Error::new(
                            name.span(),
                            format!("expected `{label} = …`: options are written `name = value`"),
                        ));
                    }
                    None => {
                        errors.at(&name, self.unknown(&label));
                        if has_value {
                            skip_value(input)?;
                        }
                    }
                    Some(form) => {
                        if form == Form::Word && has_value {
                            errors.at(
                                &name,
                                format!("`{label}` takes no value: write `{label}` alone"),
                            );
                            skip_value(input)?;
                        } else if has_value {
                            input.parse::<Token![=]>()?;
                        }
                        if !seen.insert(label.clone()) {
                            errors.at(&name, format!("duplicate option `{label}`"));
                        }
                        value(&label, &name, input, errors)?;
                    }
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(error) = parser.parse2(tokens) {
            errors.push(error);
        }
    }

    fn form(&self, label: &str) -> Option<Form> {
        self.options
            .iter()
            .find(|(option, _)| *option == label)
            .map(|(_, form)| *form)
    }

    /// An option's name: an identifier, or `crate`, which is a keyword.
    fn parse_name(&self, input: ParseStream<'_>) -> syn::Result<Ident> {
        if input.peek(Token![crate]) {
            let token: Token![crate] = input.parse()?;
            return Ok(Ident::new("crate", token.span));
        }
        input.parse::<Ident>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "expected an option, as in `{}`: one of {}",
                    self.example,
                    self.expected()
                ),
            )
        })
    }

    pub(crate) fn unknown(&self, label: &str) -> String {
        format!(
            "unknown option `{label}`: expected one of {}",
            self.expected()
        )
    }

    fn expected(&self) -> String {
        let quoted: Vec<String> = self.options.iter().map(|(o, _)| format!("`{o}`")).collect();
        quoted.join(", ")
    }
}

/// Skips `= value`, so that the options after a mistaken one are still read.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    input.parse::<Token![=]>()?;
    input.parse::<Expr>()?;
    Ok(())
}
