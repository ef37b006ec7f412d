//! The rewrite of a `#[saga_step]` function.
//!
//! ```text
//! #[saga_step(compensate = refund)]
//! pub async fn charge(customer: &str, cents: u64) -> Result<Charge, E> { body }
//! ```
//! becomes (`R` is `Result<Charge, E>`; paths through `::idem::__private` shortened)
//! ```text
//! pub fn charge<'__idem0>(customer: &'__idem0 str, cents: u64)
//!     -> StepCall<impl Future<Output = R> + use<'__idem0>>
//! {
//!     let def: &'static StepDef = {
//!         fn owned<T: ?Sized + ArgOwned>() {}
//!         fn read0<T0: ?Sized + ArgOwned, T1: ?Sized + ArgOwned>(args: &[u8])
//!             -> Result<T0::Owned, StepFailure> { decode_args::<(T0::Owned, T1::Owned)>(args).map(|all| all.0) }
//!         fn read1<…>(args: &[u8]) -> Result<T1::Owned, StepFailure> { … all.1 … }
//!         fn run(args: Vec<u8>) -> StepFuture<Result<Vec<u8>, StepFailure>> {  // the step again,
//!             Box::pin(async move {                                          // from the log
//!                 let _ = step_call::<R, _, _, Ready<R>>;                    // the checks (`Expansion`)
//!                 let _ = owned::<str>;
//!                 let _ = owned::<u64>;
//!                 let a0 = read0::<str, u64>(&args)?;
//!                 let a1 = read1::<str, u64>(&args)?;
//!                 encode_output::<_, _>(<R as IdemReturn>::into_result(charge(Borrow::borrow(&a0), a1).await))
//!             })
//!         }
//!         fn compensate(output: Vec<u8>, args: Vec<u8>) -> StepFuture<Result<(), StepFailure>> {
//!             Box::pin(async move {                                          // undo, from the log
//!                 /* the same checks */
//!                 let mut output: Option<Charge> = Some(decode_output::<_>(&output)?);
//!                 let a0 = read0::<str, u64>(&args)?;
//!                 let a1 = read1::<str, u64>(&args)?;
//!                 compensated(Compensation::<Charge, (&str, u64), _>::call(
//!                     refund, &mut output, (Borrow::borrow(&a0), a1)).await)
//!             })
//!         }
//!         static STEP: StepDef = StepDef::new("charge", run, Some(compensate));
//!         inventory::submit! { StepRegistration(&STEP) }                      // found by name
//!         &STEP
//!     };
//!     fn log<'a, T0: ?Sized + StepArgument, T1: ?Sized + StepArgument>(a0: &'a T0, a1: &'a T1)
//!         -> StepArgs { step_args(&(a0, a1)) }                               // for the log
//!     let logged = log(&customer, &cents);
//!     step_call::<R, _, _, _>(def, logged, async move { body })             // then moved in
//! }
//! ```
//! `irreversible` registers `None` and writes no `compensate`. The saga itself lives in the
//! runtime; the generic helpers are there so that each type error is reported once, on the
//! type or argument that is wrong (see [`Expansion`]).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    FnArg, GenericParam, ItemFn, Lifetime, LifetimeParam, LitStr, ParenthesizedGenericArguments,
    Path, Type, TypeBareFn, TypeReference,
};

use crate::errors::with_errors;
use crate::function::result_types;
use crate::spans::{first_and_last, internal, located, located_tokens, respan};
use crate::step_args::{StepArgs, Undo};
use crate::step_function::Step;

/// `#[saga_step(attr)] item`.
pub(crate) fn saga_step(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(not_a_function) => {
            // Spanned where the item stops looking like a function: `struct`, `impl`, `;`.
            let error = syn::Error::new(
                not_a_function.span(),
                "#[saga_step] goes on a free `async fn` with a body",
            );
            return with_errors(item, &error);
        }
    };
    // On an error the function is emitted as written, less the `#[secret]` that rustc does
    // not know: one mistake, one error.
    let item = crate::step_function::without_secret_attributes(&function);
    // The options and the function are checked apart: a mistake in each is reported.
    match (StepArgs::parse(attr), Step::read(function)) {
        (Ok(args), Ok(step)) => match (&args.verify, step.secret()) {
            // `verify` is called with the arguments read back from the log, which keeps
            // only a placeholder for a secret one. The function is emitted without the
            // `#[secret]` that rustc does not know, so that this is the one error.
            (Some(verify), Some(secret)) => {
                let error = syn::Error::new_spanned(
                    verify,
                    format!(
                        "`verify` cannot be used on a step with a `#[secret]` argument (`{}`): recovery calls `verify` with the step's arguments read back from the saga log, which keeps only a placeholder for a secret one",
                        secret.name
                    ),
                );
                with_errors(step.item.to_token_stream(), &error)
            }
            _ => rewrite(&step, &args),
        },
        (Err(mut error), Err(more)) => {
            error.combine(more);
            with_errors(item, &error)
        }
        (Err(error), _) | (_, Err(error)) => with_errors(item, &error),
    }
}

fn rewrite(step: &Step, args: &StepArgs) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::idem),
    };
    let private = quote!(#krate::__private);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &step.item;
    let ident = &sig.ident;
    let output = step.output();

    // The signature of the `async fn`, without `async`: each elided lifetime of an argument
    // gets a name, so that the returned future can capture it as the `async fn`'s did.
    let mut generics = sig.generics.clone();
    let mut inputs = sig.inputs.clone();
    let mut naming = NameLifetimes::default();
    for input in &mut inputs {
        if let FnArg::Typed(typed) = input {
            naming.visit_type_mut(&mut typed.ty);
        }
    }
    generics.params.extend(
        naming
            .named
            .into_iter()
            .map(|lifetime| GenericParam::Lifetime(LifetimeParam::new(lifetime))),
    );
    let captured: Vec<&Lifetime> = generics.lifetimes().map(|param| &param.lifetime).collect();
    let where_clause = &sig.generics.where_clause;
    let params = &generics.params;
    let fn_token = &sig.fn_token;

    let expansion = Expansion::new(step, private);
    let private = &expansion.private;
    let def = internal("__idem_def");
    let registered = expansion.registration(args);
    let (call_fn, call) = expansion.call(&def, quote!(async move #block));
    quote! {
        #(#attrs)*
        #vis #fn_token #ident<#params>(#inputs)
            -> #private::StepCall<impl ::core::future::Future<Output = #output> + use<#(#captured),*>>
            #where_clause
        {
            let #def: &'static #private::StepDef = { #registered };
            #call_fn
            #call
        }
    }
}

/// What the parts of the expansion share.
///
/// Each requirement of the types is checked first, once, in the generated function that
/// uses it, by a statement that only names a function with the bound (`let _ = f::<T>;`),
/// written with the same tokens wherever it is needed. rustc shows an error that several
/// functions repeat once, and leaves out the errors that one implies at the same place (its
/// `T: Serialize` when `T: StoredValue` is unmet), so that each mistake gives one error, on
/// the type or argument that is wrong.
struct Expansion<'a> {
    step: &'a Step,
    private: TokenStream,
    /// The return type, with the step's lifetimes made `'_`: its form inside the generated
    /// functions, where those lifetimes are not in scope.
    output: TokenStream,
    /// `_` shown on `T` and `E` of `Result<T, E>` when the return type is written out, else
    /// on the return type: the type holes of the calls that need `T` and `E`.
    ok_hole: TokenStream,
    err_hole: TokenStream,
    /// `let _ = step_call::<R, T, E, (), Ready<R>>;`: the requirements of the return type.
    check_output: TokenStream,
    /// `let _ = owned::<T>;`, one for each argument: it can be read back from the log.
    check_arguments: TokenStream,
    /// The generic function those statements name, and the ones that read each argument.
    readers: TokenStream,
    /// Each argument read back from the log, and as it is passed on (`Borrow::borrow(&a0)`
    /// for `&T`).
    read: Vec<TokenStream>,
    passed: Vec<TokenStream>,
    /// Each argument as `verify` takes it: by reference (`&a0`; `&T` as it is).
    borrowed: Vec<TokenStream>,
}

impl<'a> Expansion<'a> {
    fn new(step: &'a Step, private: TokenStream) -> Self {
        let written = step.output();
        let output = located_tokens(erase_lifetimes(written));
        let whole = written.span();
        let (ok, err) = result_types(written).map_or((whole, whole), |(t, e)| (t.span(), e.span()));
        let ok_hole = quote_spanned!(located(ok)=> _);
        let err_hole = quote_spanned!(located(err)=> _);
        let check_output = {
            let at = located(whole);
            let private = respan(&private, at);
            quote_spanned! {at=>
                let _ = #private::step_call::<#output, #ok_hole, #err_hole, ::core::future::Ready<#output>>;
            }
        };
        let mut expansion = Expansion {
            step,
            private,
            output,
            ok_hole,
            err_hole,
            check_output,
            check_arguments: TokenStream::new(),
            readers: TokenStream::new(),
            read: Vec::new(),
            passed: Vec::new(),
            borrowed: Vec::new(),
        };
        expansion.arguments();
        expansion
    }

    /// How the arguments are read back from the log.
    ///
    /// `ArgOwned` is implemented for every `T: DeserializeOwned`, so rustc resolves
    /// `<Order as ArgOwned>::Owned` to `Order` and reports the unmet `Order: Deserialize`
    /// wherever that type appears, in serde's words. It appears only where argument `i` is
    /// read, by `read_i::<T0, …, Tn>(&args)` (the whole call shown on argument `i`'s type),
    /// which decodes every argument (generic, with `Tj: ArgOwned`, so the decoding itself
    /// cannot fail to compile) and returns the `i`-th; its bounds are reported on each `Tj`,
    /// where `owned::<Tj>` has already reported them in `ArgOwned`'s words.
    fn arguments(&mut self) {
        // A step with a `#[secret]` argument is never read back from the log (its `run`
        // refuses, its compensation takes the output alone, `verify` is refused): its
        // arguments need no `Deserialize`, and nothing here is generated.
        if self.step.secret().is_some() {
            return;
        }
        let private = &self.private;
        let arguments = &self.step.arguments;
        let owned = internal("__idem_owned");
        let bytes = internal("__idem_args");
        let params = type_params(arguments.len());
        // `T` for `&T` (read as `T::Owned`, then borrowed), else the type itself.
        let targets: Vec<(&Type, bool)> = arguments
            .iter()
            .map(|argument| match &argument.ty {
                Type::Reference(reference) => (&*reference.elem, true),
                ty => (ty, false),
            })
            .collect();
        let types: Vec<TokenStream> = targets
            .iter()
            .map(|(ty, _)| located_tokens(erase_lifetimes(ty)))
            .collect();
        let bound = quote!(?::core::marker::Sized + #private::ArgOwned);
        let mut readers = quote! {
            fn #owned<__IdemT: #bound>() {}
        };
        for (index, (target, by_reference)) in targets.iter().enumerate() {
            // Everything about argument `i` is shown on its type (`Order` in `&Order`).
            let (first, last) = first_and_last(target);
            let ty = &types[index];
            let shown_owned = respan(&owned.to_token_stream(), first);
            self.check_arguments
                .extend(quote_spanned!(first=> let _ = #shown_owned::<#ty>;));

            let reader = format_ident!("__idem_read{}", index, span = Span::mixed_site());
            let position = syn::Index::from(index);
            let param = &params[index];
            let all = internal("__idem_all");
            readers.extend(quote! {
                fn #reader<#(#params: #bound),*>(
                    #bytes: &[::core::primitive::u8],
                ) -> ::core::result::Result<<#param as #private::ArgOwned>::Owned, #private::StepFailure> {
                    #private::decode_args::<(#(<#params as #private::ArgOwned>::Owned,)*)>(#bytes)
                        .map(|#all| #all.#position)
                }
            });
            // The call's span is then exactly the type's (same place, same context): the
            // errors there are one.
            let shown_reader = proc_macro2::Ident::new(&reader.to_string(), first);
            let call = quote_spanned!(first=> #shown_reader::<#(#types),*>);
            let rest = quote_spanned!(last=> (&#bytes)?);
            self.read.push(quote!(#call #rest));

            let name = format_ident!("__idem_arg{}", index, span = Span::mixed_site());
            self.passed.push(if *by_reference {
                quote!(#private::Borrow::borrow(&#name))
            } else {
                quote!(#name)
            });
            self.borrowed.push(if *by_reference {
                quote!(#private::Borrow::borrow(&#name))
            } else {
                quote!(&#name)
            });
        }
        if arguments.is_empty() {
            readers = TokenStream::new();
        }
        self.readers = readers;
    }

    /// `<R as IdemReturn>::item`, shown on the return type as the `R` of `check_output` is:
    /// that `R` is not a `Result` is then reported once.
    fn return_type_item(&self, item: &str) -> TokenStream {
        let Expansion {
            private, output, ..
        } = self;
        let (first, last) = first_and_last(self.step.output());
        let private = respan(private, first);
        let item = proc_macro2::Ident::new(item, last);
        quote_spanned!(first=> <#output as #private::IdemReturn>::#item)
    }

    /// `let a0 = read0::<…>(&args)?; …` (or, with no argument, a check that the log has
    /// none).
    fn decode(&self) -> TokenStream {
        let private = &self.private;
        let bytes = internal("__idem_args");
        if self.step.arguments.is_empty() {
            return quote!(#private::decode_args::<()>(&#bytes)?;);
        }
        let names = (0..self.read.len())
            .map(|i| format_ident!("__idem_arg{}", i, span = Span::mixed_site()));
        let read = &self.read;
        quote!(#(let #names = #read;)*)
    }

    /// The call that makes the `StepCall`: the arguments are encoded for the log first,
    /// `let logged = log(&a0, …);`, through a function generic over their types whose bounds
    /// say they are logged (`StepArgument`), so that rustc reports an argument that cannot be
    /// on that argument; then `step_call(def, logged, async move { body })` moves them into
    /// the body.
    fn call(&self, def: &proc_macro2::Ident, body: TokenStream) -> (TokenStream, TokenStream) {
        let Expansion {
            step,
            private,
            output,
            ok_hole,
            err_hole,
            ..
        } = self;
        let log = internal("__idem_log");
        let logged = internal("__idem_logged");
        let lifetime = Lifetime::new("'__idem", Span::mixed_site());
        // A `#[secret]` argument is not passed to `log`: the log gets `Redacted` in its
        // place, and the argument need not be `Serialize`.
        let logged_arguments: Vec<_> = step
            .arguments
            .iter()
            .filter(|argument| argument.secret.is_none())
            .collect();
        let params = type_params(logged_arguments.len());
        let values = logged_arguments.iter().map(|argument| {
            let (first, last) = first_and_last(&argument.written);
            let name = &argument.name;
            let value = quote_spanned!(last=> (#name));
            quote_spanned!(first=> &#value)
        });
        let names: Vec<_> = (0..logged_arguments.len())
            .map(|i| format_ident!("__idem_arg{}", i, span = Span::mixed_site()))
            .collect();
        let mut logged_names = names.iter();
        let tuple: Vec<TokenStream> = step
            .arguments
            .iter()
            .map(|argument| match argument.secret {
                None => {
                    let name = logged_names.next();
                    quote!(#name)
                }
                Some(_) => quote!(&#private::Redacted),
            })
            .collect();
        let step_call = {
            let at = located(step.output().span());
            let private = respan(private, at);
            quote_spanned! {at=>
                #private::step_call::<#output, #ok_hole, #err_hole, _>(#def, #logged, #body)
            }
        };
        // One parameter for each argument, so that rustc shows an unmet bound on the
        // argument itself (inside a tuple, it shows the whole tuple).
        let log_fn = quote! {
            #[allow(clippy::too_many_arguments)]
            fn #log<#lifetime, #(#params: ?::core::marker::Sized + #private::StepArgument),*>(
                #(#names: &#lifetime #params,)*
            ) -> #private::StepArgs {
                #private::step_args(&(#(#tuple,)*))
            }
        };
        let call = quote! {
            let #logged = #log(#(#values),*);
            #step_call
        };
        (log_fn, call)
    }

    /// The block that registers the step and gives its `&'static StepDef`.
    fn registration(&self, args: &StepArgs) -> TokenStream {
        let Expansion {
            step,
            private,
            ok_hole,
            err_hole,
            check_output,
            check_arguments,
            readers,
            passed,
            ..
        } = self;
        let output_written = step.output();
        let name = args.name.clone().unwrap_or_else(|| {
            LitStr::new(&step.item.sig.ident.unraw().to_string(), Span::call_site())
        });
        let ident = &step.item.sig.ident;
        let bytes = internal("__idem_args");
        let step_def = internal("__IDEM_STEP");
        let run = internal("__idem_run");
        let compensate = internal("__idem_compensate");
        let vec_u8 = quote!(::std::vec::Vec<::core::primitive::u8>);
        let decode = self.decode();
        let into_result = self.return_type_item("into_result");
        // The call, not only its path, is shown on the return type: rustc reports the unmet
        // `R: IdemReturn` of a call on all of it.
        let into_result = {
            let (_, last) = first_and_last(output_written);
            let arguments = quote!(#ident(#(#passed),*).await);
            let arguments = quote_spanned!(last=> (#arguments));
            quote!(#into_result #arguments)
        };
        let run_body = match step.secret() {
            // The log keeps a placeholder for the secret: the step cannot be called from it.
            Some(secret) => {
                let argument = LitStr::new(&secret.name.unraw().to_string(), secret.name.span());
                quote! {
                    let _ = #bytes;
                    ::core::result::Result::Err(#private::secret_not_logged(#name, #argument))
                }
            }
            None => quote! {
                #decode
                #private::encode_output::<#ok_hole, #err_hole>(
                    #into_result,
                )
            },
        };
        let run_fn = quote! {
            fn #run(#bytes: #vec_u8) -> #private::StepFuture<::core::result::Result<#vec_u8, #private::StepFailure>> {
                ::std::boxed::Box::pin(async move {
                    #check_output
                    #check_arguments
                    #run_body
                })
            }
        };
        let (compensate_fn, compensate_value) = match &args.undo {
            Undo::Irreversible => (quote!(), quote!(::core::option::Option::None)),
            Undo::Compensate(path) => (
                self.compensation(path, &compensate),
                quote!(::core::option::Option::Some(#compensate)),
            ),
        };
        let verify = internal("__idem_verify");
        let mut def = quote!(#private::StepDef::new(#name, #run, #compensate_value));
        let verify_fn = args.verify.as_ref().map(|path| {
            def.extend(quote!(.verify(#verify)));
            self.verification(path, &verify)
        });
        if args.rerun_safe.is_some() {
            def.extend(quote!(.rerun_safe()));
        }
        if let Some(bytes) = args.max_value_bytes {
            let bytes = proc_macro2::Literal::u64_unsuffixed(bytes);
            def.extend(quote!(.max_value_bytes(#bytes)));
        }
        if let Some(secret) = step.secret() {
            let argument = LitStr::new(&secret.name.unraw().to_string(), secret.name.span());
            def.extend(quote!(.secret(#argument)));
        }
        quote! {
            #readers
            #run_fn
            #compensate_fn
            #verify_fn
            static #step_def: #private::StepDef = #def;
            #private::inventory::submit! { #private::StepRegistration(&#step_def) }
            &#step_def
        }
    }

    /// `fn compensate(output, args)`: reads the step's output and arguments back from the log
    /// and calls `path` with them. The call is shown on `path`, so that a compensation that
    /// does not exist, does not fit the step or does not return a `Result` is reported there.
    fn compensation(&self, path: &Path, name: &proc_macro2::Ident) -> TokenStream {
        let Expansion {
            step,
            private,
            ok_hole,
            check_output,
            check_arguments,
            passed,
            ..
        } = self;
        let bytes = internal("__idem_args");
        let output_bytes = internal("__idem_output");
        let slot = internal("__idem_slot");
        let vec_u8 = quote!(::std::vec::Vec<::core::primitive::u8>);
        // The compensation's types are named: inferred, they would be taken from it.
        let ok = match result_types(step.output()) {
            Some((ok, _)) => erase_lifetimes(ok),
            None => self.return_type_item("Ok"),
        };
        let argument_types = step.arguments.iter().map(|a| erase_lifetimes(&a.ty));
        let decode = self.decode();

        let (first, last) = first_and_last(path);
        let shown = respan(private, first);
        let callee = quote_spanned!(last=> (#path));
        let await_ = quote_spanned!(last=> .await);
        let (call, decode) = if step.secret().is_some() {
            // The log keeps no secret argument to pass: the output alone, by a trait whose
            // error says so where a compensation wants the arguments too.
            let call = quote_spanned! {first=>
                #shown::compensated(
                    #shown::CompensationFromOutput::<#ok, _>::call(#callee, &mut #slot)#await_
                )
            };
            (call, quote!(let _ = #bytes;))
        } else {
            let call = quote_spanned! {first=>
                #shown::compensated(
                    #shown::Compensation::<#ok, (#(#argument_types,)*), _>::call(
                        #callee,
                        &mut #slot,
                        (#(#passed,)*),
                    )#await_
                )
            };
            (call, decode)
        };
        quote! {
            fn #name(
                #output_bytes: #vec_u8,
                #bytes: #vec_u8,
            ) -> #private::StepFuture<::core::result::Result<(), #private::StepFailure>> {
                ::std::boxed::Box::pin(async move {
                    #check_output
                    #check_arguments
                    let mut #slot: ::core::option::Option<#ok> = ::core::option::Option::Some(
                        #private::decode_output::<#ok_hole>(&#output_bytes)?,
                    );
                    #decode
                    #call
                })
            }
        }
    }
}

impl Expansion<'_> {
    /// `fn verify(args)`: reads the step's arguments back from the log and asks `path`
    /// whether the step happened, with them by reference. The call is shown on `path`, so
    /// that a function that does not exist or does not fit is reported there.
    fn verification(&self, path: &Path, name: &proc_macro2::Ident) -> TokenStream {
        let Expansion {
            private,
            ok_hole,
            err_hole,
            check_output,
            check_arguments,
            borrowed,
            ..
        } = self;
        let bytes = internal("__idem_args");
        let vec_u8 = quote!(::std::vec::Vec<::core::primitive::u8>);
        let decode = self.decode();
        let (first, last) = first_and_last(path);
        let shown = respan(private, first);
        let callee = quote_spanned!(last=> (#path));
        let await_ = quote_spanned!(last=> .await);
        // The arguments are shown on the path too: a `verify` that takes them otherwise is
        // reported there, not on the whole attribute.
        let borrowed = borrowed.iter().map(|argument| respan(argument, last));
        let call = quote_spanned! {first=>
            #shown::encode_verified::<#ok_hole, #err_hole>(#callee(#(#borrowed),*)#await_)
        };
        quote! {
            fn #name(
                #bytes: #vec_u8,
            ) -> #private::StepFuture<::core::result::Result<::core::option::Option<#vec_u8>, #private::StepFailure>> {
                ::std::boxed::Box::pin(async move {
                    #check_output
                    #check_arguments
                    #decode
                    #call
                })
            }
        }
    }
}

/// `__IdemT0`, `__IdemT1`, …: the type parameters of the generated generic functions (type
/// names are not hygienic: the user's types must not be able to name them).
fn type_params(count: usize) -> Vec<proc_macro2::Ident> {
    (0..count)
        .map(|i| format_ident!("__IdemT{}", i, span = Span::mixed_site()))
        .collect()
}

/// Names every elided lifetime (`&T`, `'_`) of the argument types `'__idem0`, `'__idem1`, …
#[derive(Default)]
struct NameLifetimes {
    named: Vec<Lifetime>,
}

impl NameLifetimes {
    fn next(&mut self, at: Span) -> Lifetime {
        let lifetime = Lifetime::new(
            &format!("'__idem{}", self.named.len()),
            Span::mixed_site().located_at(at),
        );
        self.named.push(lifetime.clone());
        lifetime
    }
}

impl VisitMut for NameLifetimes {
    fn visit_type_reference_mut(&mut self, reference: &mut TypeReference) {
        if reference.lifetime.is_none() {
            reference.lifetime = Some(self.next(reference.and_token.span));
        }
        visit_mut::visit_type_reference_mut(self, reference);
    }

    fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
        if lifetime.ident == "_" {
            *lifetime = self.next(lifetime.span());
        }
    }

    // The elided lifetimes of `fn(&T)` and `Fn(&T)` belong to them, not to the step.
    fn visit_type_bare_fn_mut(&mut self, _: &mut TypeBareFn) {}
    fn visit_parenthesized_generic_arguments_mut(&mut self, _: &mut ParenthesizedGenericArguments) {
    }
}

/// `ty` with each named lifetime but `'static` made `'_`: inside the functions recovery calls,
/// the step's lifetime parameters are not in scope.
fn erase_lifetimes(ty: &Type) -> TokenStream {
    struct Erase;
    impl VisitMut for Erase {
        fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
            if lifetime.ident != "static" {
                lifetime.ident = proc_macro2::Ident::new("_", lifetime.ident.span());
            }
        }
        fn visit_type_bare_fn_mut(&mut self, _: &mut TypeBareFn) {}
        fn visit_parenthesized_generic_arguments_mut(
            &mut self,
            _: &mut ParenthesizedGenericArguments,
        ) {
        }
    }
    let mut ty = ty.clone();
    Erase.visit_type_mut(&mut ty);
    ty.to_token_stream()
}
