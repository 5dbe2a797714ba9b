//! A `harness = false` target without a `#[capped]` test: the harness says why.

#[test]
#[allow(dead_code)]
fn plain_tests_are_not_compiled_here() {
    panic!("rustc drops #[test] functions in a harness = false target");
}

capped_test::main!();
