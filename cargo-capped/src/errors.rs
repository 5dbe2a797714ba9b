//! What can stop a run before its tests decide its exit status, and the exit code of each.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | every test passed (or was ignored) |
//! | 1 | the runner itself failed (cannot spawn, I/O error on the run dir, …) |
//! | 2 | bad usage, bad config, bad environment |
//! | 4 | no test ran (a selection that matches nothing) under `--no-tests=fail`, the default |
//! | 100 | a test failed, timed out, crashed its binary or was not run because of a failure |
//! | 101 | the build failed |
//! | 130 | interrupted (SIGINT/SIGTERM/SIGHUP): children were stopped, a partial summary printed |

use std::fmt;

/// Exit status: all passed.
pub const EXIT_OK: i32 = 0;
/// Exit status: the runner itself failed.
pub const EXIT_INTERNAL: i32 = 1;
/// Exit status: bad usage or config.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the run ran no test and `--no-tests=fail` (the default) says that fails it
/// (nextest's number for the same case).
pub const EXIT_NO_TESTS: i32 = 4;
/// Exit status: a test failed (nextest uses the same number).
pub const EXIT_TEST_FAILED: i32 = 100;
/// Exit status: the build failed (as `cargo test`).
pub const EXIT_BUILD_FAILED: i32 = 101;
/// Exit status: interrupted by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// An error that ends `cargo capped` with a message and an exit code.
#[derive(Debug)]
pub enum Error {
    /// Bad command line (exit 2).
    Usage(String),
    /// Bad config file or environment (exit 2); the message names `file:line:col`.
    Config(String),
    /// The build failed (exit 101); cargo has already shown why.
    Build(String),
    /// Interrupted before tests ran (exit 130).
    Interrupted,
    /// The run cannot meet what it was asked to require (a device-backed group without
    /// devices): it fails before any test starts (exit 100, as a failed test would).
    Unmet(String),
    /// Anything else (exit 1).
    Internal(String),
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => EXIT_USAGE,
            Error::Build(_) => EXIT_BUILD_FAILED,
            Error::Interrupted => EXIT_INTERRUPTED,
            Error::Unmet(_) => EXIT_TEST_FAILED,
            Error::Internal(_) => EXIT_INTERNAL,
        }
    }

    /// An internal error with context: `what: error`.
    pub fn internal(what: impl fmt::Display, error: impl fmt::Display) -> Error {
        Error::Internal(format!("{what}: {error}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message)
            | Error::Config(message)
            | Error::Internal(message)
            | Error::Unmet(message) => f.write_str(message),
            Error::Build(message) => write!(f, "build failed: {message}"),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for Error {}

impl From<capped_model::config::ConfigError> for Error {
    fn from(e: capped_model::config::ConfigError) -> Self {
        Error::Config(e.to_string())
    }
}

impl From<capped_model::Error> for Error {
    fn from(e: capped_model::Error) -> Self {
        match e {
            capped_model::Error::Config(e) => Error::Config(e.to_string()),
            e @ (capped_model::Error::Env { .. }
            | capped_model::Error::Arg { .. }
            | capped_model::Error::GroupName(_)
            | capped_model::Error::LockDir { .. }) => Error::Config(e.to_string()),
            e => Error::Internal(e.to_string()),
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
