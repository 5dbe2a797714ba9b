//! # capped-test
//!
//! Heavy test suites on shared machines die of oversubscription: every test's rayon pool
//! starts one thread per core, BLAS does the same, two GPU suites fight for one card.
//! `capped-test` is the library a test binary links to stay within its caps:
//!
//! * at load time it caps the global **rayon pool** and exports `OMP_NUM_THREADS`,
//!   `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `NUMEXPR_NUM_THREADS`, `RAYON_NUM_THREADS`
//!   and `TOKIO_WORKER_THREADS` for children;
//! * [`#[capped]`](capped) makes a test that holds named **group** slots (`gpu`,
//!   `crossval`, …), width slots and memory while it runs. Slots are shared by the threads of
//!   a binary, by every process of a `cargo capped` run, of a workspace, or of the whole host
//!   ([`Scope`]), through lock files the kernel releases when a holder dies;
//! * every test gets a stable [`seed()`], printed with a reproduction line when it fails;
//! * [`runtime()`] and [`TaskLimiter`] cap async concurrency.
//!
//! The caps come from `cargo capped` (the `CAPPED_*` environment), or under plain
//! `cargo test` / `cargo nextest run` from `.config/capped.toml` and defaults ([`Caps`]), so
//! the caps hold whatever runs the binary.
//!
//! ```
//! use capped_test::capped;
//!
//! #[capped(group = "gpu", timeout = "60s")]
//! fn matmul_on_the_card() {
//!     // At most `max` (default 1) tests of group `gpu` run at once on this host.
//!     assert_eq!(capped_test::slot("gpu"), Some(0));
//!     let seed = capped_test::seed(); // stable for this test and run seed
//!     let _ = seed;
//! }
//!
//! #[capped(threads = 2)]
//! async fn fetches_in_parallel() {
//!     // async tests run on the capped tokio runtime
//!     tokio::task::yield_now().await;
//! }
//! # fn main() {}
//! ```
//!
//! Code that is not a test takes a group by hand:
//!
//! ```
//! let _gpu = capped_test::group("doc-gpu"); // held until dropped
//! ```
//!
//! A target with `harness = false` whose file ends in `capped_test::main!()` runs its
//! `#[capped]` tests under this crate's own scheduler, which starts a test only when all its
//! resources are free, so no worker is parked on a busy group (see [`main!`]).

// Lets `#[capped]` (which expands to `::capped_test::…` paths) be used inside this crate.
extern crate self as capped_test;

mod context;
mod devices;
#[cfg(feature = "harness")]
mod harness;
mod init;
mod run_test;
#[cfg(feature = "async")]
mod runtime;
pub mod test_spec;

pub use capped_model::{
    Caps, DETERMINISTIC_SEED, Error, Guard, Percentiles, Request, ResourceMetrics, Scope,
    SeedOrigin, caps, config, derive_seed, group, metrics, protocol, resource, try_caps, units,
};
pub use capped_test_macros::capped;
pub use context::{current_test, seed, seed_for, slot, slot_envs};
pub use devices::device;
pub use init::ensure_init;
#[cfg(feature = "async")]
pub use runtime::{LimiterStats, TaskLimiter, runtime};

/// Items the `#[capped]` attribute and `main!()` expand to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "harness")]
    pub use crate::harness::{MainMarker, harness_main};
    pub use crate::run_test::run_libtest;
    pub use crate::test_spec::{Registration, ShouldPanic, TestReturn, TestSpec};
    pub use inventory;

    /// Runs an async test body to completion on the capped runtime.
    #[cfg(feature = "async")]
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        crate::runtime::runtime().block_on(future)
    }

    /// Without the `async` feature there is no runtime: an `async fn` under `#[capped]`
    /// fails to compile with this trait's message instead of a missing-path error.
    #[cfg(not(feature = "async"))]
    #[diagnostic::on_unimplemented(
        message = "an `async fn` #[capped] test needs capped-test's `async` feature",
        label = "async test without the `async` feature",
        note = "enable it: capped-test = {{ version = \"..\", features = [\"async\"] }} (it is a default feature)"
    )]
    pub trait NeedsAsyncFeature {}

    /// Without the `async` feature: never callable (see [`NeedsAsyncFeature`]).
    #[cfg(not(feature = "async"))]
    pub fn block_on<F: std::future::Future + NeedsAsyncFeature>(_future: F) -> F::Output {
        unreachable!("no type implements NeedsAsyncFeature")
    }
}

/// Writes the `main` of a `harness = false` test target: its `#[capped]` tests run under
/// capped-test's own harness, which starts a test only when all its resources are free, so
/// no thread is ever parked on a busy group.
///
/// Put it at the end of the target's root file. Every `#[capped]` test in the target's crate
/// (its root file and its modules) is found without being listed.
///
/// # Setup
///
/// `Cargo.toml`:
///
/// ```toml
/// [dev-dependencies]
/// capped-test = "0.1"
///
/// [[test]]
/// name = "gpu_suite"            # tests/gpu_suite.rs
/// harness = false
/// ```
///
/// `tests/gpu_suite.rs`:
///
/// ```no_run
/// use capped_test::capped;
///
/// #[capped(group = "gpu", timeout = "2m")]
/// fn trains_a_small_model() {
///     // At most `max` (default 1) gpu tests run at once on this host.
/// }
///
/// #[capped]
/// fn parses_the_config() {}
///
/// mod more {
///     #[capped_test::capped(threads = 2)]
///     fn uses_two_threads() {}
/// }
///
/// capped_test::main!();
/// ```
///
/// Then `cargo test --test gpu_suite -- --test-threads 2`, `cargo nextest run` and
/// `cargo capped t2` all run it.
///
/// # Behaviour
///
/// * **Command line and output** are libtest's: `--list [--format terse]`, filters,
///   `--exact`, `--skip`, `--ignored`, `--include-ignored`, `--test-threads` (and
///   `RUST_TEST_THREADS`), `-q`, `--color`, `--format json`, `--shuffle`, `--shuffle-seed`;
///   `test NAME ... ok`, the failures section and the `test result:` line; exit status 101
///   when a test failed. With `CAPPED_LIST_RESOURCES=1`, `--list` prints each test's
///   resources as JSON lines ([`protocol::ListedTest`]).
/// * **Scheduling**: up to the width (`--test-threads`, else the caps) tests run at once,
///   each on a thread named after it. A test starts only when its width slots, groups and
///   memory can all be taken now; tests on busy groups stay pending while the others run.
///   Tests that are hard to place (`threads = N`, `serial`, groups many tests need) start
///   first; a test passed over for too long gets a reservation so it cannot starve.
/// * **Order**: by name; `cargo capped t1 --deterministic` (`CAPPED_DETERMINISTIC=1`) runs
///   one test at a time in that order. `--shuffle` or `CAPPED_SHUFFLE=1` shuffles with the
///   run seed (`--shuffle-seed N` picks one) and prints it: `running 9 tests (shuffle seed: 7)`.
/// * **Timeouts**: a test past its timeout is reported `FAILED (timed out after …)`; the run
///   then stops after a short grace for the running tests and exits with 101.
/// * **Events**: with `CAPPED_EVENTS=path` each test start and end is appended as a JSON
///   line ([`protocol::Event`]).
///
/// # Limits
///
/// * Plain `#[test]` functions are **not compiled** in a `harness = false` target (rustc
///   drops them); mark them `#[capped]`. A harness with no `#[capped]` test says so when run.
/// * Output is not captured: the harness behaves like libtest's `--nocapture` (a stable crate
///   cannot capture `println!` per test thread). Failures are summarized with their panic
///   message and location; `cargo nextest run` captures output per test process.
/// * In a target that keeps libtest's harness (no `harness = false`), libtest's `main`
///   replaces this one: the `#[capped]` tests run under libtest, where they still hold their
///   resources but wait for them on libtest's threads. The first of them prints a warning
///   saying so.
#[cfg(feature = "harness")]
#[macro_export]
macro_rules! main {
    () => {
        fn main() {
            $crate::__private::harness_main()
        }

        $crate::__private::inventory::submit! {
            $crate::__private::MainMarker
        }
    };
}

/// Without the `harness` feature there is no harness: `main!()` is a compile error that
/// says which feature to enable.
#[cfg(not(feature = "harness"))]
#[macro_export]
macro_rules! main {
    () => {
        compile_error!(
            "capped_test::main!() needs capped-test's `harness` feature (a default feature): \
             enable it, or drop `harness = false` and main!() to run the tests under libtest"
        );
    };
}
