//! `#[multiproc::task]`: registers a plain function as a task that a spawned child can run.
//!
//! The function is left as it is; next to it the macro emits one entry in multiproc's task
//! registry (a linkme distributed slice) holding:
//! * a stable id, `module_path::name(ArgTypes)->RetType`, hashed for the parent/child handshake;
//! * a function returning the `TypeId` of the function item, which is how a public call such as
//!   `Process::spawn(square, 7)` finds the entry of the plain function it was given;
//! * a monomorphic trampoline `fn(&[u8]) -> Result<Vec<u8>, String>` that decodes the arguments
//!   (postcard), calls the function and encodes its result.
//!
//! Paths go through `::multiproc::__private` so the macro works from any crate that depends on
//! the `multiproc` facade; `#[task(crate = some::path)]` changes the root (used by the
//! `multiproc-process` crate's own tests).
//!
//! ```ignore
//! #[multiproc::task]
//! fn square(x: u64) -> u64 { x * x }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, Path, ReturnType, parse_macro_input, spanned::Spanned};

/// Registers a function `fn(A, B, ...) -> R` (arguments and result `serde`) as a multiproc task.
///
/// Options: `#[task(crate = path)]` names the crate root that re-exports `__private`
/// (default `::multiproc`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut root: Path = syn::parse_quote!(::multiproc);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            root = meta.value()?.parse()?;
            Ok(())
        } else {
            Err(meta.error("unknown option: expected `crate = path`"))
        }
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(&root, &func) {
        Ok(ts) => ts.into(),
        // Keep the function itself, so its callers do not add "cannot find function" errors.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn expand(root: &Path, func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a multiproc task cannot be generic: a child must find it by a fixed id",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "a multiproc task cannot be async",
        ));
    }
    if let Some(u) = &sig.unsafety {
        return Err(syn::Error::new(
            u.span(),
            "a multiproc task cannot be unsafe",
        ));
    }
    if sig.variadic.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            "a multiproc task cannot be variadic",
        ));
    }
    if sig.inputs.len() > 8 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a multiproc task takes at most 8 arguments (group more into a struct or tuple)",
        ));
    }
    let mut types = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a multiproc task must be a free function, not a method",
                ));
            }
            FnArg::Typed(pt) => {
                reject_borrowed(&pt.ty, "argument")?;
                types.push(&*pt.ty);
            }
        }
    }
    if let ReturnType::Type(_, t) = &sig.output {
        reject_borrowed(t, "result")?;
    }
    let name = &sig.ident;
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let arg_str = types
        .iter()
        .map(|t| normalize(&quote!(#t).to_string()))
        .collect::<Vec<_>>()
        .join(",");
    let sig_str = format!("{name}({arg_str})->{}", normalize(&ret.to_string()));
    let entry = format_ident!(
        "__MULTIPROC_TASK_{}",
        name.to_string().to_uppercase(),
        span = Span::call_site()
    );
    let private = quote!(#root::__private);
    // One check per argument and for the result, spanned at the type: a non-serde type is named
    // where it is written, with the hint of `TaskArg`/`TaskResult`.
    let arg_checks = types
        .iter()
        .map(|t| quote::quote_spanned!(t.span()=> #private::assert_task_arg::<#t>();));
    let ret_check = match &sig.output {
        ReturnType::Default => quote!(),
        ReturnType::Type(_, t) => {
            quote::quote_spanned!(t.span()=> #private::assert_task_result::<#t>();)
        }
    };
    let slice_path = quote!(#private::TASKS);
    let linkme_path = quote!(#private::linkme);
    Ok(quote! {
        #func

        const _: fn() = || {
            #(#arg_checks)*
            #ret_check
        };

        #[#linkme_path::distributed_slice(#slice_path)]
        #[linkme(crate = #linkme_path)]
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #entry: #private::TaskEntry = #private::TaskEntry {
            id: ::core::concat!(::core::module_path!(), "::", #sig_str),
            type_id: || #private::type_id_of_val(&#name),
            trampoline: |bytes| #private::run_task(#name, bytes),
            chunk_trampoline: |bytes, out| #private::run_chunk(#name, bytes, out),
        };
    })
}

/// A borrowed argument or result cannot cross a process boundary: say so, with the owned form.
fn reject_borrowed(ty: &syn::Type, what: &str) -> syn::Result<()> {
    if let syn::Type::Reference(r) = ty {
        let inner = &r.elem;
        let owned = match &**inner {
            syn::Type::Path(p) if p.path.is_ident("str") => "String".to_string(),
            syn::Type::Slice(s) => {
                let e = &s.elem;
                format!("Vec<{}>", normalize(&quote!(#e).to_string()))
            }
            other => normalize(&quote!(#other).to_string()),
        };
        return Err(syn::Error::new(
            ty.span(),
            format!(
                "a task {what} cannot be borrowed: it is sent to another process; \
                 take it owned (`{}` → `{owned}`)",
                normalize(&quote!(#ty).to_string())
            ),
        ));
    }
    Ok(())
}

/// Drops the spaces `to_string` puts between tokens, so ids read like written types.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = if i > 0 { chars[i - 1] } else { ' ' };
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            // keep spaces between two identifier characters (`dyn Trait`, `impl X`)
            if (prev.is_alphanumeric() || prev == '_') && (next.is_alphanumeric() || next == '_') {
                out.push(' ');
            }
            continue;
        }
        out.push(c);
    }
    out
}
