//! The fixture for harness mode's end-to-end tests (`harness_mode.rs`): a `harness = false`
//! target whose `#[capped]` tests run under `capped_test::main!()`. `harness_fixture_libtest`
//! holds the same tests under libtest.

include!("suite.rs");

capped_test::main!();
