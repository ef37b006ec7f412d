//! The function under `#[idempotent]`: its shape, its arguments, and the options checked
//! against them.

use quote::ToTokens;
use syn::{
    Block, Expr, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Stmt, Type,
    TypeParamBound,
};

use crate::args::Args;
use crate::errors::Errors;

/// One argument of the function, other than the receiver.
pub(crate) struct Argument {
    pub(crate) name: Ident,
    /// `name: Type` as written, for errors about the argument.
    pub(crate) written: proc_macro2::TokenStream,
    /// Left out of key and payload (`skip = […]`).
    pub(crate) skipped: bool,
    /// Its type is a reference (`&T`, `&mut T`): `verify` gets it as `&T`, the others by
    /// reference.
    pub(crate) by_reference: bool,
}

/// Where the body to wrap lives.
pub(crate) enum Shape {
    /// `async fn … -> R { body }`: the function's block.
    Async,
    /// What `#[async_trait]` makes of an `async fn` in a trait impl:
    /// `fn … -> Pin<Box<dyn Future<Output = R> + Send + 'async_trait>> { Box::pin(async move { body }) }`.
    /// The wrapped body is the inner `async move` block.
    AsyncTrait { output: Box<Type> },
}

/// The function, read and checked.
pub(crate) struct Function {
    pub(crate) item: ItemFn,
    pub(crate) shape: Shape,
    pub(crate) arguments: Vec<Argument>,
}

impl Function {
    pub(crate) fn read(mut item: ItemFn, args: &Args) -> Result<Function, syn::Error> {
        let mut errors = Errors::default();
        // `#[secret]` changes nothing here: an `#[idempotent]` call stores hashes of its
        // arguments, never the arguments. It is accepted (and taken off, as rustc does not
        // know it) so that a function can move between `#[idempotent]` and `#[saga_step]`.
        crate::step_function::take_secret_attributes(&mut item.sig, &mut errors);
        let found = shape(&item);
        if found.is_none() {
            errors.at(
                item.sig.fn_token,
                "#[idempotent] works on `async fn` only: the claim must be held while the body awaits its side effect",
            );
        }
        let mut arguments = Vec::new();
        for input in &item.sig.inputs {
            let FnArg::Typed(typed) = input else {
                continue; // `self`, `&self`, `&mut self`: the tool's handle, never part of the key.
            };
            match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => arguments.push(Argument {
                    name: pat.ident.clone(),
                    written: typed.to_token_stream(),
                    skipped: args.skip.contains(&pat.ident),
                    by_reference: matches!(*typed.ty, Type::Reference(_)),
                }),
                // `Parameters(req): Parameters<SendEmail>`, `(a, b): (u32, u32)`, `Order { id, .. }`:
                // each name the pattern binds is an argument of the key, in order.
                pattern => {
                    let mut bound = Vec::new();
                    bindings(pattern, &mut bound);
                    if bound.is_empty() {
                        errors.at(
                            pattern,
                            "#[idempotent] needs a name for each argument, to put it in the key or `skip` it: this pattern binds none",
                        );
                    }
                    arguments.extend(bound.into_iter().map(|name| Argument {
                        skipped: args.skip.contains(&name),
                        written: name.to_token_stream(),
                        name,
                        by_reference: false,
                    }));
                }
            }
        }
        let is_async = found.is_some();
        let function = Function {
            item,
            shape: found.unwrap_or(Shape::Async),
            arguments,
        };
        if is_async {
            function.check_output(&mut errors);
        }
        function.check_names(args, &mut errors);
        if let (Some(verify), Shape::AsyncTrait { .. }) = (&args.verify, &function.shape) {
            errors.at(
                verify,
                "`verify` is not supported on a method that `#[async_trait]` has already rewritten; call an `#[idempotent]` free function or inherent method from the trait method instead",
            );
        }
        errors.finish(function)
    }

    /// What the types cannot say well: a missing return type, a borrowed `Ok` type (rustc
    /// would only say that `Deserialize` "is not general enough").
    fn check_output(&self, errors: &mut Errors) {
        let Some(output) = self.output() else {
            errors.at(
                &self.item.sig,
                "an `#[idempotent]` function returns `Result<T, E>`: add the return type (`E: From<idem::Error>` carries idem's own errors)",
            );
            return;
        };
        if let Some((ok @ Type::Reference(_), _)) = result_types(output) {
            errors.at(
                ok,
                "the `Ok` type of an `#[idempotent]` function cannot borrow: the result is recorded and replayed from the store, so return an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)",
            );
        }
    }

    /// The type the function's future returns.
    pub(crate) fn output(&self) -> Option<&Type> {
        match &self.shape {
            Shape::AsyncTrait { output } => Some(&**output),
            Shape::Async => match &self.item.sig.output {
                ReturnType::Type(_, ty) => Some(ty),
                ReturnType::Default => None,
            },
        }
    }

    fn is_argument(&self, name: &Ident) -> bool {
        self.arguments.iter().any(|a| a.name == *name)
    }

    /// `skip` and `key` may only name arguments of this function.
    fn check_names(&self, args: &Args, errors: &mut Errors) {
        let function = &self.item.sig.ident;
        for skipped in &args.skip {
            if skipped == "self" {
                errors.at(
                    skipped,
                    "`self` is always left out of the key; no need to skip it",
                );
            } else if !self.is_argument(skipped) {
                errors.at(
                    skipped,
                    format!("`{function}` has no argument named `{skipped}`"),
                );
            }
        }
        for part in args.key.iter().flatten() {
            match root_name(part) {
                Some(root) if root != "self" && !self.is_argument(root) => {
                    errors.at(root, format!("`{function}` has no argument named `{root}`"))
                }
                Some(root) if args.skip.contains(root) => errors.at(
                    root,
                    format!("`{root}` is skipped, so it cannot be part of the key: remove it from `key` or from `skip`"),
                ),
                _ => {}
            }
        }
    }
}

/// The names a pattern binds, in the order they are written (`Parameters(req)` binds `req`;
/// `Order { id, total: amount, .. }` binds `id` and `amount`).
fn bindings(pattern: &Pat, found: &mut Vec<Ident>) {
    match pattern {
        Pat::Ident(pat) => {
            found.push(pat.ident.clone());
            if let Some((_, sub)) = &pat.subpat {
                bindings(sub, found);
            }
        }
        Pat::TupleStruct(tuple) => tuple.elems.iter().for_each(|p| bindings(p, found)),
        Pat::Tuple(tuple) => tuple.elems.iter().for_each(|p| bindings(p, found)),
        Pat::Struct(strukt) => strukt.fields.iter().for_each(|f| bindings(&f.pat, found)),
        Pat::Reference(reference) => bindings(&reference.pat, found),
        Pat::Slice(slice) => slice.elems.iter().for_each(|p| bindings(p, found)),
        Pat::Paren(paren) => bindings(&paren.pat, found),
        Pat::Type(typed) => bindings(&typed.pat, found),
        _ => {}
    }
}

/// The variable an expression such as `order.id`, `&customer`, `order.lines[0].sku` or
/// `customer.id()` starts from, if it starts from one.
fn root_name(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => path.path.get_ident(),
        Expr::Field(field) => root_name(&field.base),
        Expr::MethodCall(call) => root_name(&call.receiver),
        Expr::Index(index) => root_name(&index.expr),
        Expr::Reference(reference) => root_name(&reference.expr),
        Expr::Paren(paren) => root_name(&paren.expr),
        Expr::Unary(unary) => root_name(&unary.expr),
        _ => None,
    }
}

fn shape(item: &ItemFn) -> Option<Shape> {
    if item.sig.asyncness.is_some() {
        return Some(Shape::Async);
    }
    let output = boxed_future_output(&item.sig.output)?;
    async_trait_body(&item.block)?;
    Some(Shape::AsyncTrait {
        output: Box::new(output.clone()),
    })
}

/// `R` in `Pin<Box<dyn Future<Output = R> + …>>`.
fn boxed_future_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let pinned = last_generic_type(ty, "Pin")?;
    let Type::TraitObject(object) = last_generic_type(pinned, "Box")? else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let future = bound.path.segments.last()?;
        if future.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &future.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// `T` and `E` in `…Result<T, E>`, when the return type is written out (not an alias).
pub(crate) fn result_types(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(path) = ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(ok), Some(err), None) if segment.ident == "Result" => Some((ok, err)),
        _ => None,
    }
}

/// `T` in `…::Name<T>`.
fn last_generic_type<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// `Box::pin` and the `async move { … }` block in a body that is just
/// `Box::pin(async move { … })`.
pub(crate) fn async_trait_body(block: &Block) -> Option<(&Expr, &syn::ExprAsync)> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(callee) = &*call.func else {
        return None;
    };
    let is_box_pin = callee.path.segments.len() >= 2
        && callee
            .path
            .segments
            .iter()
            .rev()
            .nth(1)
            .is_some_and(|s| s.ident == "Box")
        && callee
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "pin");
    match call.args.first() {
        Some(Expr::Async(body)) if is_box_pin && call.args.len() == 1 => Some((&call.func, body)),
        _ => None,
    }
}
