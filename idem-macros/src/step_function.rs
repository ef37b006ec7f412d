//! The function under `#[saga_step]`: a free `async fn` whose arguments can be logged and
//! read back, since recovery calls it by name with the arguments from the saga log.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit_mut::VisitMut;
use syn::{
    FnArg, GenericParam, Ident, ItemFn, Pat, ReturnType, Signature, Type, TypeImplTrait,
    TypeReference,
};

use crate::errors::Errors;
use crate::function::result_types;

/// One argument of the step.
pub(crate) struct StepArgument {
    pub(crate) name: Ident,
    pub(crate) ty: Type,
    /// `name: Type` as written, for errors about the argument.
    pub(crate) written: TokenStream,
    /// `#[secret]`, where it was written: the log keeps a placeholder for the argument.
    pub(crate) secret: Option<syn::Attribute>,
}

/// The step, read and checked.
pub(crate) struct Step {
    pub(crate) item: ItemFn,
    pub(crate) arguments: Vec<StepArgument>,
}

impl Step {
    pub(crate) fn read(mut item: ItemFn) -> Result<Step, syn::Error> {
        let mut errors = Errors::default();
        check_signature(&item.sig, &mut errors);
        // `#[secret]` is idem's, not rustc's: taken off the argument before it is emitted.
        let secrets = take_secret_attributes(&mut item.sig, &mut errors);
        let mut arguments = arguments(&item.sig, &mut errors);
        for (argument, secret) in arguments.iter_mut().zip(secrets) {
            argument.secret = secret;
        }
        check_output(&item.sig, &mut errors);
        errors.finish(Step { item, arguments })
    }

    /// The first `#[secret]` argument, if any.
    pub(crate) fn secret(&self) -> Option<&StepArgument> {
        self.arguments.iter().find(|a| a.secret.is_some())
    }

    /// The type the step's future returns.
    pub(crate) fn output(&self) -> &Type {
        match &self.item.sig.output {
            ReturnType::Type(_, ty) => ty,
            ReturnType::Default => unreachable!("checked by Step::read"),
        }
    }
}

/// What the signature cannot be: `const`, not `async`, `unsafe`, `extern`, generic over
/// types, variadic.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.at(constness, "a saga step cannot be a `const fn`");
    }
    if sig.asyncness.is_none() {
        errors.at(
                sig.fn_token,
                "#[saga_step] works on `async fn` only: a saga awaits each step and logs its output before the next one starts",
            );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(
                unsafety,
                "a saga step cannot be `unsafe`: recovery calls it by name from the saga log, where no caller upholds its safety contract",
            );
    }
    if let Some(abi) = &sig.abi {
        errors.at(
            abi,
            "a saga step cannot be `extern`: it is a Rust `async fn` that recovery calls by name",
        );
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Lifetime(_)) {
            errors.at(param, NOT_CONCRETE);
        }
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "a saga step cannot be variadic");
    }
}

/// The step's arguments, each a plain name of a type that can be logged and read back.
fn arguments(sig: &Signature, errors: &mut Errors) -> Vec<StepArgument> {
    let mut arguments = Vec::new();
    for input in &sig.inputs {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.at(
                        receiver,
                        "a saga step must be a free function: recovery calls it by name with the arguments read back from the log",
                    );
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        match &*typed.ty {
                Type::Reference(reference) if reference.mutability.is_some() => errors.at(
                    &typed.ty,
                    "a saga step cannot take a `&mut` argument: recovery calls it with arguments read back from the log, so its changes would reach no one; take the value or `&T`, and return what changed",
                ),
                Type::Reference(TypeReference {
                    lifetime: Some(lifetime),
                    ..
                }) if lifetime.ident == "static" => errors.at(
                    &typed.ty,
                    "a saga step cannot take a `&'static` argument: recovery passes a reference to the value it read back from the log, which lives only as long as the call; take `&T`",
                ),
                ty => FindImplTrait(errors).visit_type_mut(&mut ty.clone()),
            }
        match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => {
                    arguments.push(StepArgument {
                        name: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                        written: typed.to_token_stream(),
                        secret: None,
                    });
                }
                other => errors.at(
                    other,
                    "a saga step needs a plain name for each argument: its value is logged, then read back for recovery and the compensation",
                ),
            }
    }
    arguments
}

/// The function's tokens without `#[secret]` on its arguments: what is emitted beside an
/// error.
pub(crate) fn without_secret_attributes(function: &ItemFn) -> TokenStream {
    let mut shown = function.clone();
    take_secret_attributes(&mut shown.sig, &mut Errors::default());
    shown.to_token_stream()
}

/// Takes `#[secret]` off each typed argument: one entry per typed argument (receivers are
/// skipped, as `arguments` skips them), the attribute where it was written.
pub(crate) fn take_secret_attributes(
    sig: &mut Signature,
    errors: &mut Errors,
) -> Vec<Option<syn::Attribute>> {
    let mut found = Vec::new();
    for input in &mut sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        let mut secret = None;
        typed.attrs.retain(|attr| {
            if !attr.path().is_ident("secret") {
                return true;
            }
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                errors.at(
                    attr,
                    "`#[secret]` takes no arguments: write `#[secret]` alone",
                );
            }
            secret.get_or_insert_with(|| attr.clone());
            false
        });
        found.push(secret);
    }
    found
}

/// The return type: a `Result` whose `Ok` type does not borrow.
fn check_output(sig: &Signature, errors: &mut Errors) {
    match &sig.output {
            ReturnType::Default => errors.at(
                sig,
                "a saga step returns `Result<T, E>`: add the return type (`T` is logged for the compensation, `E: From<idem::Error> + Display` carries idem's own errors)",
            ),
            ReturnType::Type(_, output) => {
                if let Some((ok @ Type::Reference(_), _)) = result_types(output) {
                    errors.at(
                        ok,
                        "the `Ok` type of a saga step cannot borrow: it is logged and read back for the compensation and for recovery, so return an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)",
                    );
                }
            }
        }
}

const NOT_CONCRETE: &str = "a saga step cannot be generic over types or constants: recovery calls it by name with the arguments read back from the log, so each argument needs one concrete type (lifetimes are fine)";

/// Reports `impl Trait` in an argument's type: a type parameter without a name.
struct FindImplTrait<'a>(&'a mut Errors);

impl VisitMut for FindImplTrait<'_> {
    fn visit_type_impl_trait_mut(&mut self, ty: &mut TypeImplTrait) {
        self.0.at(
            &*ty,
            "a saga step's argument cannot be `impl Trait`: recovery calls the step by name with the arguments read back from the log, so each needs one concrete type",
        );
    }

    fn visit_type_bare_fn_mut(&mut self, _: &mut syn::TypeBareFn) {}
}
