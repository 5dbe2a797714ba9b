//! The human report: a header, one line per finished test (nextest style), failing tests'
//! output under their names, notices, binary-level problems, and the closing summary.
//!
//! ```text
//! cargo capped: profile t2 — width 2, rayon 2, seed 42 (deterministic)
//!     Starting 40 tests across 5 binaries
//!         PASS [    0.012s] pkg::integration tests::adds
//!         FAIL [    0.503s] pkg::integration tests::divides
//! --- OUTPUT: pkg::integration tests::divides ---
//! thread 'tests::divides' panicked at tests/integration.rs:9:5:
//! attempt to divide by zero
//!
//!      TIMEOUT [   30.001s] pkg::heavy solver::converges (after 30.00s)
//!         SKIP [          ] pkg gpu::matmul (needs a GPU)
//!      NOT RUN [          ] pkg::heavy solver::after: its binary was killed …
//!      CRASHED [    1.204s] pkg::ffi: signal 11 (SIGSEGV)
//! ------------
//!      Summary [   12.300s] 40 tests run: 38 passed, 1 failed, 1 timed out, 2 skipped
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::Verbosity;
use super::style::{Painter, Style, bracketed_duration, millis, seconds};
use crate::events::{RunEvent, RunSummary, TestResult, TestStatus};
use crate::libtest::{describe_end_signal, describe_signal};
use crate::plan::reproduce::ReproduceBase;
use capped_model::SeedOrigin;
use capped_model::units::{format_duration, format_size};

/// How many not-run tests the summary names one by one.
const NOT_RUN_LISTED: usize = 20;
/// How many binaries the summary's peak RSS line names (the largest first).
const PEAKS_LISTED: usize = 5;

/// The run's settings, from `RunStarted`.
#[derive(Debug, Clone)]
struct Header {
    width: u32,
    reproduce: ReproduceBase,
}

/// Renders events as text for people; the caller writes it.
#[derive(Debug)]
pub struct Human {
    painter: Painter,
    verbosity: Verbosity,
    header: Option<Header>,
    /// Failed, timed-out and killed tests, in the order they finished.
    failures: Vec<TestResult>,
    not_run: Vec<TestResult>,
    /// Binary-level problems, one line each.
    problems: Vec<String>,
    counts: BTreeMap<&'static str, usize>,
    /// Tests whose output was shown live (`--nocapture`), as `binary name`: their passing
    /// result does not repeat it.
    shown_live: std::collections::HashSet<String>,
}

impl Human {
    /// A renderer with colors on or off.
    pub fn new(painter: Painter, verbosity: Verbosity) -> Human {
        Human {
            painter,
            verbosity,
            header: None,
            failures: Vec::new(),
            not_run: Vec::new(),
            problems: Vec::new(),
            counts: BTreeMap::new(),
            shown_live: std::collections::HashSet::new(),
        }
    }

    /// The text for one event (empty when it shows nothing at this verbosity). The run's
    /// summary is rendered by [`Human::summary`] instead.
    pub fn event(&mut self, event: &RunEvent) -> String {
        let mut out = String::new();
        let p = self.painter;
        match event {
            RunEvent::RunStarted {
                profile,
                width,
                requested_width,
                explicit_width,
                degraded_because,
                rayon_threads,
                seed,
                deterministic,
                shuffle,
                binaries,
                tests,
                reproduce,
                ..
            } => {
                self.header = Some(Header {
                    width: *width,
                    reproduce: reproduce.clone(),
                });
                if self.verbosity == Verbosity::Quiet {
                    return out;
                }
                let mode = match (*deterministic, *shuffle) {
                    (true, true) => " (deterministic, shuffled)",
                    (true, false) => " (deterministic)",
                    (false, true) => " (shuffled)",
                    (false, false) => "",
                };
                // The width and, when the host lowered it, from what and why: on this line,
                // where whoever reads the header looks for the width.
                let width_text = match degraded_because {
                    Some(why) if width < requested_width => {
                        let from = if *explicit_width {
                            format!("--test-threads {requested_width}")
                        } else {
                            format!("{requested_width}")
                        };
                        format!("width {width} (degraded from {from}: {why})")
                    }
                    _ => format!("width {width}"),
                };
                let _ = writeln!(
                    out,
                    "{} profile {profile} — {width_text}, rayon {rayon_threads}, seed {seed}{mode}",
                    p.paint(Style::Bold, "cargo capped:")
                );
                let _ = writeln!(
                    out,
                    "{} {tests} test{} across {binaries} binar{}",
                    p.label(Style::Pass, "Starting"),
                    plural(*tests),
                    if *binaries == 1 { "y" } else { "ies" }
                );
            }
            RunEvent::Notice { message } => {
                let _ = writeln!(out, "{} {message}", p.label(Style::Warn, "NOTICE"));
            }
            RunEvent::BinaryStarted {
                binary,
                pid,
                width_slots,
                groups,
            } => {
                if self.verbosity == Verbosity::Verbose {
                    let mut details = format!("pid {pid}");
                    if *width_slots > 0 {
                        let _ = write!(
                            details,
                            ", {width_slots} width slot{}",
                            plural(*width_slots as usize)
                        );
                    }
                    if !groups.is_empty() {
                        let _ = write!(details, ", holds {}", groups.join(", "));
                    }
                    let _ = writeln!(
                        out,
                        "{} {} ({details})",
                        p.label(Style::Dim, "START"),
                        p.paint(Style::Binary, &binary.to_string())
                    );
                }
            }
            RunEvent::TestStarted { .. } => {}
            RunEvent::TestOutput {
                binary, test, line, ..
            } => {
                // Live output (`--nocapture`): each line under the name of the test that
                // printed it, or of its binary when several of its tests were running.
                let who = match test {
                    Some(test) => {
                        self.shown_live.insert(format!("{binary} {test}"));
                        test.clone()
                    }
                    None => binary.to_string(),
                };
                let _ = writeln!(out, "{} {line}", p.paint(Style::Dim, &format!("{who} |")));
            }
            RunEvent::TestFinished(result) => self.test_finished(result, &mut out),
            RunEvent::BinaryFinished {
                binary,
                exit_code,
                signal,
                killed_because,
                duration,
                peak_rss,
                stray_output,
            } => {
                let problem = match (killed_because, signal, exit_code) {
                    (Some(why), _, _) => Some(("KILLED", why.clone())),
                    (None, Some(9), _) => Some(("KILLED", describe_end_signal(9))),
                    (None, Some(signal), _) => Some(("CRASHED", describe_signal(*signal))),
                    (None, None, Some(code)) if *code != 0 && *code != 101 => {
                        Some(("EXITED", format!("exit code {code}")))
                    }
                    _ => None,
                };
                let when = bracketed_duration(Some(*duration));
                let name = p.paint(Style::Binary, &binary.to_string());
                if let Some((label, what)) = &problem {
                    self.problems.push(format!("{binary}: {what}"));
                    let _ = writeln!(out, "{} {when} {name}: {what}", p.label(Style::Fail, label));
                } else if self.verbosity == Verbosity::Verbose {
                    let mut details = format!("exit code {}", exit_code.unwrap_or(0));
                    if let Some(rss) = peak_rss {
                        let _ = write!(details, ", peak RSS {}", format_size(*rss));
                    }
                    let _ = writeln!(
                        out,
                        "{} {when} {name} ({details})",
                        p.label(Style::Dim, "DONE")
                    );
                }
                let show_output = problem.is_some() || self.verbosity == Verbosity::Verbose;
                if show_output && !stray_output.trim().is_empty() {
                    self.output_block(
                        &format!("{binary} (not from any one test)"),
                        stray_output,
                        &mut out,
                    );
                }
            }
            RunEvent::RunFinished(_) => {}
        }
        out
    }

    fn test_finished(&mut self, result: &TestResult, out: &mut String) {
        let p = self.painter;
        *self.counts.entry(result.status.keyword()).or_default() += 1;
        let (label, style, detail) = match &result.status {
            TestStatus::Passed => ("PASS", Style::Pass, String::new()),
            TestStatus::Failed => ("FAIL", Style::Fail, String::new()),
            TestStatus::Ignored => (
                "SKIP",
                Style::Warn,
                if result.output.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", result.output)
                },
            ),
            TestStatus::TimedOut { after } => (
                "TIMEOUT",
                Style::Fail,
                format!(" (after {})", format_duration(*after)),
            ),
            TestStatus::KilledForMemory { .. } => (
                "KILLED (memory)",
                Style::Fail,
                format!(" ({})", memory_detail(&result.status)),
            ),
            TestStatus::NotRun { reason } => ("NOT RUN", Style::Warn, format!(": {reason}")),
            TestStatus::Flaky { failed } => (
                "FLAKY",
                Style::Warn,
                format!(
                    " (passed on attempt {}; failed before: {})",
                    failed.len() + 1,
                    failed
                        .iter()
                        .map(|attempt| attempt.status.keyword())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        let failure = matches!(
            result.status,
            TestStatus::Failed | TestStatus::TimedOut { .. } | TestStatus::KilledForMemory { .. }
        );
        if failure {
            self.failures.push(result.clone());
        }
        if matches!(result.status, TestStatus::NotRun { .. }) {
            self.not_run.push(result.clone());
        }
        let show = match self.verbosity {
            Verbosity::Quiet => failure,
            Verbosity::Normal | Verbosity::Verbose => true,
        };
        if !show {
            return;
        }
        let _ = writeln!(
            out,
            "{} {} {} {}{detail}",
            p.label(style, label),
            bracketed_duration(result.duration),
            p.paint(Style::Binary, &result.binary.to_string()),
            p.paint(Style::Bold, &result.name),
        );
        let key = format!("{} {}", result.binary, result.name);
        let passed_with_output = result.status == TestStatus::Passed
            && !result.output.trim().is_empty()
            && !self.shown_live.contains(&key);
        if (failure || passed_with_output) && !result.output.trim().is_empty() {
            let style = if failure { Style::Fail } else { Style::Dim };
            self.output_block_styled(
                &format!("{} {}", result.binary, result.name),
                &result.output,
                style,
                out,
            );
        }
    }

    /// `--- OUTPUT: WHAT ---`, the text, and a blank line.
    fn output_block(&self, what: &str, text: &str, out: &mut String) {
        self.output_block_styled(what, text, Style::Fail, out);
    }

    /// [`Human::output_block`] with the header in `style`.
    fn output_block_styled(&self, what: &str, text: &str, style: Style, out: &mut String) {
        let header = format!("--- OUTPUT: {what} ---");
        let _ = writeln!(out, "{}", self.painter.paint(style, &header));
        let _ = writeln!(out, "{}", text.trim_end());
        out.push('\n');
    }

    /// The closing summary. `junit` is where the JUnit report went, or why it could not be
    /// written.
    pub fn summary(&self, summary: &RunSummary, junit: Option<Result<&Path, String>>) -> String {
        let p = self.painter;
        let mut out = String::new();
        let counts = if summary.counts.is_empty() {
            &self.counts
        } else {
            &summary.counts
        };
        let count = |key: &str| counts.get(key).copied().unwrap_or(0);
        let (passed, failed, timed_out, killed) = (
            count("passed"),
            count("failed"),
            count("timed-out"),
            count("killed-mem"),
        );
        let (skipped, not_run, flaky) = (count("ignored"), count("not-run"), count("flaky"));
        let run = passed + failed + timed_out + killed + flaky;
        let mut parts = vec![p.paint(Style::Pass, &format!("{passed} passed"))];
        for (n, what, style) in [
            (failed, "failed", Style::Fail),
            (timed_out, "timed out", Style::Fail),
            (killed, "killed for memory", Style::Fail),
            (flaky, "flaky", Style::Warn),
            (skipped, "skipped", Style::Warn),
            (not_run, "not run", Style::Warn),
        ] {
            if n > 0 {
                parts.push(p.paint(style, &format!("{n} {what}")));
            }
        }
        let bad = failed + timed_out + killed + not_run > 0 || !self.problems.is_empty();
        let _ = writeln!(out, "------------");
        let _ = writeln!(
            out,
            "{} {} {run} test{} run: {}",
            p.label(if bad { Style::Fail } else { Style::Pass }, "Summary"),
            bracketed_duration(Some(summary.duration)),
            plural(run),
            parts.join(", ")
        );
        for (i, test) in self.not_run.iter().enumerate() {
            if i == NOT_RUN_LISTED {
                let _ = writeln!(
                    out,
                    "{:>12} … and {} more",
                    "",
                    self.not_run.len() - NOT_RUN_LISTED
                );
                break;
            }
            let TestStatus::NotRun { reason } = &test.status else {
                continue;
            };
            let _ = writeln!(
                out,
                "{} {} {}: {reason}",
                p.label(Style::Warn, if i == 0 { "Not run" } else { "" }),
                p.paint(Style::Binary, &test.binary.to_string()),
                test.name
            );
        }
        for (i, problem) in self.problems.iter().enumerate() {
            let _ = writeln!(
                out,
                "{} {problem}",
                p.label(Style::Fail, if i == 0 { "Binaries" } else { "" })
            );
        }
        for (i, (name, duration)) in summary.slowest.iter().take(5).enumerate() {
            let _ = writeln!(
                out,
                "{} {:>9} {name}",
                p.label(Style::Bold, if i == 0 { "Slowest" } else { "" }),
                seconds(*duration)
            );
        }
        for (i, (group, stats)) in summary.groups.iter().enumerate() {
            let capacity = match (group.as_str(), &self.header) {
                ("width", Some(header)) => format!("/{}", header.width),
                _ => String::new(),
            };
            // The runner's own waits are binaries waiting their turn, not tests waiting for
            // a slot: a reader must not take them for contention inside the group.
            let whose = if stats.count > 0 && stats.binary_waits == stats.count {
                " (binaries waiting their turn)".to_string()
            } else if stats.binary_waits > 0 {
                format!(" ({} by binaries waiting their turn)", stats.binary_waits)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{} {group}: {} acquisition{}{whose}, wait p50 {} p95 {} p99 {}, peak holders {}{capacity}",
                p.label(Style::Bold, if i == 0 { "Groups" } else { "" }),
                stats.count,
                plural(stats.count),
                millis(stats.wait.p50),
                millis(stats.wait.p95),
                millis(stats.wait.p99),
                stats.peak_holders,
            );
        }
        if let Some(header) = &self.header {
            let _ = writeln!(
                out,
                "{} {} tests at once at peak, width {}{}",
                p.label(Style::Bold, "Concurrency"),
                summary.peak_concurrency,
                header.width,
                width_changes(header.width, &summary.width_changes)
            );
        } else if summary.peak_concurrency > 0 {
            let _ = writeln!(
                out,
                "{} {} tests at once at peak",
                p.label(Style::Bold, "Concurrency"),
                summary.peak_concurrency
            );
        }
        if let Some(rss) = summary.runner_peak_rss {
            let _ = writeln!(
                out,
                "{} runner peak RSS {}",
                p.label(Style::Bold, "Memory"),
                format_size(rss)
            );
        }
        if !summary.binary_peak_rss.is_empty() {
            let mut peaks: Vec<&(String, u64)> = summary.binary_peak_rss.iter().collect();
            peaks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let shown: Vec<String> = peaks
                .iter()
                .take(PEAKS_LISTED)
                .map(|(binary, bytes)| format!("{binary} {}", format_size(*bytes)))
                .collect();
            let more = match peaks.len().saturating_sub(PEAKS_LISTED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            let label = if summary.runner_peak_rss.is_some() {
                ""
            } else {
                "Memory"
            };
            let _ = writeln!(
                out,
                "{} peak RSS per test binary: {}{more}",
                p.label(Style::Bold, label),
                shown.join(", ")
            );
        }
        match junit {
            Some(Ok(path)) => {
                let _ = writeln!(out, "{} {}", p.label(Style::Bold, "JUnit"), path.display());
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "{} {e}", p.label(Style::Fail, "JUnit"));
            }
            None => {}
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n{}", p.paint(Style::Fail, "failures:"));
            for test in &self.failures {
                let _ = writeln!(
                    out,
                    "    {} {} ({})",
                    test.binary,
                    p.paint(Style::Bold, &test.name),
                    test.status.keyword()
                );
                if let Some(hint) = self.reproduce_hint(test) {
                    let _ = writeln!(
                        out,
                        "        {}",
                        p.paint(Style::Dim, &format!("reproduce: {hint}"))
                    );
                }
            }
        }
        out
    }

    /// How to run a failed test again: the command selecting the run's build, the test's
    /// binary and the test, with the run's profile and seed (labelled with where the seed
    /// came from); the same command a failing `#[capped]` test prints. Without a header,
    /// the `capped:` line the test printed, if any.
    fn reproduce_hint(&self, test: &TestResult) -> Option<String> {
        let Some(header) = self.header.as_ref() else {
            return test
                .output
                .lines()
                .find_map(|line| line.split_once("; reproduce: ").map(|(_, c)| c.trim()))
                .map(str::to_string);
        };
        let reproduce = header.reproduce.for_binary(&test.binary);
        // A shell comment: the line stays one command to paste.
        let label = match reproduce.seed_origin {
            SeedOrigin::Given => "the seed was given",
            SeedOrigin::Deterministic => "the deterministic seed",
            SeedOrigin::Random => "the seed was drawn for this run",
        };
        let filter = crate::plan::reproduce::test_filter(&test.binary, &test.name);
        Some(format!("{}  # {label}", reproduce.command_for(filter)))
    }
}

/// How many width changes the summary lists one by one.
const WIDTH_CHANGES_LISTED: usize = 4;

/// `, lowered to 1 at 3.2s, raised to 2 at 15.0s` after the start width: a run whose width
/// changed says so where it states its width.
fn width_changes(start: u32, changes: &[(std::time::Duration, u32)]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let mut text = String::new();
    let mut previous = start;
    for (at, width) in changes.iter().take(WIDTH_CHANGES_LISTED) {
        let verb = if *width < previous {
            "lowered"
        } else {
            "raised"
        };
        let _ = write!(text, ", {verb} to {width} at {}", seconds(*at).trim());
        previous = *width;
    }
    if changes.len() > WIDTH_CHANGES_LISTED {
        let last = changes.last().map_or(start, |c| c.1);
        let _ = write!(
            text,
            ", … {} changes in all, ending at {last}",
            changes.len()
        );
    }
    text
}

/// `peak 3.1 GiB, cap 2 GiB, by the watchdog`.
fn memory_detail(status: &TestStatus) -> String {
    let TestStatus::KilledForMemory {
        limit,
        peak,
        by_watchdog,
    } = status
    else {
        return String::new();
    };
    let mut text = format!("peak {}", format_size(*peak));
    if let Some(limit) = limit {
        let _ = write!(text, ", cap {}", format_size(*limit));
    }
    text.push_str(if *by_watchdog {
        ", by the watchdog"
    } else {
        ", by the kernel's OOM killer"
    });
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
