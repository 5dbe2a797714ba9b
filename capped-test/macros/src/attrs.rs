//! Sorting the attributes found on the test function.
//!
//! `#[capped]` replaces the function by several items (the libtest wrapper, the body, the
//! spec, the registration), so each attribute of the function has to go where it means
//! something:
//!
//! * `#[test]` is dropped: the wrapper gets our own.
//! * `#[ignore]` / `#[should_panic]` are recorded in the spec *and* kept on the wrapper, so
//!   libtest and harness mode agree.
//! * `#[cfg]` goes on every item, so a cfg'd-out test leaves nothing behind.
//! * lint levels (`allow`, `warn`, `deny`, `forbid`) go on the wrapper and on the body;
//!   `expect` only on the body (where the code it is about now lives).
//! * everything else (docs, other attribute macros) goes on the wrapper.
//! * `#[tokio::test]` and the like are refused: they would make a second test.
//!
//! `#[cfg_attr(pred, a, b)]` is flattened into `#[cfg_attr(pred, a)]`, `#[cfg_attr(pred, b)]`,
//! each sorted as above; a conditional `ignore` / `should_panic` is recorded in the spec
//! with `cfg!(pred)`.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Meta, MetaNameValue, Path, Token};

/// An attribute that applies when all of `conditions` (cfg predicates) hold.
pub(crate) struct Conditional<T> {
    /// The cfg predicates of the enclosing `cfg_attr`s, outermost first; empty: always.
    pub conditions: Vec<Meta>,
    /// What the attribute says.
    pub value: T,
    /// The attribute as written (inside `cfg_attr`, the inner attribute), for spans.
    pub meta: Meta,
}

/// What `#[should_panic]` says.
pub(crate) enum ShouldPanic {
    /// `#[should_panic]`.
    Yes,
    /// `#[should_panic(expected = "..")]` or `#[should_panic = ".."]`.
    WithMessage(LitStr),
}

/// The attributes of a test function, sorted by where they go.
#[derive(Default)]
pub(crate) struct FnAttrs {
    /// `#[cfg]` (possibly under `cfg_attr`): on every generated item.
    pub cfgs: Vec<TokenStream>,
    /// Lint levels: on the wrapper and on the body.
    pub lints: Vec<TokenStream>,
    /// On the body only (`#[expect]`).
    pub body_only: Vec<TokenStream>,
    /// On the wrapper only, including `ignore` and `should_panic` as written.
    pub wrapper: Vec<TokenStream>,
    /// `#[ignore]` (`None`) / `#[ignore = "reason"]` (`Some`).
    pub ignore: Vec<Conditional<Option<LitStr>>>,
    /// `#[should_panic]`.
    pub should_panic: Vec<Conditional<ShouldPanic>>,
}

impl FnAttrs {
    /// Sorts `attrs`; every malformed or forbidden attribute is reported at once.
    pub(crate) fn sort(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut sorted = FnAttrs::default();
        let mut errors: Option<syn::Error> = None;
        for attr in attrs {
            if let Err(error) = sorted.add(&[], &attr.meta, Some(attr)) {
                push_error(&mut errors, error);
            }
        }
        for error in [
            sorted.check_unique_ignore(),
            sorted.check_unique_should_panic(),
        ]
        .into_iter()
        .flatten()
        {
            push_error(&mut errors, error);
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(sorted),
        }
    }

    /// The spec's `ignore` field: `Option<Option<&'static str>>`.
    pub(crate) fn ignore_expr(&self) -> TokenStream {
        let cases = self.ignore.iter().map(|attr| {
            let value = match &attr.value {
                None => quote!(::core::option::Option::Some(::core::option::Option::None)),
                Some(reason) => quote!(
                    ::core::option::Option::Some(::core::option::Option::Some(#reason))
                ),
            };
            (&attr.conditions, value)
        });
        conditional_expr(cases, quote!(::core::option::Option::None))
    }

    /// The spec's `should_panic` field: a `ShouldPanic`.
    pub(crate) fn should_panic_expr(&self) -> TokenStream {
        let cases = self.should_panic.iter().map(|attr| {
            let value = match &attr.value {
                ShouldPanic::Yes => quote!(::capped_test::__private::ShouldPanic::Yes),
                ShouldPanic::WithMessage(message) => {
                    quote!(::capped_test::__private::ShouldPanic::YesWithMessage(#message))
                }
            };
            (&attr.conditions, value)
        });
        conditional_expr(cases, quote!(::capped_test::__private::ShouldPanic::No))
    }

    /// Sorts one attribute `meta` found under `conditions` (the predicates of the enclosing
    /// `cfg_attr`s).
    ///
    /// `written` is the attribute itself when it is not inside a `cfg_attr`: it is then
    /// emitted as written, so that lints about it point at the user's attribute.
    fn add(
        &mut self,
        conditions: &[Meta],
        meta: &Meta,
        written: Option<&Attribute>,
    ) -> syn::Result<()> {
        let path = meta.path();
        if path.is_ident("cfg_attr") {
            let (predicate, metas) = parse_cfg_attr(meta)?;
            let mut inner = conditions.to_vec();
            inner.push(predicate);
            let mut errors = None;
            for meta in &metas {
                if let Err(error) = self.add(&inner, meta, None) {
                    push_error(&mut errors, error);
                }
            }
            return errors.map_or(Ok(()), Err);
        }
        if is_builtin_test(path) {
            return Ok(());
        }
        if let Some(name) = foreign_test_name(path) {
            return Err(foreign_test_error(path, &name));
        }
        let emitted = match written {
            Some(attr) => attr.to_token_stream(),
            None => emit(conditions, meta),
        };
        if path.is_ident("cfg") {
            self.cfgs.push(emitted);
        } else if path.is_ident("ignore") {
            let value = parse_ignore(meta)?;
            self.ignore.push(Conditional {
                conditions: conditions.to_vec(),
                value,
                meta: meta.clone(),
            });
            self.wrapper.push(emitted);
        } else if path.is_ident("should_panic") {
            let value = parse_should_panic(meta)?;
            self.should_panic.push(Conditional {
                conditions: conditions.to_vec(),
                value,
                meta: meta.clone(),
            });
            self.wrapper.push(emitted);
        } else if ["allow", "warn", "deny", "forbid"]
            .iter()
            .any(|lint| path.is_ident(lint))
        {
            self.lints.push(emitted);
        } else if path.is_ident("expect") {
            self.body_only.push(emitted);
        } else {
            self.wrapper.push(emitted);
        }
        Ok(())
    }

    fn check_unique_ignore(&self) -> Option<syn::Error> {
        second_unconditional(&self.ignore, "`#[ignore]` is given twice; keep one")
    }

    fn check_unique_should_panic(&self) -> Option<syn::Error> {
        second_unconditional(
            &self.should_panic,
            "`#[should_panic]` is given twice; keep one",
        )
    }
}

/// An error on the second attribute of `attrs` that always applies, if there is one.
fn second_unconditional<T>(attrs: &[Conditional<T>], message: &str) -> Option<syn::Error> {
    attrs
        .iter()
        .filter(|attr| attr.conditions.is_empty())
        .nth(1)
        .map(|second| syn::Error::new_spanned(&second.meta, message))
}

fn push_error(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(errors) => errors.combine(error),
        None => *errors = Some(error),
    }
}

/// `#[meta]`, or `#[cfg_attr(all(conditions..), meta)]` when it is conditional.
fn emit(conditions: &[Meta], meta: &Meta) -> TokenStream {
    match conditions {
        [] => quote!(#[#meta]),
        [one] => quote!(#[cfg_attr(#one, #meta)]),
        many => quote!(#[cfg_attr(all(#(#many),*), #meta)]),
    }
}

/// A const expression choosing between `cases` with `cfg!`: the first unconditional case
/// wins outright, else the first conditional case whose predicates hold, else `default`.
fn conditional_expr<'a>(
    cases: impl Iterator<Item = (&'a Vec<Meta>, TokenStream)>,
    default: TokenStream,
) -> TokenStream {
    let mut conditional = Vec::new();
    for (conditions, value) in cases {
        if conditions.is_empty() {
            return value;
        }
        conditional.push((conditions, value));
    }
    conditional.into_iter().rev().fold(default, |otherwise, (conditions, value)| {
        quote!(if ::core::cfg!(all(#(#conditions),*)) { #value } else { #otherwise })
    })
}

/// `cfg_attr(predicate, attr, attr, ..)`.
fn parse_cfg_attr(meta: &Meta) -> syn::Result<(Meta, Vec<Meta>)> {
    let Meta::List(list) = meta else {
        return Err(syn::Error::new_spanned(
            meta,
            "expected `#[cfg_attr(predicate, attribute, ..)]`",
        ));
    };
    let parser = |input: ParseStream| {
        let predicate: Meta = input.parse()?;
        input.parse::<Token![,]>()?;
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        Ok((predicate, metas.into_iter().collect::<Vec<_>>()))
    };
    parser.parse2(list.tokens.clone())
}

/// `#[test]` as libtest spells it (`test`, `core::prelude::v1::test`, `::std::prelude::rust_2024::test`).
fn is_builtin_test(path: &Path) -> bool {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match segments.as_slice() {
        [only] => only == "test",
        [root, prelude, _edition, test] => {
            (root == "core" || root == "std") && prelude == "prelude" && test == "test"
        }
        _ => false,
    }
}

/// `Some("tokio::test")` for a test attribute of another crate (`tokio::test`,
/// `async_std::test`, `test_log::test`…), which would make a second test out of the same fn.
fn foreign_test_name(path: &Path) -> Option<String> {
    let last = path.segments.last()?;
    (path.segments.len() > 1 && last.ident == "test")
        .then(|| path.to_token_stream().to_string().replace(' ', ""))
}

fn foreign_test_error(path: &Path, name: &str) -> syn::Error {
    let message = if name.trim_start_matches("::").starts_with("tokio::") {
        format!(
            "`#[{name}]` cannot be combined with `#[capped]`: `#[capped]` already makes the test, \
             and an `async fn` test already runs on the capped runtime; remove `#[{name}]`"
        )
    } else {
        format!(
            "`#[{name}]` cannot be combined with `#[capped]`, which already makes the test \
             (and runs an `async fn` on the capped runtime); remove `#[{name}]`"
        )
    };
    syn::Error::new_spanned(path, message)
}

/// `#[ignore]` or `#[ignore = "reason"]`.
fn parse_ignore(meta: &Meta) -> syn::Result<Option<LitStr>> {
    match meta {
        Meta::Path(_) => Ok(None),
        Meta::NameValue(MetaNameValue {
            value:
                Expr::Lit(ExprLit {
                    lit: Lit::Str(reason),
                    ..
                }),
            ..
        }) => Ok(Some(reason.clone())),
        _ => Err(syn::Error::new_spanned(
            meta,
            "expected `#[ignore]` or `#[ignore = \"reason\"]`",
        )),
    }
}

/// `#[should_panic]`, `#[should_panic = ".."]` or `#[should_panic(expected = "..")]`.
fn parse_should_panic(meta: &Meta) -> syn::Result<ShouldPanic> {
    const FORMS: &str = "expected `#[should_panic]`, `#[should_panic(expected = \"message\")]` \
                         or `#[should_panic = \"message\"]`";
    match meta {
        Meta::Path(_) => Ok(ShouldPanic::Yes),
        Meta::NameValue(MetaNameValue {
            value:
                Expr::Lit(ExprLit {
                    lit: Lit::Str(message),
                    ..
                }),
            ..
        }) => Ok(ShouldPanic::WithMessage(message.clone())),
        Meta::List(list) => {
            let inner = list
                .parse_args_with(Punctuated::<MetaNameValue, Token![,]>::parse_terminated)
                .map_err(|_| syn::Error::new_spanned(meta, FORMS))?;
            match inner.into_iter().collect::<Vec<_>>().as_slice() {
                [
                    MetaNameValue {
                        path,
                        value:
                            Expr::Lit(ExprLit {
                                lit: Lit::Str(message),
                                ..
                            }),
                        ..
                    },
                ] if path.is_ident("expected") => Ok(ShouldPanic::WithMessage(message.clone())),
                _ => Err(syn::Error::new_spanned(meta, FORMS)),
            }
        }
        Meta::NameValue(_) => Err(syn::Error::new_spanned(meta, FORMS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn sort(attrs: Vec<Attribute>) -> FnAttrs {
        FnAttrs::sort(&attrs).unwrap()
    }

    fn error(attrs: Vec<Attribute>) -> String {
        match FnAttrs::sort(&attrs) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.to_string(),
        }
    }

    fn strings(tokens: &[TokenStream]) -> Vec<String> {
        tokens.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn test_attributes_are_dropped() {
        let sorted = sort(vec![
            parse_quote!(#[test]),
            parse_quote!(#[::core::prelude::v1::test]),
            parse_quote!(#[std::prelude::rust_2024::test]),
        ]);
        assert!(sorted.wrapper.is_empty() && sorted.cfgs.is_empty() && sorted.lints.is_empty());
    }

    #[test]
    fn ignore_forms() {
        let sorted = sort(vec![parse_quote!(#[ignore])]);
        assert!(sorted.ignore[0].value.is_none());
        assert_eq!(strings(&sorted.wrapper), ["# [ignore]"]);
        assert_eq!(
            sorted.ignore_expr().to_string(),
            quote!(::core::option::Option::Some(::core::option::Option::None)).to_string()
        );

        let sorted = sort(vec![parse_quote!(#[ignore = "slow"])]);
        assert_eq!(sorted.ignore[0].value.as_ref().unwrap().value(), "slow");

        let sorted = sort(vec![]);
        assert_eq!(
            sorted.ignore_expr().to_string(),
            quote!(::core::option::Option::None).to_string()
        );

        let message = error(vec![parse_quote!(#[ignore(slow)])]);
        assert!(message.contains("expected `#[ignore]`"), "{message}");
        let message = error(vec![parse_quote!(#[ignore]), parse_quote!(#[ignore = "x"])]);
        assert!(message.contains("`#[ignore]` is given twice"), "{message}");
    }

    #[test]
    fn should_panic_forms() {
        let sorted = sort(vec![parse_quote!(#[should_panic])]);
        assert!(matches!(sorted.should_panic[0].value, ShouldPanic::Yes));
        let sorted = sort(vec![parse_quote!(#[should_panic(expected = "boom")])]);
        assert!(
            matches!(&sorted.should_panic[0].value, ShouldPanic::WithMessage(m) if m.value() == "boom")
        );
        assert_eq!(
            strings(&sorted.wrapper),
            ["# [should_panic (expected = \"boom\")]"]
        );
        let sorted = sort(vec![parse_quote!(#[should_panic = "boom"])]);
        assert!(
            matches!(&sorted.should_panic[0].value, ShouldPanic::WithMessage(m) if m.value() == "boom")
        );
        assert!(
            sort(vec![])
                .should_panic_expr()
                .to_string()
                .contains("ShouldPanic :: No")
        );

        for bad in [
            parse_quote!(#[should_panic(expect = "boom")]),
            parse_quote!(#[should_panic(expected = 1)]),
            parse_quote!(#[should_panic = 1]),
            parse_quote!(#[should_panic(expected = "a", expected = "b")]),
        ] {
            let message = error(vec![bad]);
            assert!(message.contains("expected `#[should_panic]`"), "{message}");
        }
    }

    #[test]
    fn cfg_lints_and_the_rest() {
        let sorted = sort(vec![
            parse_quote!(#[cfg(unix)]),
            parse_quote!(#[doc = "text"]),
            parse_quote!(#[allow(clippy::unwrap_used)]),
            parse_quote!(#[expect(unused_variables)]),
            parse_quote!(#[serial_test::serial]),
        ]);
        assert_eq!(strings(&sorted.cfgs), ["# [cfg (unix)]"]);
        assert_eq!(
            strings(&sorted.lints),
            ["# [allow (clippy :: unwrap_used)]"]
        );
        assert_eq!(
            strings(&sorted.body_only),
            ["# [expect (unused_variables)]"]
        );
        assert_eq!(
            strings(&sorted.wrapper),
            ["# [doc = \"text\"]", "# [serial_test :: serial]"]
        );
    }

    #[test]
    fn cfg_attr_is_flattened() {
        let sorted = sort(vec![
            parse_quote!(#[cfg_attr(miri, ignore = "too slow", allow(dead_code))]),
            parse_quote!(#[cfg_attr(unix, cfg_attr(feature = "gpu", cfg(target_os = "linux")))]),
            parse_quote!(#[cfg_attr(windows, test)]),
        ]);
        assert_eq!(
            strings(&sorted.wrapper),
            ["# [cfg_attr (miri , ignore = \"too slow\")]"]
        );
        assert_eq!(
            strings(&sorted.lints),
            ["# [cfg_attr (miri , allow (dead_code))]"]
        );
        assert_eq!(
            strings(&sorted.cfgs),
            ["# [cfg_attr (all (unix , feature = \"gpu\") , cfg (target_os = \"linux\"))]"]
        );
        let expr = sorted.ignore_expr().to_string();
        assert!(
            expr.starts_with("if :: core :: cfg ! (all (miri))"),
            "{expr}"
        );
        assert!(expr.contains("\"too slow\""), "{expr}");
    }

    #[test]
    fn unconditional_ignore_wins() {
        let sorted = sort(vec![
            parse_quote!(#[cfg_attr(miri, ignore = "miri")]),
            parse_quote!(#[ignore = "always"]),
        ]);
        let expr = sorted.ignore_expr().to_string();
        assert!(!expr.contains("cfg"), "{expr}");
        assert!(expr.contains("\"always\""), "{expr}");
    }

    #[test]
    fn conditional_should_panic() {
        let sorted = sort(vec![
            parse_quote!(#[cfg_attr(unix, should_panic(expected = "unix"))]),
            parse_quote!(#[cfg_attr(windows, should_panic)]),
        ]);
        let expr = sorted.should_panic_expr().to_string();
        assert!(
            expr.starts_with("if :: core :: cfg ! (all (unix))"),
            "{expr}"
        );
        assert!(
            expr.contains("else { if :: core :: cfg ! (all (windows))"),
            "{expr}"
        );
        assert!(expr.ends_with("ShouldPanic :: No } }"), "{expr}");
    }

    #[test]
    fn foreign_test_attributes_are_refused() {
        let message = error(vec![parse_quote!(#[tokio::test])]);
        assert!(
            message.contains("already runs on the capped runtime"),
            "{message}"
        );
        let message = error(vec![parse_quote!(#[tokio::test(flavor = "multi_thread")])]);
        assert!(
            message.starts_with("`#[tokio::test]` cannot be combined"),
            "{message}"
        );
        let message = error(vec![parse_quote!(#[cfg_attr(unix, async_std::test)])]);
        assert!(
            message.starts_with("`#[async_std::test]` cannot be combined"),
            "{message}"
        );
    }

    #[test]
    fn malformed_cfg_attr() {
        let message = error(vec![parse_quote!(#[cfg_attr])]);
        assert!(
            message.contains("expected `#[cfg_attr(predicate"),
            "{message}"
        );
        assert!(FnAttrs::sort(&[parse_quote!(#[cfg_attr(unix)])]).is_err());
    }
}
