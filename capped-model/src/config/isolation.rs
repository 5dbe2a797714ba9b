//! How tests are grouped into processes, and what a test that needed a retry counts as.

use serde::Deserialize;

/// How tests share processes (`--isolation`, `isolation = ".."` in a profile or a group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A test binary's tests run together in one process (as `cargo test` runs them): the
    /// fastest, but a hang, a crash or a memory blow-up takes the process's other tests
    /// with it, and `--timeout` and `--mem-limit` act on the whole process.
    #[default]
    Binary,
    /// Each test runs as a process of its own: `--timeout` and `--mem-limit` act on that
    /// test alone, and a crash fails only it.
    Test,
}

impl Isolation {
    /// The accepted values, for error messages.
    pub const FORM: &'static str =
        "\"test\" (a process per test) or \"binary\" (a process per test binary)";

    /// Parses `test` or `binary`.
    pub fn parse(text: &str) -> Result<Isolation, String> {
        match text {
            "test" => Ok(Isolation::Test),
            "binary" => Ok(Isolation::Binary),
            other => Err(format!(
                "unknown isolation `{other}`; expected {}",
                Isolation::FORM
            )),
        }
    }
}

/// What a test that failed and then passed on a retry counts as (`flaky-result`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlakyResult {
    /// It passes the run (reported flaky).
    #[default]
    Pass,
    /// It fails the run (still reported flaky, with every attempt).
    Fail,
}

/// The most retries a test gets: enough for any flakiness worth tolerating, few enough
/// that a broken test cannot multiply a run's time without bound.
pub const MAX_RETRIES: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_values() {
        assert_eq!(Isolation::parse("test"), Ok(Isolation::Test));
        assert_eq!(Isolation::parse("binary"), Ok(Isolation::Binary));
        let message = Isolation::parse("process").unwrap_err();
        assert!(
            message.contains("`process`") && message.contains("\"test\""),
            "{message}"
        );
    }
}
