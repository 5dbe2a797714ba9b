//! The run loop: one thread that owns every unit, starts what can start, sleeps until a
//! child wakes it or something is due, looks at every running binary, and stops when
//! nothing runs and nothing more will start.
//!
//! One iteration: take a pending signal (forward it to every child group); unless the run
//! is stopping, re-decide the width if a binary ended, show the hooks' notices and start
//! what can start ([`super::launch`]); then wait on the one channel every child's threads
//! send on ([`Wake`]: output, a closed stream, an exit), at most until the next look is due
//! ([`TICK`], or earlier for a timeout, a grace period or a pipe grace); then look at every
//! running binary ([`Runner::poll`]): its events file, the watch hook, its exit, its
//! timeout, SIGKILL after the grace, and finishing it once it exited and its output was
//! read ([`super::outcome`]).
//!
//! ## Invariants
//!
//! * Only this thread spawns test binaries, so every one of them dies with the runner
//!   (`PR_SET_PDEATHSIG` follows the spawning thread, see [`super::child`]).
//! * A binary's exit is acted on as soon as its waiter reports it: its group is SIGKILLed,
//!   it is reaped, and once its output is read its slots are released and the next binary
//!   starts in the same iteration. Nothing waits for a tick except what only polling can
//!   see: a group slot another process frees, a host-safety gate, the watch hook, an
//!   events-file line no output accompanies.
//! * Every running binary is looked at at least every [`TICK`] and at every wake-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use capped_model::Caps;

use super::binary::{RunningBinary, State, Unit};
use super::child::{GRACE, Wake};
use super::hooks::RunHooks;
use super::run_dir::RunDir;
use super::signals;
use super::summary::Measurements;
use crate::adapt::emfile_policy::EmfileAdapter;
use crate::cli::NoTests;
use crate::errors::{EXIT_INTERRUPTED, EXIT_NO_TESTS, EXIT_OK, EXIT_TEST_FAILED, Result};
use crate::events::{FailedAttempt, RunEvent, RunSummary, TestResult, TestStatus};
use crate::libtest::{KillReason, OutputEvent};
use crate::plan::Plan;

/// The longest the loop sleeps while binaries run or wait: how often it looks at running
/// children when nothing wakes it, and retries binaries whose resources were busy.
pub const TICK: Duration = Duration::from_millis(20);

/// How many wake-ups (each at most one 16 KiB chunk of output) wait for the loop at most;
/// past that a child's reader waits, and so does the child, in its pipe.
pub const WAKE_QUEUE: usize = 64;

/// The name given to a binary's listing failure in results.
pub const LISTING: &str = "(listing)";

/// Everything one run knows: its plan and caps, its units and the order to try them, the
/// loop's channel, the hooks and the sink, and what was measured and reported so far.
pub(super) struct Runner<'a> {
    pub(super) plan: &'a Plan,
    pub(super) caps: Caps,
    /// The run's environment (every binary gets it).
    pub(super) env: BTreeMap<String, String>,
    pub(super) run_dir: RunDir,
    pub(super) units: Vec<Unit>,
    /// Indices of `units`, in the order they are tried.
    pub(super) order: Vec<usize>,
    pub(super) sender: SyncSender<Wake>,
    pub(super) receiver: Receiver<Wake>,
    pub(super) hooks: &'a mut dyn RunHooks,
    pub(super) sink: &'a mut dyn FnMut(&RunEvent),
    pub(super) results: Vec<TestResult>,
    pub(super) measurements: Measurements,
    pub(super) failed: bool,
    /// A test was seen failing (its result may come later): enough for `--fail-fast`.
    pub(super) failing_seen: bool,
    /// The signal that interrupted the run.
    pub(super) interrupted: Option<i32>,
    /// When the first binary could start.
    pub(super) loop_started: Instant,
    /// When each binary was listed (its units made): a binary waits for the width from
    /// then, as listings go on while the loop runs.
    pub(super) listed_at: HashMap<crate::events::BinaryId, Instant>,
    /// What every reproduce line of the run shares; each binary gets its own
    /// `CAPPED_REPRODUCE` from it.
    pub(super) reproduce: crate::plan::reproduce::ReproduceBase,
    /// The width the degrade decisions allow.
    pub(super) degrade_width: u32,
    /// The width in force: the lowest of `degrade_width` and the EMFILE adapter's.
    pub(super) width: u32,
    /// Lowers the width after "Too many open files" and decides reruns.
    pub(super) emfile: EmfileAdapter,
    /// The width's changes after the start (time since the loop started, new width), for
    /// the summary.
    pub(super) width_changes: Vec<(Duration, u32)>,
    /// A binary ended since the width was last decided.
    pub(super) width_check_due: bool,
    /// What earlier runs say each test takes, by `binary name` (the test history), for
    /// splitting a binary by time.
    pub(super) learned_times: std::collections::BTreeMap<String, Duration>,
    /// Each binary's highest peak RSS in earlier runs (the test history), for memory
    /// admission.
    pub(super) learned_peaks: HashMap<String, u64>,
    /// Units already said to wait for memory.
    pub(super) memory_noticed: std::collections::HashSet<usize>,
    /// Each finished process's binary, duration and peak RSS, for the test history.
    pub(super) binary_runs: Vec<(String, Option<Duration>, Option<u64>)>,
    /// Failed attempts of tests being retried, by binary and name.
    pub(super) attempts: HashMap<(String, String), Vec<FailedAttempt>>,
    /// Peak RSS per binary (the highest of its processes), in the order they first finished.
    pub(super) peaks: Vec<(String, u64)>,
    /// Binaries still being listed; `None` once every listing is in and the run opened.
    pub(super) intake: Option<super::intake::Intake<'a>>,
    /// What the run reported before its opening event, sent right after it.
    pub(super) held: Option<super::intake::Held>,
}

impl Runner<'_> {
    pub(super) fn emit(&mut self, event: RunEvent) {
        match &mut self.held {
            Some(held) => held.push(event),
            None => (self.sink)(&event),
        }
    }

    pub(super) fn finish_test(&mut self, result: TestResult) {
        let Some(result) = self.retry_or_settle(result) else {
            return;
        };
        let flaky_fails =
            self.plan.flaky_fails && matches!(result.status, TestStatus::Flaky { .. });
        if result.status.is_failure() || flaky_fails {
            self.failed = true;
        }
        self.emit(RunEvent::TestFinished(result.clone()));
        self.results.push(result);
    }

    /// Under `--retries`: holds a failed result back and runs its test again in a fresh
    /// process (`None`), or settles a retried test — passed after failing is
    /// [`TestStatus::Flaky`], failing every time keeps its last failure with a note.
    fn retry_or_settle(&mut self, mut result: TestResult) -> Option<TestResult> {
        if self.plan.retries == 0 || result.name.starts_with('(') {
            return Some(result);
        }
        let key = (result.binary.to_string(), result.name.clone());
        let failed_before = self.attempts.get(&key).map_or(0, Vec::len);
        let retry = result.status.is_failure()
            && !matches!(result.status, TestStatus::NotRun { .. })
            && failed_before < self.plan.retries as usize
            && !self.stopping();
        if retry && self.queue_retry(&result) {
            self.emit(RunEvent::Notice {
                message: format!(
                    "{} {} {}; running it again ({} of {})",
                    result.binary,
                    result.name,
                    result.status.keyword(),
                    failed_before + 1,
                    self.plan.retries
                ),
            });
            self.attempts.entry(key).or_default().push(FailedAttempt {
                status: Box::new(result.status),
                duration: result.duration,
                output: result.output,
            });
            return None;
        }
        let Some(failed) = self.attempts.remove(&key) else {
            return Some(result);
        };
        if result.status == TestStatus::Passed {
            result.status = TestStatus::Flaky { failed };
        } else {
            let note = format!("(failed on each of its {} attempts)", failed.len() + 1);
            if !result.output.is_empty() {
                result.output.push_str("\n\n");
            }
            result.output.push_str(&note);
        }
        Some(result)
    }

    /// Queues a unit that runs `result`'s test alone; false when its binary's listing does
    /// not know it, or it is a doc test (which cannot be selected by name).
    fn queue_retry(&mut self, result: &TestResult) -> bool {
        let Some(unit) = self.units.iter().find(|u| {
            u.binary.id == result.binary
                && !u.binary.is_doc()
                && u.listing.tests.iter().any(|t| t.name == result.name)
        }) else {
            return false;
        };
        let names = vec![result.name.clone()];
        let mut again = Unit::new(
            unit.binary.clone(),
            super::work::subset(&unit.listing, &names),
            None,
            unit.claimed.clone(),
            self.run_dir
                .events_file(self.units.len(), &unit.binary.id.target),
            Some(names),
            &self.plan.test_args,
        );
        let index = self.units.len();
        again.retry = true;
        self.units.push(again);
        self.order.insert(0, index);
        true
    }

    /// Binaries (of the units from `first` on) that could not even list their tests fail
    /// the run, with the reason; one whose listing the run's interruption cut short only
    /// never ran.
    pub(super) fn report_list_errors(&mut self, first: usize) {
        for index in first..self.units.len() {
            let Some(error) = self.units[index].list_error.clone() else {
                continue;
            };
            let binary = self.units[index].binary.id.clone();
            self.units[index].state = State::Done;
            // Listings go on while the first binaries run: a Ctrl-C or a `--fail-fast`
            // stop then says nothing of the binaries still being listed.
            if error == super::list::INTERRUPTED || error == super::list::STOPPED {
                self.emit_never_ran(binary, error);
                continue;
            }
            self.failed = true;
            self.finish_test(TestResult {
                binary: binary.clone(),
                name: LISTING.to_string(),
                status: TestStatus::Failed,
                duration: None,
                output: error.clone(),
            });
            self.emit_never_ran(binary, error);
        }
    }

    /// Pending units, in the order they are tried.
    pub(super) fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&i| self.units[i].is_pending())
    }

    /// Running units, by index.
    pub(super) fn running(&self) -> Vec<usize> {
        (0..self.units.len())
            .filter(|&i| self.units[i].running().is_some())
            .collect()
    }

    /// Whether nothing more starts: interrupted, or `--fail-fast` after a failure.
    pub(super) fn stopping(&self) -> bool {
        self.interrupted.is_some() || (self.plan.fail_fast && (self.failed || self.failing_seen))
    }

    /// Asks the hooks for the width (between binaries) and applies the EMFILE adapter's.
    fn decide_width(&mut self) {
        self.width_check_due = false;
        let decision = self.hooks.width(self.plan.caps.test_threads());
        self.degrade_width = decision
            .width
            .clamp(1, self.plan.caps.test_threads().max(1));
        if let Some(message) = decision.notice {
            self.emit(RunEvent::Notice { message });
        }
        self.apply_width();
    }

    /// The width in force: the lowest of the degrade decision and the EMFILE adapter's.
    pub(super) fn apply_width(&mut self) {
        let emfile = u32::try_from(self.emfile.width()).unwrap_or(u32::MAX);
        let width = self.degrade_width.min(emfile).max(1);
        if width != self.width {
            self.width_changes
                .push((self.loop_started.elapsed(), width));
        }
        self.width = width;
    }

    /// Runs every unit to its end (or the run's stop), then reports what never started.
    pub(super) fn run_loop(&mut self) -> Result<()> {
        self.loop_started = Instant::now();
        loop {
            self.handle_signals();
            self.take_listings();
            if !self.stopping() {
                if self.width_check_due && self.pending().next().is_some() {
                    self.decide_width();
                }
                while let Some(message) = self.hooks.notice() {
                    self.emit(RunEvent::Notice { message });
                }
                self.start_ready()?;
            }
            let running = self.running();
            if running.is_empty()
                && !self.listing()
                && (self.stopping() || self.pending().next().is_none())
            {
                break;
            }
            self.wait();
            for index in self.running() {
                self.poll(index);
            }
        }
        self.mark_not_run();
        Ok(())
    }

    /// Sleeps until a child's thread wakes the loop or the next look is due (the earliest
    /// of [`TICK`] and every running binary's [`RunningBinary::next_due`]), then handles
    /// every wake-up that arrived.
    fn wait(&mut self) {
        let now = Instant::now();
        let timeout = self
            .units
            .iter()
            .filter_map(Unit::running)
            .filter_map(RunningBinary::next_due)
            .map(|due| due.saturating_duration_since(now))
            .fold(TICK, Duration::min);
        if let Ok(wake) = self.receiver.recv_timeout(timeout) {
            self.handle(wake);
            // At most a queue's worth: a child that floods its output keeps the queue full,
            // and signals, timeouts and the watchdog must still be looked at.
            for _ in 1..WAKE_QUEUE {
                let Ok(wake) = self.receiver.try_recv() else {
                    break;
                };
                self.handle(wake);
            }
        }
    }

    fn handle_signals(&mut self) {
        let Some(signal) = signals::take_pending() else {
            return;
        };
        let first = self.interrupted.is_none();
        self.interrupted.get_or_insert(signal);
        if first {
            self.emit(RunEvent::Notice {
                message: format!(
                    "interrupted ({}): stopping every test binary (SIGKILL after {}s; again to kill now)",
                    crate::libtest::describe_signal(signal),
                    GRACE.as_secs()
                ),
            });
        }
        let now = Instant::now();
        for index in self.running() {
            if let Some(running) = self.units[index].running_mut() {
                running.killed.get_or_insert(KillReason::Interrupted);
                if first {
                    running.process.forward(signal, now);
                } else {
                    running.process.kill();
                }
            }
        }
    }

    fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Output {
                unit,
                stderr,
                bytes,
                at,
            } => {
                self.read_events(unit);
                let Some(running) = self.units[unit].running_mut() else {
                    return;
                };
                let events = if stderr {
                    running.verdicts.stderr(&bytes, at)
                } else {
                    running.verdicts.stdout(&bytes, at)
                };
                self.output_events(unit, events);
            }
            Wake::Closed { unit } => {
                if let Some(running) = self.units[unit].running_mut() {
                    running.process.stream_closed();
                }
            }
            // Its last events now; the look at every running binary right after the wait
            // reaps it.
            Wake::Exited { unit } => self.read_events(unit),
            // Taken after the wait, with every other listing that arrived.
            Wake::Listed => {}
        }
    }

    fn output_events(&mut self, unit: usize, events: Vec<OutputEvent>) {
        let binary = self.units[unit].binary.id.clone();
        for event in events {
            match event {
                OutputEvent::Started { name } => self.emit(RunEvent::TestStarted {
                    binary: binary.clone(),
                    name,
                }),
                OutputEvent::Finished(result) => {
                    if self.defers(unit, &result) {
                        self.units[unit].deferred.push(result);
                    } else {
                        self.finish_test(result);
                    }
                }
                // With retries a failure may still pass: `--fail-fast` waits for the end.
                OutputEvent::Failing { .. } => self.failing_seen |= self.plan.retries == 0,
                OutputEvent::Line { test, stderr, text } => self.emit(RunEvent::TestOutput {
                    binary: binary.clone(),
                    test,
                    stderr,
                    line: text,
                }),
                OutputEvent::Slow { name } => self.emit(RunEvent::Notice {
                    message: format!("{binary} {name} has been running for over 60 seconds"),
                }),
            }
        }
    }

    /// New lines of a running binary's events file, fed to its parser.
    pub(super) fn read_events(&mut self, unit: usize) {
        let Some(running) = self.units[unit].running_mut() else {
            return;
        };
        let now = Instant::now();
        let new = running.tail.read();
        let mut out = Vec::new();
        for event in &new {
            out.extend(running.verdicts.event(event, now));
        }
        out.extend(running.verdicts.read_logfile(now));
        self.output_events(unit, out);
    }

    /// Looks at a running binary: events, watchdog, exit, timeout, and finishes it once it
    /// exited and its output is read.
    fn poll(&mut self, index: usize) {
        self.read_events(index);
        let id = self.units[index].binary.id.clone();
        let timeout = self.plan.timeout;
        let Some(running) = self.units[index].running_mut() else {
            return;
        };
        let now = Instant::now();
        if !running.process.has_exited() {
            if running.killed.is_none()
                && let Some(reason) = self.hooks.watch(&id, running.process.pid())
            {
                running.killed = Some(reason);
                running.process.terminate(now);
            }
            if running.killed.is_none()
                && let Some(test) = running.verdicts.capped_timed_out()
            {
                running.killed = Some(KillReason::TestTimedOut {
                    test: test.to_string(),
                });
                running.process.terminate(now);
            }
            // An exit first: whatever it left in its group goes with it, before its pid is
            // released.
            if !running.process.reap_if_exited(now) {
                if running.killed.is_none()
                    && running.deadline.is_some_and(|deadline| now >= deadline)
                {
                    running.killed = Some(KillReason::Timeout {
                        after: timeout.unwrap_or_default(),
                    });
                    running.process.terminate(now);
                } else {
                    running.process.kill_after_grace(now);
                }
            }
        }
        if running.process.is_done(now) {
            self.finish_binary(index);
        }
    }

    /// The summary, sent as [`RunEvent::RunFinished`] and returned.
    pub(super) fn finish(mut self, duration: Duration) -> RunSummary {
        let mut summary = self.measurements.summarize(&self.results, duration);
        summary.junit_path = self.plan.output.junit.clone();
        summary.binary_peak_rss = std::mem::take(&mut self.peaks);
        summary.width_changes = std::mem::take(&mut self.width_changes);
        let failed = self.failed || self.results.iter().any(|r| r.status.is_failure());
        let ran_nothing = !failed
            && self.interrupted.is_none()
            && self
                .results
                .iter()
                .all(|r| matches!(r.status, TestStatus::Ignored));
        let no_tests_fail = ran_nothing && self.plan.no_tests == NoTests::Fail;
        if ran_nothing && self.plan.no_tests != NoTests::Pass {
            let selection = match &self.plan.filter {
                Some(filter) => format!("the filter `{}` selects none", filter.escape_debug()),
                None => "nothing was selected".to_string(),
            };
            let verdict = if no_tests_fail {
                "exit 4 (--no-tests=fail, the default; --no-tests=warn or pass accept an empty run)"
            } else {
                "accepted (--no-tests=warn)"
            };
            self.emit(RunEvent::Notice {
                message: format!("no tests to run: {selection}; {verdict}"),
            });
        }
        summary.exit_code = if self.interrupted.is_some() {
            EXIT_INTERRUPTED
        } else if failed {
            EXIT_TEST_FAILED
        } else if no_tests_fail {
            EXIT_NO_TESTS
        } else {
            EXIT_OK
        };
        self.emit(RunEvent::RunFinished(summary.clone()));
        let _ = &self.run_dir;
        summary
    }
}
