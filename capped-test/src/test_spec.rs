//! What `#[capped(...)]` records about a test: its resources and libtest flags.
//!
//! The attribute emits one `static` [`TestSpec`] per test and registers it with the
//! [`inventory`] collection [`Registration`], so that harness mode knows every test of the
//! binary and its resources before running any of them. Under plain libtest the same spec
//! drives [`crate::__private::run_libtest`].

use std::time::Duration;

/// Whether a test is expected to panic, mirroring `#[should_panic]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShouldPanic {
    /// No `#[should_panic]`.
    No,
    /// `#[should_panic]`.
    Yes,
    /// `#[should_panic(expected = "...")]`: the panic message must contain this text.
    YesWithMessage(&'static str),
}

/// Everything the attribute knows about one test, built as a `static` by the macro.
#[derive(Debug)]
pub struct TestSpec {
    /// `module_path!()` at the test (starts with the crate name).
    pub module_path: &'static str,
    /// The function's name.
    pub fn_name: &'static str,
    /// Groups named by `group = ".."` / `groups = [..]`, validated at compile time.
    pub groups: &'static [&'static str],
    /// `threads = N`: width slots this test holds (1 when not given).
    pub threads: u32,
    /// `mem = ".."` in bytes.
    pub mem: Option<u64>,
    /// `timeout = ".."`.
    pub timeout: Option<Duration>,
    /// `serial`: the test holds the whole width (runs alone).
    pub serial: bool,
    /// `#[ignore]` (`Some(None)`) or `#[ignore = "reason"]` (`Some(Some(reason))`).
    pub ignore: Option<Option<&'static str>>,
    /// `#[should_panic]`.
    pub should_panic: ShouldPanic,
    /// The test is an `async fn`, run on [`crate::runtime()`].
    pub is_async: bool,
    /// Source file of the test (`file!()`).
    pub file: &'static str,
    /// Line of the test (`line!()`).
    pub line: u32,
}

impl TestSpec {
    /// The name libtest gives this test: the module path without the crate name, then the
    /// function name (`tests::gpu_matmul`), so filters and `--exact` agree with `cargo test`.
    pub fn name(&self) -> String {
        match self.module_path.split_once("::") {
            Some((_crate, rest)) => format!("{rest}::{}", self.fn_name),
            None => self.fn_name.to_string(),
        }
    }

    /// The full path used for seeds and reports: `module_path!()` + `::` + name.
    pub fn full_path(&self) -> String {
        format!("{}::{}", self.module_path, self.fn_name)
    }
}

/// One test registered for harness mode: its spec and its body, made uniform.
pub struct Registration {
    /// The test's spec.
    pub spec: &'static TestSpec,
    /// Runs the body (already wrapped in the async runtime when the test is `async`) and
    /// turns its return value into `Ok(())` or `Err(message)`; a panic unwinds out of it.
    pub run: fn() -> Result<(), String>,
}

inventory::collect!(Registration);

/// Return types a `#[capped]` test may have: `()` and `Result<(), E: Debug>`, as libtest.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid #[capped] test return type",
    label = "return `()` or `Result<(), E>` with `E: Debug`"
)]
pub trait TestReturn {
    /// `Ok(())` for success, `Err(message)` for a failure returned (not panicked).
    fn into_result(self) -> Result<(), String>;
    /// The failure message, without consuming the value.
    fn failure(&self) -> Option<String>;
    /// The value of a successful test.
    fn success() -> Self;
}

impl TestReturn for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
    fn failure(&self) -> Option<String> {
        None
    }
    fn success() -> Self {}
}

impl<E: std::fmt::Debug> TestReturn for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("Error: {e:?}"))
    }
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(|e| format!("Error: {e:?}"))
    }
    fn success() -> Self {
        Ok(())
    }
}
