//! The crate's error type: what went wrong, where, and how to fix it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::ConfigError;
use crate::units::format_duration;

/// Everything that can go wrong while resolving caps, reading config or taking resources.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `CAPPED_*` (or related) environment variable has a malformed value.
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A command-line argument the library reads (libtest's `--test-threads`) is out of range.
    Arg {
        /// The argument (`--test-threads`).
        arg: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The config file is malformed.
    Config(ConfigError),
    /// A lock dir is unusable (a symlink, another user's, not creatable).
    LockDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A group name is not `[a-z0-9][a-z0-9_-]{0,63}`.
    GroupName(String),
    /// A lock or reservation file could not be used.
    Io(std::io::Error),
    /// A request can never be satisfied (more memory than the whole budget, say).
    Impossible(String),
    /// A wait passed its deadline.
    Timeout {
        /// What was asked for (`width×1, gpu`).
        request: String,
        /// How long it waited.
        waited: Duration,
        /// Who held the busy resources, as `group slot N: pid exe`.
        holders: Vec<String>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Env {
                var,
                value,
                expected,
            } => {
                write!(
                    f,
                    "environment variable {var}={value:?} is malformed: expected {expected}"
                )
            }
            Error::Arg { arg, message } => write!(f, "argument {arg}: {message}"),
            Error::Config(e) => write!(f, "{e}"),
            // The path comes from a flag, a variable or the config: its control characters
            // must not break the one line of the message.
            Error::LockDir { path, message } => write!(
                f,
                "lock dir {} is unusable: {message}",
                path.display().to_string().escape_debug()
            ),
            Error::GroupName(message) => f.write_str(message),
            Error::Io(e) => write!(f, "{e}"),
            Error::Impossible(message) => f.write_str(message),
            Error::Timeout {
                request,
                waited,
                holders,
            } => {
                write!(
                    f,
                    "gave up waiting for {request} after {}",
                    format_duration(*waited)
                )?;
                if holders.is_empty() {
                    Ok(())
                } else {
                    write!(f, "; held by {}", holders.join(", "))
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_dir_is_shown_with_its_control_characters_escaped() {
        let error = Error::LockDir {
            path: PathBuf::from("/tmp/a\u{1b}[31mred\nb"),
            message: "cannot create it".to_string(),
        };
        let shown = error.to_string();
        assert!(!shown.contains(['\u{1b}', '\n']), "{shown:?}");
        assert!(shown.contains("/tmp/a\\u{1b}[31mred\\nb"), "{shown}");
    }
}
