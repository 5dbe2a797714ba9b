//! `--message-format json`: one JSON object per line on stdout, one per [`RunEvent`].
//!
//! The stream is a documented, versioned interface: `docs/json-events.md` shows one example
//! per event type and `docs/json-events.schema.json` is its JSON Schema, which an
//! end-to-end test checks real output against. Every object has `"type"` and `"at_ms"`
//! (when it was written, unix ms); `run-started` carries [`FORMAT_VERSION`]. Durations are
//! milliseconds as numbers (fractions allowed), sizes are bytes, absent values are `null`.
//! A change to a field here is a change to those two files.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::events::{BinaryId, RunEvent, TestStatus};

/// A binary as JSON.
#[derive(Debug, Serialize)]
struct Binary<'a> {
    id: String,
    package: &'a str,
    target: &'a str,
    kind: &'a str,
}

impl<'a> From<&'a BinaryId> for Binary<'a> {
    fn from(id: &'a BinaryId) -> Self {
        Binary {
            id: id.to_string(),
            package: &id.package,
            target: &id.target,
            kind: &id.kind,
        }
    }
}

#[derive(Debug, Serialize)]
struct Waits {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Group {
    count: usize,
    wait_ms: Waits,
    peak_holders: u32,
}

#[derive(Debug, Serialize)]
struct Slow<'a> {
    name: &'a str,
    duration_ms: f64,
}

/// One failed attempt of a flaky test.
#[derive(Debug, Serialize)]
struct Attempt<'a> {
    status: &'static str,
    duration_ms: Option<f64>,
    output: &'a str,
}

/// One line of the JSON stream.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Line<'a> {
    RunStarted {
        /// [`FORMAT_VERSION`].
        format_version: u32,
        profile: &'a str,
        width: u32,
        requested_width: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        degraded_because: Option<&'a str>,
        rayon_threads: u32,
        seed: u64,
        deterministic: bool,
        shuffle: bool,
        binaries: usize,
        tests: usize,
        started_at_ms: Option<u64>,
    },
    Notice {
        message: &'a str,
    },
    BinaryStarted {
        binary: Binary<'a>,
        pid: u32,
        width_slots: u32,
        groups: &'a [String],
    },
    TestStarted {
        binary: Binary<'a>,
        name: &'a str,
    },
    TestOutput {
        binary: Binary<'a>,
        test: Option<&'a str>,
        stream: &'static str,
        line: &'a str,
    },
    TestFinished {
        binary: Binary<'a>,
        name: &'a str,
        status: &'static str,
        duration_ms: Option<f64>,
        output: &'a str,
        reason: Option<&'a str>,
        timeout_ms: Option<f64>,
        mem_limit: Option<u64>,
        mem_peak: Option<u64>,
        by_watchdog: Option<bool>,
        /// Runs of a flaky test, the passing one included.
        #[serde(skip_serializing_if = "Option::is_none")]
        attempts: Option<usize>,
        /// A flaky test's failed attempts, in order.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        failed_attempts: Vec<Attempt<'a>>,
    },
    BinaryFinished {
        binary: Binary<'a>,
        exit_code: Option<i32>,
        signal: Option<i32>,
        killed_because: Option<&'a str>,
        duration_ms: f64,
        peak_rss: Option<u64>,
        stray_output: &'a str,
    },
    /// `--no-run`: one built test binary (the stream then has nothing else).
    TestBinary {
        binary: Binary<'a>,
        executable: &'a str,
    },
    RunFinished {
        duration_ms: f64,
        counts: &'a BTreeMap<&'static str, usize>,
        slowest: Vec<Slow<'a>>,
        groups: BTreeMap<&'a str, Group>,
        peak_concurrency: u32,
        runner_peak_rss: Option<u64>,
        binary_peak_rss: Vec<PeakRss<'a>>,
        junit_path: Option<String>,
        exit_code: i32,
    },
}

/// A line with the wall-clock time it was written at.
#[derive(Debug, Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    line: Line<'a>,
    /// Unix time in milliseconds.
    at_ms: u64,
}

/// One binary's peak RSS in `run-finished`.
#[derive(Debug, Serialize)]
struct PeakRss<'a> {
    binary: &'a str,
    bytes: u64,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The version of the JSON stream, in every `run-started` event. It changes only when a
/// field is removed or renamed or its meaning changes; new fields and new event types keep
/// it, so readers must ignore what they do not know.
pub const FORMAT_VERSION: u32 = 1;

fn unix_ms(at: SystemTime) -> Option<u64> {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

fn stamped(line: Line<'_>, at: SystemTime) -> String {
    let stamped = Stamped {
        line,
        at_ms: unix_ms(at).unwrap_or(0),
    };
    serde_json::to_string(&stamped).expect("JSON lines serialize")
}

/// The `--no-run` line for one built test binary, stamped now.
pub fn test_binary_line(binary: &BinaryId, executable: &std::path::Path) -> String {
    let executable = executable.display().to_string();
    let line = Line::TestBinary {
        binary: binary.into(),
        executable: &executable,
    };
    stamped(line, SystemTime::now())
}

/// The JSON line (without the newline) for an event, stamped now.
pub fn line(event: &RunEvent) -> String {
    line_at(event, SystemTime::now())
}

/// The JSON line (without the newline) for an event, stamped `now` (`run-started` is
/// stamped with the run's start).
pub fn line_at(event: &RunEvent, now: SystemTime) -> String {
    let mut now = now;
    let line = match event {
        RunEvent::RunStarted {
            profile,
            width,
            requested_width,
            degraded_because,
            rayon_threads,
            seed,
            deterministic,
            shuffle,
            binaries,
            tests,
            at,
            ..
        } => {
            now = *at;
            Line::RunStarted {
                format_version: FORMAT_VERSION,
                profile,
                width: *width,
                requested_width: *requested_width,
                degraded_because: degraded_because.as_deref(),
                rayon_threads: *rayon_threads,
                seed: *seed,
                deterministic: *deterministic,
                shuffle: *shuffle,
                binaries: *binaries,
                tests: *tests,
                started_at_ms: unix_ms(*at),
            }
        }
        RunEvent::Notice { message } => Line::Notice { message },
        RunEvent::BinaryStarted {
            binary,
            pid,
            width_slots,
            groups,
        } => Line::BinaryStarted {
            binary: binary.into(),
            pid: *pid,
            width_slots: *width_slots,
            groups,
        },
        RunEvent::TestStarted { binary, name } => Line::TestStarted {
            binary: binary.into(),
            name,
        },
        RunEvent::TestOutput {
            binary,
            test,
            stderr,
            line,
        } => Line::TestOutput {
            binary: binary.into(),
            test: test.as_deref(),
            stream: if *stderr { "stderr" } else { "stdout" },
            line,
        },
        RunEvent::TestFinished(result) => {
            let (mut reason, mut timeout_ms, mut mem_limit, mut mem_peak, mut by_watchdog) =
                (None, None, None, None, None);
            match &result.status {
                TestStatus::NotRun { reason: why } => reason = Some(why.as_str()),
                TestStatus::Ignored if !result.output.is_empty() => {
                    reason = Some(result.output.as_str())
                }
                TestStatus::TimedOut { after } => timeout_ms = Some(ms(*after)),
                TestStatus::KilledForMemory {
                    limit,
                    peak,
                    by_watchdog: watchdog,
                } => {
                    mem_limit = *limit;
                    mem_peak = Some(*peak);
                    by_watchdog = Some(*watchdog);
                }
                _ => {}
            }
            Line::TestFinished {
                binary: (&result.binary).into(),
                name: &result.name,
                status: result.status.keyword(),
                duration_ms: result.duration.map(ms),
                output: if result.status == TestStatus::Ignored {
                    ""
                } else {
                    &result.output
                },
                reason,
                timeout_ms,
                mem_limit,
                mem_peak,
                by_watchdog,
                attempts: match &result.status {
                    TestStatus::Flaky { failed } => Some(failed.len() + 1),
                    _ => None,
                },
                failed_attempts: match &result.status {
                    TestStatus::Flaky { failed } => failed
                        .iter()
                        .map(|attempt| Attempt {
                            status: attempt.status.keyword(),
                            duration_ms: attempt.duration.map(ms),
                            output: &attempt.output,
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            }
        }
        RunEvent::BinaryFinished {
            binary,
            exit_code,
            signal,
            killed_because,
            duration,
            peak_rss,
            stray_output,
        } => Line::BinaryFinished {
            binary: binary.into(),
            exit_code: *exit_code,
            signal: *signal,
            killed_because: killed_because.as_deref(),
            duration_ms: ms(*duration),
            peak_rss: *peak_rss,
            stray_output,
        },
        RunEvent::RunFinished(summary) => Line::RunFinished {
            duration_ms: ms(summary.duration),
            counts: &summary.counts,
            slowest: summary
                .slowest
                .iter()
                .map(|(name, duration)| Slow {
                    name,
                    duration_ms: ms(*duration),
                })
                .collect(),
            groups: summary
                .groups
                .iter()
                .map(|(name, stats)| {
                    (
                        name.as_str(),
                        Group {
                            count: stats.count,
                            wait_ms: Waits {
                                p50: ms(stats.wait.p50),
                                p95: ms(stats.wait.p95),
                                p99: ms(stats.wait.p99),
                                max: ms(stats.wait.max),
                            },
                            peak_holders: stats.peak_holders,
                        },
                    )
                })
                .collect(),
            peak_concurrency: summary.peak_concurrency,
            runner_peak_rss: summary.runner_peak_rss,
            binary_peak_rss: summary
                .binary_peak_rss
                .iter()
                .map(|(binary, bytes)| PeakRss {
                    binary,
                    bytes: *bytes,
                })
                .collect(),
            junit_path: summary.junit_path.as_ref().map(|p| p.display().to_string()),
            exit_code: summary.exit_code,
        },
    };
    stamped(line, now)
}
