//! A running binary's verdicts, from evidence its tests' output cannot forge.
//!
//! A test process shares stdout and stderr with every test in it and with everything those
//! tests start, so a line like `test other ... ok` proves nothing: a test can print it. The
//! runner therefore reads verdicts from channels test output cannot write to:
//!
//! * plain libtest binaries: libtest's `--logfile`, one record per finished test, written
//!   by libtest's result loop to a file the runner named ([`crate::libtest::logfile`]);
//! * `#[capped]` tests (in any binary) and harness binaries: the events file, whose `start`
//!   and `end` lines the test-side library writes around each test body (only lines of the
//!   binary's own process count: a test that runs another capped binary passes the variable
//!   on);
//! * binaries that offer neither (a harness that is not libtest and not ours): what they
//!   print, as before, the only source there is.
//!
//! The [`OutputParser`] still reads the output, for what it is good at: which text belongs
//! to which test. Its results are held until the evidence for that test arrives and then
//! carry the evidence's status; a result that exists only in the output is dropped.
//!
//! When the process ends, a listed test without a verdict was running (failed, timed out,
//! killed for memory, as the end says) or never started (not run), never passed, whatever
//! the exit code. libtest starts tests in listing order and keeps `--test-threads` of them
//! running, starting the next as soon as one reports, so the started tests are always a
//! prefix of the listing: the tests that may have been running are the first `threads`
//! without a verdict (exactly one at width 1), plus `#[capped]` tests whose `start` has no
//! `end`. The same prefix gives every plain test its start: the spawn for the first
//! `threads`, else the moment the record that freed its slot arrived.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use capped_model::protocol::{Event, Outcome};

use super::file_tail::FileTail;
use crate::events::{BinaryId, TestResult, TestStatus};
use capped_model::libtest_args;

use crate::libtest::lines::LineSplitter;
use crate::libtest::logfile::{DEPRECATION_NOTICE, LogParser, LogVerdict};
use crate::libtest::output::Fate;
use crate::libtest::{BinaryEnd, KillReason, Listing, OutputEvent, OutputParser, ParsedBinary};

/// Where a binary's verdicts come from.
#[derive(Debug)]
pub enum Source {
    /// libtest's `--logfile`, read from this tail.
    Logfile(FileTail),
    /// The events file alone (harness binaries report every test there).
    Events,
    /// The binary's output: a harness that offers no other channel.
    Output,
}

/// What the evidence says of one listed test.
#[derive(Debug, Default)]
struct Evidence {
    /// The listing marks it ignored.
    listed_ignored: bool,
    /// libtest's record and when it was read.
    record: Option<(LogVerdict, Instant)>,
    /// Its `start` event (a `#[capped]` or harness test).
    started: bool,
    /// Its `end` event: outcome, body duration, message.
    end: Option<(Outcome, Duration, Option<String>)>,
    /// Its verdict is known (counted in [`Verdicts::undecided`]).
    decided: bool,
}

/// A final verdict: status, duration, and a note for the output.
struct Verdict {
    status: TestStatus,
    duration: Option<Duration>,
    note: Option<String>,
}

/// What [`Verdicts::finish`] resolved.
#[derive(Debug)]
pub struct Resolution {
    /// Results and text, as the parser's [`ParsedBinary`], with evidence's statuses.
    pub parsed: ParsedBinary,
    /// Tests to run again in a new process: those without a verdict when the runner ended
    /// the process because a `#[capped]` test in it timed out.
    pub restart: Vec<String>,
}

/// One running binary's verdicts. See the [module docs](self).
#[derive(Debug)]
pub struct Verdicts {
    binary: BinaryId,
    parser: OutputParser,
    source: Source,
    log: LogParser,
    pid: u32,
    threads: usize,
    spawned: Instant,
    /// Tests run in listing order (no `--shuffle`): the prefix rule holds.
    ordered: bool,
    runs_ignored: bool,
    names: Vec<String>,
    index: HashMap<String, usize>,
    tests: Vec<Evidence>,
    /// When each record arrived, in file order.
    completions: Vec<Instant>,
    /// Tests announced as started.
    announced: HashSet<String>,
    /// Announced tests without a verdict yet, by listing position.
    running: BTreeSet<usize>,
    /// How far the listing was announced by the start-order rule.
    prefix_announced: usize,
    /// Parser results waiting for their evidence.
    held: HashMap<String, TestResult>,
    /// Tests whose final result was sent.
    emitted: HashMap<String, TestResult>,
    /// A failure was announced for these.
    failing: HashSet<String>,
    dropped_deprecation: bool,
    /// Tests that will run and have no verdict yet.
    undecided: usize,
    /// When the last test that runs got its verdict.
    all_decided_at: Option<Instant>,
    /// Under `--nocapture`: stdout's and stderr's lines, to show as they come.
    live: Option<[LineSplitter; 2]>,
    /// `--show-output`: passing tests' results wait for their output at the end.
    show_output: bool,
}

impl Verdicts {
    /// The verdicts of process `pid` of `binary`, which lists `listing`, runs with
    /// `threads` test threads and gets `test_args`.
    pub fn new(
        binary: BinaryId,
        listing: &Listing,
        source: Source,
        pid: u32,
        threads: usize,
        test_args: &[String],
    ) -> Verdicts {
        let names: Vec<String> = listing.tests.iter().map(|t| t.name.clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let tests = listing
            .tests
            .iter()
            .map(|t| Evidence {
                listed_ignored: t.ignored,
                ..Evidence::default()
            })
            .collect();
        let threads = threads.max(1);
        let runs_ignored = super::binary_schedule::runs_ignored(test_args);
        let undecided = listing
            .tests
            .iter()
            .filter(|t| runs_ignored || !t.ignored)
            .count();
        Verdicts {
            parser: match source {
                Source::Output => OutputParser::new(binary.clone(), &listing.tests, threads),
                _ => OutputParser::new(binary.clone(), &listing.tests, threads).text_only(),
            },
            binary,
            source,
            log: LogParser::new(names.iter().cloned()),
            pid,
            threads,
            spawned: Instant::now(),
            ordered: !test_args
                .iter()
                .any(|a| a == "--shuffle" || a.starts_with("--shuffle-seed")),
            runs_ignored,
            undecided,
            all_decided_at: None,
            names,
            index,
            tests,
            completions: Vec::new(),
            announced: HashSet::new(),
            running: BTreeSet::new(),
            prefix_announced: 0,
            held: HashMap::new(),
            emitted: HashMap::new(),
            failing: HashSet::new(),
            dropped_deprecation: false,
            live: libtest_args::has(test_args, &libtest_args::NOCAPTURE)
                .then(|| [LineSplitter::default(), LineSplitter::default()]),
            show_output: libtest_args::has(test_args, &libtest_args::SHOW_OUTPUT),
        }
    }

    fn has_evidence(&self) -> bool {
        !matches!(self.source, Source::Output)
    }

    /// Feeds bytes of the binary's stdout read at `at`.
    pub fn stdout(&mut self, bytes: &[u8], at: Instant) -> Vec<OutputEvent> {
        let mut out = self.read_logfile(at);
        self.echo(bytes, false, &mut out);
        let events = self.parser.stdout(bytes, at);
        self.filter(events, &mut out);
        out
    }

    /// Feeds bytes of the binary's stderr read at `at`.
    pub fn stderr(&mut self, bytes: &[u8], at: Instant) -> Vec<OutputEvent> {
        let mut out = self.read_logfile(at);
        let bytes = self.without_deprecation(bytes);
        self.echo(&bytes, true, &mut out);
        let events = self.parser.stderr(&bytes, at);
        self.filter(events, &mut out);
        out
    }

    /// Under `--nocapture`, the tests' lines as they come, each under the test that printed
    /// it when that is known; libtest's own lines (announcements, results, the summary)
    /// are left to the report.
    fn echo(&mut self, bytes: &[u8], stderr: bool, out: &mut Vec<OutputEvent>) {
        let Some(live) = &mut self.live else {
            return;
        };
        let lines = live[usize::from(stderr)].push(bytes);
        for text in lines {
            // At one thread libtest announces a test, then the test prints on that line.
            if let Some(rest) = text.strip_prefix("test ")
                && let Some((name, printed)) = rest.split_once(" ... ")
                && self.index.contains_key(name)
            {
                if !is_result_word(printed) && !printed.trim().is_empty() {
                    out.push(OutputEvent::Line {
                        test: Some(name.to_string()),
                        stderr,
                        text: printed.to_string(),
                    });
                }
                continue;
            }
            if self.is_libtest_line(&text) {
                continue;
            }
            out.push(OutputEvent::Line {
                test: self.author(&text),
                stderr,
                text,
            });
        }
    }

    /// A line libtest prints itself around the tests' output.
    fn is_libtest_line(&self, line: &str) -> bool {
        let line = line.trim_end();
        if line.is_empty()
            || is_result_word(line)
            || line.starts_with("test result: ")
            || matches!(line, "failures:" | "successes:")
            || line == DEPRECATION_NOTICE
        {
            return true;
        }
        if let Some(count) = line.strip_prefix("running ") {
            return count.ends_with(" tests") || count.ends_with(" test");
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, _)) = rest.split_once(" ... ")
        {
            return self.index.contains_key(name);
        }
        false
    }

    /// The test that printed `line`: the one whose panic message it opens, else, at one
    /// test thread, the one running. With several threads a line cannot be pinned on one of
    /// them (the streams and the logfile are read at different moments), so it goes under
    /// the binary's name.
    fn author(&self, line: &str) -> Option<String> {
        if let Some(rest) = line.strip_prefix("thread '")
            && let Some((name, _)) = rest.split_once("' panicked at")
            && self.index.contains_key(name)
        {
            return Some(name.to_string());
        }
        if self.threads > 1 {
            return None;
        }
        let mut running = self.running.iter();
        match (running.next(), running.next()) {
            (Some(&i), None) => Some(self.names[i].clone()),
            _ => None,
        }
    }

    /// libtest's notice that `--logfile` is deprecated (printed once on stderr as the
    /// process starts, without a newline) is about our flag, not the tests'.
    fn without_deprecation<'b>(&mut self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        if self.dropped_deprecation || !matches!(self.source, Source::Logfile(_)) {
            return Cow::Borrowed(bytes);
        }
        let notice = DEPRECATION_NOTICE.as_bytes();
        match bytes.windows(notice.len()).position(|w| w == notice) {
            Some(at) => {
                self.dropped_deprecation = true;
                let mut end = at + notice.len();
                if bytes.get(end) == Some(&b'\n') {
                    end += 1;
                }
                let mut out = bytes[..at].to_vec();
                out.extend_from_slice(&bytes[end..]);
                Cow::Owned(out)
            }
            None => Cow::Borrowed(bytes),
        }
    }

    /// Takes one line of the binary's events file.
    pub fn event(&mut self, event: &Event, at: Instant) -> Vec<OutputEvent> {
        let mut out = Vec::new();
        let pid = match event {
            Event::Start { pid, .. } | Event::End { pid, .. } => *pid,
        };
        if pid != self.pid {
            return out;
        }
        let events = self.parser.harness_event(event);
        if !self.has_evidence() {
            return events;
        }
        let Some(&i) = self.index.get(event.test()) else {
            return out;
        };
        match event {
            Event::Start { test, .. } => {
                self.tests[i].started = true;
                self.announce(test.clone(), &mut out);
            }
            Event::End {
                outcome,
                duration_us,
                message,
                ..
            } => {
                self.tests[i].end = Some((
                    *outcome,
                    Duration::from_micros(*duration_us),
                    message.clone(),
                ));
                self.evidence_arrived(i, at, &mut out);
            }
        }
        out
    }

    /// New records of libtest's logfile, read now (`at`).
    pub fn read_logfile(&mut self, at: Instant) -> Vec<OutputEvent> {
        let mut out = Vec::new();
        let Source::Logfile(tail) = &mut self.source else {
            return out;
        };
        let lines = tail.read_lines();
        for line in lines {
            let Some(record) = self.log.line(&String::from_utf8_lossy(&line)) else {
                continue;
            };
            let Some(&i) = self.index.get(&record.name) else {
                continue;
            };
            if self.tests[i].record.is_some() {
                continue;
            }
            self.tests[i].record = Some((record.verdict, at));
            self.completions.push(at);
            self.evidence_arrived(i, at, &mut out);
        }
        self.announce_prefix(&mut out);
        out
    }

    /// When the last of the tests this process runs got its verdict from the evidence
    /// (`None` while some have none, and always without evidence): from then on the
    /// process is only exiting.
    pub fn all_decided_at(&self) -> Option<Instant> {
        self.all_decided_at
    }

    /// The `#[capped]` test whose own timeout passed while its binary runs on: its thread
    /// is abandoned with its slots held, so the runner ends the process and runs the rest
    /// again.
    pub fn capped_timed_out(&self) -> Option<&str> {
        if !matches!(self.source, Source::Logfile(_)) {
            return None;
        }
        self.tests
            .iter()
            .position(|t| matches!(t.end, Some((Outcome::TimedOut, ..))))
            .map(|i| self.names[i].as_str())
    }

    fn announce(&mut self, name: String, out: &mut Vec<OutputEvent>) {
        if self.announced.insert(name.clone()) {
            if let Some(&i) = self.index.get(&name)
                && self.verdict(i, false).is_none()
            {
                self.running.insert(i);
            }
            out.push(OutputEvent::Started { name });
        }
    }

    /// Announces the plain tests the prefix rule says have started.
    fn announce_prefix(&mut self, out: &mut Vec<OutputEvent>) {
        if !self.ordered {
            return;
        }
        // Each position once: the prefix only grows, so a read costs what it adds.
        let started = (self.threads + self.completions.len()).min(self.names.len());
        for i in self.prefix_announced..started {
            if self.tests[i].record.is_none() && self.runs(i) {
                self.announce(self.names[i].clone(), out);
            }
        }
        self.prefix_announced = self.prefix_announced.max(started);
    }

    /// Whether test `i` executes (rather than being reported ignored at once).
    fn runs(&self, i: usize) -> bool {
        self.runs_ignored || !self.tests[i].listed_ignored
    }

    /// When plain test `i` started, by the prefix rule.
    fn start_of(&self, i: usize) -> Option<Instant> {
        if !self.ordered {
            return None;
        }
        match i.checked_sub(self.threads) {
            None => Some(self.spawned),
            Some(k) => self.completions.get(k).copied(),
        }
    }

    /// The verdict the evidence gives test `i`, if any (`at_end`: the process ended, so an
    /// `end` event without libtest's record counts too).
    fn verdict(&self, i: usize, at_end: bool) -> Option<Verdict> {
        let test = &self.tests[i];
        // The test-side library skipped it (its device-backed group has no devices): the
        // body never ran, whatever libtest recorded for the early return.
        if let Some((Outcome::Ignored, _, message)) = &test.end {
            return Some(Verdict {
                status: TestStatus::Ignored,
                duration: None,
                note: message.clone(),
            });
        }
        if let Some((Outcome::TimedOut, after, _)) = &test.end {
            return Some(Verdict {
                status: TestStatus::TimedOut { after: *after },
                duration: Some(*after),
                note: None,
            });
        }
        let event_duration = test.end.as_ref().map(|(_, d, _)| *d);
        let from_events_only = matches!(self.source, Source::Events) || at_end;
        match (&test.record, &test.end) {
            (Some((verdict, seen)), _) => {
                let duration = event_duration.or_else(|| {
                    let start = self.start_of(i)?;
                    Some(seen.saturating_duration_since(start))
                });
                let (status, note) = match verdict {
                    LogVerdict::Passed => (TestStatus::Passed, None),
                    LogVerdict::Failed { message } => (TestStatus::Failed, message.clone()),
                    LogVerdict::Ignored { .. } => (TestStatus::Ignored, None),
                };
                Some(Verdict {
                    status,
                    duration: duration.filter(|_| !matches!(verdict, LogVerdict::Ignored { .. })),
                    note,
                })
            }
            (None, Some((outcome, duration, message))) if from_events_only => {
                let status = match outcome {
                    Outcome::Passed => TestStatus::Passed,
                    Outcome::Failed => TestStatus::Failed,
                    Outcome::Ignored => TestStatus::Ignored,
                    Outcome::TimedOut => unreachable!("handled above"),
                };
                Some(Verdict {
                    status,
                    duration: Some(*duration),
                    note: message
                        .clone()
                        .filter(|_| matches!(outcome, Outcome::Failed)),
                })
            }
            _ => None,
        }
    }

    /// Evidence for test `i` arrived: announce a failure, send a held result.
    fn evidence_arrived(&mut self, i: usize, at: Instant, out: &mut Vec<OutputEvent>) {
        let Some(verdict) = self.verdict(i, false) else {
            return;
        };
        let test = &mut self.tests[i];
        if !test.decided && (self.runs_ignored || !test.listed_ignored) {
            test.decided = true;
            self.undecided = self.undecided.saturating_sub(1);
            if self.undecided == 0 {
                self.all_decided_at = Some(at);
            }
        }
        self.running.remove(&i);
        let name = self.names[i].clone();
        if verdict.status.is_failure() && self.failing.insert(name.clone()) {
            self.parser.expect_failure(&name);
            out.push(OutputEvent::Failing { name: name.clone() });
        }
        if let Some(result) = self.held.remove(&name) {
            self.settle(i, result, verdict, out);
        }
    }

    /// Sends `result` with `verdict`'s status, unless the verdict is a failure the text
    /// does not show yet (libtest prints a failure's output after every test ran): then it
    /// waits for the end.
    fn settle(
        &mut self,
        i: usize,
        mut result: TestResult,
        verdict: Verdict,
        out: &mut Vec<OutputEvent>,
    ) {
        if verdict.status.is_failure() && !result.status.is_failure() {
            self.held.insert(self.names[i].clone(), result);
            return;
        }
        // Under `--show-output` a passing test's output comes after every test ran.
        if self.show_output && verdict.status == TestStatus::Passed {
            self.held.insert(self.names[i].clone(), result);
            return;
        }
        apply(&mut result, verdict);
        result.output = strip_notice(&result.output);
        self.emitted.insert(result.name.clone(), result.clone());
        out.push(OutputEvent::Finished(result));
    }

    /// Keeps what the parser learned that evidence backs: results wait for their verdict,
    /// progress comes from the evidence itself.
    fn filter(&mut self, events: Vec<OutputEvent>, out: &mut Vec<OutputEvent>) {
        if !self.has_evidence() {
            out.extend(events);
            return;
        }
        for event in events {
            match event {
                OutputEvent::Finished(result) => {
                    let Some(&i) = self.index.get(&result.name) else {
                        continue;
                    };
                    if self.emitted.contains_key(&result.name) {
                        continue;
                    }
                    // The parser's latest word on a test replaces what it said before.
                    self.held.remove(&result.name);
                    match self.verdict(i, false) {
                        Some(verdict) => self.settle(i, result, verdict, out),
                        None => {
                            self.held.insert(result.name.clone(), result);
                        }
                    }
                }
                OutputEvent::Slow { name } if self.index.contains_key(&name) => {
                    out.push(OutputEvent::Slow { name });
                }
                // Starts and failures come from the evidence.
                OutputEvent::Started { .. } | OutputEvent::Failing { .. } => {}
                OutputEvent::Slow { .. } => {}
                line @ OutputEvent::Line { .. } => out.push(line),
            }
        }
    }

    /// Resolves every test now that the process ended as `end`.
    pub fn finish(mut self, end: &BinaryEnd) -> Resolution {
        let mut ignore = Vec::new();
        let _ = self.read_logfile(Instant::now());
        self.filter(Vec::new(), &mut ignore);
        let from_evidence = self.has_evidence();
        let parser = std::mem::replace(
            &mut self.parser,
            OutputParser::new(self.binary.clone(), &[], 1),
        );
        let mut parsed = parser.finish(end);
        if !from_evidence {
            return Resolution {
                parsed,
                restart: Vec::new(),
            };
        }
        parsed.stray_output = strip_notice(&parsed.stray_output);
        if let Source::Logfile(tail) = &self.source
            && tail.shrank()
        {
            parsed.stray_output.push_str(
                "\n(libtest's logfile was rewritten while the binary ran; verdicts after that are missing)",
            );
        }
        let mut texts: HashMap<String, TestResult> =
            parsed.all.drain(..).map(|r| (r.name.clone(), r)).collect();
        let verdicts: Vec<Option<Verdict>> = (0..self.names.len())
            .map(|i| self.verdict(i, true))
            .collect();
        // The tests that may have been running when the process ended.
        let mut running: Vec<String> = Vec::new();
        let unverdicted: Vec<usize> = (0..self.names.len())
            .filter(|&i| verdicts[i].is_none() && self.runs(i))
            .collect();
        match self.source {
            Source::Logfile(_) if self.ordered => {
                running.extend(
                    unverdicted
                        .iter()
                        .take(self.threads)
                        .map(|&i| self.names[i].clone()),
                );
            }
            Source::Logfile(_) => {
                running.extend(unverdicted.iter().map(|&i| self.names[i].clone()));
            }
            _ => {}
        }
        for &i in &unverdicted {
            if self.tests[i].started && !running.contains(&self.names[i]) {
                running.push(self.names[i].clone());
            }
        }
        let restarting = matches!(end.killed, Some(KillReason::TestTimedOut { .. }));
        let fate = Fate::of(end, false, false);
        let mut restart = Vec::new();
        let mut remaining = Vec::new();
        let mut all = Vec::new();
        for (i, verdict) in verdicts.into_iter().enumerate() {
            let name = self.names[i].clone();
            if let Some(result) = self.emitted.remove(&name) {
                all.push(result);
                continue;
            }
            let text = texts.remove(&name);
            let mut result = match (self.held.remove(&name), text) {
                // The parser's final text (a failure's block came after a printed pass).
                (Some(mut held), Some(text)) => {
                    if !text.output.is_empty() {
                        held.output = text.output;
                    }
                    Some(held)
                }
                (held, text) => held.or(text),
            }
            .unwrap_or_else(|| TestResult {
                binary: self.binary.clone(),
                name: name.clone(),
                status: TestStatus::Passed,
                duration: None,
                output: String::new(),
            });
            let parser_status = std::mem::replace(&mut result.status, TestStatus::Passed);
            match verdict {
                Some(verdict) => apply(&mut result, verdict),
                None if restarting && self.runs(i) => {
                    restart.push(name);
                    continue;
                }
                None if !self.runs(i) => result.status = TestStatus::Ignored,
                None => {
                    let was_running = running.contains(&name);
                    let told = match &parser_status {
                        TestStatus::NotRun { reason } if !was_running => Some(reason.as_str()),
                        _ => None,
                    };
                    let (status, note) = fate.status(
                        &name,
                        was_running,
                        &running,
                        self.tests[i].listed_ignored,
                        told,
                    );
                    if matches!(status, TestStatus::NotRun { .. }) {
                        result.output.clear();
                    }
                    if !was_running && told.is_some() {
                        result.status = TestStatus::NotRun {
                            reason: told.unwrap_or_default().to_string(),
                        };
                    } else {
                        result.status = status;
                    }
                    if let Some(note) = note {
                        append_note(&mut result.output, &note);
                    }
                    result.duration = None;
                }
            }
            result.output = strip_notice(&result.output);
            remaining.push(result.clone());
            all.push(result);
        }
        parsed.remaining = remaining;
        parsed.all = all;
        Resolution { parsed, restart }
    }
}

/// A result libtest prints after a test's own output at one thread.
fn is_result_word(text: &str) -> bool {
    let text = text.trim_end();
    matches!(text, "ok" | "FAILED" | "ignored") || text.starts_with("ignored, ")
}

/// Gives `result` the verdict's status and duration, and its note.
fn apply(result: &mut TestResult, verdict: Verdict) {
    result.status = verdict.status;
    if verdict.duration.is_some() {
        result.duration = verdict.duration;
    }
    if let Some(note) = verdict.note
        && !result.output.contains(&note)
    {
        append_note(&mut result.output, &note);
    }
}

fn append_note(output: &mut String, note: &str) {
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
    }
    if !output.is_empty() {
        output.push('\n');
    }
    output.push_str(note);
}

/// `text` without libtest's `--logfile` notice, however it was glued to what followed.
fn strip_notice(text: &str) -> String {
    if !text.contains(DEPRECATION_NOTICE) {
        return text.to_string();
    }
    text.replacen(&format!("{DEPRECATION_NOTICE}\n"), "", 1)
        .replacen(DEPRECATION_NOTICE, "", 1)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use capped_model::protocol::ListedTest;

    use super::*;

    fn listing(names: &[&str]) -> Listing {
        Listing {
            tests: names.iter().map(|name| ListedTest::plain(*name)).collect(),
            harness: false,
            logfile: true,
        }
    }

    fn binary() -> BinaryId {
        BinaryId {
            package: "p".into(),
            target: "t".into(),
            kind: "test".into(),
        }
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn verdicts(dir: &Path, names: &[&str], threads: usize) -> Verdicts {
        let tail = FileTail::new(dir.join("log"));
        Verdicts::new(
            binary(),
            &listing(names),
            Source::Logfile(tail),
            7,
            threads,
            &[],
        )
    }

    fn finished(events: &[OutputEvent]) -> Vec<(String, TestStatus)> {
        events
            .iter()
            .filter_map(|e| match e {
                OutputEvent::Finished(r) => Some((r.name.clone(), r.status.clone())),
                _ => None,
            })
            .collect()
    }

    fn status_of(resolution: &Resolution, name: &str) -> TestStatus {
        resolution
            .parsed
            .all
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.status.clone())
            .unwrap_or_else(|| panic!("no result for {name}"))
    }

    fn exited(code: i32) -> BinaryEnd {
        BinaryEnd {
            exit_code: Some(code),
            signal: None,
            killed: None,
        }
    }

    #[test]
    fn a_printed_pass_waits_for_the_record_and_takes_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut v = verdicts(dir.path(), &["a", "b"], 1);
        let now = Instant::now();
        // `b` prints a pass for `a` before libtest recorded anything of `a`.
        let events = v.stdout(b"\nrunning 2 tests\ntest a ... ok\n", now);
        assert!(finished(&events).is_empty(), "no evidence yet: {events:?}");
        append(&log, "failed a\n");
        let events = v.read_logfile(now);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, OutputEvent::Failing { name } if name == "a"))
        );
        assert!(finished(&events).is_empty(), "its text comes later");
        append(&log, "ok b\n");
        let events = v.stdout(b"test b ... ok\n", now);
        assert_eq!(finished(&events), vec![("b".into(), TestStatus::Passed)]);
        let resolution = v.finish(&exited(101));
        assert_eq!(status_of(&resolution, "a"), TestStatus::Failed);
        assert_eq!(status_of(&resolution, "b"), TestStatus::Passed);
    }

    #[test]
    fn no_record_is_never_a_pass_whatever_the_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut v = verdicts(dir.path(), &["a", "b", "c"], 1);
        append(&log, "ok a\n");
        let green = "test a ... ok\ntest b ... ok\ntest c ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let _ = v.stdout(green.as_bytes(), Instant::now());
        let resolution = v.finish(&exited(0));
        assert_eq!(status_of(&resolution, "a"), TestStatus::Passed);
        assert_eq!(
            status_of(&resolution, "b"),
            TestStatus::Failed,
            "it was running"
        );
        assert!(matches!(
            status_of(&resolution, "c"),
            TestStatus::NotRun { .. }
        ));
    }

    #[test]
    fn the_running_tests_are_the_first_threads_without_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut v = verdicts(dir.path(), &["a", "b", "c", "d", "e"], 2);
        append(&log, "ok a\nok c\n");
        let _ = v.read_logfile(Instant::now());
        let resolution = v.finish(&BinaryEnd {
            exit_code: None,
            signal: Some(6),
            killed: None,
        });
        assert_eq!(status_of(&resolution, "b"), TestStatus::Failed);
        assert_eq!(status_of(&resolution, "d"), TestStatus::Failed);
        assert!(matches!(
            status_of(&resolution, "e"),
            TestStatus::NotRun { .. }
        ));
        let b = resolution
            .parsed
            .all
            .iter()
            .find(|r| r.name == "b")
            .unwrap();
        assert!(b.output.contains("also running: d"), "{}", b.output);
    }

    #[test]
    fn events_of_other_processes_are_not_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = verdicts(dir.path(), &["a"], 1);
        let end = |pid| Event::End {
            test: "a".into(),
            pid,
            at_us: 1,
            outcome: Outcome::TimedOut,
            duration_us: 1_000_000,
            message: None,
        };
        let _ = v.event(&end(8), Instant::now());
        assert_eq!(v.capped_timed_out(), None, "another process's event");
        let _ = v.event(&end(7), Instant::now());
        assert_eq!(v.capped_timed_out(), Some("a"));
    }

    #[test]
    fn a_capped_timeout_restarts_the_tests_without_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut v = verdicts(dir.path(), &["a", "b", "c", "d"], 1);
        append(&log, "ok a\n");
        let _ = v.event(
            &Event::End {
                test: "b".into(),
                pid: 7,
                at_us: 1,
                outcome: Outcome::TimedOut,
                duration_us: 1_000_000,
                message: None,
            },
            Instant::now(),
        );
        let resolution = v.finish(&BinaryEnd {
            exit_code: None,
            signal: Some(15),
            killed: Some(KillReason::TestTimedOut { test: "b".into() }),
        });
        assert_eq!(
            status_of(&resolution, "b"),
            TestStatus::TimedOut {
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(resolution.restart, vec!["c".to_string(), "d".to_string()]);
    }

    #[test]
    fn durations_follow_the_order_libtest_starts_tests_in() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut v = verdicts(dir.path(), &["a", "b", "c"], 2);
        let spawned = v.spawned;
        append(&log, "ok a\n");
        let _ = v.read_logfile(spawned + Duration::from_millis(100));
        append(&log, "ok c\nok b\n");
        let _ = v.read_logfile(spawned + Duration::from_millis(300));
        // `c` took `a`'s slot when `a` ended (100 ms): 200 ms; `b` ran from the start.
        let c = v.verdict(2, false).unwrap();
        assert_eq!(c.duration, Some(Duration::from_millis(200)));
        let b = v.verdict(1, false).unwrap();
        assert_eq!(b.duration, Some(Duration::from_millis(300)));
    }
}
