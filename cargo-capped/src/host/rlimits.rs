//! Resource limits of this process: reading `RLIMIT_NOFILE` and `RLIMIT_NPROC`, and raising
//! the soft `RLIMIT_NOFILE` to the hard limit (children inherit it).

use std::fmt;

use rustix::process::{Rlimit, getrlimit, setrlimit};

use super::HostError;

/// The resource limits `cargo capped` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors per process.
    NoFile,
    /// `RLIMIT_NPROC`: processes (threads) per user.
    NProc,
}

impl Resource {
    fn rustix(self) -> rustix::process::Resource {
        match self {
            Resource::NoFile => rustix::process::Resource::Nofile,
            Resource::NProc => rustix::process::Resource::Nproc,
        }
    }

    /// The row of `/proc/<pid>/limits` that holds it.
    fn proc_limits_row(self) -> &'static str {
        match self {
            Resource::NoFile => "Max open files",
            Resource::NProc => "Max processes",
        }
    }
}

/// A soft and hard limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit, which the kernel enforces.
    pub soft: Option<u64>,
    /// The hard limit, up to which an unprivileged process may raise the soft one.
    pub hard: Option<u64>,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
        write!(f, "soft {} / hard {}", show(self.soft), show(self.hard))
    }
}

/// The soft `RLIMIT_NOFILE` before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The limit found.
    pub before: Limit,
    /// The limit now in force.
    pub after: Limit,
}

impl Raised {
    /// Whether the soft limit changed.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Reads a limit of this process with `getrlimit`.
pub fn get(resource: Resource) -> Limit {
    let Rlimit { current, maximum } = getrlimit(resource.rustix());
    Limit {
        soft: current,
        hard: maximum,
    }
}

/// This process's `RLIMIT_NOFILE`.
pub fn nofile() -> Limit {
    get(Resource::NoFile)
}

/// This process's `RLIMIT_NPROC`.
#[cfg(test)]
pub fn nproc() -> Limit {
    get(Resource::NProc)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that this process and the children
/// it spawns afterwards may open as many files as allowed. Does nothing when they are
/// already equal.
pub fn raise_nofile() -> Result<Raised, HostError> {
    let before = nofile();
    if before.soft == before.hard {
        return Ok(Raised {
            before,
            after: before,
        });
    }
    setrlimit(
        Resource::NoFile.rustix(),
        Rlimit {
            current: before.hard,
            maximum: before.hard,
        },
    )
    .map_err(|e| {
        HostError::syscall(
            format!(
                "setrlimit(RLIMIT_NOFILE, {})",
                Limit {
                    soft: before.hard,
                    ..before
                }
            ),
            e.into(),
        )
    })?;
    Ok(Raised {
        before,
        after: nofile(),
    })
}

/// Parses the row for `resource` from a `/proc/<pid>/limits` text:
/// `Max open files            1024                 4096                 files`.
pub fn parse_proc_limits(text: &str, resource: Resource) -> Result<Limit, String> {
    let row = resource.proc_limits_row();
    let line = text
        .lines()
        .find(|line| line.starts_with(row))
        .ok_or_else(|| format!("no `{row}` row"))?;
    let mut words = line[row.len()..].split_whitespace();
    let mut value = || -> Result<Option<u64>, String> {
        match words.next() {
            Some("unlimited") => Ok(None),
            Some(word) => word
                .parse()
                .map(Some)
                .map_err(|_| format!("`{row}`: `{word}` is not a limit")),
            None => Err(format!("`{row}` lacks the soft and hard limits")),
        }
    };
    Ok(Limit {
        soft: value()?,
        hard: value()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max processes             96365                unlimited            processes
Max open files            1024                 4096                 files
";

    #[test]
    fn proc_limits_rows() {
        assert_eq!(
            parse_proc_limits(LIMITS, Resource::NoFile),
            Ok(Limit {
                soft: Some(1024),
                hard: Some(4096)
            })
        );
        assert_eq!(
            parse_proc_limits(LIMITS, Resource::NProc),
            Ok(Limit {
                soft: Some(96365),
                hard: None
            })
        );
        assert!(parse_proc_limits("", Resource::NoFile).is_err());
        assert!(parse_proc_limits("Max open files   lots  4096 files", Resource::NoFile).is_err());
        assert!(parse_proc_limits("Max open files", Resource::NoFile).is_err());
    }

    #[test]
    fn display() {
        assert_eq!(
            Limit {
                soft: Some(1),
                hard: None
            }
            .to_string(),
            "soft 1 / hard unlimited"
        );
    }

    #[test]
    fn raise_nofile_in_a_child_process() {
        // Changing our own limit would affect the other tests of this binary: lower it in a
        // child and let the child raise it back (the child is this test binary, re-run).
        if std::env::var_os("CAPPED_TEST_RAISE_NOFILE_CHILD").is_some() {
            let hard = nofile().hard;
            setrlimit(
                rustix::process::Resource::Nofile,
                Rlimit {
                    current: Some(256),
                    maximum: hard,
                },
            )
            .unwrap();
            let raised = raise_nofile().unwrap();
            assert_eq!(raised.before.soft, Some(256));
            assert_eq!(raised.after.soft, hard);
            assert!(raised.changed());
            let again = raise_nofile().unwrap();
            assert!(!again.changed());
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "host::rlimits::tests::raise_nofile_in_a_child_process",
                "--nocapture",
            ])
            .env("CAPPED_TEST_RAISE_NOFILE_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }

    #[test]
    fn live_limits_are_consistent() {
        let limit = nofile();
        if let (Some(soft), Some(hard)) = (limit.soft, limit.hard) {
            assert!(soft <= hard);
        }
        let _ = nproc();
    }
}
