//! Starting binaries: which pending unit starts next, with how many width slots, and the
//! spawn itself (its command line and environment). The choices are [`super::binary_schedule`]'s;
//! this is where they meet the lock files and the process table.
//!
//! ## Invariants
//!
//! * A unit starts only holding everything it needs, taken in one non-blocking request
//!   (width `k` and its claimed groups, all or nothing): a busy resource passes the unit over
//!   until a later look, it never blocks the loop or holds a part while waiting.
//! * The estimate of the width in use (a plain binary's `k`, a harness binary's
//!   [`binary_schedule::harness_demand`]) only decides what to *try*; the lock files decide what
//!   runs, so the width holds whatever the estimate says.
//! * Deterministic mode starts one unit at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capped_model::protocol::{self, GroupLimit, ListedTest, env as vars, now_us};
use capped_model::{Guard, Request, Scope};

use super::binary::{RunningBinary, State, Unit};
use super::binary_schedule;
use super::child::ChildProcess;
use super::env;
use super::events_tail::EventsTail;
use super::file_tail::FileTail;
use super::runner::Runner;
use super::verdicts::{Source, Verdicts};
use crate::errors::Result;
use crate::events::{RunEvent, TestStatus};

/// How long a binary waiting for a group keeps its width for the group's holder to exit
/// once that holder's tests are all done: a process exits in milliseconds; one that hangs
/// in its exit must not hold back the run.
const RESERVE_FOR: Duration = Duration::from_secs(1);

impl Runner<'_> {
    /// The width the running binaries use or may soon use.
    fn estimated_usage(&self) -> u32 {
        let width = self.width;
        let mut used = 0u32;
        for unit in &self.units {
            let Some(running) = unit.running() else {
                continue;
            };
            if unit.listing.harness {
                used += self.harness_demand(unit, running);
            } else {
                used += running.width_held;
            }
        }
        used.min(width)
    }

    fn harness_demand(&self, unit: &Unit, running: &RunningBinary) -> u32 {
        let runnable = binary_schedule::runnable(&unit.listing.tests, &self.plan.test_args);
        let not_started: Vec<&ListedTest> = runnable
            .into_iter()
            .filter(|t| !running.tail.has_started(&t.name))
            .collect();
        binary_schedule::harness_demand(
            &not_started,
            running.tail.width_in_use(),
            running.run_width.min(self.width),
            |group| self.caps.group(group).max,
            self.caps.mem_budget(),
        )
    }

    /// Starts every pending binary whose resources are free, in order, while the width is
    /// not all in use.
    /// Memory admission by what earlier runs measured: a binary whose learned peak RSS,
    /// beside the learned peaks of the binaries running now, would pass the memory budget
    /// waits (saying so once). Alone it always starts, so nothing waits forever.
    fn waits_for_memory(&mut self, index: usize) -> bool {
        let (Some(budget), Some(&peak)) = (
            self.plan.caps.mem_budget(),
            self.learned_peaks
                .get(&self.units[index].binary.id.to_string()),
        ) else {
            return false;
        };
        let running = self.running();
        if running.is_empty() {
            return false;
        }
        let beside: u64 = running
            .iter()
            .filter_map(|&i| {
                self.learned_peaks
                    .get(&self.units[i].binary.id.to_string())
                    .copied()
            })
            .sum();
        if beside.saturating_add(peak) <= budget {
            return false;
        }
        if self.memory_noticed.insert(index) {
            let size = capped_model::units::format_size;
            let message = format!(
                "{} waits for memory: it peaked at {} in earlier runs, and beside the {} of what runs now that passes the memory budget of {}",
                self.units[index].binary.id,
                size(peak),
                size(beside),
                size(budget)
            );
            self.emit(RunEvent::Notice { message });
        }
        true
    }

    /// Whether a binary of this run that holds a group unit `index` waits for has had
    /// every verdict (it is only exiting) for less than [`RESERVE_FOR`]: the unit, ahead of
    /// what follows in the order, keeps its width for the moment the group frees.
    fn group_frees_soon(&self, index: usize) -> bool {
        let claims = &self.units[index].claimed;
        !claims.is_empty()
            && self.units.iter().any(|unit| {
                unit.running().is_some_and(|running| {
                    unit.claimed.iter().any(|group| claims.contains(group))
                        && running
                            .verdicts
                            .all_decided_at()
                            .is_some_and(|at| at.elapsed() < RESERVE_FOR)
                })
            })
    }

    pub(super) fn start_ready(&mut self) -> Result<()> {
        let width = self.width;
        let mut used = self.estimated_usage();
        let candidates: Vec<usize> = self.pending().collect();
        for index in candidates {
            if used >= width {
                break;
            }
            if self.plan.caps.deterministic() && !self.running().is_empty() {
                break;
            }
            if self.units[index].runnable == 0 {
                self.skip_without_running(index);
                continue;
            }
            if !self.hooks.may_start(&self.units[index].binary) {
                break;
            }
            if self.waits_for_memory(index) {
                continue;
            }
            let idle = width - used;
            let unit = &self.units[index];
            let harness = unit.listing.harness;
            let widths: Vec<u32> = if harness {
                vec![0]
            } else {
                (1..=binary_schedule::plain_width(unit.runnable, idle))
                    .rev()
                    .collect()
            };
            let mut taken = None;
            for k in widths {
                let request = Request::new()
                    .width(k)
                    .groups(unit.claimed.iter().cloned())
                    .label(unit.binary.id.to_string());
                match request.try_acquire_with(&self.caps) {
                    Ok(Some(guard)) => {
                        taken = Some((k, guard));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let message = format!("cannot take its resources: {e}");
                        self.fail_without_running(index, message);
                        break;
                    }
                }
            }
            let Some((k, guard)) = taken else {
                if let Some(unit) = self.units.get_mut(index)
                    && unit.is_pending()
                {
                    unit.first_blocked.get_or_insert_with(Instant::now);
                    // Its group is about to free: what would fill its width now would hold
                    // it back for as long as that runs.
                    if self.group_frees_soon(index) {
                        used += if harness { 1 } else { idle };
                    }
                }
                continue;
            };
            // Waits: for a claimed group, from when it was first found busy; for the
            // width of a plain binary, from when its binary was listed (it is ready then),
            // so the summary's figures count every acquisition.
            let group_wait = self.units[index]
                .first_blocked
                .map_or(Duration::ZERO, |blocked| blocked.elapsed());
            for group in self.units[index].claimed.clone() {
                self.measurements.add_wait(&group, group_wait);
            }
            if !harness {
                let listed = self
                    .listed_at
                    .get(&self.units[index].binary.id)
                    .copied()
                    .unwrap_or(self.loop_started);
                self.measurements
                    .add_wait(capped_model::resource::WIDTH, listed.elapsed());
            }
            if !harness {
                self.split_if_narrow(index, k);
            }
            self.spawn(index, k, guard)?;
            used += if harness {
                let Some(running) = self.units[index].running() else {
                    unreachable!("just spawned")
                };
                self.harness_demand(&self.units[index], running).max(1)
            } else {
                k
            };
        }
        Ok(())
    }

    /// A binary whose tests are all ignored: report them without running it.
    fn skip_without_running(&mut self, index: usize) {
        self.finish_unstarted(index, |_| TestStatus::Ignored);
    }

    fn fail_without_running(&mut self, index: usize, message: String) {
        self.finish_unstarted(index, |_| TestStatus::NotRun {
            reason: message.clone(),
        });
        self.failed = true;
        let binary = self.units[index].binary.id.clone();
        self.emit_never_ran(binary, message);
    }

    /// The environment of one binary beyond the run's: its events file, the width it holds,
    /// and for a binary claimed by groups, those groups made process-local with `max = 1`
    /// (the binary as a whole holds one slot) and their slot ids.
    fn binary_env(&self, index: usize, width_held: u32, guard: &Guard) -> Vec<(String, String)> {
        let unit = &self.units[index];
        let mut extra = vec![
            (
                vars::EVENTS.to_string(),
                unit.events_path.display().to_string(),
            ),
            (
                vars::REPRODUCE.to_string(),
                protocol::format_reproduce(&self.reproduce.for_binary(&unit.binary.id)),
            ),
        ];
        if self.width < self.plan.caps.test_threads() {
            // A lowered width: harness binaries take only the first slots; plain ones hold
            // their own anyway.
            extra.push((vars::TEST_THREADS.to_string(), self.width.to_string()));
            extra.push(("RUST_TEST_THREADS".to_string(), self.width.to_string()));
        }
        if width_held > 0 {
            extra.push((vars::WIDTH_HELD.to_string(), width_held.to_string()));
            extra.push(("RUST_TEST_THREADS".to_string(), width_held.to_string()));
        }
        if !unit.claimed.is_empty() {
            let mut limits: BTreeMap<String, GroupLimit> = self.caps.groups().clone();
            for group in &unit.claimed {
                limits.insert(
                    group.clone(),
                    GroupLimit {
                        max: 1,
                        scope: Scope::Process,
                    },
                );
            }
            extra.push((
                vars::GROUPS.to_string(),
                protocol::format_groups(limits.iter().map(|(k, v)| (k.as_str(), *v))),
            ));
            extra.extend(guard.envs());
            // The process holds slot i of a device-backed group: it sees device i only.
            for group in &unit.claimed {
                let (Some(devices), Some(slot)) = (self.plan.devices.get(group), guard.slot(group))
                else {
                    continue;
                };
                let Some(id) = devices.ids.get(slot as usize) else {
                    continue;
                };
                extra.push((vars::device_var(group), id.clone()));
                if let Some(var) = self.plan.config.group(group).pin_var() {
                    extra.push((var, id.clone()));
                }
            }
        }
        extra
    }

    /// Spawns unit `index` holding `guard` (`width_held` of it width slots) and marks it
    /// running; a binary that cannot be spawned fails without running.
    fn spawn(&mut self, index: usize, width_held: u32, guard: Guard) -> Result<()> {
        let extra = self.binary_env(index, width_held, &guard);
        let unit = &self.units[index];
        let mut command = env::command_for(
            &unit.binary,
            &self.plan.workspace.target_dir,
            &self.env,
            &extra,
        );
        if width_held > 0 {
            command.args(["--test-threads", &width_held.to_string()]);
        }
        // Plain libtest writes its verdicts where the runner says, out of the tests' reach.
        let logfile = (!unit.listing.harness && unit.listing.logfile)
            .then(|| unit.events_path.with_extension("log"));
        if let Some(path) = &logfile {
            command.arg("--logfile").arg(path);
        }
        match &unit.selection {
            Some(names) => {
                command.args(binary_schedule::selection_args(&self.plan.test_args, names));
            }
            None => {
                command.args(self.plan.filter.as_deref());
                command.args(&self.plan.test_args);
            }
        }
        let process = match ChildProcess::spawn(command, index, &self.sender) {
            Ok(process) => process,
            Err(e) => {
                let message = format!("cannot run {}: {e}", unit.binary.path.display());
                drop(guard);
                self.fail_without_running(index, message);
                return Ok(());
            }
        };
        let pid = process.pid();
        let threads = if unit.listing.harness {
            self.width as usize
        } else {
            width_held as usize
        };
        let source = match logfile {
            Some(path) => Source::Logfile(FileTail::new(path)),
            None if unit.listing.harness => Source::Events,
            None => Source::Output,
        };
        let verdicts = Verdicts::new(
            unit.binary.id.clone(),
            &unit.listing,
            source,
            pid,
            threads,
            &self.plan.test_args,
        );
        let started = Instant::now();
        let binary = unit.binary.id.clone();
        let groups = unit.claimed.clone();
        let tail = EventsTail::new(unit.events_path.clone());
        self.units[index].state = State::Running(Box::new(RunningBinary {
            process,
            guard,
            width_held,
            started,
            started_us: now_us(),
            deadline: self.plan.timeout.map(|t| started + t),
            run_width: self.width,
            killed: None,
            verdicts,
            tail,
        }));
        self.hooks.spawned(&binary, pid);
        self.emit(RunEvent::BinaryStarted {
            binary,
            pid,
            width_slots: width_held,
            groups,
        });
        Ok(())
    }
}
