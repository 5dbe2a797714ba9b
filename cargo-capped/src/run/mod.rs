//! *Run*: every test binary as a child in its own process group, with the caps in its
//! environment, scheduled so the run-wide invariants hold, under per-binary timeouts, with
//! Ctrl-C forwarded; results parsed from each binary's output ([`crate::libtest::output`])
//! and its events file, and sent to the reporter as [`RunEvent`]s.
//!
//! ## The parts
//!
//! [`run`] below is the outline: list every binary (in parallel), make the run's units, order
//! them, then hand them to the loop and report what it measured.
//!
//! | module | owns |
//! | --- | --- |
//! | [`list`] | listing each binary (`--list`, and `--ignored` for plain libtest) |
//! | `work` | listings → units of work (one per binary, or per `--partition` chunk) |
//! | `binary` | a unit's state: pending, running (process, guard, parser, events tail), done |
//! | `runner` | the loop: wait for a wake-up or the next look, look at every running binary |
//! | `launch` | which pending unit starts next with how many width slots, and its spawn |
//! | `child` | a test binary's process: process group, death with the runner, reader and exit-waiter threads, SIGTERM → grace → SIGKILL, reaping |
//! | `outcome` | a finished binary's results and measurements, slots released; tests never run |
//! | `split` | a plain binary that starts narrower than it could run keeps its share of its tests; the rest wait as a unit of their own |
//! | `emfile_rerun` | held-back "Too many open files" failures and their rerun at a lower width |
//! | `events_tail` | reading a binary's events file incrementally |
//! | `hooks` | [`RunHooks`], the host-safety seam ([`host_safety`] in a real run) |
//! | [`binary_schedule`] | the pure scheduling choices over binaries: order, `k`, harness demand, selections (a harness binary schedules its own tests) |
//! | [`env`](mod@env), [`run_dir`], [`signals`], [`summary`] | a child's environment, the run's dir, Ctrl-C, the closing figures |
//!
//! ## How a binary goes
//!
//! The loop runs on the thread that called [`run`] (the main thread, so that every child
//! dies with the runner, see `child`). It starts what can start (`launch`), then sleeps
//! until a child's thread wakes it (output, a closed stream, an exit) or the next look is
//! due (`runner::TICK`, or a timeout, grace or pipe grace that comes sooner), then looks
//! at every running child (events file, watch hook, exit, timeout). A child's exit is
//! observed without reaping it (`waitid(WNOWAIT)`), so its pid cannot be reused while the
//! runner SIGKILLs whatever it left in its process group; then it is reaped. So no zombie
//! and no orphan in the group survive a binary, and its slots are released only once
//! nothing of it runs. The next binary starts in the same iteration.
//!
//! **Nothing outlives the runner**: every child it spawns (test binaries, listing runs, the
//! build) gets SIGKILL from the kernel if the runner dies, even by SIGKILL
//! ([`crate::process`]), so a killed run leaves no test binary holding slots. A test's own
//! children are not covered: a SIGKILLed runner cannot reach them (in any other ending,
//! the SIGKILL to the binary's process group does).
//!
//! Host safety comes in through the [`RunHooks`] trait ([`host_safety::HostSafety`]
//! in a real run): notices before the first binary (a raised `RLIMIT_NOFILE`), the width to
//! run at before the run and after each binary (auto-degrade), a per-child watchdog called
//! at every look that may ask for a kill (memory cap), and what a binary's end means for
//! memory.
//!
//! The run's **width** is thus not fixed: the planned width
//! ([`capped_model::Caps::test_threads`] of [`Plan::caps`]) is its ceiling (and the capacity of
//! the width lock files), the width in force is the lowest of the degrade decision and the
//! EMFILE adapter's (`emfile_rerun`). Binaries started at a lower width get it as their
//! `CAPPED_TEST_THREADS` (harness binaries then take only the first slots) or
//! `--test-threads`.
//!
//! **Partitions** (`--partition hash:K/N`): after listing, each binary keeps the tests of
//! partition K and runs them by name (`work`); the others are not counted, and a notice
//! says how many.

mod binary;
pub mod binary_schedule;
mod child;
mod emfile_rerun;
pub mod env;
mod events_tail;
mod file_tail;
mod hooks;
pub mod host_safety;
mod launch;
pub mod list;
mod outcome;
pub mod run_dir;
mod runner;
pub mod signals;
mod split;
pub mod summary;
mod verdicts;
mod work;

use std::sync::mpsc;
use std::time::{Instant, SystemTime};

pub use hooks::{MemoryEnd, RunHooks, WidthDecision};

use crate::adapt::emfile_policy::EmfileAdapter;
use crate::build::BuildOutput;
use crate::errors::Result;
use crate::events::{BinaryId, RunEvent, RunSummary};
use crate::plan::Plan;
use binary_schedule::{OrderKey, OrderMode};
use run_dir::RunDir;
use runner::Runner;
use summary::Measurements;

/// Runs the built binaries (and doc tests) under `plan`, sending every [`RunEvent`] to `sink`. Returns the
/// summary (also sent as [`RunEvent::RunFinished`]). Call it from a thread that lives until
/// it returns (the main thread): the test binaries die with the thread that spawned them.
pub fn run(
    plan: &Plan,
    built: BuildOutput,
    hooks: &mut dyn RunHooks,
    sink: &mut dyn FnMut(&RunEvent),
) -> Result<RunSummary> {
    let run_started = Instant::now();
    let BuildOutput {
        binaries,
        notices: build_notices,
    } = built;
    let starting_notices = hooks.starting(plan.caps.test_threads());
    let run_dir = RunDir::create(&plan.workspace.target_dir)?;
    let (env, caps) = plan.env_for_run(Some((run_dir.id(), run_dir.path())));
    let listings = list::list_all(
        &binaries,
        list::ListArgs {
            target_dir: &plan.workspace.target_dir,
            env: &env,
            filter: plan.filter.as_deref(),
            test_args: &plan.test_args,
            probe_dir: Some(run_dir.path()),
        },
    );
    // What earlier runs measured, for the order (never in deterministic runs, whose order
    // is fixed) and for flagging tests much slower than usual.
    let history_path = crate::history::path_in(&plan.workspace.target_dir);
    let (history, history_warning) = if plan.history {
        let (history, warning) = crate::history::History::load(&history_path);
        (Some(history), warning)
    } else {
        (None, None)
    };
    let (units, partitioned, skipped) =
        work::units_of(plan, binaries, listings, &run_dir, history.as_ref());
    let mode = if plan.caps.shuffle() {
        OrderMode::Shuffled(plan.caps.seed())
    } else if plan.caps.deterministic() {
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
            expected: history
                .as_ref()
                .filter(|_| !plan.caps.deterministic())
                .and_then(|h| {
                    let medians: Vec<std::time::Duration> = u
                        .listing
                        .tests
                        .iter()
                        .filter_map(|t| h.test(&u.binary.id, &t.name)?.median())
                        .collect();
                    (!medians.is_empty()).then(|| medians.iter().sum())
                }),
        })
        .collect();
    let order = binary_schedule::order(&keys, mode);
    let learned: std::collections::BTreeMap<String, std::time::Duration> = history
        .as_ref()
        .map(|h| {
            units
                .iter()
                .flat_map(|u| {
                    u.listing.tests.iter().filter_map(move |t| {
                        let median = h.test(&u.binary.id, &t.name)?.median()?;
                        Some((format!("{} {}", u.binary.id, t.name), median))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let total_tests = units.iter().map(|u| u.listing.tests.len()).sum::<usize>() + skipped.len();
    let binary_tests = {
        let mut per: std::collections::BTreeMap<&BinaryId, usize> = Default::default();
        for unit in &units {
            *per.entry(&unit.binary.id).or_default() += unit.listing.tests.len();
        }
        for result in &skipped {
            *per.entry(&result.binary).or_default() += 1;
        }
        per.into_iter()
            .map(|(id, n)| (id.clone(), n))
            .collect::<Vec<_>>()
    };
    let binaries_count = {
        let mut ids: Vec<&BinaryId> = units.iter().map(|u| &u.binary.id).collect();
        ids.dedup();
        ids.len()
    };
    // Bounded: a child that writes faster than the loop reads waits in its pipe instead of
    // growing the runner's memory.
    let (sender, receiver) = mpsc::sync_channel(runner::WAKE_QUEUE);
    let start_width = hooks.width(plan.caps.test_threads());
    let width = start_width.width.clamp(1, plan.caps.test_threads().max(1));
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
        reproduce: crate::plan::reproduce::ReproduceBase::from_plan(plan),
        degrade_width: width,
        width,
        emfile: EmfileAdapter::new(plan.caps.test_threads() as usize),
        width_check_due: false,
        width_changes: Vec::new(),
        peaks: Vec::new(),
        attempts: std::collections::HashMap::new(),
        binary_runs: Vec::new(),
        learned_times: learned.clone(),
        learned_peaks: history
            .as_ref()
            .map(|h| {
                h.binaries
                    .iter()
                    .filter_map(|(binary, entry)| Some((binary.clone(), entry.peak_rss()?)))
                    .collect()
            })
            .unwrap_or_default(),
        memory_noticed: std::collections::HashSet::new(),
    };
    runner.emit(RunEvent::RunStarted {
        profile: plan.profile.clone(),
        width,
        requested_width: plan.caps.test_threads(),
        explicit_width: plan.options.test_threads.is_some(),
        degraded_because: start_width
            .why
            .clone()
            .filter(|_| width < plan.caps.test_threads()),
        rayon_threads: plan.caps.rayon_threads(),
        seed: plan.caps.seed(),
        deterministic: plan.caps.deterministic(),
        shuffle: plan.caps.shuffle(),
        binaries: binaries_count,
        tests: total_tests,
        binary_tests,
        learned: learned.clone(),
        at: SystemTime::now(),
        reproduce: runner.reproduce.clone(),
    });
    for message in starting_notices.into_iter().chain(build_notices) {
        runner.emit(RunEvent::Notice { message });
    }
    while let Some(message) = runner.hooks.notice() {
        runner.emit(RunEvent::Notice { message });
    }
    // A lowered start width is on the header line (`degraded_because`), not a notice.
    if width == plan.caps.test_threads()
        && let Some(message) = start_width.notice
    {
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
    // Only now: the build's and the listings' processes are done, so what is re-parented
    // to the runner from here on comes from a test ([`crate::process::orphans`]). Without
    // it (not Linux, or refused), orphans of tests go to init as before.
    let _ = crate::process::orphans::become_subreaper();
    for result in skipped {
        runner.finish_test(result);
    }
    runner.report_list_errors();
    if let Some(message) = history_warning {
        runner.emit(RunEvent::Notice { message });
    }
    let looped = runner.run_loop();
    // What the tests left behind and no unit's end took: gone before the summary.
    crate::process::orphans::sweep_all();
    looped?;
    if let Some(history) = &history {
        for message in slower_than_usual(history, &runner.results) {
            runner.emit(RunEvent::Notice { message });
        }
        let results = runner.results.clone();
        let binaries = std::mem::take(&mut runner.binary_runs);
        if let Some(message) = crate::history::History::record(&history_path, &results, &binaries) {
            runner.emit(RunEvent::Notice { message });
        }
    }
    Ok(runner.finish(run_started.elapsed()))
}

/// How many slower-than-usual tests one run names at most.
const SLOW_LISTED: usize = 5;

/// One line per test that took much longer than its history says it does (over 1.5× its
/// p95 and 100 ms more), the slowest first.
fn slower_than_usual(
    history: &crate::history::History,
    results: &[crate::events::TestResult],
) -> Vec<String> {
    let mut slow: Vec<(std::time::Duration, String)> = results
        .iter()
        .filter_map(|result| {
            let took = result.duration?;
            let entry = history.test(&result.binary, &result.name)?;
            let p95 = entry.p95()?;
            let usual = p95
                .mul_f64(1.5)
                .max(p95 + std::time::Duration::from_millis(100));
            (entry.runs.len() >= 2 && took > usual).then(|| {
                (
                    took,
                    format!(
                        "{} {} took {}, much longer than usual (p95 {} over its last {} runs)",
                        result.binary,
                        result.name,
                        capped_model::units::format_duration(took),
                        capped_model::units::format_duration(p95),
                        entry.runs.len()
                    ),
                )
            })
        })
        .collect();
    slow.sort_by_key(|s| std::cmp::Reverse(s.0));
    slow.into_iter()
        .take(SLOW_LISTED)
        .map(|(_, line)| line)
        .collect()
}
