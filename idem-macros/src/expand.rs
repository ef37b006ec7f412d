//! The rewrite of an `#[idempotent]` function.
//!
//! ```text
//! async fn send(customer: &str, mailer: &Mailer) -> Result<Receipt, E> { body }
//! ```
//! becomes, with `skip = [mailer]`,
//! ```text
//! async fn send(customer: &str, mailer: &Mailer) -> Result<Receipt, E> {
//!     static ACTION: Action = Action::new("send")…;           // the options, as constants
//!     let codec = codec::<Result<Receipt, E>, _, _>();         // type errors land here
//!     let call = call(&ACTION, &[key_arg(&customer)], None)?;  // key: hashes, nothing kept
//!     let store = default_store()?;                            // or `store = …`
//!     run(call, store, codec, async move { body }).await       // the protocol, in the runtime
//! }
//! ```
//! For a method that `#[async_trait]` already rewrote, the same goes inside its
//! `Box::pin(async move { … })`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitStr};

use crate::args::{Args, Millis, OnConflict, OnStale};
use crate::errors::with_errors;
use crate::function::{async_trait_body, result_types, Function, Shape};
use crate::spans::{first_and_last, internal, located, respan};

/// `#[idempotent(attr)] item`.
pub(crate) fn idempotent(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(not_a_function) => {
            // Spanned where the item stops looking like a function: `struct`, `impl`, `;`.
            let error = syn::Error::new(
                not_a_function.span(),
                "#[idempotent] goes on an `async fn` with a body (a free function or a method)",
            );
            return with_errors(item, &error);
        }
    };
    // On an error the function is emitted as written, less the `#[secret]` that rustc does
    // not know: one mistake, one error.
    let item = crate::step_function::without_secret_attributes(&function);
    let args = match Args::parse(attr) {
        Ok(args) => args,
        Err(error) => return with_errors(item, &error),
    };
    match Function::read(function, &args) {
        Ok(function) => rewrite(&function, &args),
        Err(error) => with_errors(item, &error),
    }
}

fn rewrite(function: &Function, args: &Args) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::idem),
    };
    let private = quote!(#krate::__private);
    let names = Names::new();
    let prelude = prelude(function, args, &private, &names);
    let Names {
        call, store, codec, ..
    } = &names;
    let run = |body: &dyn ToTokens| {
        quote! {
            #prelude
            #private::run(#call, #store, #codec, #body).await
        }
    };

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function.item;
    let new_body = match (&function.shape, async_trait_body(block)) {
        (Shape::AsyncTrait { .. }, Some((boxing, inner))) => {
            let wrapped = run(inner);
            quote!({ #boxing(async move { #wrapped }) })
        }
        _ => {
            let verify = verify_first(function, args, &private);
            let wrapped = run(&quote!(async move { #verify #block }));
            quote!({ #wrapped })
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig #new_body
    }
}

/// `if let Some(found) = verify_first::<R, _, _, _>(verify(&a, …)).await { return found; }`:
/// with `verify = f`, a call that resumes one in doubt asks `f` first, with the function's
/// arguments by reference (`self` and `&T` as they are). The call is shown on `f`, so that a
/// function that does not fit is reported there.
fn verify_first(function: &Function, args: &Args, private: &TokenStream) -> TokenStream {
    let Some(path) = &args.verify else {
        return TokenStream::new();
    };
    let receiver = function.item.sig.receiver().map(|receiver| {
        if receiver.reference.is_some() {
            quote!(&*self)
        } else {
            quote!(&self)
        }
    });
    let passed = receiver
        .into_iter()
        .chain(function.arguments.iter().map(|argument| {
            let name = &argument.name;
            if argument.by_reference {
                quote!(&*#name)
            } else {
                quote!(&#name)
            }
        }));
    let output = function.output().expect("checked by Function::read");
    let found = internal("__idem_found");
    let (first, last) = first_and_last(path);
    let shown = respan(private, first);
    let callee = quote_spanned!(last=> (#path));
    // The arguments and the `.await` are shown on the path too: one mistake, one error, there.
    let passed = passed.map(|argument| respan(&argument, last));
    let await_ = quote_spanned!(last=> .await);
    let call =
        quote_spanned!(first=> #shown::verify_first::<#output, _, _, _>(#callee(#(#passed),*)));
    quote! {
        if let ::core::option::Option::Some(#found) = #call #await_ {
            return #found;
        }
    }
}

/// The names the generated code gives its own items and variables.
struct Names {
    action: Ident,
    call: Ident,
    store: Ident,
    codec: Ident,
    error: Ident,
    handle: Ident,
}

impl Names {
    fn new() -> Self {
        Names {
            action: internal("__IDEM_ACTION"),
            call: internal("__idem_call"),
            store: internal("__idem_store"),
            codec: internal("__idem_codec"),
            error: internal("__idem_error"),
            handle: internal("__idem_store_handle"),
        }
    }
}

/// The statements before the body runs: the action, the codec, the key, the store.
fn prelude(function: &Function, args: &Args, private: &TokenStream, names: &Names) -> TokenStream {
    let Names {
        action,
        call,
        codec,
        error,
        ..
    } = names;
    let fail = quote! {
        return #private::fail(&#codec, &#action, #error)
    };
    let builder = action_builder(function, args, private);
    let codec_statements = codec_statements(function, args, private, codec);
    let (key_parts, payload_parts) = key_and_payload(function, args, private);
    let store_value = store_statement(args, private, names, &fail);
    // A method learns its `Self` type at its first call: without `name = …`, its action is
    // then `Type::method`.
    let call_fn = if function.item.sig.receiver().is_some() {
        quote!(#private::call_method::<Self>)
    } else {
        quote!(#private::call)
    };
    quote! {
        static #action: #private::Action = #builder;
        #private::inventory::submit! { #private::ActionRegistration(&#action) }
        #codec_statements
        let #call = match #call_fn(&#action, &[#(#key_parts),*], #payload_parts) {
            ::core::result::Result::Ok(call) => call,
            ::core::result::Result::Err(#error) => #fail,
        };
        #store_value
    }
}

/// `let codec = codec::<R, _, _>();` and the options that change it (`cache_err`, `in_doubt`).
fn codec_statements(
    function: &Function,
    args: &Args,
    private: &TokenStream,
    codec: &Ident,
) -> TokenStream {
    // `codec::<R, _, _>()`: the holes are spanned on `T` and `E` of `Result<T, E>` when the
    // return type is written out, so that a wrong `Ok` or `Err` type is reported on itself.
    let output = function.output().expect("checked by Function::read");
    let whole = output.span();
    let (ok, err) = result_types(output).map_or((whole, whole), |(t, e)| (t.span(), e.span()));
    let (ok, err) = (
        quote_spanned!(located(ok)=> _),
        quote_spanned!(located(err)=> _),
    );
    let at = located(whole);
    let codec_value = {
        let private = respan(private, at);
        quote_spanned!(at=> #private::codec::<#output, #ok, #err>())
    };
    let cache_err = args.cache_err.as_ref().map(|predicate| {
        let at = located(predicate.span());
        let private = respan(private, at);
        quote_spanned!(at=> let #codec = #private::caching_errors(#codec, #predicate);)
    });
    let in_doubt = args.in_doubt.as_ref().map(|predicate| {
        let at = located(predicate.span());
        let private = respan(private, at);
        quote_spanned!(at=> let #codec = #private::in_doubt(#codec, #predicate);)
    });

    quote! {
        let #codec = #codec_value;
        #cache_err
        #in_doubt
    }
}

/// The key's parts and the payload's (`None` when the key is the whole payload), each a
/// `key_arg(&(value))`.
fn key_and_payload(
    function: &Function,
    args: &Args,
    private: &TokenStream,
) -> (Vec<TokenStream>, TokenStream) {
    // `key_arg(&(value))`, shown on `customer_id: &str` or `order.id`.
    let key_arg = |value: &dyn ToTokens, written: &dyn ToTokens| {
        let (first, last) = first_and_last(written);
        let private = respan(private, first);
        let value = quote_spanned!(last=> (#value));
        quote_spanned!(first=> #private::key_arg(&#value))
    };
    let payload: Vec<TokenStream> = function
        .arguments
        .iter()
        .filter(|a| !a.skipped)
        .map(|a| key_arg(&a.name, &a.written))
        .collect();
    match &args.key {
        None => (payload, quote!(::core::option::Option::None)),
        Some(parts) => {
            let parts = parts.iter().map(|part| key_arg(part, part)).collect();
            (
                parts,
                quote!(::core::option::Option::Some(&[#(#payload),*])),
            )
        }
    }
}

/// `let store = …;`: the one of `store = …`, or the default store (an error if none is set).
fn store_statement(
    args: &Args,
    private: &TokenStream,
    names: &Names,
    fail: &TokenStream,
) -> TokenStream {
    let Names {
        action,
        store,
        error,
        handle,
        ..
    } = names;
    match &args.store {
        Some(expr) => {
            // `store_ref(&*(handle))` rather than `store_ref(handle)`: two tokens, so that the
            // argument, and an error about it, can be shown on all of `expr`.
            let (first, last) = first_and_last(expr);
            let private = respan(private, first);
            let shown = quote_spanned!(last=> (#handle));
            quote_spanned! {first=>
                let #handle = &(#expr);
                let #store = #private::store_ref(&*#shown);
            }
        }
        None => quote! {
            let #handle = match #private::default_store(&#action) {
                ::core::result::Result::Ok(store) => store,
                ::core::result::Result::Err(#error) => #fail,
            };
            let #store = #private::store_ref(&#handle);
        },
    }
}

/// `Action::new("name").namespace(…)…`, with only the options the user gave.
fn action_builder(function: &Function, args: &Args, private: &TokenStream) -> TokenStream {
    let name = args.name.clone().unwrap_or_else(|| {
        LitStr::new(
            &function.item.sig.ident.unraw().to_string(),
            Span::call_site(),
        )
    });
    let duration = |m: &Millis| {
        let millis = m.millis;
        quote_spanned!(m.span=> #private::Duration::from_millis(#millis))
    };
    let function_name = function.item.sig.ident.unraw().to_string();
    let mut builder = quote!(#private::Action::new(#name)
        .defined_at(::core::concat!(::core::module_path!(), "::", #function_name)));
    if function.item.sig.receiver().is_some() {
        let default_name = args.name.is_none();
        builder.extend(quote!(.method(#default_name)));
    }
    if let Some(namespace) = &args.namespace {
        builder.extend(quote!(.namespace(#namespace)));
    }
    if let Some(version) = &args.version {
        builder.extend(quote!(.version(#version)));
    }
    if let Some(ttl) = &args.ttl {
        let ttl = duration(ttl);
        builder.extend(quote!(.ttl(#ttl)));
    }
    if let Some(lease) = &args.lease {
        let lease = duration(lease);
        builder.extend(quote!(.lease(#lease)));
    }
    match &args.on_conflict {
        Some(OnConflict::Wait(limit)) => {
            let limit = duration(limit);
            builder.extend(quote!(.on_conflict(#private::OnConflict::Wait(#limit))));
        }
        Some(OnConflict::Fail) => builder.extend(quote!(.on_conflict(#private::OnConflict::Fail))),
        None => {}
    }
    match &args.on_stale {
        Some(OnStale::TakeOver) => builder.extend(quote!(.on_stale(#private::OnStale::TakeOver))),
        Some(OnStale::Review) => builder.extend(quote!(.on_stale(#private::OnStale::Review))),
        None => {}
    }
    if let Some(bytes) = args.max_value_bytes {
        let bytes = proc_macro2::Literal::u64_unsuffixed(bytes);
        builder.extend(quote!(.max_value_bytes(#bytes)));
    }
    builder
}
