//! 2000 no-op `#[capped]` tests under the capped harness, for `harness_bench.rs`.

include!("suite.rs");

two_thousand!(#[capped_test::capped]);

capped_test::main!();
