//! What the run tells the report: the one-way data flow `run → report`.
//!
//! The runner emits [`RunEvent`]s in the order things happen; reporters (human terminal
//! output, `--message-format json`, JUnit, the final summary) consume them and never reach
//! back into the runner.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Identifies one test binary of the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryId {
    /// The package's name.
    pub package: String,
    /// The target's name (`integration`, or the lib's name for unit tests).
    pub target: String,
    /// The target's kind (`lib`, `test`, `bin`, …).
    pub kind: String,
}

impl std::fmt::Display for BinaryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == "lib" || self.kind == "proc-macro" {
            write!(f, "{}", self.package)
        } else if self.kind == crate::build::DOC_KIND {
            write!(f, "{} (doc)", self.package)
        } else {
            write!(f, "{}::{}", self.package, self.target)
        }
    }
}

/// How a test ended, from the run's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStatus {
    /// It passed.
    Passed,
    /// It failed.
    Failed,
    /// It was ignored.
    Ignored,
    /// It ran past its timeout (per test, or its binary's `--timeout`) and was killed.
    TimedOut {
        /// The timeout that applied.
        after: Duration,
    },
    /// Its process tree was killed for exceeding the memory cap, or by the kernel's OOM
    /// killer (`by_watchdog` false).
    KilledForMemory {
        /// The cap, when the watchdog killed it.
        limit: Option<u64>,
        /// The peak RSS seen.
        peak: u64,
        /// Whether our watchdog sent the kill.
        by_watchdog: bool,
    },
    /// It failed, then passed when run again (`--retries`): the attempts that failed, in
    /// order. Whether it fails the run is the profile's `flaky-result`.
    Flaky {
        /// The failed attempts before the one that passed.
        failed: Vec<FailedAttempt>,
    },
    /// It never ran; the reason says why (its binary crashed first, the run was
    /// interrupted, a timeout killed its binary before it started, …).
    NotRun {
        /// Why.
        reason: String,
    },
}

impl TestStatus {
    /// Whether the run fails because of this test.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            TestStatus::Passed | TestStatus::Ignored | TestStatus::Flaky { .. }
        )
    }

    /// One word for summaries and JSON: `passed`, `failed`, `ignored`, `timed-out`,
    /// `killed-mem`, `not-run`.
    pub fn keyword(&self) -> &'static str {
        match self {
            TestStatus::Passed => "passed",
            TestStatus::Failed => "failed",
            TestStatus::Ignored => "ignored",
            TestStatus::TimedOut { .. } => "timed-out",
            TestStatus::KilledForMemory { .. } => "killed-mem",
            TestStatus::NotRun { .. } => "not-run",
            TestStatus::Flaky { .. } => "flaky",
        }
    }
}

/// One failed attempt of a test that passed on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// How it ended (`failed`, `timed-out`, …).
    pub status: Box<TestStatus>,
    /// How long it ran.
    pub duration: Option<Duration>,
    /// What it printed.
    pub output: String,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// Its binary.
    pub binary: BinaryId,
    /// libtest's name for it.
    pub name: String,
    /// How it ended.
    pub status: TestStatus,
    /// How long it ran, when known (harness events, or libtest's timing).
    pub duration: Option<Duration>,
    /// What it printed, for failures (libtest's `---- NAME stdout ----` section, or the
    /// binary's output for tests killed with it).
    pub output: String,
}

/// Everything that happens in a run, in order.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run is planned, built and listed; the first binaries may already run (what they
    /// reported so far follows this event).
    RunStarted {
        /// The profile's name.
        profile: String,
        /// The width the run starts at.
        width: u32,
        /// The width asked for (the profile's, or `--test-threads`).
        requested_width: u32,
        /// Whether `--test-threads` asked for it on the command line.
        explicit_width: bool,
        /// When the run starts below `requested_width`: the readings and levels why.
        degraded_because: Option<String>,
        /// The global rayon pool's size per process.
        rayon_threads: u32,
        /// The run seed.
        seed: u64,
        /// Deterministic mode.
        deterministic: bool,
        /// Shuffled order, with the seed used.
        shuffle: bool,
        /// How many test binaries.
        binaries: usize,
        /// How many tests were listed (after filters), when known.
        tests: usize,
        /// How many of `tests` each binary runs, for the progress display (not in the JSON
        /// stream).
        binary_tests: Vec<(BinaryId, usize)>,
        /// What earlier runs say each listed test takes (its median), by `binary name`, for
        /// the progress display's ETA (not in the JSON stream); empty without a history.
        learned: std::collections::BTreeMap<String, std::time::Duration>,
        /// When it started.
        at: SystemTime,
        /// What every reproduce line of the run shares (build flags, seed and its origin).
        reproduce: crate::plan::reproduce::ReproduceBase,
    },
    /// Something the user should know that is not a test result: a degrade decision, an
    /// `EMFILE` adaptation, a raised `RLIMIT_NOFILE`, a warning.
    Notice {
        /// The line to show.
        message: String,
    },
    /// A test binary started.
    BinaryStarted {
        /// Which.
        binary: BinaryId,
        /// Its process id.
        pid: u32,
        /// Width slots it holds (plain libtest binaries), or 0 when its tests draw slots.
        width_slots: u32,
        /// The groups it holds as a whole binary (`binaries = [..]` in the config).
        groups: Vec<String>,
    },
    /// A test started (known from harness events; plain libtest binaries do not say).
    TestStarted {
        /// Its binary.
        binary: BinaryId,
        /// Its name.
        name: String,
    },
    /// A line a test binary printed while it ran, shown live under `--nocapture`.
    TestOutput {
        /// Its binary.
        binary: BinaryId,
        /// The test that printed it, when only one of the binary's tests was running (or
        /// the line is that test's panic message); `None` when several were.
        test: Option<String>,
        /// Whether it came on stderr.
        stderr: bool,
        /// The line, without its newline (cut at 64 KiB).
        line: String,
    },
    /// A test ended.
    TestFinished(TestResult),
    /// A test binary ended.
    BinaryFinished {
        /// Which.
        binary: BinaryId,
        /// Its exit code, or `None` when killed by a signal.
        exit_code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
        /// Why we killed it, when we did (`timed out after 30s`, `memory cap …`).
        killed_because: Option<String>,
        /// How long it ran.
        duration: Duration,
        /// Peak RSS of its process tree, when watched.
        peak_rss: Option<u64>,
        /// Its stderr and stdout lines not attributed to a test (crash output), if it
        /// failed without naming a test.
        stray_output: String,
    },
    /// The run is over.
    RunFinished(RunSummary),
}

/// Per-group figures measured over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Acquisitions.
    pub count: usize,
    /// Wait percentiles.
    pub wait: capped_model::Percentiles,
    /// The most holders at once seen.
    pub peak_holders: u32,
    /// How many of the acquisitions were the runner waiting to start a test binary (its
    /// turn at the width, or a group claiming the whole binary), not a test waiting.
    pub binary_waits: usize,
}

/// The closing figures of a run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Counts per status keyword (`passed` → 10, …).
    pub counts: BTreeMap<&'static str, usize>,
    /// Wall time of the run.
    pub duration: Duration,
    /// The slowest tests (name, duration), slowest first.
    pub slowest: Vec<(String, Duration)>,
    /// Wait percentiles and peak holders per resource (`width`, groups).
    pub groups: BTreeMap<String, GroupStats>,
    /// The most tests executing at once that the run observed.
    pub peak_concurrency: u32,
    /// Every change of the width during the run (a busy host, `EMFILE`), in order: how long
    /// after the tests started, and the new width. Empty when it never changed.
    pub width_changes: Vec<(Duration, u32)>,
    /// The run's own peak RSS.
    pub runner_peak_rss: Option<u64>,
    /// The peak RSS of each test binary's process tree (binary, bytes), in the order the
    /// binaries finished; binaries too short to be sampled are left out.
    pub binary_peak_rss: Vec<(String, u64)>,
    /// Where the JUnit report was written.
    pub junit_path: Option<PathBuf>,
    /// The exit code the run ends with (0, 100, 101, 2).
    pub exit_code: i32,
}
