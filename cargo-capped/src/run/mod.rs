//! *Run*: every test binary as a child in its own process group, with the caps in its
//! environment, scheduled so the run-wide invariants hold (see [`schedule`]), under
//! per-binary timeouts, with Ctrl-C forwarded; results parsed from each binary's output
//! ([`crate::libtest::output`]) and its events file, and sent to the reporter as
//! [`RunEvent`]s.
//!
//! The loop runs on one thread: it starts what can start, then waits up to [`TICK`] for
//! output (each child's stdout and stderr are read by a thread of their own and sent over
//! one channel), then looks at every running child (events file, exit, timeout). A child's
//! exit is observed without reaping it (`waitid(WNOWAIT)`), so its pid cannot be reused
//! while the runner SIGKILLs whatever it left in its process group; then it is reaped. So
//! no zombie and no orphan in the group survive a binary, and its slots are released only
//! once nothing of it runs.
//!
//! Host safety (issue 5) comes in through the [`RunHooks`] trait ([`host_safety::HostSafety`]
//! in a real run): notices before the first binary (a raised `RLIMIT_NOFILE`), the width to
//! run at before the run and after each binary (auto-degrade), a per-child watchdog called
//! every tick that may ask for a kill (memory cap), and what a binary's end means for memory.
//!
//! The run's **width** is thus not fixed: [`Plan::width`] is its ceiling (and the capacity of
//! the width lock files), the width in force is the lowest of the degrade decision and the
//! EMFILE adapter's. Binaries started at a lower width get it as their `CAPPED_TEST_THREADS`
//! (harness binaries then take only the first slots) or `--test-threads`.
//!
//! **EMFILE**: a failed test whose output says "Too many open files" is held back instead of
//! reported; when its binary is done the [`EmfileAdapter`] lowers the width by a quarter and
//! the runner runs those tests once more, alone in a unit of their own (`--exact NAME…`), at
//! the lower width. Their second result is the one reported; a notice says what happened.
//!
//! **Partitions** (`--partition hash:K/N`): after listing, each binary keeps the tests of
//! partition K and runs them by name ([`schedule::selection_args`], chunked); the others are
//! not counted, and a notice says how many.

pub mod env;
pub mod host_safety;
pub mod list;
pub mod run_dir;
pub mod schedule;
pub mod signals;
pub mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use capped_test::protocol::{self, Event, GroupLimit, ListedTest, env as vars, now_us};
use capped_test::{Caps, Guard, Request, Scope};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::adapt::emfile::{EmfileAdapter, FailedTest, Rerun, looks_like_emfile};
use crate::build::TestBinary;
use crate::errors::{EXIT_INTERRUPTED, EXIT_OK, EXIT_TEST_FAILED, Result};
use crate::events::{BinaryId, RunEvent, RunSummary, TestResult, TestStatus};
use crate::libtest::{BinaryEnd, KillReason, Listing, OutputEvent, OutputParser};
use crate::plan::Plan;
use run_dir::RunDir;
use schedule::{OrderKey, OrderMode};
use summary::Measurements;

/// How often the loop looks at running children when no output arrives.
pub const TICK: Duration = Duration::from_millis(20);
/// Between SIGTERM (timeout, Ctrl-C) and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a child's pipes to close after it exited.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// The width to run at from now on, as [`RunHooks::width`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidthDecision {
    /// The width (1 ..= the requested width).
    pub width: u32,
    /// One line for the report when the width changed (which reading and level decided).
    pub notice: Option<String>,
}

/// What a binary's end means for memory, as [`RunHooks::ended`] says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEnd {
    /// The peak RSS of its process tree, when it was sampled.
    pub peak_rss: Option<u64>,
    /// Why it died, when memory is the reason: the runner's own memory kill with its final
    /// peak, a kill the watchdog sent after the runner's last look, or a SIGKILL nobody here
    /// sent (likely the kernel's OOM killer).
    pub killed: Option<KillReason>,
}

/// Host-safety hooks (issue 5). The defaults do nothing.
pub trait RunHooks {
    /// Once, before the first binary is listed or spawned, for a run of `width`: lines to
    /// show (a raised open-files limit, a warning that it is low).
    fn starting(&mut self, _width: u32) -> Vec<String> {
        Vec::new()
    }
    /// Before the run and after each binary ends: the width to run at from now on, at most
    /// `requested` (auto-degrade on a busy host).
    fn width(&mut self, requested: u32) -> WidthDecision {
        WidthDecision {
            width: requested,
            notice: None,
        }
    }
    /// Whether `binary` may start now (a gate on host load or memory); `false` retries
    /// on the next tick.
    fn may_start(&mut self, _binary: &TestBinary) -> bool {
        true
    }
    /// Right after `binary` was spawned as `pid` (its own process group).
    fn spawned(&mut self, _binary: &BinaryId, _pid: u32) {}
    /// Called every tick for each running binary (`pid` is also its process group id).
    /// Returning a reason kills the binary's process group (SIGTERM, grace, SIGKILL).
    fn watch(&mut self, _binary: &BinaryId, _pid: u32) -> Option<KillReason> {
        None
    }
    /// After the binary was reaped: `signal` ended it (if one did), `killed` is why the
    /// runner killed it (if it did). Returns its peak RSS and the memory verdict.
    fn ended(
        &mut self,
        _binary: &BinaryId,
        _pid: u32,
        _signal: Option<i32>,
        _killed: Option<&KillReason>,
    ) -> MemoryEnd {
        MemoryEnd::default()
    }
    /// Called between binaries, with a line to show, if any.
    fn notice(&mut self) -> Option<String> {
        None
    }
}

/// Runs the built binaries under `plan`, sending every [`RunEvent`] to `sink`. Returns the
/// summary (also sent as [`RunEvent::RunFinished`]).
pub fn run(
    plan: &Plan,
    binaries: Vec<TestBinary>,
    hooks: &mut dyn RunHooks,
    sink: &mut dyn FnMut(&RunEvent),
) -> Result<RunSummary> {
    let run_started = Instant::now();
    let starting_notices = hooks.starting(plan.width);
    let run_dir = RunDir::create(&plan.workspace.target_dir)?;
    let (env, caps) = plan.env_for_run(Some((run_dir.id(), run_dir.path())))?;
    let listings = list::list_all(
        &binaries,
        list::ListArgs {
            target_dir: &plan.workspace.target_dir,
            env: &env,
            filter: plan.filter.as_deref(),
            test_args: &plan.test_args,
        },
    );
    let mut units: Vec<Unit> = Vec::new();
    let mut partitioned = PartitionCount::default();
    for (binary, listing) in binaries.into_iter().zip(listings) {
        let claimed = plan.groups_claiming(&binary.id.target);
        let (listing, list_error) = match listing {
            Ok(listing) => (listing, None),
            Err(e) => (Listing::default(), Some(e)),
        };
        let selections = match (&plan.partition, &list_error) {
            (Some(partition), None) => {
                let (kept, left) = partition_listing(&listing, &binary.id, partition);
                partitioned.kept += kept.tests.len();
                partitioned.left += left;
                if kept.tests.is_empty() {
                    continue;
                }
                if left == 0 {
                    vec![(kept, None)]
                } else {
                    let names = kept.tests.iter().map(|t| t.name.clone()).collect();
                    schedule::chunk_names(names, schedule::SELECTION_CHUNK_BYTES)
                        .into_iter()
                        .map(|chunk| (subset(&kept, &chunk), Some(chunk)))
                        .collect()
                }
            }
            _ => vec![(listing, None)],
        };
        for (listing, selection) in selections {
            let index = units.len();
            units.push(Unit::new(
                binary.clone(),
                listing,
                list_error.clone(),
                claimed.clone(),
                run_dir.events_file(index, &binary.id.target),
                selection,
                &plan.test_args,
            ));
        }
    }
    let mode = if plan.shuffle {
        OrderMode::Shuffled(plan.seed)
    } else if plan.deterministic {
        OrderMode::Sorted
    } else {
        OrderMode::Heuristic
    };
    let keys: Vec<OrderKey<'_>> = units
        .iter()
        .map(|u| OrderKey {
            id: &u.binary.id,
            claimed: !u.claimed.is_empty(),
            runnable: u.runnable,
        })
        .collect();
    let order = schedule::order(&keys, mode);
    let total_tests = units.iter().map(|u| u.listing.tests.len()).sum();
    let binaries_count = {
        let mut ids: Vec<&BinaryId> = units.iter().map(|u| &u.binary.id).collect();
        ids.dedup();
        ids.len()
    };
    let (sender, receiver) = mpsc::channel();
    let start_width = hooks.width(plan.width);
    let width = start_width.width.clamp(1, plan.width.max(1));
    let mut runner = Runner {
        plan,
        caps,
        env,
        run_dir,
        units,
        order,
        sender,
        receiver,
        hooks,
        sink,
        results: Vec::new(),
        measurements: Measurements::default(),
        failed: false,
        failing_seen: false,
        interrupted: None,
        loop_started: Instant::now(),
        degrade_width: width,
        width,
        emfile: EmfileAdapter::new(plan.width as usize),
        width_check_due: false,
        peaks: Vec::new(),
    };
    runner.emit(RunEvent::RunStarted {
        profile: plan.profile.clone(),
        width,
        rayon_threads: plan.rayon_threads,
        seed: plan.seed,
        deterministic: plan.deterministic,
        shuffle: plan.shuffle,
        binaries: binaries_count,
        tests: total_tests,
        at: SystemTime::now(),
    });
    for message in starting_notices {
        runner.emit(RunEvent::Notice { message });
    }
    while let Some(message) = runner.hooks.notice() {
        runner.emit(RunEvent::Notice { message });
    }
    if let Some(message) = start_width.notice {
        runner.emit(RunEvent::Notice { message });
    }
    if let Some(partition) = &plan.partition {
        runner.emit(RunEvent::Notice {
            message: format!(
                "partition {partition}: running {} of {} tests; the other {} belong to other partitions and are not counted",
                partitioned.kept,
                partitioned.kept + partitioned.left,
                partitioned.left
            ),
        });
    }
    runner.report_list_errors();
    runner.run_loop()?;
    Ok(runner.finish(run_started.elapsed()))
}

/// Tests kept and left out by `--partition`.
#[derive(Debug, Default)]
struct PartitionCount {
    kept: usize,
    left: usize,
}

/// The tests of `listing` in `partition`, and how many were left out.
fn partition_listing(
    listing: &Listing,
    binary: &BinaryId,
    partition: &crate::plan::Partition,
) -> (Listing, usize) {
    let mut kept = listing.clone();
    kept.tests
        .retain(|test| partition.contains(binary, &test.name));
    let left = listing.tests.len() - kept.tests.len();
    (kept, left)
}

/// `listing` restricted to `names`.
fn subset(listing: &Listing, names: &[String]) -> Listing {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut subset = listing.clone();
    subset
        .tests
        .retain(|test| wanted.contains(test.name.as_str()));
    subset
}

/// One run of a test binary: the whole binary (as `cargo test` runs it), or the tests the
/// runner selected by name (a partition's chunk, an EMFILE rerun).
struct Unit {
    binary: TestBinary,
    listing: Listing,
    list_error: Option<String>,
    claimed: Vec<String>,
    events_path: PathBuf,
    /// Tests that will execute (not skipped as ignored).
    runnable: usize,
    /// When it was first found unable to start because a group was busy.
    first_blocked: Option<Instant>,
    state: State,
    /// The tests to run by exact name, instead of the run's filter and arguments.
    selection: Option<Vec<String>>,
    /// An EMFILE rerun: its results are final.
    rerun: bool,
    /// Failed tests whose output says "Too many open files", held back until the binary is
    /// done (they may be rerun, and then only the second result counts).
    deferred: Vec<TestResult>,
}

impl Unit {
    fn new(
        binary: TestBinary,
        listing: Listing,
        list_error: Option<String>,
        claimed: Vec<String>,
        events_path: PathBuf,
        selection: Option<Vec<String>>,
        test_args: &[String],
    ) -> Unit {
        let runnable = schedule::runnable(&listing.tests, test_args).len();
        Unit {
            binary,
            listing,
            list_error,
            claimed,
            events_path,
            runnable,
            first_blocked: None,
            state: State::Pending,
            selection,
            rerun: false,
            deferred: Vec::new(),
        }
    }
}

enum State {
    Pending,
    Running(Box<Running>),
    Done,
}

/// A binary's running process and what is known of it.
struct Running {
    child: Child,
    pid: u32,
    /// Width and group slots the runner holds for it; released when it is finished.
    guard: Guard,
    width_held: u32,
    started: Instant,
    started_us: u64,
    deadline: Option<Instant>,
    /// The run's width when it started.
    run_width: u32,
    /// When SIGTERM was sent (timeout, Ctrl-C, watchdog).
    term_sent: Option<Instant>,
    kill_sent: bool,
    killed: Option<KillReason>,
    parser: OutputParser,
    tail: EventsTail,
    open_streams: u8,
    status: Option<ExitStatus>,
    exited_at: Option<Instant>,
}

/// What a reader thread sends.
enum Message {
    Chunk {
        unit: usize,
        stderr: bool,
        bytes: Vec<u8>,
        at: Instant,
    },
    Closed {
        unit: usize,
    },
}

struct Runner<'a> {
    plan: &'a Plan,
    caps: Caps,
    env: BTreeMap<String, String>,
    run_dir: RunDir,
    units: Vec<Unit>,
    order: Vec<usize>,
    sender: Sender<Message>,
    receiver: Receiver<Message>,
    hooks: &'a mut dyn RunHooks,
    sink: &'a mut dyn FnMut(&RunEvent),
    results: Vec<TestResult>,
    measurements: Measurements,
    failed: bool,
    /// A test was seen failing (its result may come later): enough for `--fail-fast`.
    failing_seen: bool,
    /// The signal that interrupted the run.
    interrupted: Option<i32>,
    /// When the first binary could start.
    loop_started: Instant,
    /// The width the degrade decisions allow.
    degrade_width: u32,
    /// The width in force: the lowest of `degrade_width` and the EMFILE adapter's.
    width: u32,
    /// Lowers the width after "Too many open files" and decides reruns.
    emfile: EmfileAdapter,
    /// A binary ended since the width was last decided.
    width_check_due: bool,
    /// Peak RSS per binary, in the order they finished.
    peaks: Vec<(String, u64)>,
}

impl Runner<'_> {
    fn emit(&mut self, event: RunEvent) {
        (self.sink)(&event);
    }

    fn finish_test(&mut self, result: TestResult) {
        if result.status.is_failure() {
            self.failed = true;
        }
        self.emit(RunEvent::TestFinished(result.clone()));
        self.results.push(result);
    }

    /// Binaries that could not even list their tests fail the run, with the reason.
    fn report_list_errors(&mut self) {
        for index in 0..self.units.len() {
            let Some(error) = self.units[index].list_error.clone() else {
                continue;
            };
            let binary = self.units[index].binary.id.clone();
            self.units[index].state = State::Done;
            self.failed = true;
            self.finish_test(TestResult {
                binary: binary.clone(),
                name: LISTING.to_string(),
                status: TestStatus::Failed,
                duration: None,
                output: error.clone(),
            });
            self.emit(RunEvent::BinaryFinished {
                binary,
                exit_code: None,
                signal: None,
                killed_because: None,
                duration: Duration::ZERO,
                peak_rss: None,
                stray_output: error,
            });
        }
    }

    fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&i| matches!(self.units[i].state, State::Pending))
    }

    fn running(&self) -> Vec<usize> {
        (0..self.units.len())
            .filter(|&i| matches!(self.units[i].state, State::Running(_)))
            .collect()
    }

    fn stopping(&self) -> bool {
        self.interrupted.is_some() || (self.plan.fail_fast && (self.failed || self.failing_seen))
    }

    /// Asks the hooks for the width (between binaries) and applies the EMFILE adapter's.
    fn decide_width(&mut self) {
        self.width_check_due = false;
        let decision = self.hooks.width(self.plan.width);
        self.degrade_width = decision.width.clamp(1, self.plan.width.max(1));
        if let Some(message) = decision.notice {
            self.emit(RunEvent::Notice { message });
        }
        self.apply_width();
    }

    fn apply_width(&mut self) {
        let emfile = u32::try_from(self.emfile.width()).unwrap_or(u32::MAX);
        self.width = self.degrade_width.min(emfile).max(1);
    }

    fn run_loop(&mut self) -> Result<()> {
        self.loop_started = Instant::now();
        loop {
            self.handle_signals();
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
            if running.is_empty() && (self.stopping() || self.pending().next().is_none()) {
                break;
            }
            match self.receiver.recv_timeout(TICK) {
                Ok(message) => {
                    self.handle(message);
                    while let Ok(message) = self.receiver.try_recv() {
                        self.handle(message);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
            for index in self.running() {
                self.poll(index);
            }
        }
        self.mark_not_run();
        Ok(())
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
        for index in self.running() {
            if let State::Running(running) = &mut self.units[index].state {
                running.killed.get_or_insert(KillReason::Interrupted);
                if first {
                    signals::forward_to_group(running.pid, signal);
                    running.term_sent.get_or_insert_with(Instant::now);
                } else {
                    signals::send_to_group(running.pid, Signal::KILL);
                    running.kill_sent = true;
                }
            }
        }
    }

    /// The width the running binaries use or may soon use.
    fn estimated_usage(&self) -> u32 {
        let width = self.width;
        let mut used = 0u32;
        for unit in &self.units {
            let State::Running(running) = &unit.state else {
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

    fn harness_demand(&self, unit: &Unit, running: &Running) -> u32 {
        let runnable = schedule::runnable(&unit.listing.tests, &self.plan.test_args);
        let not_started: Vec<&ListedTest> = runnable
            .into_iter()
            .filter(|t| !running.tail.started.contains_key(&t.name))
            .collect();
        let running_width: u32 = running
            .tail
            .started
            .iter()
            .filter(|(name, _)| !running.tail.ended.contains(*name))
            .map(|(_, width)| *width)
            .sum();
        schedule::harness_demand(
            &not_started,
            running_width,
            running.run_width.min(self.width),
            |group| self.caps.group(group).max,
            self.caps.mem_budget(),
        )
    }

    /// Starts every pending binary whose resources are free, in order, while the width is
    /// not all in use.
    fn start_ready(&mut self) -> Result<()> {
        let width = self.width;
        let mut used = self.estimated_usage();
        let candidates: Vec<usize> = self.pending().collect();
        for index in candidates {
            if used >= width {
                break;
            }
            if self.plan.deterministic && !self.running().is_empty() {
                break;
            }
            if self.units[index].runnable == 0 {
                self.skip_without_running(index);
                continue;
            }
            if !self.hooks.may_start(&self.units[index].binary) {
                break;
            }
            let idle = width - used;
            let unit = &self.units[index];
            let harness = unit.listing.harness;
            let widths: Vec<u32> = if harness {
                vec![0]
            } else {
                (1..=schedule::plain_width(unit.runnable, idle))
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
                    && matches!(unit.state, State::Pending)
                {
                    unit.first_blocked.get_or_insert_with(Instant::now);
                }
                continue;
            };
            // Waits: for a claimed group, from when it was first found busy; for the
            // width of a plain binary, from the start of the run (every binary is ready
            // then), so the summary's figures count every acquisition.
            let group_wait = self.units[index]
                .first_blocked
                .map_or(Duration::ZERO, |blocked| blocked.elapsed());
            for group in self.units[index].claimed.clone() {
                self.measurements.add_wait(&group, group_wait);
            }
            if !harness {
                self.measurements
                    .add_wait(capped_test::resource::WIDTH, self.loop_started.elapsed());
            }
            self.spawn(index, k, guard)?;
            used += if harness {
                let State::Running(running) = &self.units[index].state else {
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
        self.units[index].state = State::Done;
        let binary = self.units[index].binary.id.clone();
        let tests: Vec<String> = self.units[index]
            .listing
            .tests
            .iter()
            .map(|t| t.name.clone())
            .collect();
        for name in tests {
            self.finish_test(TestResult {
                binary: binary.clone(),
                name,
                status: TestStatus::Ignored,
                duration: None,
                output: String::new(),
            });
        }
    }

    fn fail_without_running(&mut self, index: usize, message: String) {
        self.units[index].state = State::Done;
        let binary = self.units[index].binary.id.clone();
        let tests: Vec<String> = self.units[index]
            .listing
            .tests
            .iter()
            .map(|t| t.name.clone())
            .collect();
        for name in tests {
            self.finish_test(TestResult {
                binary: binary.clone(),
                name,
                status: TestStatus::NotRun {
                    reason: message.clone(),
                },
                duration: None,
                output: String::new(),
            });
        }
        self.failed = true;
        self.emit(RunEvent::BinaryFinished {
            binary,
            exit_code: None,
            signal: None,
            killed_because: None,
            duration: Duration::ZERO,
            peak_rss: None,
            stray_output: message,
        });
    }

    /// The environment of one binary beyond the run's: its events file, the width it holds,
    /// and for a binary claimed by groups, those groups made process-local with `max = 1`
    /// (the binary as a whole holds one slot) and their slot ids.
    fn binary_env(&self, index: usize, width_held: u32, guard: &Guard) -> Vec<(String, String)> {
        let unit = &self.units[index];
        let mut extra = vec![(
            vars::EVENTS.to_string(),
            unit.events_path.display().to_string(),
        )];
        if self.width < self.plan.width {
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
        }
        extra
    }

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
        match &unit.selection {
            Some(names) => {
                command.args(schedule::selection_args(&self.plan.test_args, names));
            }
            None => {
                command.args(self.plan.filter.as_deref());
                command.args(&self.plan.test_args);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let message = format!("cannot run {}: {e}", unit.binary.path.display());
                drop(guard);
                self.fail_without_running(index, message);
                return Ok(());
            }
        };
        let pid = child.id();
        for (stream, stderr) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                true,
            ),
        ] {
            if let Some(stream) = stream {
                let sender = self.sender.clone();
                std::thread::spawn(move || read_stream(stream, index, stderr, sender));
            }
        }
        let threads = if unit.listing.harness {
            self.width as usize
        } else {
            width_held as usize
        };
        let parser = OutputParser::new(unit.binary.id.clone(), &unit.listing.tests, threads);
        let started = Instant::now();
        let binary = unit.binary.id.clone();
        let groups = unit.claimed.clone();
        let tail = EventsTail::new(unit.events_path.clone());
        self.units[index].state = State::Running(Box::new(Running {
            child,
            pid,
            guard,
            width_held,
            started,
            started_us: now_us(),
            deadline: self.plan.timeout.map(|t| started + t),
            run_width: self.width,
            term_sent: None,
            kill_sent: false,
            killed: None,
            parser,
            tail,
            open_streams: 2,
            status: None,
            exited_at: None,
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

    fn handle(&mut self, message: Message) {
        match message {
            Message::Chunk {
                unit,
                stderr,
                bytes,
                at,
            } => {
                self.read_events(unit);
                let State::Running(running) = &mut self.units[unit].state else {
                    return;
                };
                let events = if stderr {
                    running.parser.stderr(&bytes, at)
                } else {
                    running.parser.stdout(&bytes, at)
                };
                self.output_events(unit, events);
            }
            Message::Closed { unit } => {
                if let State::Running(running) = &mut self.units[unit].state {
                    running.open_streams = running.open_streams.saturating_sub(1);
                }
            }
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
                OutputEvent::Failing { .. } => self.failing_seen = true,
                OutputEvent::Slow { name } => self.emit(RunEvent::Notice {
                    message: format!("{binary} {name} has been running for over 60 seconds"),
                }),
            }
        }
    }

    /// New lines of a running binary's events file, fed to its parser.
    fn read_events(&mut self, unit: usize) {
        let State::Running(running) = &mut self.units[unit].state else {
            return;
        };
        let new = running.tail.read();
        let mut out = Vec::new();
        for event in &new {
            out.extend(running.parser.harness_event(event));
        }
        self.output_events(unit, out);
    }

    /// Looks at a running binary: events, watchdog, exit, timeout, and finishes it once it
    /// exited and its output is read.
    fn poll(&mut self, index: usize) {
        self.read_events(index);
        let id = self.units[index].binary.id.clone();
        let State::Running(running) = &mut self.units[index].state else {
            return;
        };
        let now = Instant::now();
        if running.status.is_none() {
            if running.killed.is_none()
                && let Some(reason) = self.hooks.watch(&id, running.pid)
            {
                running.killed = Some(reason);
                signals::send_to_group(running.pid, Signal::TERM);
                running.term_sent = Some(now);
            }
            if exited_unreaped(running.pid) {
                // Whatever it left in its group goes with it, before its pid is released.
                signals::send_to_group(running.pid, Signal::KILL);
                running.status = running.child.wait().ok();
                running.exited_at = Some(now);
            } else if running.killed.is_none()
                && running.deadline.is_some_and(|deadline| now >= deadline)
            {
                running.killed = Some(KillReason::Timeout {
                    after: self.plan.timeout.unwrap_or_default(),
                });
                signals::send_to_group(running.pid, Signal::TERM);
                running.term_sent = Some(now);
            } else if !running.kill_sent
                && running
                    .term_sent
                    .is_some_and(|sent| now.duration_since(sent) >= GRACE)
            {
                signals::send_to_group(running.pid, Signal::KILL);
                running.kill_sent = true;
            }
        }
        if let Some(exited_at) = running.exited_at
            && (running.open_streams == 0 || now.duration_since(exited_at) >= PIPE_GRACE)
        {
            self.finish_binary(index);
        }
    }

    /// Whether a finished result is held back as a possible EMFILE rerun.
    fn defers(&self, unit: usize, result: &TestResult) -> bool {
        !self.units[unit].rerun
            && result.status == TestStatus::Failed
            && looks_like_emfile(&result.output)
    }

    fn finish_binary(&mut self, index: usize) {
        self.read_events(index);
        let State::Running(running) = std::mem::replace(&mut self.units[index].state, State::Done)
        else {
            return;
        };
        let Running {
            pid,
            guard,
            width_held,
            started,
            started_us,
            run_width,
            killed,
            parser,
            tail,
            status,
            ..
        } = *running;
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
        let parsed = parser.finish(&end);
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
        self.measurements
            .add_binary(capped_test::resource::WIDTH, started_us, end_us, width_held);
        for group in &claimed {
            self.measurements.add_binary(group, started_us, end_us, 1);
        }
        self.measurements.add_events(&tail.events, harness, end_us);
        if let Some(peak) = memory.peak_rss {
            self.peaks.push((binary.to_string(), peak));
        }
        let running_tests: Vec<String> = parsed
            .all
            .iter()
            .filter(|r| matches!(r.status, TestStatus::KilledForMemory { .. }))
            .map(|r| r.name.clone())
            .collect();
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

    /// The EMFILE policy for a finished unit: asks the adapter about its failed tests that
    /// ran out of file descriptors (held back in `deferred`, or for a binary that died of it
    /// without naming a test, its unfinished ones among `remaining`), reports what it decided,
    /// lowers the width, and queues the rerun. Returns the results still to report.
    fn adapt_to_emfile(
        &mut self,
        index: usize,
        run_width: u32,
        mut remaining: Vec<TestResult>,
        stray_output: &str,
    ) -> Vec<TestResult> {
        let deferred = std::mem::take(&mut self.units[index].deferred);
        let unit = &self.units[index];
        // A rerun's EMFILE failures are final, but they still lower the width.
        let emfile_failures: Vec<&TestResult> = if unit.rerun {
            self.results
                .iter()
                .chain(&remaining)
                .filter(|r| {
                    r.binary == unit.binary.id
                        && r.status.is_failure()
                        && looks_like_emfile(&r.output)
                        && unit
                            .selection
                            .as_ref()
                            .is_some_and(|names| names.contains(&r.name))
                })
                .collect()
        } else {
            deferred.iter().collect()
        };
        let crashed_of_emfile = emfile_failures.is_empty()
            && remaining.iter().any(|r| r.status.is_failure())
            && looks_like_emfile(stray_output);
        if emfile_failures.is_empty() && !crashed_of_emfile {
            remaining.extend(deferred);
            return remaining;
        }
        let failed: Vec<FailedTest<'_>> = emfile_failures
            .iter()
            .map(|r| FailedTest {
                name: &r.name,
                output: &r.output,
            })
            .collect();
        let name = unit.binary.id.to_string();
        let adaptation =
            self.emfile
                .on_binary_finished(&name, run_width as usize, &failed, stray_output);
        let mut rerun: Vec<String> = match adaptation.rerun {
            Rerun::Nothing => Vec::new(),
            Rerun::Tests(names) => names,
            Rerun::WholeBinary if unit.rerun => Vec::new(),
            Rerun::WholeBinary => remaining
                .iter()
                .filter(|r| r.status.is_failure())
                .map(|r| r.name.clone())
                .collect(),
        };
        // Only tests the listing knows can be selected by name; the others keep their
        // first result.
        let listing = subset(&unit.listing, &rerun);
        rerun.retain(|name| listing.tests.iter().any(|t| &t.name == name));
        if let Some(message) = adaptation.message {
            self.emit(RunEvent::Notice { message });
        }
        self.apply_width();
        let out: Vec<TestResult> = remaining
            .into_iter()
            .chain(deferred)
            .filter(|r| !rerun.contains(&r.name))
            .collect();
        if !rerun.is_empty() {
            let unit = &self.units[index];
            let mut rerun_unit = Unit::new(
                unit.binary.clone(),
                listing,
                None,
                unit.claimed.clone(),
                self.run_dir
                    .events_file(self.units.len(), &unit.binary.id.target),
                Some(rerun),
                &self.plan.test_args,
            );
            rerun_unit.rerun = true;
            let new_index = self.units.len();
            self.units.push(rerun_unit);
            self.order.insert(0, new_index);
        }
        out
    }

    /// Tests of binaries that never started, when the run stops early.
    fn mark_not_run(&mut self) {
        let reason = if self.interrupted.is_some() {
            "the run was interrupted".to_string()
        } else {
            "--fail-fast stopped the run after a failure".to_string()
        };
        let pending: Vec<usize> = self.pending().collect();
        for index in pending {
            self.units[index].state = State::Done;
            let binary = self.units[index].binary.id.clone();
            let tests = self.units[index].listing.tests.clone();
            for test in tests {
                let status = if test.ignored && !schedule::runs_ignored(&self.plan.test_args) {
                    TestStatus::Ignored
                } else {
                    TestStatus::NotRun {
                        reason: reason.clone(),
                    }
                };
                self.finish_test(TestResult {
                    binary: binary.clone(),
                    name: test.name,
                    status,
                    duration: None,
                    output: String::new(),
                });
            }
        }
    }

    fn finish(mut self, duration: Duration) -> RunSummary {
        let mut summary = self.measurements.summarize(&self.results, duration);
        summary.junit_path = self.plan.output.junit.clone();
        summary.binary_peak_rss = std::mem::take(&mut self.peaks);
        let failed = self.failed || self.results.iter().any(|r| r.status.is_failure());
        summary.exit_code = if self.interrupted.is_some() {
            EXIT_INTERRUPTED
        } else if failed {
            EXIT_TEST_FAILED
        } else {
            EXIT_OK
        };
        self.emit(RunEvent::RunFinished(summary.clone()));
        let _ = &self.run_dir;
        summary
    }
}

/// The name given to a binary's listing failure in results.
pub const LISTING: &str = "(listing)";
/// The name given to a binary that failed outside any test.
pub const BINARY: &str = "(binary)";

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
            capped_test::units::format_size(*limit),
            capped_test::units::format_size(*peak)
        ),
        KillReason::Memory {
            limit: None, peak, ..
        } => crate::watchdog::MemoryVerdict::LikelyOomKill { peak: *peak }.to_string(),
        KillReason::Interrupted => "the run was interrupted".to_string(),
        KillReason::Other(text) => text.clone(),
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

/// Whether `pid` (our child) has exited, without reaping it.
fn exited_unreaped(pid: u32) -> bool {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(Some(_)) | Err(_)
    )
}

fn read_stream(
    mut stream: Box<dyn Read + Send>,
    unit: usize,
    stderr: bool,
    sender: Sender<Message>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                let message = Message::Chunk {
                    unit,
                    stderr,
                    bytes: buffer[..n].to_vec(),
                    at: Instant::now(),
                };
                if sender.send(message).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = sender.send(Message::Closed { unit });
}

/// Reads a binary's events file incrementally.
struct EventsTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Every event read so far.
    events: Vec<Event>,
    /// Started tests and the width slots each holds.
    started: HashMap<String, u32>,
    ended: HashSet<String>,
}

impl EventsTail {
    fn new(path: PathBuf) -> EventsTail {
        EventsTail {
            path,
            offset: 0,
            partial: Vec::new(),
            events: Vec::new(),
            started: HashMap::new(),
            ended: HashSet::new(),
        }
    }

    /// Events appended since the last call (complete lines only).
    fn read(&mut self) -> Vec<Event> {
        use std::io::{Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        let mut new = Vec::new();
        for line in complete.split(|&b| b == b'\n') {
            let Ok(event) = serde_json::from_slice::<Event>(line) else {
                continue;
            };
            match &event {
                Event::Start { test, slots, .. } => {
                    let width = slots
                        .get(capped_test::resource::WIDTH)
                        .map_or(0, |ids| ids.len() as u32);
                    self.started.insert(test.clone(), width);
                }
                Event::End { test, .. } => {
                    self.ended.insert(test.clone());
                }
            }
            new.push(event.clone());
            self.events.push(event);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_tail_reads_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut tail = EventsTail::new(path.clone());
        assert!(tail.read().is_empty(), "no file yet");
        let start = Event::Start {
            test: "a".into(),
            pid: 1,
            at_us: 1,
            slots: BTreeMap::from([("width".to_string(), vec![0, 1])]),
            waits_us: BTreeMap::new(),
        };
        start.append_to(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"event\":\"end\",\"te"))
            .unwrap();
        assert_eq!(tail.read(), vec![start.clone()]);
        assert_eq!(tail.started["a"], 2);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    b"st\":\"a\",\"pid\":1,\"at_us\":2,\"outcome\":\"passed\",\"duration_us\":1}\n",
                )
            })
            .unwrap();
        let new = tail.read();
        assert_eq!(new.len(), 1);
        assert!(tail.ended.contains("a"));
        assert!(tail.read().is_empty());
        assert_eq!(tail.events.len(), 2);
    }

    fn listing(names: &[&str]) -> Listing {
        Listing {
            tests: names
                .iter()
                .map(|name| ListedTest {
                    name: name.to_string(),
                    groups: Vec::new(),
                    threads: 1,
                    mem: None,
                    timeout_ms: None,
                    ignored: false,
                })
                .collect(),
            ..Listing::default()
        }
    }

    #[test]
    fn partitions_and_subsets_of_a_listing() {
        let all = listing(&["a", "b", "c", "d", "e", "f"]);
        let binary = BinaryId {
            package: "p".into(),
            target: "t".into(),
            kind: "test".into(),
        };
        let mut kept_names = Vec::new();
        for index in 1..=3 {
            let partition = crate::plan::Partition { index, count: 3 };
            let (kept, left) = partition_listing(&all, &binary, &partition);
            assert_eq!(kept.tests.len() + left, 6);
            kept_names.extend(kept.tests.into_iter().map(|t| t.name));
        }
        kept_names.sort();
        assert_eq!(kept_names, ["a", "b", "c", "d", "e", "f"]);
        let some = subset(&all, &["c".to_string(), "a".to_string(), "zz".to_string()]);
        let names: Vec<&str> = some.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "c"], "listing order, unknown names dropped");
    }

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
        assert!(text.contains("likely the kernel's OOM killer"), "{text}");
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
