//! capped-test (work in progress: the crate docs are written with the resource model).

pub mod test_spec;
pub mod units;

pub use capped_test_macros::capped;

/// Items the `#[capped]` attribute and `main!()` expand to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::test_spec::{Registration, ShouldPanic, TestReturn, TestSpec};
    pub use inventory;

    /// Runs one `#[capped]` test under libtest (or nextest): acquire, run, release.
    pub fn run_libtest<T: TestReturn>(spec: &'static TestSpec, body: fn() -> T) -> T {
        let _ = spec;
        body()
    }

    /// Runs an async test body to completion on the capped runtime.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building the tokio runtime")
            .block_on(future)
    }
}
