//! Every form of `#[capped(...)]` compiles, runs as a test under libtest, and records what
//! it says in the test's `TestSpec` (checked through the `inventory` registrations).

use std::time::Duration;

use capped_test::__private::{Registration, ShouldPanic, TestSpec, inventory};
use capped_test::capped;

#[capped]
fn bare() {}

#[capped(group = "attrtest-gpu")]
fn one_group() {}

#[capped(groups = ["attrtest-gpu", "attrtest-net"], group = "attrtest_db")]
fn several_groups() {}

#[capped]
#[test]
fn with_test_below() {}

#[capped(threads = 2)]
fn two_threads() {}

#[capped(mem = "1MiB")]
fn with_mem() {}

#[capped(timeout = "10s")]
fn with_timeout() {}

#[capped(serial)]
fn serial_test() {}

#[capped(group = "attrtest-gpu", threads = 2, mem = "1.5G", timeout = "1m30s")]
fn everything() {}

#[capped]
#[ignore]
fn ignored() {
    panic!("an ignored test does not run");
}

#[capped]
#[ignore = "reason given"]
fn ignored_with_reason() {
    panic!("an ignored test does not run");
}

#[capped]
#[should_panic]
fn panics() {
    panic!("anything");
}

#[capped(group = "attrtest-gpu")]
#[should_panic(expected = "boom")]
fn panics_with_boom() {
    panic!("it went boom here");
}

#[capped]
#[should_panic = "bang"]
fn panics_with_bang() {
    panic!("bang");
}

#[capped]
fn returns_ok() -> Result<(), String> {
    let value: u32 = "42".parse().map_err(|e| format!("{e}"))?;
    assert_eq!(value, 42);
    Ok(())
}

#[capped]
fn returns_io_result() -> std::io::Result<()> {
    Ok(())
}

#[capped(group = "attrtest-net")]
async fn async_test() {
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[capped(timeout = "10s")]
async fn async_returns_result() -> Result<(), String> {
    let value = async { Ok::<u32, String>(7) }.await?;
    tokio::task::yield_now().await;
    if value == 7 {
        Ok(())
    } else {
        Err(format!("got {value}"))
    }
}

#[capped]
#[should_panic(expected = "async boom")]
async fn async_panics() {
    tokio::task::yield_now().await;
    panic!("async boom");
}

#[capped]
#[cfg(any())]
fn cfgd_out() {
    compile_error!("a cfg'd-out test is not compiled");
}

#[capped]
#[cfg_attr(all(), ignore = "conditionally ignored")]
fn conditionally_ignored() {
    panic!("an ignored test does not run");
}

#[capped]
#[cfg_attr(any(), ignore)]
fn not_conditionally_ignored() {}

/// Doc comments and lint attributes are fine.
#[capped]
#[allow(clippy::eq_op, unused_variables)]
fn with_docs_and_lints() {
    let unused = 1;
    assert_eq!(1, 1);
}

#[capped]
fn inner_attributes() {
    #![allow(unused_variables)]
    let unused = 1;
}

#[capped]
#[expect(unused_variables)]
fn with_expect() {
    let unused = 1;
}

#[capped]
#[cfg_attr(all(), should_panic(expected = "conditional"))]
fn conditionally_panics() {
    panic!("conditional boom");
}

#[capped]
fn r#match() {}

mod nested {
    use capped_test::capped;

    /// Same name as a test in the parent module: the generated items do not collide.
    #[capped(group = "attrtest-gpu")]
    fn bare() {}

    #[capped(group = "attrtest-gpu")]
    pub(crate) fn visible() {}
}

/// The registrations made by this file, by name (`module::fn` without the crate name).
fn spec(name: &str) -> &'static TestSpec {
    let mut found = inventory::iter::<Registration>
        .into_iter()
        .filter(|registration| registration.spec.name() == name);
    let registration = found
        .next()
        .unwrap_or_else(|| panic!("no registration for `{name}`"));
    assert!(
        found.next().is_none(),
        "`{name}` is registered more than once"
    );
    registration.spec
}

fn run(name: &str) -> Result<(), String> {
    let registration = inventory::iter::<Registration>
        .into_iter()
        .find(|registration| registration.spec.name() == name)
        .unwrap_or_else(|| panic!("no registration for `{name}`"));
    (registration.run)()
}

#[test]
fn every_test_of_this_file_is_registered_once() {
    let mut names: Vec<String> = inventory::iter::<Registration>
        .into_iter()
        .filter(|registration| registration.spec.module_path.starts_with("attribute_forms"))
        .map(|registration| registration.spec.name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "async_panics",
            "async_returns_result",
            "async_test",
            "bare",
            "conditionally_ignored",
            "conditionally_panics",
            "everything",
            "failing::fails",
            "ignored",
            "ignored_with_reason",
            "inner_attributes",
            "nested::bare",
            "nested::visible",
            "not_conditionally_ignored",
            "one_group",
            "panics",
            "panics_with_bang",
            "panics_with_boom",
            "r#match",
            "returns_io_result",
            "returns_ok",
            "serial_test",
            "several_groups",
            "tokio_test_in_scope::still_a_libtest_test",
            "two_threads",
            "with_docs_and_lints",
            "with_expect",
            "with_mem",
            "with_test_below",
            "with_timeout",
        ]
    );
}

#[test]
fn defaults() {
    let spec = spec("bare");
    assert_eq!(spec.module_path, "attribute_forms");
    assert_eq!(spec.fn_name, "bare");
    assert_eq!(spec.full_path(), "attribute_forms::bare");
    assert!(spec.groups.is_empty());
    assert_eq!(spec.threads, 1);
    assert_eq!(spec.mem, None);
    assert_eq!(spec.timeout, None);
    assert!(!spec.serial);
    assert_eq!(spec.ignore, None);
    assert_eq!(spec.should_panic, ShouldPanic::No);
    assert!(!spec.is_async);
    assert!(spec.file.ends_with("attribute_forms.rs"), "{}", spec.file);
    // The line of `fn bare`, not of `#[capped]`.
    assert_eq!(spec.line, 10);
}

#[test]
fn groups() {
    assert_eq!(spec("one_group").groups, ["attrtest-gpu"]);
    assert_eq!(
        spec("several_groups").groups,
        ["attrtest-gpu", "attrtest-net", "attrtest_db"]
    );
    assert_eq!(spec("nested::bare").groups, ["attrtest-gpu"]);
    assert_eq!(spec("nested::bare").module_path, "attribute_forms::nested");
}

#[test]
fn resources() {
    assert_eq!(spec("two_threads").threads, 2);
    assert_eq!(spec("with_mem").mem, Some(1 << 20));
    assert_eq!(spec("with_timeout").timeout, Some(Duration::from_secs(10)));
    assert!(spec("serial_test").serial);
    assert_eq!(spec("serial_test").threads, 1);

    let everything = spec("everything");
    assert_eq!(everything.groups, ["attrtest-gpu"]);
    assert_eq!(everything.threads, 2);
    assert_eq!(everything.mem, Some(1_610_612_736));
    assert_eq!(everything.timeout, Some(Duration::from_secs(90)));
    assert!(!everything.serial);
}

#[test]
fn libtest_flags() {
    assert_eq!(spec("ignored").ignore, Some(None));
    assert_eq!(
        spec("ignored_with_reason").ignore,
        Some(Some("reason given"))
    );
    assert_eq!(
        spec("conditionally_ignored").ignore,
        Some(Some("conditionally ignored"))
    );
    assert_eq!(spec("not_conditionally_ignored").ignore, None);
    assert_eq!(spec("panics").should_panic, ShouldPanic::Yes);
    assert_eq!(
        spec("panics_with_boom").should_panic,
        ShouldPanic::YesWithMessage("boom")
    );
    assert_eq!(
        spec("panics_with_bang").should_panic,
        ShouldPanic::YesWithMessage("bang")
    );
    assert_eq!(
        spec("async_panics").should_panic,
        ShouldPanic::YesWithMessage("async boom")
    );
    assert_eq!(
        spec("conditionally_panics").should_panic,
        ShouldPanic::YesWithMessage("conditional")
    );
    assert_eq!(spec("with_test_below").ignore, None);
}

#[test]
fn async_and_raw_names() {
    assert!(spec("async_test").is_async);
    assert!(spec("async_returns_result").is_async);
    assert!(!spec("returns_ok").is_async);
    // Named as libtest names it.
    assert_eq!(spec("r#match").fn_name, "r#match");
}

#[test]
fn registered_bodies_run() {
    assert_eq!(run("bare"), Ok(()));
    assert_eq!(run("returns_ok"), Ok(()));
    assert_eq!(run("returns_io_result"), Ok(()));
    assert_eq!(run("async_test"), Ok(()));
    assert_eq!(run("async_returns_result"), Ok(()));
    let panicked = std::panic::catch_unwind(|| run("panics_with_boom"));
    assert!(panicked.is_err());
}

#[test]
fn a_returned_error_is_reported() {
    assert_eq!(
        run("failing::fails"),
        Err("Error: \"it failed\"".to_string())
    );
}

/// `#[capped]` emits `#[::core::prelude::v1::test]`, so a `test` imported into the module
/// (here tokio's, which would refuse a sync fn) does not replace libtest's.
mod tokio_test_in_scope {
    use capped_test::capped;
    #[allow(unused_imports)]
    use tokio::test;

    #[capped]
    fn still_a_libtest_test() {}
}

mod failing {
    use capped_test::capped;

    #[capped]
    #[ignore = "fails on purpose: `a_returned_error_is_reported` checks its error"]
    fn fails() -> Result<(), String> {
        Err("it failed".to_string())
    }
}

#[test]
fn the_wrapper_is_a_plain_callable_fn() {
    nested::visible();
    bare();
}
