//! A unit's end and the run's: turning a finished binary into results (its parser's, a
//! `(binary)` failure for a non-zero exit without a failed test, the kill reason), measuring
//! what it held, releasing its slots; and when the run stops early, reporting every test
//! that never started as not run, with the reason.
//!
//! ## Invariants
//!
//! * Every listed test of every unit gets exactly one result: from the binary's output or
//!   events, from its end (crashed, timed out, killed for memory, not run), from an EMFILE
//!   rerun in place of the first, or from [`Runner::mark_not_run`].
//! * A unit's guard is dropped (its slots released) only after its process was reaped and
//!   the hooks were told ([`super::RunHooks::ended`]), and the width is re-decided before
//!   the next binary starts.

use std::time::Duration;

use capped_model::protocol::{ListedTest, now_us};

use super::binary::{RunningBinary, State};
use super::binary_schedule;
use super::runner::Runner;
use crate::events::{BinaryId, RunEvent, TestResult, TestStatus};
use crate::libtest::{BinaryEnd, KillReason};

/// The name given to a binary that failed outside any test.
pub const BINARY: &str = "(binary)";

/// How many times one binary's tests are run again after `#[capped]` timeouts.
const MAX_RESTARTS: u8 = 16;

impl Runner<'_> {
    /// Finishes a running unit whose process was reaped and whose output was read: its
    /// results, the hooks' memory verdict, the EMFILE policy, its measurements; then
    /// releases its slots and reports its end.
    pub(super) fn finish_binary(&mut self, index: usize) {
        self.read_events(index);
        let State::Running(running) = std::mem::replace(&mut self.units[index].state, State::Done)
        else {
            return;
        };
        let RunningBinary {
            process,
            guard,
            width_held,
            started,
            started_us,
            run_width,
            killed,
            verdicts,
            tail,
            ..
        } = *running;
        let (pid, status) = (process.pid(), process.status());
        let end_us = now_us();
        let binary = self.units[index].binary.id.clone();
        let harness = self.units[index].listing.harness;
        let claimed = self.units[index].claimed.clone();
        use std::os::unix::process::ExitStatusExt;
        let signal = status.and_then(|s| s.signal());
        let memory = self.hooks.ended(&binary, pid, signal, killed.as_ref());
        let killed = memory.killed.or(killed);
        let end = BinaryEnd {
            exit_code: status.and_then(|s| s.code()),
            signal,
            killed: killed.clone(),
        };
        let resolution = verdicts.finish(&end);
        let parsed = resolution.parsed;
        self.restart(index, resolution.restart, &killed);
        let mut remaining = Vec::new();
        for result in parsed.remaining {
            if self.defers(index, &result) {
                self.units[index].deferred.push(result);
            } else {
                remaining.push(result);
            }
        }
        let remaining = self.adapt_to_emfile(index, run_width, remaining, &parsed.stray_output);
        for result in remaining {
            self.finish_test(result);
        }
        // A binary that exits non-zero while every test passed still fails the run.
        let all_passed = parsed.all.iter().all(|r| !r.status.is_failure());
        if status.is_none_or(|s| !s.success()) && all_passed {
            self.failed = true;
            self.finish_test(TestResult {
                binary: binary.clone(),
                name: BINARY.to_string(),
                status: TestStatus::Failed,
                duration: None,
                output: format!(
                    "the test binary exited with {} although no test failed\n{}",
                    status.map_or_else(|| "an unknown status".to_string(), |s| s.to_string()),
                    parsed.stray_output
                ),
            });
        }
        self.measurements.add_binary(
            capped_model::resource::WIDTH,
            started_us,
            end_us,
            width_held,
        );
        for group in &claimed {
            self.measurements.add_binary(group, started_us, end_us, 1);
        }
        self.measurements
            .add_events(tail.events(), harness, end_us, &claimed);
        if let Some(peak) = memory.peak_rss {
            // One entry per binary, also when it ran as several processes: the highest.
            let name = binary.to_string();
            match self.peaks.iter_mut().find(|(n, _)| *n == name) {
                Some((_, highest)) => *highest = (*highest).max(peak),
                None => self.peaks.push((name, peak)),
            }
        }
        let running_tests: Vec<String> = parsed
            .all
            .iter()
            .filter(|r| matches!(r.status, TestStatus::KilledForMemory { .. }))
            .map(|r| r.name.clone())
            .collect();
        self.binary_runs
            .push((binary.to_string(), Some(started.elapsed()), memory.peak_rss));
        drop(guard);
        self.width_check_due = true;
        self.emit(RunEvent::BinaryFinished {
            binary,
            exit_code: end.exit_code,
            signal: end.signal,
            killed_because: killed
                .as_ref()
                .map(|k| describe_kill_while(k, &running_tests)),
            duration: started.elapsed(),
            peak_rss: memory.peak_rss,
            stray_output: parsed.stray_output,
        });
    }

    /// Queues a new process of unit `index`'s binary for `names`, the tests that had no
    /// verdict when a `#[capped]` test's timeout ended its process (or reports them not run
    /// when the run is stopping or the binary was restarted too often).
    fn restart(&mut self, index: usize, names: Vec<String>, killed: &Option<KillReason>) {
        if names.is_empty() {
            return;
        }
        let test = match killed {
            Some(KillReason::TestTimedOut { test }) => test.clone(),
            _ => "a test".to_string(),
        };
        let unit = &self.units[index];
        let binary = unit.binary.id.clone();
        if self.stopping() || unit.restarts >= MAX_RESTARTS || unit.binary.is_doc() {
            let reason = if unit.binary.is_doc() {
                format!("`{test}` timed out; doc tests cannot be selected by name to run again")
            } else if self.stopping() {
                format!("`{test}` timed out and the run stopped before this test could run again")
            } else {
                format!(
                    "`{test}` timed out and the binary was already restarted {MAX_RESTARTS} times"
                )
            };
            for name in names {
                self.finish_test(TestResult {
                    binary: binary.clone(),
                    name,
                    status: TestStatus::NotRun {
                        reason: reason.clone(),
                    },
                    duration: None,
                    output: String::new(),
                });
            }
            return;
        }
        let listing = super::work::subset(&unit.listing, &names);
        let mut again = super::binary::Unit::new(
            unit.binary.clone(),
            listing,
            None,
            unit.claimed.clone(),
            self.run_dir
                .events_file(self.units.len(), &unit.binary.id.target),
            Some(names.clone()),
            &self.plan.test_args,
        );
        again.restarts = unit.restarts + 1;
        again.rerun = unit.rerun;
        self.emit(RunEvent::Notice {
            message: format!(
                "{binary}: `{test}` ran past its timeout; running its {} other unfinished test{} in a new process",
                names.len(),
                if names.len() == 1 { "" } else { "s" }
            ),
        });
        let new_index = self.units.len();
        self.units.push(again);
        self.order.insert(0, new_index);
    }

    /// Tests of binaries that never started, when the run stops early.
    pub(super) fn mark_not_run(&mut self) {
        let reason = if self.interrupted.is_some() {
            "the run was interrupted".to_string()
        } else {
            "--fail-fast stopped the run after a failure".to_string()
        };
        let pending: Vec<usize> = self.pending().collect();
        let runs_ignored = binary_schedule::runs_ignored(&self.plan.test_args);
        for index in pending {
            self.finish_unstarted(index, |test| {
                if test.ignored && !runs_ignored {
                    TestStatus::Ignored
                } else {
                    TestStatus::NotRun {
                        reason: reason.clone(),
                    }
                }
            });
        }
    }

    /// Marks unit `index` done without running it and reports each of its listed tests
    /// with the status `status_of` gives it.
    pub(super) fn finish_unstarted(
        &mut self,
        index: usize,
        status_of: impl Fn(&ListedTest) -> TestStatus,
    ) {
        self.units[index].state = State::Done;
        let binary = self.units[index].binary.id.clone();
        let tests = std::mem::take(&mut self.units[index].listing.tests);
        for test in &tests {
            self.finish_test(TestResult {
                binary: binary.clone(),
                name: test.name.clone(),
                status: status_of(test),
                duration: None,
                output: String::new(),
            });
        }
        self.units[index].listing.tests = tests;
    }

    /// Reports the end of a binary that never ran, with why.
    pub(super) fn emit_never_ran(&mut self, binary: BinaryId, why: String) {
        self.emit(RunEvent::BinaryFinished {
            binary,
            exit_code: None,
            signal: None,
            killed_because: None,
            duration: Duration::ZERO,
            peak_rss: None,
            stray_output: why,
        });
    }
}

/// [`describe_kill`], naming the tests that were running for a memory kill:
/// `killed: memory cap 300 MiB exceeded (peak 2.1 GiB) while running big::alloc`.
pub fn describe_kill_while(reason: &KillReason, running: &[String]) -> String {
    let text = describe_kill(reason);
    if matches!(reason, KillReason::Memory { .. }) && !running.is_empty() {
        format!("{text} while running {}", running.join(", "))
    } else {
        text
    }
}

/// `timed out after 5s`, `killed: memory cap 300 MiB exceeded (peak 2.1 GiB)`, …
pub fn describe_kill(reason: &KillReason) -> String {
    match reason {
        KillReason::Timeout { after } => format!("timed out after {}", short_duration(*after)),
        KillReason::Memory {
            limit: Some(limit),
            peak,
            by_watchdog: true,
        } => crate::watchdog::MemoryVerdict::CapExceeded {
            limit: *limit,
            peak: *peak,
        }
        .to_string(),
        KillReason::Memory {
            limit: Some(limit),
            peak,
            by_watchdog: false,
        } => format!(
            "killed by the kernel at the cgroup's memory.max of {} (peak {})",
            capped_model::units::format_size(*limit),
            capped_model::units::format_size(*peak)
        ),
        KillReason::Memory {
            limit: None, peak, ..
        } => crate::watchdog::MemoryVerdict::OomKill { peak: *peak }.to_string(),
        KillReason::Interrupted => "the run was interrupted".to_string(),
        KillReason::TestTimedOut { test } => format!(
            "`{test}` ran past its own timeout; the process was ended so that its other tests could run again"
        ),
    }
}

/// `5s`, `1.5s`, `250ms`: a duration as a user would have typed it.
pub fn short_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_kills_name_the_cap_and_the_running_tests() {
        let cap = KillReason::Memory {
            limit: Some(300 << 20),
            peak: 2 << 30,
            by_watchdog: true,
        };
        assert_eq!(
            describe_kill_while(&cap, &["big::alloc".into()]),
            "killed: memory cap 300 MiB exceeded (peak 2 GiB) while running big::alloc"
        );
        let oom = KillReason::Memory {
            limit: None,
            peak: 1 << 30,
            by_watchdog: false,
        };
        let text = describe_kill_while(&oom, &[]);
        assert!(
            text.starts_with("killed by the kernel's OOM killer"),
            "{text}"
        );
        let timeout = KillReason::Timeout {
            after: Duration::from_secs(1),
        };
        assert_eq!(
            describe_kill_while(&timeout, &["a".into()]),
            "timed out after 1s"
        );
    }

    #[test]
    fn kills_are_described() {
        assert_eq!(
            describe_kill(&KillReason::Timeout {
                after: Duration::from_secs(5)
            }),
            "timed out after 5s"
        );
        assert_eq!(
            describe_kill(&KillReason::Interrupted),
            "the run was interrupted"
        );
    }
}
