//! Raising `RLIMIT_NOFILE` at start, and judging whether the hard limit suits the width.
//!
//! The tests of one libtest binary run as threads of one process and share its file table,
//! so `width` tests running at once in one binary need about `width ×` [`FDS_PER_TEST`]
//! descriptors under one soft limit. The runner raises its own soft limit to the hard one
//! before it spawns anything, so every test process inherits the higher limit.

use crate::host::HostError;
use crate::host::rlimits::{self, Limit, Raised};

/// Descriptors budgeted per concurrently running test when judging the hard limit.
pub const FDS_PER_TEST: u64 = 1024;

/// The hard limit below which a warning is given whatever the width.
pub const MIN_HARD: u64 = 4096;

/// The hard `RLIMIT_NOFILE` a run of `width` tests at once should have:
/// `max(MIN_HARD, width × FDS_PER_TEST)`.
pub fn wanted_hard_limit(width: usize) -> u64 {
    (width as u64).saturating_mul(FDS_PER_TEST).max(MIN_HARD)
}

/// The `ulimit` advice for a run of `width`: `ulimit -n 4096` (in the shell that starts
/// the run), or raising the hard limit where the shell cannot.
pub fn ulimit_advice(width: usize) -> String {
    let wanted = wanted_hard_limit(width);
    format!(
        "run `ulimit -n {wanted}` in the shell before `cargo capped` (if the hard limit is lower, raise it: `nofile` in /etc/security/limits.conf, `LimitNOFILE=` for a systemd unit, `--ulimit nofile={wanted}:{wanted}` for docker)"
    )
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children spawned
/// afterwards inherit it) and returns notices for people: what was raised, and a warning
/// with `ulimit -n` advice when the hard limit is low for `width`. Never fails: a
/// `setrlimit` error becomes a notice too.
///
/// Call once, before the first child is spawned.
pub fn raise_at_start(width: usize) -> Vec<String> {
    notices(rlimits::raise_nofile(), width)
}

/// The notices for the outcome of [`rlimits::raise_nofile`] (separate from the syscall so
/// every case is unit-tested).
pub fn notices(raised: Result<Raised, HostError>, width: usize) -> Vec<String> {
    let mut notices = Vec::new();
    let limit = match raised {
        Ok(raised) => {
            if raised.changed() {
                notices.push(format!(
                    "raised the open-files limit (RLIMIT_NOFILE) from {} to {} for this run and its tests",
                    show(raised.before.soft),
                    show(raised.after.soft)
                ));
            }
            raised.after
        }
        Err(e) => {
            notices.push(format!(
                "warning: could not raise the open-files limit: {e}; tests keep the current limit ({})",
                rlimits::nofile()
            ));
            rlimits::nofile()
        }
    };
    if let Some(warning) = low_limit_warning(limit, width) {
        notices.push(warning);
    }
    notices
}

/// A warning when the limit in force (normally soft = hard after raising) is below
/// [`wanted_hard_limit`] for `width`; `None` when it is enough or unlimited.
pub fn low_limit_warning(limit: Limit, width: usize) -> Option<String> {
    let in_force = limit.soft.or(limit.hard)?;
    let wanted = wanted_hard_limit(width);
    if in_force >= wanted {
        return None;
    }
    Some(format!(
        "warning: the open-files limit is {in_force} (hard limit {}), low for {width} test{} at once (about {FDS_PER_TEST} each); a test may fail with \"Too many open files\" (EMFILE), in which case the width is lowered and the test rerun; to avoid that, {}",
        show(limit.hard),
        if width == 1 { "" } else { "s" },
        ulimit_advice(width)
    ))
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(soft: u64, hard: u64) -> Limit {
        Limit {
            soft: Some(soft),
            hard: Some(hard),
        }
    }

    #[test]
    fn wanted_limits() {
        assert_eq!(wanted_hard_limit(1), MIN_HARD);
        assert_eq!(wanted_hard_limit(4), MIN_HARD);
        assert_eq!(wanted_hard_limit(16), 16 * 1024);
        assert_eq!(wanted_hard_limit(usize::MAX), u64::MAX);
    }

    #[test]
    fn raised_and_enough() {
        let notices = notices(
            Ok(Raised {
                before: limit(1024, 524288),
                after: limit(524288, 524288),
            }),
            2,
        );
        assert_eq!(
            notices,
            [
                "raised the open-files limit (RLIMIT_NOFILE) from 1024 to 524288 for this run and its tests"
            ]
        );
    }

    #[test]
    fn unchanged_and_enough_says_nothing() {
        let same = limit(65536, 65536);
        assert!(
            notices(
                Ok(Raised {
                    before: same,
                    after: same
                }),
                8
            )
            .is_empty()
        );
        let unlimited = Limit {
            soft: None,
            hard: None,
        };
        assert!(low_limit_warning(unlimited, 1000).is_none());
    }

    #[test]
    fn low_hard_limit_warns_with_ulimit_advice() {
        let notices = notices(
            Ok(Raised {
                before: limit(256, 2048),
                after: limit(2048, 2048),
            }),
            2,
        );
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].contains("from 256 to 2048"), "{notices:?}");
        let warning = &notices[1];
        assert!(
            warning.starts_with(
                "warning: the open-files limit is 2048 (hard limit 2048), low for 2 tests at once"
            ),
            "{warning}"
        );
        assert!(warning.contains("ulimit -n 4096"), "{warning}");
        assert!(warning.contains("EMFILE"), "{warning}");
        // A wide run wants more.
        let wide = low_limit_warning(limit(8192, 8192), 16).unwrap();
        assert!(wide.contains("ulimit -n 16384"), "{wide}");
        assert!(low_limit_warning(limit(8192, 8192), 8).is_none());
    }

    #[test]
    fn failure_to_raise_is_a_notice_not_an_error() {
        let error = HostError::syscall(
            "setrlimit(RLIMIT_NOFILE, soft 4096 / hard 4096)",
            std::io::Error::from_raw_os_error(1),
        );
        let notices = notices(Err(error), 1);
        assert!(
            notices[0].starts_with("warning: could not raise the open-files limit: setrlimit"),
            "{notices:?}"
        );
    }

    /// The case the raise exists for: a test opening 1500 files passes under a soft limit of 512 once
    /// the runner raised it. Changing our own limit would affect the other tests of this
    /// binary, so a child (this test binary, re-run) lowers its soft limit to 512, calls
    /// `raise_at_start` and opens 1500 files.
    #[test]
    fn opening_1500_files_works_after_raising_a_512_soft_limit() {
        const CHILD: &str = "CAPPED_TEST_NOFILE_CHILD";
        let hard = rlimits::nofile().hard;
        if hard.is_some_and(|hard| hard < 1600) {
            eprintln!("skipping: the hard RLIMIT_NOFILE ({hard:?}) is below 1600");
            return;
        }
        if std::env::var_os(CHILD).is_some() {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(512),
                    maximum: hard,
                },
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let open_all = || -> std::io::Result<Vec<std::fs::File>> {
                (0..1500)
                    .map(|i| std::fs::File::create(dir.path().join(i.to_string())))
                    .collect()
            };
            let error = open_all().expect_err("512 descriptors cannot hold 1500 files");
            assert_eq!(error.raw_os_error(), Some(24), "{error}");
            assert!(super::super::emfile_policy::looks_like_emfile(
                &error.to_string()
            ));
            let notices = raise_at_start(1);
            assert!(notices[0].contains("from 512 to"), "{notices:?}");
            let files = open_all().expect("the raised limit holds 1500 files");
            assert_eq!(files.len(), 1500);
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "adapt::nofile::tests::opening_1500_files_works_after_raising_a_512_soft_limit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
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
}
