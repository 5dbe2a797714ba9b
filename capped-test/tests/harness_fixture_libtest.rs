//! The tests of `harness_fixture/suite.rs` under libtest, to compare the capped harness's
//! listing, filtering and output with libtest's (`harness_mode.rs`) and its makespan
//! (`harness_bench.rs`).

include!("harness_fixture/suite.rs");
