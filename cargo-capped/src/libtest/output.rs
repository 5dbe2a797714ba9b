//! A streaming parser for what a running libtest binary prints.
//!
//! Feed it the binary's stdout (and stderr) as bytes arrive with [`OutputParser::stdout`] /
//! [`OutputParser::stderr`]; it yields [`OutputEvent`]s as soon as something is known:
//! passed and ignored tests at once, failed tests once their `---- NAME stdout ----` block
//! (printed by libtest after all tests ran) is complete. When the binary has ended,
//! [`OutputParser::finish`] resolves everything still open, using what the runner knows about
//! why the binary ended ([`BinaryEnd`]): tests that were running become timed out, killed for
//! memory or failed (crash), tests that never started become not run, each with a reason.
//! Every listed test gets exactly one final [`TestResult`].
//!
//! Understood: stable libtest's pretty format with any `--test-threads`, `--nocapture`
//! (tests' prints interleaved with, and even inside, libtest's lines), `--show-output`, `-q`
//! (`..F.i` progress; failed names from `NAME --- FAILED` lines), `--color always`, and
//! libtest-mimic's variant (names padded to one width, `---- NAME ----` blocks,
//! `ignored (REASON)`), which the `capped_test::main!()` harness prints.
//!
//! Timing: libtest's stable output has none. With `--test-threads 1` the parser times each
//! test from the moment its `test NAME ... ` announcement arrived to its result (so feed
//! bytes as they are read, with the time they were read); with more threads durations come
//! only from harness events ([`OutputParser::harness_event`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use capped_model::protocol::{Event, ListedTest, NotRunNote, Outcome};

use super::lines::LineSplitter;
use super::list::strip_kind;
use super::{describe_end_signal, strip_ansi};
use crate::events::{BinaryId, TestResult, TestStatus};

/// The longest unfinished line looked at for a `test NAME ... ` announcement.
const PEEK_LIMIT: usize = 4096;

/// Something learned from a binary's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// A test started: its `test NAME ... ` announcement arrived before its result (one
    /// test thread), or a harness `start` event. Not every test gets one.
    Started {
        /// The test.
        name: String,
    },
    /// A test failed; its output comes later (libtest prints it after all tests ran), and
    /// with it the test's [`OutputEvent::Finished`]. For progress counters only.
    Failing {
        /// The test.
        name: String,
    },
    /// A test's final result. Emitted exactly once per test, here or by
    /// [`OutputParser::finish`].
    Finished(TestResult),
    /// A line printed while tests ran, to show live (`--nocapture`); `test` when one test
    /// can be named as its author.
    Line {
        /// The test, when known.
        test: Option<String>,
        /// Whether it came on stderr.
        stderr: bool,
        /// The line.
        text: String,
    },
    /// libtest says the test has been running for over 60 seconds.
    Slow {
        /// The test.
        name: String,
    },
}

/// libtest's closing `test result:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibtestSummary {
    /// `ok` rather than `FAILED`.
    pub ok: bool,
    /// Passed tests.
    pub passed: usize,
    /// Failed tests.
    pub failed: usize,
    /// Ignored tests.
    pub ignored: usize,
    /// Benchmarks measured.
    pub measured: usize,
    /// Tests the filter left out.
    pub filtered_out: usize,
    /// `finished in Xs`, when printed.
    pub duration: Option<Duration>,
}

/// Why the runner killed a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// It ran past its timeout.
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// Its process tree exceeded the memory cap (or the kernel's OOM killer struck).
    Memory {
        /// The cap, when the watchdog killed it.
        limit: Option<u64>,
        /// The peak RSS seen.
        peak: u64,
        /// Whether our watchdog sent the kill.
        by_watchdog: bool,
    },
    /// The run was interrupted (Ctrl-C).
    Interrupted,
    /// A `#[capped]` test in it ran past its own timeout: its thread cannot be stopped and
    /// keeps its slots, so the process is ended and its other tests run again.
    TestTimedOut {
        /// The test.
        test: String,
    },
}

/// How a binary ended, as the runner saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryEnd {
    /// Its exit code, or `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Why the runner killed it, when it did.
    pub killed: Option<KillReason>,
}

/// Everything [`OutputParser::finish`] resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBinary {
    /// Results not emitted before `finish`: failed tests whose output block never completed,
    /// and listed tests that never finished (timed out, killed, crashed, not run). Send
    /// these as `TestFinished` too.
    pub remaining: Vec<TestResult>,
    /// Every test's final result (those streamed as [`OutputEvent::Finished`] and
    /// `remaining`), in listing order, then tests seen but not listed.
    pub all: Vec<TestResult>,
    /// Output no test claimed (the binary's crash message, tests' prints under
    /// `--nocapture` with several threads), for `BinaryFinished::stray_output`.
    pub stray_output: String,
    /// libtest's `test result:` line, when it was printed.
    pub summary: Option<LibtestSummary>,
    /// The `running N tests` count, when printed.
    pub total: Option<usize>,
}

/// The parser for one run of one test binary. See the [module docs](self).
#[derive(Debug)]
pub struct OutputParser {
    binary: BinaryId,
    test_threads: usize,
    listed: Vec<ListedTest>,
    known: HashSet<String>,
    /// The listed tests that are ignored: asked once per unfinished test when a binary
    /// ends early, so a set, not a scan of the listing.
    ignored: HashSet<String>,
    state: State,
    stdout_lines: LineSplitter,
    stderr_lines: LineSplitter,
    started: HashSet<String>,
    finished: Vec<TestResult>,
    finished_names: HashSet<String>,
    /// Failed tests waiting for their output block, in the order they failed.
    failing: Vec<Failing>,
    /// Output attributed to a test while it ran (`--nocapture`).
    buffers: HashMap<String, Text>,
    pending: Option<Pending>,
    /// Tests announced whose result never came (another announcement took their place).
    orphans: Vec<String>,
    /// A `thread 'NAME' panicked at` message being collected for NAME.
    panic_capture: Option<String>,
    stray: Text,
    summary: Option<LibtestSummary>,
    total: Option<usize>,
    terse: bool,
    /// In the `failures:` (not `successes:`) section.
    in_failures: bool,
    /// Why the harness did not run a test (`capped: … not run because …` notes).
    not_run_reasons: HashMap<String, String>,
    harness_started: HashSet<String>,
    harness_ended: HashMap<String, (Outcome, Duration)>,
    /// Whether its statuses are verdicts (no other evidence exists), so that what it
    /// concludes at the end goes into the tests' text; else it only sorts text.
    judges: bool,
}

#[derive(Debug)]
struct Failing {
    name: String,
    status: TestStatus,
    duration: Option<Duration>,
    block: Option<Text>,
}

#[derive(Debug)]
struct Pending {
    name: String,
    since: Instant,
    /// A result guessed from a line that ended in `ok`/`FAILED` after other text; it holds
    /// only if a structural line follows (otherwise that text was the test's own output).
    provisional: Option<(TestStatus, Instant)>,
}

#[derive(Debug)]
enum State {
    /// Tests are running.
    Tests,
    /// In the `successes:`/`failures:` sections, between blocks.
    Sections,
    /// Inside a `---- NAME stdout ----` block.
    Block { name: String, text: Text },
    /// A `failures:`/`successes:` line inside a block: the end of the block if the next
    /// line is an indented test name, else part of the test's output.
    BlockMaybeEnd {
        name: String,
        text: Text,
        held: String,
    },
    /// After `test result:`.
    Done,
}

impl OutputParser {
    /// A parser for one run of `binary`, which lists `listed` (with the run's filters, in the
    /// binary's order) and runs with `--test-threads test_threads`.
    ///
    /// When `listed` is not empty only its names are taken for test names in the output,
    /// which keeps tests' own prints (a nested `cargo test`'s output, say) from being read as
    /// results; with an empty listing any well-formed line at the start of a line counts.
    pub fn new(binary: BinaryId, listed: &[ListedTest], test_threads: usize) -> OutputParser {
        OutputParser {
            binary,
            test_threads: test_threads.max(1),
            listed: listed.to_vec(),
            known: listed.iter().map(|t| t.name.clone()).collect(),
            ignored: listed
                .iter()
                .filter(|t| t.ignored)
                .map(|t| t.name.clone())
                .collect(),
            state: State::Tests,
            stdout_lines: LineSplitter::default(),
            stderr_lines: LineSplitter::default(),
            started: HashSet::new(),
            finished: Vec::new(),
            finished_names: HashSet::new(),
            failing: Vec::new(),
            buffers: HashMap::new(),
            pending: None,
            orphans: Vec::new(),
            panic_capture: None,
            stray: Text::default(),
            summary: None,
            total: None,
            terse: false,
            in_failures: false,
            not_run_reasons: HashMap::new(),
            harness_started: HashSet::new(),
            harness_ended: HashMap::new(),
            judges: true,
        }
    }

    /// Leaves verdicts to other evidence: at the end, unfinished tests keep the text the
    /// output gave them, without the parser's conclusions about how they ended.
    pub fn text_only(mut self) -> OutputParser {
        self.judges = false;
        self
    }

    /// Feeds bytes read from the binary's stdout at `at`. Lines may be split anywhere
    /// between calls; invalid UTF-8 is replaced.
    pub fn stdout(&mut self, chunk: &[u8], at: Instant) -> Vec<OutputEvent> {
        let mut events = Vec::new();
        for line in self.stdout_lines.push(chunk) {
            self.stdout_line(&line, at, &mut events);
        }
        // An announcement `test NAME ... ` is short: a long partial line is a test's output.
        let partial = self.stdout_lines.partial();
        if !partial.is_empty() && partial.len() <= PEEK_LIMIT {
            let partial = String::from_utf8_lossy(partial).into_owned();
            self.peek_partial(&partial, at, &mut events);
        }
        events
    }

    /// Feeds bytes read from the binary's stderr. stderr is never parsed for results; its
    /// lines go to the test that is running (one test thread) or whose panic message they
    /// are, else to the stray output.
    pub fn stderr(&mut self, chunk: &[u8], _at: Instant) -> Vec<OutputEvent> {
        for line in self.stderr_lines.push(chunk) {
            self.other_line(&clean(&line));
        }
        Vec::new()
    }

    /// Takes one line of the harness events file (`CAPPED_EVENTS`) for this binary's
    /// process: `start` tells which tests were running if the binary is killed, `end` gives
    /// durations and per-test timeouts. The test writes its `end` before libtest prints its
    /// result, so read new events before feeding each stdout chunk.
    pub fn harness_event(&mut self, event: &Event) -> Vec<OutputEvent> {
        let mut events = Vec::new();
        match event {
            Event::Start { test, .. } => {
                self.harness_started.insert(test.clone());
                self.note_started(test, &mut events);
            }
            Event::End {
                test,
                outcome,
                duration_us,
                ..
            } => {
                self.harness_ended.insert(
                    test.clone(),
                    (*outcome, Duration::from_micros(*duration_us)),
                );
            }
        }
        events
    }

    /// Evidence outside the output says `name` failed: keep its `---- NAME stdout ----` block
    /// for it, even if a line in the output (a test's own print) said it passed.
    pub fn expect_failure(&mut self, name: &str) {
        if self.failing.iter().any(|f| f.name == name) {
            return;
        }
        self.failing.push(Failing {
            name: name.to_string(),
            status: TestStatus::Failed,
            duration: None,
            block: None,
        });
    }

    /// Resolves everything still open now that the binary has ended (see [`BinaryEnd`]) and
    /// returns the final results.
    pub fn finish(mut self, end: &BinaryEnd) -> ParsedBinary {
        let mut events = Vec::new();
        if let Some(line) = self.stdout_lines.finish() {
            self.stdout_line(&line, Instant::now(), &mut events);
        }
        if let Some(line) = self.stderr_lines.finish() {
            self.other_line(&clean(&line));
        }
        // A block cut short is still the test's output.
        match std::mem::replace(&mut self.state, State::Done) {
            State::Block { name, text } => self.close_block(name, text),
            State::BlockMaybeEnd { name, text, .. } => self.close_block(name, text),
            _ => {}
        }
        let emitted_before = self.finished.len();
        let normal_end = self.summary.is_some();
        // A provisional result without a structural line after it is not trusted.
        let pending = self.pending.take().map(|p| p.name);

        // Failed tests still waiting for their output.
        for failing in std::mem::take(&mut self.failing) {
            let mut output = self.output_of(&failing.name, failing.block);
            if output.is_empty() && !normal_end {
                output = "(the binary ended before libtest printed this test's output)".into();
            }
            self.push_final(TestResult {
                binary: self.binary.clone(),
                name: failing.name,
                status: failing.status,
                duration: failing.duration,
                output,
            });
        }

        // Tests that never finished: the listed ones, then announced ones not listed.
        let mut unfinished: Vec<String> = self
            .listed
            .iter()
            .map(|t| t.name.clone())
            .chain(self.orphans.iter().cloned())
            .chain(pending.iter().cloned())
            .filter(|name| !self.finished_names.contains(name))
            .collect();
        dedup_keep_order(&mut unfinished);
        if !unfinished.is_empty() {
            let running = self.running_candidates(&unfinished, pending.as_deref(), normal_end);
            let fate = Fate::of(end, normal_end, self.terse);
            for name in unfinished {
                let was_running = running.contains(&name);
                let (status, note) = fate.status(
                    &name,
                    was_running,
                    &running,
                    self.listed_ignored(&name),
                    self.not_run_reasons.get(&name).map(String::as_str),
                );
                let mut output = match &status {
                    TestStatus::Passed | TestStatus::NotRun { .. } if self.judges => String::new(),
                    TestStatus::Ignored if self.judges => String::new(),
                    _ => self.output_of(&name, None),
                };
                if let Some(note) = note.filter(|_| self.judges) {
                    if !output.is_empty() {
                        output.push_str("\n\n");
                    }
                    output.push_str(&note);
                }
                let duration = self.harness_ended.get(&name).map(|(_, d)| *d);
                self.push_final(TestResult {
                    binary: self.binary.clone(),
                    name,
                    status,
                    duration,
                    output,
                });
            }
        }

        let remaining = self.finished[emitted_before..].to_vec();
        let mut order: HashMap<&str, usize> = HashMap::new();
        for (index, test) in self.listed.iter().enumerate() {
            order.entry(test.name.as_str()).or_insert(index);
        }
        let mut all = self.finished.clone();
        all.sort_by_key(|r| order.get(r.name.as_str()).copied().unwrap_or(usize::MAX));
        let stray_output = std::mem::take(&mut self.stray).finish();
        ParsedBinary {
            remaining,
            all,
            stray_output,
            summary: self.summary,
            total: self.total,
        }
    }

    /// The tests that may have been running when the binary ended.
    fn running_candidates(
        &self,
        unfinished: &[String],
        pending: Option<&str>,
        normal_end: bool,
    ) -> Vec<String> {
        if normal_end {
            return Vec::new();
        }
        if !self.harness_started.is_empty() {
            return unfinished
                .iter()
                .filter(|name| {
                    self.harness_started.contains(*name) && !self.harness_ended.contains_key(*name)
                })
                .cloned()
                .collect();
        }
        let announced = self
            .orphans
            .iter()
            .map(String::as_str)
            .chain(pending)
            .filter(|name| unfinished.iter().any(|u| u == name))
            .map(str::to_string);
        if self.test_threads == 1 {
            return announced.collect();
        }
        // libtest starts tests in listing order and keeps `test_threads` of them running, so
        // the running ones are the first unfinished ones.
        let mut running: Vec<String> = unfinished
            .iter()
            .filter(|name| !self.listed_ignored(name))
            .take(self.test_threads)
            .cloned()
            .collect();
        for name in announced {
            if !running.contains(&name) {
                running.push(name);
            }
        }
        running
    }

    fn listed_ignored(&self, name: &str) -> bool {
        self.ignored.contains(name)
    }

    fn stdout_line(&mut self, line: &str, at: Instant, events: &mut Vec<OutputEvent>) {
        let line = clean(line);
        match std::mem::replace(&mut self.state, State::Tests) {
            State::Tests => self.tests_line(&line, at, events),
            State::Sections => {
                self.state = State::Sections;
                self.sections_line(&line, events);
            }
            State::Block { name, mut text } => {
                if line == "failures:" || line == "successes:" {
                    self.state = State::BlockMaybeEnd {
                        name,
                        text,
                        held: line,
                    };
                } else if let Some(next) = self.block_header(&line) {
                    self.close_block(name, text);
                    self.emit_ready(events);
                    self.open_block(next);
                } else {
                    text.push(&line);
                    self.state = State::Block { name, text };
                }
            }
            State::BlockMaybeEnd {
                name,
                mut text,
                held,
            } => {
                let listed_name = line
                    .strip_prefix("    ")
                    .is_some_and(|rest| self.is_known(rest.trim_end()));
                if listed_name || line.starts_with("test result: ") {
                    self.close_block(name, text);
                    self.emit_ready(events);
                    self.in_failures = held == "failures:";
                    self.state = State::Sections;
                    self.sections_line(&line, events);
                } else {
                    text.push(&held);
                    self.state = State::Block { name, text };
                    self.stdout_line(&line, at, events);
                }
            }
            State::Done => {
                self.state = State::Done;
                if !line.trim().is_empty() {
                    self.stray.push(&line);
                }
            }
        }
    }

    /// A line while tests run.
    fn tests_line(&mut self, line: &str, at: Instant, events: &mut Vec<OutputEvent>) {
        if let Some(total) = running_line(line) {
            self.commit_provisional(events);
            self.total = Some(total);
            return;
        }
        // With one test thread, a running test's own `failures:` line is its output.
        if (line == "failures:" || line == "successes:")
            && (self.pending.is_none() || self.test_threads > 1)
        {
            self.commit_provisional(events);
            if let Some(pending) = self.pending.take() {
                self.orphans.push(pending.name);
            }
            self.in_failures = line == "failures:";
            self.state = State::Sections;
            return;
        }
        if parse_summary(line).is_some() && (self.pending.is_none() || self.test_threads > 1) {
            self.summary_line(line, events);
            return;
        }
        if let Some((prefix, name, rest)) = self.find_announcement(line) {
            self.commit_provisional(events);
            if !prefix.is_empty() {
                self.other_line(prefix);
            }
            self.announcement(name, rest, at, events);
            return;
        }
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" has been running for over 60 seconds"))
            && self.is_known(name)
        {
            events.push(OutputEvent::Slow {
                name: name.to_string(),
            });
            return;
        }
        if let Some(name) = line.strip_suffix(" --- FAILED")
            && self.is_known(name)
            && self.pending.is_none()
        {
            self.terse = true;
            self.fail(name.to_string(), TestStatus::Failed, None, events);
            return;
        }
        if let Some(note) = NotRunNote::parse(line) {
            for name in note.tests {
                self.not_run_reasons.insert(name, note.reason.clone());
            }
            self.stray.push(line);
            return;
        }
        if is_terse_progress(line) && self.pending.is_none() {
            self.terse = true;
            return;
        }
        // Maybe the result of the test announced earlier, after its own prints.
        if let Some(pending) = &mut self.pending {
            let trimmed = line.trim_end();
            if let Some((status, reason)) = parse_result(trimmed) {
                let pending = self.pending.take().expect("pending");
                self.resolve(pending, status, reason, at, events);
                return;
            }
            match suffix_result(trimmed) {
                Some((status, before)) => {
                    pending.provisional = Some((status, at));
                    if !before.is_empty() {
                        let before = before.to_string();
                        self.other_line(&before);
                    }
                    return;
                }
                // More output: the test is still running.
                None => pending.provisional = None,
            }
        }
        self.other_line(line);
    }

    /// `test NAME ... REST` found in a line.
    fn announcement(
        &mut self,
        name: String,
        rest: &str,
        at: Instant,
        events: &mut Vec<OutputEvent>,
    ) {
        self.announce(name, at);
        let rest_trimmed = rest.trim_end();
        if let Some((status, reason)) = parse_result(rest_trimmed) {
            let pending = self.pending.take().expect("pending");
            self.resolve(pending, status, reason, at, events);
            return;
        }
        let name = self.pending.as_ref().expect("pending").name.clone();
        self.note_started(&name, events);
        if let Some((status, before)) = suffix_result(rest_trimmed) {
            let before = before.to_string();
            if !before.is_empty() {
                self.other_line(&before);
            }
            self.pending.as_mut().expect("pending").provisional = Some((status, at));
        } else if !rest_trimmed.is_empty() {
            self.other_line(rest);
        }
    }

    /// Makes `name` the test whose result is awaited (unless it already is).
    fn announce(&mut self, name: String, at: Instant) {
        if self.pending.as_ref().is_some_and(|p| p.name == name) {
            return;
        }
        let pending = Pending {
            name,
            since: at,
            provisional: None,
        };
        if let Some(old) = self.pending.replace(pending) {
            self.orphans.push(old.name);
        }
    }

    /// An unterminated line: a `test NAME ... ` announcement in it means the test started
    /// now (libtest prints it before running the test when it runs one at a time).
    fn peek_partial(&mut self, partial: &str, at: Instant, events: &mut Vec<OutputEvent>) {
        if !matches!(self.state, State::Tests) {
            return;
        }
        let partial = clean(partial);
        if let Some((_, name, rest)) = self.find_announcement(&partial)
            && rest.trim().is_empty()
            && self.pending.as_ref().is_none_or(|p| p.name != name)
        {
            self.note_started(&name, events);
            self.announce(name, at);
        }
    }

    fn note_started(&mut self, name: &str, events: &mut Vec<OutputEvent>) {
        if !self.finished_names.contains(name) && self.started.insert(name.to_string()) {
            events.push(OutputEvent::Started {
                name: name.to_string(),
            });
        }
    }

    fn resolve(
        &mut self,
        pending: Pending,
        status: TestStatus,
        reason: Option<String>,
        at: Instant,
        events: &mut Vec<OutputEvent>,
    ) {
        let duration = self.duration_of(&pending.name, pending.since, at);
        match status {
            TestStatus::Failed | TestStatus::TimedOut { .. } => {
                self.fail(pending.name, status, duration, events)
            }
            status => {
                // What a passing test printed while it ran (`--nocapture`, one thread) is
                // its output too.
                let printed = self.buffers.remove(&pending.name).map(Text::finish);
                let result = TestResult {
                    binary: self.binary.clone(),
                    output: if status == TestStatus::Ignored {
                        reason.unwrap_or_default()
                    } else {
                        printed.unwrap_or_default()
                    },
                    name: pending.name,
                    status,
                    duration,
                };
                self.finish_one(result, events);
            }
        }
    }

    fn commit_provisional(&mut self, events: &mut Vec<OutputEvent>) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.provisional.is_some())
        {
            let mut pending = self.pending.take().expect("pending");
            let (status, at) = pending.provisional.take().expect("provisional");
            self.resolve(pending, status, None, at, events);
        }
    }

    fn duration_of(&self, name: &str, since: Instant, at: Instant) -> Option<Duration> {
        if let Some((_, duration)) = self.harness_ended.get(name) {
            return Some(*duration);
        }
        (self.test_threads == 1).then(|| at.saturating_duration_since(since))
    }

    /// Records a failure; its result waits for the output block.
    fn fail(
        &mut self,
        name: String,
        status: TestStatus,
        duration: Option<Duration>,
        events: &mut Vec<OutputEvent>,
    ) {
        if self.finished_names.contains(&name) || self.failing.iter().any(|f| f.name == name) {
            return;
        }
        let status = match self.harness_ended.get(&name) {
            Some((Outcome::TimedOut, took)) => TestStatus::TimedOut {
                after: self
                    .listed
                    .iter()
                    .find(|t| t.name == name)
                    .and_then(|t| t.timeout_ms)
                    .map_or(*took, Duration::from_millis),
            },
            _ => status,
        };
        events.push(OutputEvent::Failing { name: name.clone() });
        self.failing.push(Failing {
            name,
            status,
            duration,
            block: None,
        });
    }

    fn finish_one(&mut self, result: TestResult, events: &mut Vec<OutputEvent>) {
        if self.finished_names.insert(result.name.clone()) {
            events.push(OutputEvent::Finished(result.clone()));
            self.finished.push(result);
        }
    }

    fn push_final(&mut self, result: TestResult) {
        if self.finished_names.insert(result.name.clone()) {
            self.finished.push(result);
        }
    }

    /// A line in the `successes:`/`failures:` sections, outside blocks.
    fn sections_line(&mut self, line: &str, events: &mut Vec<OutputEvent>) {
        if let Some(name) = self.block_header(line) {
            self.open_block(name);
        } else if line.starts_with("test result: ") {
            self.summary_line(line, events);
        } else if let Some(name) = line.strip_prefix("    ") {
            // The `failures:` list: a failure whose result line we missed is still one.
            let name = name.trim_end();
            if self.in_failures
                && self.is_known(name)
                && !self.finished_names.contains(name)
                && !self.failing.iter().any(|f| f.name == name)
            {
                self.fail(name.to_string(), TestStatus::Failed, None, events);
            }
        } else if line == "failures:" {
            self.in_failures = true;
        } else if line == "successes:" {
            self.in_failures = false;
        } else if !line.trim().is_empty() {
            self.stray.push(line);
        }
    }

    /// The test named by a `---- NAME stdout ----` (libtest) or `---- NAME ----`
    /// (libtest-mimic) header, if it is one of this binary's tests.
    fn block_header(&self, line: &str) -> Option<String> {
        let inner = line.strip_prefix("---- ")?.strip_suffix(" ----")?;
        let name = inner.strip_suffix(" stdout").unwrap_or(inner);
        let name = strip_kind(name);
        let ours = self.failing.iter().any(|f| f.name == name)
            || self.finished_names.contains(name)
            || (self.failing.is_empty() && self.is_known(name));
        ours.then(|| name.to_string())
    }

    fn open_block(&mut self, name: String) {
        self.state = State::Block {
            name,
            text: Text::default(),
        };
    }

    /// A block is complete: it is its failed test's output (a passed test's block, printed
    /// under `--show-output`, is dropped).
    fn close_block(&mut self, name: String, text: Text) {
        if let Some(failing) = self.failing.iter_mut().find(|f| f.name == name) {
            failing.block = Some(text);
        } else if let Some(passed) = self
            .finished
            .iter_mut()
            .find(|r| r.name == name && r.output.is_empty())
        {
            // `--show-output`: a passing test's captured output, printed after every test
            // ran, joins its result (sent already, or held until the end by the caller).
            passed.output = text.finish();
        }
    }

    /// Emits the failed tests whose output block is complete.
    fn emit_ready(&mut self, events: &mut Vec<OutputEvent>) {
        let (ready, waiting): (Vec<Failing>, Vec<Failing>) = std::mem::take(&mut self.failing)
            .into_iter()
            .partition(|f| f.block.is_some());
        self.failing = waiting;
        for failing in ready {
            self.emit_failing(failing, events);
        }
    }

    fn emit_failing(&mut self, failing: Failing, events: &mut Vec<OutputEvent>) {
        let output = self.output_of(&failing.name, failing.block);
        let result = TestResult {
            binary: self.binary.clone(),
            name: failing.name,
            status: failing.status,
            duration: failing.duration,
            output,
        };
        // A failing entry is unique per test; one for a test already finished comes from
        // `expect_failure` and corrects a pass its output claimed.
        self.finished_names.insert(result.name.clone());
        events.push(OutputEvent::Finished(result.clone()));
        self.finished.push(result);
    }

    /// `test result: …`: tests are over; failed tests get what output they have.
    fn summary_line(&mut self, line: &str, events: &mut Vec<OutputEvent>) {
        self.commit_provisional(events);
        if let Some(pending) = self.pending.take() {
            self.orphans.push(pending.name);
        }
        self.summary = parse_summary(line);
        if self.summary.is_none() {
            self.stray.push(line);
        }
        for failing in std::mem::take(&mut self.failing) {
            self.emit_failing(failing, events);
        }
        self.state = State::Done;
    }

    /// A failed test's output: its block, else what it printed while it ran.
    fn output_of(&mut self, name: &str, block: Option<Text>) -> String {
        let buffered = self.buffers.remove(name).map(Text::finish);
        match block.map(Text::finish) {
            Some(block) if !block.is_empty() => block,
            _ => buffered.unwrap_or_default(),
        }
    }

    /// A line that is not libtest's: it belongs to the running test (one test thread), to
    /// the test whose panic message it is, or to nobody.
    fn other_line(&mut self, line: &str) {
        if line.trim().is_empty() && self.pending.is_none() && self.panic_capture.is_none() {
            return;
        }
        if self.test_threads == 1
            && let Some(pending) = &self.pending
        {
            self.buffers
                .entry(pending.name.clone())
                .or_default()
                .push(line);
            return;
        }
        if let Some(name) = panic_thread(line)
            && self.is_known(name)
            && !self.finished_names.contains(name)
        {
            self.panic_capture = Some(name.to_string());
        }
        if let Some(name) = &self.panic_capture {
            let text = self.buffers.entry(name.clone()).or_default();
            text.push(line);
            if line.starts_with("note: ") || text.lines > PANIC_CAPTURE_LINES {
                self.panic_capture = None;
            }
            return;
        }
        self.stray.push(line);
    }

    fn is_known(&self, name: &str) -> bool {
        if self.known.is_empty() {
            !name.is_empty()
        } else {
            self.known.contains(name)
        }
    }

    /// Finds `test NAME ... ` in a line: the text before it, the name, and the text after.
    /// At the start of a line any name does when the listing is empty; elsewhere in the line
    /// (after a test's unterminated print) only listed names do.
    fn find_announcement<'l>(&self, line: &'l str) -> Option<(&'l str, String, &'l str)> {
        for (start, _) in line.match_indices("test ") {
            if start > 0 && self.known.is_empty() {
                break;
            }
            let after = &line[start + "test ".len()..];
            for (dots, _) in after.match_indices(" ... ") {
                let name = announced_name(&after[..dots]);
                if self.is_known(name) {
                    let rest = &after[dots + " ... ".len()..];
                    return Some((&line[..start], name.to_string(), rest));
                }
            }
            // `test NAME ...` at the very end (trailing space trimmed by a terminal).
            if let Some(name) = after.strip_suffix(" ...") {
                let name = announced_name(name);
                if self.is_known(name) {
                    return Some((&line[..start], name.to_string(), ""));
                }
            }
        }
        None
    }
}

/// How many lines of a panic message are attributed to its test at most.
const PANIC_CAPTURE_LINES: usize = 400;

/// The name in `NAME - should panic` (libtest's test-mode suffixes and libtest-mimic's
/// `[kind] ` prefix and padding removed).
fn announced_name(text: &str) -> &str {
    let text = strip_kind(text.trim_end());
    for mode in [" - should panic", " - compile fail", " - compile"] {
        if let Some(name) = text.strip_suffix(mode) {
            return name.trim_end();
        }
    }
    text
}

/// A line without its line ending and colors.
fn clean(line: &str) -> String {
    strip_ansi(line.trim_end_matches(['\n', '\r'])).into_owned()
}

/// `running 3 tests` (or the harness's `running 3 tests (shuffle seed: 7)`) → 3.
fn running_line(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("running ")?;
    let (count, rest) = rest.split_once(' ')?;
    let word = rest.split(' ').next()?;
    matches!(word, "test" | "tests")
        .then(|| count.parse().ok())
        .flatten()
}

/// A result at the start of what follows ` ... `: `ok`, `FAILED`, `ignored`,
/// `ignored, REASON` (libtest), `ignored (REASON)` (libtest-mimic), `bench: …`. The reason
/// is returned for ignored tests.
fn parse_result(text: &str) -> Option<(TestStatus, Option<String>)> {
    let text = text.trim_end();
    match text {
        "ok" => return Some((TestStatus::Passed, None)),
        "FAILED" => return Some((TestStatus::Failed, None)),
        "ignored" => return Some((TestStatus::Ignored, None)),
        _ => {}
    }
    if let Some(reason) = text.strip_prefix("ignored, ") {
        return Some((TestStatus::Ignored, Some(reason.to_string())));
    }
    if let Some(reason) = text
        .strip_prefix("ignored (")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some((TestStatus::Ignored, Some(reason.to_string())));
    }
    if let Some(note) = text
        .strip_prefix("FAILED (")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The capped harness: `FAILED (timed out after 30.00s)`.
        if let Some(after) = note
            .strip_prefix("timed out after ")
            .and_then(|d| capped_model::units::parse_duration(d).ok())
        {
            return Some((TestStatus::TimedOut { after }, None));
        }
        return Some((TestStatus::Failed, None));
    }
    if text.starts_with("ok (") && text.ends_with(')') || text.starts_with("bench: ") {
        return Some((TestStatus::Passed, None));
    }
    None
}

/// A result at the end of a line that starts with a test's own output (`printed textok`):
/// the status and the text before it.
fn suffix_result(text: &str) -> Option<(TestStatus, &str)> {
    if let Some(before) = text.strip_suffix("FAILED") {
        return Some((TestStatus::Failed, before));
    }
    text.strip_suffix("ok")
        .map(|before| (TestStatus::Passed, before))
}

/// `..F.i` or `ii.. 5/8`: the `-q` progress.
fn is_terse_progress(line: &str) -> bool {
    let (marks, count) = match line.split_once(' ') {
        Some((marks, count)) => (marks, Some(count)),
        None => (line, None),
    };
    !marks.is_empty()
        && marks.chars().all(|c| matches!(c, '.' | 'F' | 'i' | 'E'))
        && count.is_none_or(|count| {
            count
                .split_once('/')
                .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
        })
}

/// `thread 'NAME' (1234) panicked at …` → NAME.
fn panic_thread(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("thread '")?;
    let (name, rest) = rest.split_once('\'')?;
    rest.contains(" panicked at ").then_some(name)
}

/// Parses `test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out;
/// finished in 0.00s`.
fn parse_summary(line: &str) -> Option<LibtestSummary> {
    let rest = line.strip_prefix("test result: ")?;
    let (word, counts) = rest.split_once(". ")?;
    let ok = match word {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    let mut summary = LibtestSummary {
        ok,
        passed: 0,
        failed: 0,
        ignored: 0,
        measured: 0,
        filtered_out: 0,
        duration: None,
    };
    let mut seen = 0;
    for part in counts.split(';').map(str::trim) {
        if let Some(secs) = part
            .strip_prefix("finished in ")
            .and_then(|s| s.strip_suffix('s'))
        {
            summary.duration = secs
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok());
            continue;
        }
        let Some((count, what)) = part.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse() else { continue };
        let slot = match what {
            "passed" => &mut summary.passed,
            "failed" => &mut summary.failed,
            "ignored" => &mut summary.ignored,
            "measured" => &mut summary.measured,
            "filtered out" => &mut summary.filtered_out,
            _ => continue,
        };
        *slot = count;
        seen += 1;
    }
    (seen >= 3).then_some(summary)
}

fn dedup_keep_order(names: &mut Vec<String>) {
    let mut seen = HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
}

/// What happens to the tests that never finished, given how the binary ended.
/// Why a binary ended, as far as its unfinished tests are concerned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Timeout(Duration),
    Memory {
        limit: Option<u64>,
        peak: u64,
        by_watchdog: bool,
    },
    Interrupted,
    Killed(String),
    Crashed(String),
    Exited(i32),
    /// libtest printed its summary; `terse` (`-q`) output names only failures.
    Normal {
        terse: bool,
    },
}

impl Fate {
    /// The fate of the tests that had no result when the binary ended so (`normal_end`:
    /// the binary reported every test it ran).
    pub(crate) fn of(end: &BinaryEnd, normal_end: bool, terse: bool) -> Fate {
        match &end.killed {
            Some(KillReason::Timeout { after }) => Fate::Timeout(*after),
            Some(KillReason::Memory {
                limit,
                peak,
                by_watchdog,
            }) => Fate::Memory {
                limit: *limit,
                peak: *peak,
                by_watchdog: *by_watchdog,
            },
            Some(KillReason::Interrupted) => Fate::Interrupted,
            Some(KillReason::TestTimedOut { test }) => {
                Fate::Killed(format!("`{test}` timed out and its process was ended"))
            }
            None if normal_end => Fate::Normal { terse },
            None => match (end.signal, end.exit_code) {
                (Some(signal), _) => Fate::Crashed(describe_end_signal(signal)),
                (None, Some(code)) => Fate::Exited(code),
                (None, None) => Fate::Crashed("an unknown cause".into()),
            },
        }
    }

    /// The status of an unfinished test, and a note for its output: `was_running` when it
    /// may have been running at the end (with the others of `running`), `listed_ignored`
    /// when the listing marks it ignored, `not_run_reason` what the binary said.
    pub(crate) fn status(
        &self,
        name: &str,
        was_running: bool,
        running: &[String],
        listed_ignored: bool,
        not_run_reason: Option<&str>,
    ) -> (TestStatus, Option<String>) {
        let not_run = |reason: String| (TestStatus::NotRun { reason }, None);
        let others = || {
            let others: Vec<&str> = running
                .iter()
                .map(String::as_str)
                .filter(|other| *other != name)
                .collect();
            if others.is_empty() {
                String::new()
            } else {
                format!(" (also running: {})", others.join(", "))
            }
        };
        match self {
            Fate::Timeout(after) if was_running => (TestStatus::TimedOut { after: *after }, None),
            Fate::Timeout(after) => not_run(format!(
                "its binary was killed at its {} timeout before this test ran",
                capped_model::units::format_duration(*after)
            )),
            Fate::Memory {
                limit,
                peak,
                by_watchdog,
            } if was_running => (
                TestStatus::KilledForMemory {
                    limit: *limit,
                    peak: *peak,
                    by_watchdog: *by_watchdog,
                },
                None,
            ),
            Fate::Memory { peak, limit, .. } => not_run(format!(
                "its binary was killed for memory (peak {}{}) before this test ran",
                capped_model::units::format_size(*peak),
                limit.map_or(String::new(), |limit| format!(
                    ", cap {}",
                    capped_model::units::format_size(limit)
                ))
            )),
            Fate::Interrupted if was_running => {
                not_run("the run was interrupted while this test was running".into())
            }
            Fate::Interrupted => not_run("the run was interrupted before this test ran".into()),
            Fate::Killed(why) if was_running => (
                TestStatus::Failed,
                Some(format!(
                    "killed while this test was running: {why}{}",
                    others()
                )),
            ),
            Fate::Killed(why) => not_run(format!(
                "its binary was killed ({why}) before this test ran"
            )),
            Fate::Crashed(how) if was_running => (
                TestStatus::Failed,
                Some(format!(
                    "the test binary crashed ({how}) while this test was running{}",
                    others()
                )),
            ),
            Fate::Crashed(how) => not_run(format!(
                "the test binary crashed ({how}) before this test ran"
            )),
            Fate::Exited(code) if was_running => (
                TestStatus::Failed,
                Some(format!(
                    "the test binary exited with code {code} while this test was running, \
                     before libtest reported a result (did something call process::exit?){}",
                    others()
                )),
            ),
            Fate::Exited(code) => not_run(format!(
                "the test binary exited with code {code} before this test ran"
            )),
            Fate::Normal { terse: true } if listed_ignored => (TestStatus::Ignored, None),
            Fate::Normal { terse: true } => (TestStatus::Passed, None),
            Fate::Normal { terse: false } => not_run(not_run_reason.map_or_else(
                || "the test binary finished without reporting this test".into(),
                str::to_string,
            )),
        }
    }
}

/// Text collected line by line, bounded: past [`Text::HEAD`] bytes only the last
/// [`Text::TAIL`] bytes are kept, with a note of what was left out.
#[derive(Debug, Default)]
struct Text {
    head: String,
    tail: VecDeque<String>,
    tail_bytes: usize,
    omitted: usize,
    lines: usize,
}

impl Text {
    const HEAD: usize = 64 * 1024;
    const TAIL: usize = 192 * 1024;

    fn push(&mut self, line: &str) {
        self.lines += 1;
        if self.tail.is_empty() && self.head.len() + line.len() < Text::HEAD {
            self.head.push_str(line);
            self.head.push('\n');
            return;
        }
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(format!("{line}\n"));
        while self.tail_bytes > Text::TAIL {
            let dropped = self.tail.pop_front().expect("non-empty");
            self.tail_bytes -= dropped.len();
            self.omitted += 1;
        }
    }

    /// The text, without trailing blank lines.
    fn finish(self) -> String {
        let mut text = self.head;
        if self.omitted > 0 {
            text.push_str(&format!("[… {} lines omitted …]\n", self.omitted));
        }
        text.extend(self.tail);
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
        let leading = text.len() - text.trim_start_matches('\n').len();
        text.drain(..leading);
        text
    }
}

#[cfg(test)]
mod tests;
