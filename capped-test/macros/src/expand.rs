//! Turning `#[capped(...)] fn name() -> R { body }` into a test.
//!
//! For a test `name` the expansion is four items, all under the function's `#[cfg]`s:
//!
//! ```text
//! #[::core::prelude::v1::test] #[ignore..] #[should_panic..] <other attributes>
//! <vis> fn name() -> R {
//!     ::capped_test::__private::run_libtest(&__CAPPED_SPEC_name, __capped_impl_name)
//! }
//!
//! #[doc(hidden)] #[allow(non_snake_case, dead_code, clippy::unnecessary_wraps)] <lints>
//! fn __capped_impl_name() -> R { body }
//! // async: fn __capped_impl_name() -> R {
//! //     async fn __capped_async_name() -> R { body }
//! //     ::capped_test::__private::block_on(__capped_async_name())
//! // }
//!
//! #[doc(hidden)] #[allow(non_upper_case_globals)]
//! static __CAPPED_SPEC_name: ::capped_test::__private::TestSpec = TestSpec { .. };
//!
//! const _: () = { ::capped_test::__private::inventory::submit! { Registration { .. } } };
//! ```
//!
//! Only the wrapper carries `#[test]`: in a `harness = false` target rustc drops it, and the
//! other three items are how harness mode finds the test. The body keeps the user's spans,
//! so errors in it point at the user's code.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Block, Item, ItemFn, ReturnType, Signature};

use crate::args::CappedArgs;
use crate::attrs::FnAttrs;

/// The whole macro, on `proc_macro2` tokens: never panics, errors become `compile_error!`.
pub(crate) fn capped(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = CappedArgs::parse(args);
    let function = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => function,
        Ok(other) => {
            let error = syn::Error::new_spanned(
                item_head(&other),
                "#[capped] goes on a test function: `#[capped] fn name() { .. }`",
            );
            let mut errors = error.to_compile_error();
            if let Err(args) = args {
                errors.extend(args.to_compile_error());
            }
            return quote!(#errors #item);
        }
        // Not an item at all: rustc reports the syntax error itself when it parses `item`.
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#error #item);
        }
    };

    let mut errors: Option<syn::Error> = None;
    let mut fail = |error: syn::Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    let args = args.map_err(&mut fail).ok();
    if let Err(error) = check_signature(&function.sig) {
        fail(error);
    }
    // Inner attributes (`#![allow(..)]` at the top of the body) stay with the body.
    let outer: Vec<Attribute> = function
        .attrs
        .iter()
        .filter(|attr| matches!(attr.style, AttrStyle::Outer))
        .cloned()
        .collect();
    let attrs = FnAttrs::sort(&outer).map_err(&mut fail).ok();
    match (args, attrs, errors) {
        (Some(args), Some(attrs), None) => expand(&args, &attrs, &function),
        (_, _, errors) => {
            let errors = errors.map(|e| e.to_compile_error());
            let fallback = fallback(function);
            quote!(#errors #fallback)
        }
    }
}

/// The tokens to point at when the attribute is on something other than a fn: the item's
/// first tokens up to its name, not its whole body.
fn item_head(item: &Item) -> TokenStream {
    fn head(vis: &syn::Visibility, keyword: impl ToTokens, name: &syn::Ident) -> TokenStream {
        quote!(#vis #keyword #name)
    }
    match item {
        Item::Struct(s) => head(&s.vis, s.struct_token, &s.ident),
        Item::Enum(e) => head(&e.vis, e.enum_token, &e.ident),
        Item::Mod(m) => head(&m.vis, m.mod_token, &m.ident),
        Item::Const(c) => head(&c.vis, c.const_token, &c.ident),
        Item::Static(s) => head(&s.vis, s.static_token, &s.ident),
        Item::Trait(t) => head(&t.vis, t.trait_token, &t.ident),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}

/// What a test function cannot be: `const`, `unsafe`, `extern`, generic, with parameters.
fn check_signature(sig: &Signature) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "a #[capped] test cannot be a `const fn`; remove `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "a #[capped] test cannot be an `unsafe fn`; remove `unsafe` and put the unsafe code \
             in an `unsafe { .. }` block",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a #[capped] test cannot have an `extern` ABI; remove it",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let spanned = if sig.generics.params.is_empty() {
            sig.generics.where_clause.to_token_stream()
        } else {
            sig.generics.to_token_stream()
        };
        errors.push(syn::Error::new_spanned(
            spanned,
            "a #[capped] test cannot be generic: the test runner calls it with no type or \
             lifetime arguments; remove the generic parameters",
        ));
    }
    if !sig.inputs.is_empty() || sig.variadic.is_some() {
        let spanned = match &sig.variadic {
            Some(variadic) if sig.inputs.is_empty() => variadic.to_token_stream(),
            _ => sig.inputs.to_token_stream(),
        };
        errors.push(syn::Error::new_spanned(
            spanned,
            format!(
                "a #[capped] test takes no parameters: the test runner calls `{}()`; remove the \
                 parameters (use a helper fn or a fixture inside the body instead)",
                sig.ident.unraw()
            ),
        ));
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}

/// When the attribute is wrong, the function is still emitted (so its body is checked and
/// its imports count as used), but as a plain fn: not a test, no second error from libtest.
fn fallback(mut function: ItemFn) -> TokenStream {
    function.attrs.retain(|attr| !is_test_like(attr));
    quote! {
        #[allow(dead_code)]
        #function
    }
}

/// Attributes that would make (or configure) a test out of the fn, which the fallback drops.
fn is_test_like(attr: &Attribute) -> bool {
    let path = attr.path();
    path.is_ident("ignore")
        || path.is_ident("should_panic")
        || path.is_ident("cfg_attr")
        || path
            .segments
            .last()
            .is_some_and(|last| last.ident == "test")
}

/// The expansion of a valid test.
fn expand(args: &CappedArgs, attrs: &FnAttrs, function: &ItemFn) -> TokenStream {
    let ItemFn {
        vis, sig, block, ..
    } = function;
    let name = &sig.ident;
    // As libtest names the test (`r#match` stays `r#match`), so filters agree.
    let fn_name = name.to_string();
    let output = &sig.output;
    let is_async = sig.asyncness.is_some();

    let spec = format_ident!("__CAPPED_SPEC_{}", name, span = name.span());
    let body = format_ident!("__capped_impl_{}", name, span = name.span());
    let FnAttrs {
        cfgs,
        lints,
        body_only,
        wrapper,
        ..
    } = attrs;

    // Where a failed `TestReturn` bound (e.g. `-> i32`) should point: the return type.
    let output_span = match output {
        ReturnType::Default => name.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let body_call = quote_spanned!(output_span=> #body());
    let run_libtest = quote_spanned!(output_span=>
        ::capped_test::__private::run_libtest(&#spec, #body)
    );
    let into_result =
        quote_spanned!(output_span=> ::capped_test::__private::TestReturn::into_result(#body_call));

    let block = body_block(&function.attrs, block);
    let body_fn = if is_async {
        let async_body = format_ident!("__capped_async_{}", name, span = name.span());
        let asyncness = &sig.asyncness;
        quote! {
            fn #body() #output {
                #asyncness fn #async_body() #output #block
                ::capped_test::__private::block_on(#async_body())
            }
        }
    } else {
        quote!(fn #body() #output #block)
    };

    let groups = &args.groups;
    let threads = args.threads.unwrap_or(1);
    let mem = option_expr(args.mem.map(|bytes| quote!(#bytes)));
    let timeout = option_expr(args.timeout.map(|timeout| {
        let secs = timeout.as_secs();
        let nanos = timeout.subsec_nanos();
        quote!(::core::time::Duration::new(#secs, #nanos))
    }));
    let serial = args.serial;
    let ignore = attrs.ignore_expr();
    let should_panic = attrs.should_panic_expr();
    // `line!()` spanned on the name reports the line of `fn name`, not of `#[capped]`.
    let line = quote_spanned!(name.span()=> ::core::line!());

    quote! {
        #(#cfgs)*
        #[::core::prelude::v1::test]
        #(#wrapper)*
        #(#lints)*
        #vis fn #name() #output {
            #run_libtest
        }

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, clippy::unnecessary_wraps)]
        #(#lints)*
        #(#body_only)*
        #body_fn

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #spec: ::capped_test::__private::TestSpec = ::capped_test::__private::TestSpec {
            module_path: ::core::module_path!(),
            fn_name: #fn_name,
            groups: &[#(#groups),*],
            threads: #threads,
            mem: #mem,
            timeout: #timeout,
            serial: #serial,
            ignore: #ignore,
            should_panic: #should_panic,
            is_async: #is_async,
            file: ::core::file!(),
            line: #line,
        };

        #(#cfgs)*
        const _: () = {
            ::capped_test::__private::inventory::submit! {
                ::capped_test::__private::Registration {
                    spec: &#spec,
                    run: || #into_result,
                }
            }
        };
    }
}

/// The user's block with the inner attributes (`#![..]`) syn moved to the fn put back, and
/// the user's braces (spans) kept.
fn body_block(attrs: &[Attribute], block: &Block) -> TokenStream {
    let mut tokens = TokenStream::new();
    block.brace_token.surround(&mut tokens, |tokens| {
        for attr in attrs {
            if matches!(attr.style, AttrStyle::Inner(_)) {
                attr.to_tokens(tokens);
            }
        }
        for stmt in &block.stmts {
            stmt.to_tokens(tokens);
        }
    });
    tokens
}

fn option_expr(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        capped(args, item).to_string()
    }

    fn compile_errors(args: TokenStream, item: TokenStream) -> Vec<String> {
        let tokens = capped(args, item);
        let file: syn::File = syn::parse2(tokens).expect("the expansion parses as items");
        file.items
            .iter()
            .filter_map(|item| match item {
                Item::Macro(mac)
                    if mac.mac.path.segments.last().unwrap().ident == "compile_error" =>
                {
                    Some(mac.mac.parse_body::<syn::LitStr>().unwrap().value())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_test() {
        let out = expand_str(
            quote!(),
            quote!(
                fn plain() {
                    assert!(true);
                }
            ),
        );
        assert!(
            out.contains("# [:: core :: prelude :: v1 :: test] fn plain ()"),
            "{out}"
        );
        assert!(
            out.contains("run_libtest (& __CAPPED_SPEC_plain , __capped_impl_plain)"),
            "{out}"
        );
        assert!(
            out.contains("fn __capped_impl_plain () { assert ! (true) ; }"),
            "{out}"
        );
        assert!(out.contains("fn_name : \"plain\""), "{out}");
        assert!(out.contains("groups : & []"), "{out}");
        assert!(out.contains("threads : 1u32"), "{out}");
        assert!(
            out.contains("mem : :: core :: option :: Option :: None"),
            "{out}"
        );
        assert!(out.contains("serial : false"), "{out}");
        assert!(out.contains("is_async : false"), "{out}");
        assert!(out.contains("ShouldPanic :: No"), "{out}");
        assert!(out.contains("inventory :: submit !"), "{out}");
        assert!(
            compile_errors(
                quote!(),
                quote!(
                    fn plain() {}
                )
            )
            .is_empty()
        );
    }

    #[test]
    fn arguments_reach_the_spec() {
        let out = expand_str(
            quote!(groups = ["gpu", "net"], threads = 3, mem = "1KiB", timeout = "1.5s", serial =
            ),
            quote!(
                fn t() {}
            ),
        );
        // `serial =` is a syntax error: reported, and the fn is still emitted.
        assert!(out.contains("compile_error"), "{out}");

        let out = expand_str(
            quote!(
                groups = ["gpu", "net"],
                mem = "1KiB",
                timeout = "1.5s",
                serial
            ),
            quote!(
                fn t() {}
            ),
        );
        assert!(out.contains("groups : & [\"gpu\" , \"net\"]"), "{out}");
        assert!(
            out.contains("mem : :: core :: option :: Option :: Some (1024u64)"),
            "{out}"
        );
        assert!(
            out.contains("Duration :: new (1u64 , 500000000u32)"),
            "{out}"
        );
        assert!(out.contains("serial : true"), "{out}");
    }

    #[test]
    fn async_body_runs_through_block_on() {
        let out = expand_str(
            quote!(),
            quote!(
                async fn a() -> Result<(), String> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("fn a () -> Result < () , String > {"), "{out}");
        assert!(
            out.contains(
                "fn __capped_impl_a () -> Result < () , String > { async fn __capped_async_a () \
                 -> Result < () , String > { Ok (()) } :: capped_test :: __private :: block_on \
                 (__capped_async_a ()) }"
            ),
            "{out}"
        );
        assert!(out.contains("is_async : true"), "{out}");
    }

    #[test]
    fn attributes_are_distributed() {
        let out = expand_str(
            quote!(),
            quote! {
                #[cfg(unix)]
                /// Docs.
                #[test]
                #[ignore = "slow"]
                #[should_panic(expected = "boom")]
                #[allow(unused)]
                pub fn t() {}
            },
        );
        // One `#[test]`, ours.
        assert_eq!(out.matches(":: test]").count(), 1, "{out}");
        assert_eq!(out.matches("# [test]").count(), 0, "{out}");
        // cfg on all four items.
        assert_eq!(out.matches("# [cfg (unix)]").count(), 4, "{out}");
        assert!(out.contains("# [ignore = \"slow\"] # [should_panic (expected = \"boom\")]"));
        assert!(out.contains("ignore : :: core :: option :: Option :: Some (:: core :: option :: Option :: Some (\"slow\"))"), "{out}");
        assert!(
            out.contains("ShouldPanic :: YesWithMessage (\"boom\")"),
            "{out}"
        );
        assert!(out.contains("pub fn t ()"), "{out}");
        assert_eq!(out.matches("# [allow (unused)]").count(), 2, "{out}");
        assert_eq!(out.matches("# [doc = r\" Docs.\"]").count(), 1, "{out}");
    }

    #[test]
    fn inner_attributes_stay_in_the_body() {
        let out = expand_str(
            quote!(),
            quote!(
                fn t() {
                    #![allow(unused_variables)]
                    let x = 1;
                }
            ),
        );
        assert!(
            out.contains("fn __capped_impl_t () { # ! [allow (unused_variables)] let x = 1 ; }"),
            "{out}"
        );
        assert_eq!(out.matches("allow (unused_variables)").count(), 1, "{out}");
        let out = expand_str(
            quote!(),
            quote!(
                async fn t() {
                    #![allow(unused)]
                }
            ),
        );
        assert!(
            out.contains("async fn __capped_async_t () { # ! [allow (unused)] }"),
            "{out}"
        );
    }

    #[test]
    fn raw_identifiers() {
        let out = expand_str(
            quote!(),
            quote!(
                fn r#match() {}
            ),
        );
        assert!(out.contains("fn r#match ()"), "{out}");
        assert!(out.contains("__capped_impl_match"), "{out}");
        assert!(out.contains("fn_name : \"r#match\""), "{out}");
    }

    #[test]
    fn signature_errors() {
        let errors = compile_errors(
            quote!(),
            quote!(
                fn t(x: u32) {}
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("takes no parameters"), "{errors:?}");
        let errors = compile_errors(
            quote!(),
            quote!(
                fn t<T: Default>() {}
            ),
        );
        assert!(errors[0].contains("cannot be generic"), "{errors:?}");
        let errors = compile_errors(
            quote!(),
            quote!(
                fn t()
                where
                    u8: Copy,
                {
                }
            ),
        );
        assert!(errors[0].contains("cannot be generic"), "{errors:?}");
        let errors = compile_errors(
            quote!(),
            quote!(
                const unsafe extern "C" fn t() {}
            ),
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn everything_is_reported_at_once() {
        let errors = compile_errors(
            quote!(threads = 0, group = "GPU"),
            quote!(
                #[tokio::test]
                async fn t(x: u8) {}
            ),
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
    }

    #[test]
    fn errors_keep_the_function_as_a_plain_fn() {
        let out = expand_str(
            quote!(bogus),
            quote!(
                #[test]
                #[ignore]
                fn t() {
                    body();
                }
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(
            out.contains("# [allow (dead_code)] fn t () { body () ; }"),
            "{out}"
        );
        assert!(!out.contains("test"), "{out}");
    }

    #[test]
    fn not_a_function() {
        let errors = compile_errors(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert_eq!(
            errors,
            ["#[capped] goes on a test function: `#[capped] fn name() { .. }`"]
        );
        let errors = compile_errors(
            quote!(bogus),
            quote!(
                mod m {}
            ),
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
