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

mod caps;
pub mod config;
mod context;
mod error;
mod init;
mod metrics;
pub mod protocol;
pub mod resource;
mod run_test;
mod runtime;
mod seed;
pub mod test_spec;
pub mod units;

pub use capped_test_macros::capped;
pub use caps::{Caps, DETERMINISTIC_SEED, SeedOrigin, caps, try_caps};
pub use context::{current_test, seed, seed_for, slot, slot_envs};
pub use error::Error;
pub use init::ensure_init;
pub use metrics::{Percentiles, ResourceMetrics, metrics};
pub use resource::{Guard, Request, Scope, group};
pub use runtime::{LimiterStats, TaskLimiter, runtime};
pub use seed::derive_seed;

/// Items the `#[capped]` attribute and `main!()` expand to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::run_test::run_libtest;
    pub use crate::test_spec::{Registration, ShouldPanic, TestReturn, TestSpec};
    pub use inventory;

    /// Runs an async test body to completion on the capped runtime.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        crate::runtime::runtime().block_on(future)
    }
}
