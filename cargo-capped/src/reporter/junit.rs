//! `--junit PATH`: a JUnit XML report, written when the run ends (quick-junit).
//!
//! One `<testsuite>` per test binary (named like the human report names it, `pkg::target`),
//! with the `timestamp` its first process started at and the time its processes took; one
//! `<testcase>` per test with `classname` = the binary and a `time` (0 for a test that did
//! not run). What CI systems show:
//!
//! * a failed test is `<failure type="test failure">` whose `message` is the panic message
//!   (what follows `panicked at FILE:LINE:COL:`; the first line of the output when there
//!   is none) and whose body is the test's whole output (its end, when very long);
//!   timed-out ones are `<failure type="timeout">`, tests killed for memory
//!   `<failure type="killed for memory">`;
//! * a test's output is also its testcase's `<system-out>` (the runner keeps one text per
//!   test, stdout and stderr merged, so there is no per-test `<system-err>`);
//! * ignored tests are `<skipped>` (message: the ignore reason);
//! * tests that never ran are `<error type="not run">` with `message` = `not run: REASON`:
//!   they fail the run (exit 100), so CI must count them, and an error is what CI counts
//!   apart from both failures and skips;
//! * a flaky test is a passing testcase with one `<flakyFailure>` per failed attempt.
//!
//! A binary that crashed, was killed or exited oddly without any of its tests failing gets
//! an extra `(binary)` testcase with an `<error>`; a binary's unattributed output is the
//! suite's `<system-err>`. `tests/junit/junit.xsd` is the schema the report is validated
//! against (the structure Jenkins and GitLab read, with surefire's flaky elements).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use crate::events::{BinaryId, RunEvent, TestResult, TestStatus};
use crate::libtest::{describe_end_signal, describe_signal};

/// How much of a test's output goes into its `<failure>` element at most (the end is kept).
const MAX_OUTPUT: usize = 256 * 1024;

/// What one binary contributed.
#[derive(Debug, Default)]
struct Suite {
    tests: Vec<TestResult>,
    duration: Option<Duration>,
    /// When its first process started.
    started: Option<SystemTime>,
    stray_output: String,
    problem: Option<String>,
}

/// Collects results and writes the report.
#[derive(Debug, Default)]
pub struct Junit {
    /// Suites in the order their binaries first appeared.
    suites: Vec<(BinaryId, Suite)>,
    index: HashMap<BinaryId, usize>,
    duration: Option<Duration>,
    started: Option<SystemTime>,
}

impl Junit {
    fn suite(&mut self, binary: &BinaryId) -> &mut Suite {
        let index = *self.index.entry(binary.clone()).or_insert_with(|| {
            self.suites.push((binary.clone(), Suite::default()));
            self.suites.len() - 1
        });
        &mut self.suites[index].1
    }

    /// Takes an event, as it happens (a suite's timestamp is when its binary's
    /// `BinaryStarted` arrives).
    pub fn event(&mut self, event: &RunEvent) {
        self.event_at(event, SystemTime::now());
    }

    /// Takes an event that happened at `now`.
    pub fn event_at(&mut self, event: &RunEvent, now: SystemTime) {
        match event {
            RunEvent::RunStarted { at, .. } => self.started = Some(*at),
            RunEvent::BinaryStarted { binary, .. } => {
                self.suite(binary).started.get_or_insert(now);
            }
            RunEvent::TestFinished(result) => {
                self.suite(&result.binary).tests.push(result.clone());
            }
            RunEvent::BinaryFinished {
                binary,
                exit_code,
                signal,
                killed_because,
                duration,
                stray_output,
                ..
            } => {
                // A binary may run as several processes (a split, a partition's chunks,
                // an EMFILE rerun): one suite, their times added, every problem kept.
                let suite = self.suite(binary);
                suite.duration = Some(suite.duration.unwrap_or_default() + *duration);
                if !stray_output.is_empty() {
                    if !suite.stray_output.is_empty() {
                        suite.stray_output.push('\n');
                    }
                    suite.stray_output.push_str(stray_output);
                }
                let problem = match (killed_because, signal, exit_code) {
                    (Some(why), _, _) => Some(format!("killed: {why}")),
                    (None, Some(9), _) => Some(describe_end_signal(9)),
                    (None, Some(signal), _) => {
                        Some(format!("crashed: {}", describe_signal(*signal)))
                    }
                    (None, None, Some(code)) if *code != 0 && *code != 101 => {
                        Some(format!("exited with code {code}"))
                    }
                    _ => None,
                };
                suite.problem = match (suite.problem.take(), problem) {
                    (Some(first), Some(then)) => Some(format!("{first}; {then}")),
                    (first, then) => first.or(then),
                };
            }
            RunEvent::RunFinished(summary) => self.duration = Some(summary.duration),
            _ => {}
        }
    }

    /// The report as XML.
    pub fn to_xml(&self) -> Result<String, String> {
        // quick-junit strips the control characters XML cannot hold, not U+FFFE and U+FFFF,
        // which no XML document may contain either (a test's output can): a strict parser
        // would reject the whole report for one of them.
        let xml = self.report().to_string().map_err(|e| e.to_string())?;
        Ok(xml.replace(['\u{fffe}', '\u{ffff}'], ""))
    }

    /// Writes the report to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let xml = self.to_xml()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, xml).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn report(&self) -> Report {
        let mut report = Report::new("cargo-capped");
        if let Some(duration) = self.duration {
            report.set_time(duration);
        }
        if let Some(at) = self.started {
            report.set_timestamp(timestamp(at));
        }
        for (binary, suite) in &self.suites {
            let id = binary.to_string();
            let mut test_suite = TestSuite::new(id.as_str());
            if let Some(duration) = suite.duration {
                test_suite.set_time(duration);
            }
            if let Some(at) = suite.started.or(self.started) {
                test_suite.set_timestamp(timestamp(at));
            }
            for test in &suite.tests {
                let mut case = TestCase::new(test.name.as_str(), case_status(test));
                case.set_classname(id.as_str());
                // Every testcase has a time, as CI tools expect; one that never ran took none.
                case.set_time(test.duration.unwrap_or_default());
                if !test.output.is_empty() && test.status != TestStatus::Ignored {
                    case.set_system_out(tail(&test.output));
                }
                test_suite.add_test_case(case);
            }
            let any_failed = suite.tests.iter().any(|t| {
                matches!(
                    t.status,
                    TestStatus::Failed
                        | TestStatus::TimedOut { .. }
                        | TestStatus::KilledForMemory { .. }
                )
            });
            if let Some(problem) = &suite.problem
                && !any_failed
            {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                status.set_message(format!("the test binary {problem}"));
                status.set_type("binary");
                if !suite.stray_output.is_empty() {
                    status.set_description(tail(&suite.stray_output));
                }
                let mut case = TestCase::new("(binary)", status);
                case.set_classname(id.as_str());
                test_suite.add_test_case(case);
            }
            if !suite.stray_output.is_empty() {
                test_suite.set_system_err(tail(&suite.stray_output));
            }
            report.add_test_suite(test_suite);
        }
        report
    }
}

fn case_status(test: &TestResult) -> TestCaseStatus {
    let failure = |ty: &str, message: String| {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status.set_type(ty).set_message(message);
        if !test.output.is_empty() {
            status.set_description(tail(&test.output));
        }
        status
    };
    match &test.status {
        TestStatus::Passed => TestCaseStatus::success(),
        TestStatus::Failed => failure("test failure", failure_message(&test.output)),
        TestStatus::TimedOut { after } => failure(
            "timeout",
            format!(
                "timed out after {}",
                capped_model::units::format_duration(*after)
            ),
        ),
        TestStatus::KilledForMemory { limit, peak, .. } => failure(
            "killed for memory",
            format!(
                "killed for memory: peak {}{}",
                capped_model::units::format_size(*peak),
                limit.map_or(String::new(), |l| format!(
                    ", cap {}",
                    capped_model::units::format_size(l)
                ))
            ),
        ),
        TestStatus::Ignored => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(if test.output.is_empty() {
                "ignored".to_string()
            } else {
                test.output.clone()
            });
            status
        }
        TestStatus::NotRun { reason } => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status
                .set_type("not run")
                .set_message(format!("not run: {reason}"));
            status
        }
        // A pass with `flakyFailure` elements for the attempts that failed first, as
        // surefire writes them and CI systems read them.
        TestStatus::Flaky { failed } => {
            let mut status = TestCaseStatus::success();
            status.add_reruns(failed.iter().map(|attempt| {
                let mut rerun = TestRerun::new(NonSuccessKind::Failure);
                rerun
                    .set_type(attempt.status.keyword())
                    .set_message(failure_message(&attempt.output));
                if let Some(time) = attempt.duration {
                    rerun.set_time(time);
                }
                if !attempt.output.is_empty() {
                    rerun.set_system_out(tail(&attempt.output));
                }
                rerun
            }));
            status
        }
    }
}

/// A failure's `message`: the panic message (the lines after the last `panicked at
/// FILE:LINE:COL:` up to a backtrace or note), else the first non-empty line.
pub fn failure_message(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let panic = lines
        .iter()
        .rposition(|line| line.contains(" panicked at ") && line.trim_end().ends_with(':'));
    if let Some(at) = panic {
        let message: Vec<&str> = lines[at + 1..]
            .iter()
            .copied()
            .take_while(|line| {
                !line.starts_with("note: ")
                    && !line.starts_with("stack backtrace:")
                    && !line.starts_with("thread '")
            })
            .collect();
        let message = message.join("\n");
        let message = message.trim();
        if !message.is_empty() {
            return message.to_string();
        }
    }
    first_line(output)
}

/// An instant as the `timestamp` attribute wants it (RFC 3339, UTC).
fn timestamp(at: SystemTime) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::<chrono::Utc>::from(at).fixed_offset()
}

/// The first non-empty line (a short `message` attribute), or a generic one.
fn first_line(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map_or_else(|| "test failed".to_string(), str::to_string)
}

/// The end of a long text (where the panic message is).
fn tail(text: &str) -> String {
    if text.len() <= MAX_OUTPUT {
        return text.to_string();
    }
    let mut start = text.len() - MAX_OUTPUT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… output truncated …]\n{}", &text[start..])
}
