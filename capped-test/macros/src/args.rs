//! Parsing and checking the arguments of `#[capped(...)]`.
//!
//! Every value is checked here, at compile time, with the same parsers the runtime uses
//! (`capped_model::units`), and every mistake becomes a `syn::Error` spanned on the offending argument
//! or value. All mistakes of one attribute are reported together.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, MetaNameValue, Token};

use capped_model::units;

/// The checked arguments of one `#[capped(...)]`.
#[derive(Default)]
pub(crate) struct CappedArgs {
    /// `group = ".."` and `groups = [..]`, in the order written, names validated and distinct.
    pub groups: Vec<LitStr>,
    /// `threads = N`, N ≥ 1.
    pub threads: Option<u32>,
    /// `mem = ".."`, in bytes, > 0.
    pub mem: Option<u64>,
    /// `timeout = ".."`, > 0.
    pub timeout: Option<Duration>,
    /// `serial`.
    pub serial: bool,
}

/// The arguments `#[capped]` knows, and how each is written (for error messages).
const ARGUMENTS: &[(&str, &str)] = &[
    ("group", "group = \"gpu\""),
    ("groups", "groups = [\"gpu\", \"net\"]"),
    ("threads", "threads = 2"),
    ("mem", "mem = \"2GiB\""),
    ("timeout", "timeout = \"30s\""),
    ("serial", "serial"),
];

/// Names people reach for that mean one of ours.
const ALIASES: &[(&str, &str)] = &[
    ("memory", "mem"),
    ("mem_limit", "mem"),
    ("memory_limit", "mem"),
    ("thread", "threads"),
    ("num_threads", "threads"),
    ("test_threads", "threads"),
    ("time_limit", "timeout"),
    ("exclusive", "serial"),
];

/// How every accepted argument is written: `group = "gpu", groups = [..], ...`.
fn accepted_arguments() -> String {
    ARGUMENTS
        .iter()
        .map(|(_, form)| format!("`{form}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CappedArgs {
    /// Parses and checks the tokens inside `#[capped(...)]`.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated
            .parse2(tokens)
            .map_err(|err| {
                syn::Error::new(
                    err.span(),
                    format!(
                        "{err}; #[capped] takes comma-separated arguments: {}",
                        accepted_arguments()
                    ),
                )
            })?;
        let mut builder = Builder::default();
        for meta in &metas {
            builder.argument(meta);
        }
        builder.finish()
    }
}

/// Collects arguments and errors; each argument may be given once.
#[derive(Default)]
struct Builder {
    args: CappedArgs,
    seen: Vec<String>,
    serial_span: Option<proc_macro2::Span>,
    threads_span: Option<proc_macro2::Span>,
    errors: Option<syn::Error>,
}

impl Builder {
    fn error(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    fn argument(&mut self, meta: &Meta) {
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else {
            let path = meta.path().to_token_stream().to_string().replace(' ', "");
            self.error(syn::Error::new_spanned(
                meta.path(),
                format!(
                    "unknown argument `{path}`; #[capped] accepts {}",
                    accepted_arguments()
                ),
            ));
            return;
        };
        let Some(&(_, form)) = ARGUMENTS.iter().find(|(name, _)| *name == key) else {
            self.error(unknown_argument(meta, &key));
            return;
        };
        if self.seen.contains(&key) {
            let hint = if key == "group" {
                "; to name several groups write `groups = [\"gpu\", \"net\"]`"
            } else {
                ""
            };
            self.error(syn::Error::new_spanned(
                meta.path(),
                format!("`{key}` is given twice{hint}"),
            ));
            return;
        }
        self.seen.push(key.clone());
        let result = match key.as_str() {
            "group" => self.group(meta, form),
            "groups" => self.groups(meta, form),
            "threads" => self.threads(meta, form),
            "mem" => self.mem(meta, form),
            "timeout" => self.timeout(meta, form),
            _ => self.serial(meta),
        };
        if let Err(error) = result {
            self.error(error);
        }
    }

    fn group(&mut self, meta: &Meta, form: &str) -> syn::Result<()> {
        let value = name_value(meta, form)?;
        let lit = string_literal(value, "group", form)?;
        self.add_group(lit)
    }

    fn groups(&mut self, meta: &Meta, form: &str) -> syn::Result<()> {
        let value = name_value(meta, form)?;
        let Expr::Array(array) = value else {
            let hint = if matches!(
                value,
                Expr::Lit(ExprLit {
                    lit: Lit::Str(_),
                    ..
                })
            ) {
                "; for a single group write `group = \"gpu\"`"
            } else {
                ""
            };
            return Err(syn::Error::new_spanned(
                value,
                format!("`groups` takes a list of group names: `{form}`{hint}"),
            ));
        };
        if array.elems.is_empty() {
            return Err(syn::Error::new_spanned(
                array,
                format!("`groups = []` names no group; remove it, or name groups: `{form}`"),
            ));
        }
        let mut errors: Option<syn::Error> = None;
        for element in &array.elems {
            let result = match element {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) => self.add_group(lit),
                other => Err(syn::Error::new_spanned(
                    other,
                    format!("a group name is a string literal: `{form}`"),
                )),
            };
            if let Err(error) = result {
                match &mut errors {
                    Some(errors) => errors.combine(error),
                    None => errors = Some(error),
                }
            }
        }
        errors.map_or(Ok(()), Err)
    }

    fn add_group(&mut self, lit: &LitStr) -> syn::Result<()> {
        let name = lit.value();
        units::check_group_name(&name).map_err(|message| syn::Error::new_spanned(lit, message))?;
        if self.args.groups.iter().any(|known| known.value() == name) {
            return Err(syn::Error::new_spanned(
                lit,
                format!("group `{name}` is named twice"),
            ));
        }
        self.args.groups.push(lit.clone());
        Ok(())
    }

    fn threads(&mut self, meta: &Meta, form: &str) -> syn::Result<()> {
        let value = name_value(meta, form)?;
        let accepted = format!("`threads` takes an integer of at least 1: `{form}`");
        let Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) = value
        else {
            return Err(syn::Error::new_spanned(value, accepted));
        };
        if !lit.suffix().is_empty() {
            return Err(syn::Error::new_spanned(
                lit,
                format!("{accepted} (without a type suffix)"),
            ));
        }
        let threads: u32 = lit.base10_parse().map_err(|_| {
            syn::Error::new_spanned(lit, format!("{accepted}; `{lit}` is too large"))
        })?;
        if threads == 0 {
            return Err(syn::Error::new_spanned(
                lit,
                format!(
                    "`threads = 0` is not allowed: every test holds at least one width slot; \
                     write an integer of at least 1: `{form}`"
                ),
            ));
        }
        self.threads_span = Some(meta.span());
        self.args.threads = Some(threads);
        Ok(())
    }

    fn mem(&mut self, meta: &Meta, form: &str) -> syn::Result<()> {
        let value = name_value(meta, form)?;
        let lit = string_literal(value, "mem", form)?;
        let bytes =
            units::parse_size(&lit.value()).map_err(|msg| syn::Error::new_spanned(lit, msg))?;
        if bytes == 0 {
            return Err(syn::Error::new_spanned(
                lit,
                format!(
                    "`mem = {}` reserves nothing; remove it, or reserve memory: `{form}`",
                    lit.to_token_stream()
                ),
            ));
        }
        self.args.mem = Some(bytes);
        Ok(())
    }

    fn timeout(&mut self, meta: &Meta, form: &str) -> syn::Result<()> {
        let value = name_value(meta, form)?;
        let lit = string_literal(value, "timeout", form)?;
        let duration =
            units::parse_duration(&lit.value()).map_err(|msg| syn::Error::new_spanned(lit, msg))?;
        if duration.is_zero() {
            return Err(syn::Error::new_spanned(
                lit,
                format!("a timeout of zero would fail the test before it starts: `{form}`"),
            ));
        }
        self.args.timeout = Some(duration);
        Ok(())
    }

    fn serial(&mut self, meta: &Meta) -> syn::Result<()> {
        if !matches!(meta, Meta::Path(_)) {
            return Err(syn::Error::new_spanned(
                meta,
                "`serial` is a flag and takes no value: write `#[capped(serial)]`",
            ));
        }
        self.serial_span = Some(meta.span());
        self.args.serial = true;
        Ok(())
    }

    fn finish(mut self) -> syn::Result<CappedArgs> {
        if let (Some(_), Some(threads)) = (self.serial_span, self.threads_span) {
            self.error(syn::Error::new(
                threads,
                "`threads` has no effect with `serial`: a serial test already holds the whole \
                 width (it runs alone); remove one of them",
            ));
        }
        match self.errors {
            Some(errors) => Err(errors),
            None => Ok(self.args),
        }
    }
}

/// The value of `key = value`, or an error showing `form` when the argument is written
/// another way (`key`, `key(..)`).
fn name_value<'a>(meta: &'a Meta, form: &str) -> syn::Result<&'a Expr> {
    match meta {
        Meta::NameValue(MetaNameValue { value, .. }) => Ok(value),
        _ => Err(syn::Error::new_spanned(meta, format!("expected `{form}`"))),
    }
}

/// The string literal of `key = "..."`; a number or bare word gets a hint to quote it.
fn string_literal<'a>(value: &'a Expr, key: &str, form: &str) -> syn::Result<&'a LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        Expr::Lit(ExprLit {
            lit: lit @ (Lit::Int(_) | Lit::Float(_)),
            ..
        }) => {
            let quoted = format!("{key} = \"{}\"", lit.to_token_stream());
            let example = if quoted == form {
                String::new()
            } else {
                format!(" (e.g. `{form}`)")
            };
            Err(syn::Error::new_spanned(
                value,
                format!("`{key}` takes a string: write `{quoted}`{example}"),
            ))
        }
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes a string literal: `{form}`"),
        )),
    }
}

/// The error for an argument we do not know, with a suggestion when one is close.
fn unknown_argument(meta: &Meta, key: &str) -> syn::Error {
    let suggestion = ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, name)| *name)
        .or_else(|| {
            ARGUMENTS
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| edit_distance(name, key) <= 2)
                .min_by_key(|name| edit_distance(name, key))
        });
    let hint = suggestion
        .and_then(|name| ARGUMENTS.iter().find(|(known, _)| *known == name))
        .map(|(_, form)| format!(" (did you mean `{form}`?)"))
        .unwrap_or_default();
    syn::Error::new_spanned(
        meta.path(),
        format!(
            "unknown argument `{key}`{hint}; #[capped] accepts {}",
            accepted_arguments()
        ),
    )
}

/// Levenshtein distance between two short ASCII-ish words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> syn::Result<CappedArgs> {
        CappedArgs::parse(tokens)
    }

    /// All messages of a failed parse.
    fn errors(tokens: TokenStream) -> Vec<String> {
        match parse(tokens) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn one_error(tokens: TokenStream) -> String {
        let errors = errors(tokens);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap()
    }

    fn group_names(args: &CappedArgs) -> Vec<String> {
        args.groups.iter().map(LitStr::value).collect()
    }

    #[test]
    fn empty_is_a_plain_capped_test() {
        let args = parse(quote!()).unwrap();
        assert!(args.groups.is_empty());
        assert_eq!(args.threads, None);
        assert_eq!(args.mem, None);
        assert_eq!(args.timeout, None);
        assert!(!args.serial);
    }

    #[test]
    fn every_argument() {
        let args = parse(quote!(
            group = "gpu",
            groups = ["net", "crossval_2"],
            threads = 4,
            mem = "2GiB",
            timeout = "1m30s",
        ))
        .unwrap();
        assert_eq!(group_names(&args), ["gpu", "net", "crossval_2"]);
        assert_eq!(args.threads, Some(4));
        assert_eq!(args.mem, Some(2 << 30));
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
        assert!(!args.serial);
    }

    #[test]
    fn serial_flag() {
        let args = parse(quote!(serial, group = "db")).unwrap();
        assert!(args.serial);
        assert_eq!(group_names(&args), ["db"]);
    }

    #[test]
    fn unknown_argument_lists_what_is_accepted() {
        let message = one_error(quote!(gpus = 1));
        assert!(message.starts_with("unknown argument `gpus`"), "{message}");
        assert!(message.contains("`group = \"gpu\"`"), "{message}");
        assert!(message.contains("`serial`"), "{message}");
    }

    #[test]
    fn unknown_argument_suggests_a_close_one() {
        let message = one_error(quote!(thread = 2));
        assert!(message.contains("did you mean `threads = 2`?"), "{message}");
        let message = one_error(quote!(memory = "1G"));
        assert!(
            message.contains("did you mean `mem = \"2GiB\"`?"),
            "{message}"
        );
        let message = one_error(quote!(timout = "1s"));
        assert!(
            message.contains("did you mean `timeout = \"30s\"`?"),
            "{message}"
        );
        let message = one_error(quote!(frobnicate));
        assert!(!message.contains("did you mean"), "{message}");
        let message = one_error(quote!(a::b = 1));
        assert!(message.starts_with("unknown argument `a::b`"), "{message}");
    }

    #[test]
    fn bad_group_names() {
        let message = one_error(quote!(group = "GPU"));
        assert!(
            message.contains("must start with a lower-case letter"),
            "{message}"
        );
        let message = one_error(quote!(group = "a/b"));
        assert!(message.contains("contains `/`"), "{message}");
        let message = one_error(quote!(group = ""));
        assert!(message.contains("cannot be empty"), "{message}");
        let message = one_error(quote!(groups = ["ok", "../etc"]));
        assert!(message.contains("`../etc`"), "{message}");
    }

    #[test]
    fn duplicate_groups() {
        let message = one_error(quote!(group = "gpu", groups = ["net", "gpu"]));
        assert_eq!(message, "group `gpu` is named twice");
        let message = one_error(quote!(groups = ["a", "a"]));
        assert_eq!(message, "group `a` is named twice");
        let message = one_error(quote!(group = "a", group = "b"));
        assert!(message.starts_with("`group` is given twice"), "{message}");
        assert!(message.contains("groups = ["), "{message}");
    }

    #[test]
    fn group_value_types() {
        let message = one_error(quote!(group = gpu));
        assert!(
            message.contains("`group` takes a string literal"),
            "{message}"
        );
        let message = one_error(quote!(group));
        assert_eq!(message, "expected `group = \"gpu\"`");
        let message = one_error(quote!(group("gpu")));
        assert_eq!(message, "expected `group = \"gpu\"`");
        let message = one_error(quote!(groups = "gpu"));
        assert!(
            message.contains("for a single group write `group = \"gpu\"`"),
            "{message}"
        );
        let message = one_error(quote!(groups = []));
        assert!(message.contains("names no group"), "{message}");
        let message = one_error(quote!(groups = ["a", 1]));
        assert!(
            message.contains("a group name is a string literal"),
            "{message}"
        );
    }

    #[test]
    fn threads_values() {
        assert_eq!(parse(quote!(threads = 1)).unwrap().threads, Some(1));
        let message = one_error(quote!(threads = 0));
        assert!(
            message.starts_with("`threads = 0` is not allowed"),
            "{message}"
        );
        let message = one_error(quote!(threads = "2"));
        assert!(message.contains("an integer of at least 1"), "{message}");
        let message = one_error(quote!(threads = 2.5));
        assert!(message.contains("an integer of at least 1"), "{message}");
        let message = one_error(quote!(threads = 2u8));
        assert!(message.contains("without a type suffix"), "{message}");
        let message = one_error(quote!(threads = 99999999999));
        assert!(message.contains("too large"), "{message}");
        let message = one_error(quote!(threads = -1));
        assert!(message.contains("an integer of at least 1"), "{message}");
    }

    #[test]
    fn mem_values() {
        assert_eq!(parse(quote!(mem = "300M")).unwrap().mem, Some(300 << 20));
        let message = one_error(quote!(mem = "lots"));
        assert!(message.starts_with("`lots` is not a size"), "{message}");
        assert!(message.contains("2GiB"), "{message}");
        let message = one_error(quote!(mem = "0"));
        assert!(message.contains("reserves nothing"), "{message}");
        let message = one_error(quote!(mem = 1024));
        assert!(message.contains("write `mem = \"1024\"`"), "{message}");
    }

    #[test]
    fn timeout_values() {
        assert_eq!(
            parse(quote!(timeout = "500ms")).unwrap().timeout,
            Some(Duration::from_millis(500))
        );
        let message = one_error(quote!(timeout = "soon"));
        assert!(message.starts_with("`soon` is not a duration"), "{message}");
        let message = one_error(quote!(timeout = "0s"));
        assert!(message.contains("timeout of zero"), "{message}");
        let message = one_error(quote!(timeout = 30));
        assert!(message.contains("write `timeout = \"30\"`"), "{message}");
    }

    #[test]
    fn serial_takes_no_value() {
        let message = one_error(quote!(serial = true));
        assert!(message.contains("`serial` is a flag"), "{message}");
        let message = one_error(quote!(serial, threads = 2));
        assert!(
            message.contains("`threads` has no effect with `serial`"),
            "{message}"
        );
    }

    #[test]
    fn repeated_arguments() {
        let message = one_error(quote!(threads = 2, threads = 3));
        assert_eq!(message, "`threads` is given twice");
        let message = one_error(quote!(serial, serial));
        assert_eq!(message, "`serial` is given twice");
    }

    #[test]
    fn all_errors_are_reported_together() {
        let errors = errors(quote!(
            group = "GPU",
            threads = 0,
            mem = "lots",
            timeout = "soon",
            bogus
        ));
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn syntax_errors_say_what_is_accepted() {
        let message = one_error(quote!(group = ));
        assert!(
            message.contains("#[capped] takes comma-separated arguments"),
            "{message}"
        );
        let message = one_error(quote!(serial threads));
        assert!(
            message.contains("#[capped] takes comma-separated arguments"),
            "{message}"
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("threads", "thread"), 1);
        assert_eq!(edit_distance("timeout", "timout"), 1);
        assert_eq!(edit_distance("mem", "mem"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
