//! Compile-time behaviour of `#[capped(...)]`, with trybuild: every mistake is a compile
//! error pointing at the offending argument and saying what is accepted, and a binary
//! without libtest (as in harness mode) still registers its tests.
//!
//! Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p capped-test --test attribute_compile`, then read each
//! `.stderr`: the span must point at the argument and the message must say what to write.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
