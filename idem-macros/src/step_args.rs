//! The options of `#[saga_step(…)]`, read with the same grammar machinery as
//! `#[idempotent]`'s: unknown and duplicate options are reported in one place.

use proc_macro2::{Span, TokenStream};
use syn::parse::ParseStream;
use syn::{Ident, LitStr, Path};

use crate::args::{non_empty, parse_byte_limit, parse_function, Form, Grammar};
use crate::errors::Errors;

/// Every option, in the order the documentation gives them.
const GRAMMAR: Grammar = Grammar {
    options: &[
        ("compensate", Form::Value),
        ("irreversible", Form::Word),
        ("verify", Form::Value),
        ("rerun_safe", Form::Word),
        ("max_value_bytes", Form::Value),
        ("name", Form::Value),
        ("crate", Form::Value),
    ],
    example: "compensate = refund_payment",
};

/// How the step is undone.
pub(crate) enum Undo {
    /// `compensate = path`: by calling this function.
    Compensate(Path),
    /// `irreversible`: it cannot be.
    Irreversible,
}

/// The options of one `#[saga_step]`.
pub(crate) struct StepArgs {
    pub(crate) undo: Undo,
    /// `verify = path`: asks the step's service whether a step in doubt happened.
    pub(crate) verify: Option<Path>,
    /// `rerun_safe`: an irreversible step whose service deduplicates by its key, so that
    /// recovery may run it again to learn its output.
    pub(crate) rerun_safe: Option<Ident>,
    /// `max_value_bytes = N`: the largest arguments or output, serialized, it logs.
    pub(crate) max_value_bytes: Option<u64>,
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
}

impl StepArgs {
    /// Parses the options, collecting every mistake.
    pub(crate) fn parse(tokens: TokenStream) -> Result<StepArgs, syn::Error> {
        let mut errors = Errors::default();
        let mut undo = None;
        // Whether `compensate` or `irreversible` was written, even wrongly: a mistake in it is
        // reported on it, not as a missing option too.
        let mut said = false;
        let mut name = None;
        let mut krate = None;
        let mut verify = None;
        let mut rerun_safe = None;
        let mut max_value_bytes = None;
        GRAMMAR.parse(tokens, &mut errors, |label, option, input, errors| {
            match label {
                "compensate" => {
                    said = true;
                    if let Some(path) = parse_compensation(input, errors)? {
                        choose(&mut undo, Undo::Compensate(path), option, errors);
                    }
                }
                "irreversible" => {
                    said = true;
                    choose(&mut undo, Undo::Irreversible, option, errors);
                }
                "verify" => {
                    verify = parse_function(
                        input,
                        errors,
                        "`verify` names a function, as in `verify = find_charge`: recovery calls it by name with the step's arguments from the saga log, so it cannot be a closure or another expression",
                    )?
                }
                "rerun_safe" => rerun_safe = Some(option.clone()),
                "max_value_bytes" => max_value_bytes = parse_byte_limit(input, errors)?,
                "name" => name = Some(non_empty(label, input.parse()?, errors)),
                "crate" => krate = Some(input.call(Path::parse_mod_style)?),
                _ => errors.at(option, GRAMMAR.unknown(label)),
            }
            Ok(())
        });
        let undo = undo.unwrap_or_else(|| {
            if said {
                return Undo::Irreversible;
            }
            // On the whole attribute: the mistake is what it lacks.
            errors.push(syn::Error::new(
                Span::call_site(),
                "a saga step says how it is undone: add `compensate = function` (recovery calls it to undo the step) or `irreversible` (the step cannot be undone, so the steps after it are retried forward)",
            ));
            Undo::Irreversible
        });
        if let (Some(word), Undo::Compensate(_)) = (&rerun_safe, &undo) {
            errors.at(
                word,
                "`rerun_safe` is for an `irreversible` step: a step with `compensate = …` is always run again under its key to learn its output",
            );
        }
        errors.finish(StepArgs {
            undo,
            verify,
            rerun_safe,
            max_value_bytes,
            name,
            krate,
        })
    }
}

/// `compensate = path`: a path, not any expression (a closure could not be called from the
/// log by a process that never ran the saga).
fn parse_compensation(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Option<Path>> {
    parse_function(
        input,
        errors,
        "`compensate` names a function, as in `compensate = refund_payment`: recovery calls it by name from the saga log, so it cannot be a closure or another expression",
    )
}

/// Records how the step is undone; the second of `compensate` and `irreversible` is the
/// mistake.
fn choose(undo: &mut Option<Undo>, chosen: Undo, option: &Ident, errors: &mut Errors) {
    match (&*undo, &chosen) {
        (Some(Undo::Compensate(_)), Undo::Irreversible)
        | (Some(Undo::Irreversible), Undo::Compensate(_)) => errors.at(
            option,
            "a saga step is either undone by `compensate = …` or `irreversible`, not both",
        ),
        _ => *undo = Some(chosen),
    }
}
