//! 2000 no-op tests under libtest, as plain `#[test]` (`plain::…`) and as `#[capped]`
//! (`capped::…`), for `harness_bench.rs` to compare with the capped harness.

include!("harness_noop/suite.rs");

mod plain {
    two_thousand!(#[test]);
}

mod capped {
    two_thousand!(#[capped_test::capped]);
}
