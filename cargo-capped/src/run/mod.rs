//! *Run*: every test binary as a child in its own process group, with the caps in its
//! environment, scheduled so the run-wide invariants hold, under per-binary timeouts, with
//! Ctrl-C forwarded; results parsed from each binary's output ([`crate::libtest::output`])
//! and its events file, and sent to the reporter as [`RunEvent`]s.
//!
//! ## The parts
//!
//! [`run`] below is the outline: list every binary (in parallel, on threads of their own),
//! while the loop makes the run's units as listings arrive (`intake`: with a known order,
//! the first binaries start before the last are listed), orders them, runs them and
//! reports what it measured.
//!
//! | module | owns |
//! | --- | --- |
//! | [`list`] | listing each binary (`--list`, and `--ignored` for plain libtest) |
//! | `intake` | listings as they arrive → units; early starts while others are still listed; the run's opening events |
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
mod intake;
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
use std::time::Instant;

pub use hooks::{MemoryEnd, RunHooks, WidthDecision};

use crate::adapt::emfile_policy::EmfileAdapter;
use crate::build::BuildOutput;
use crate::errors::Result;
use crate::events::{RunEvent, RunSummary};
use crate::plan::Plan;
use binary_schedule::OrderMode;
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
    let started_at = std::time::SystemTime::now();
    let BuildOutput {
        binaries,
        notices: build_notices,
    } = built;
    let starting_notices = hooks.starting(plan.caps.test_threads());
    let run_dir = RunDir::create(&plan.workspace.target_dir)?;
    let (env, caps) = plan.env_for_run(Some((run_dir.id(), run_dir.path())));
    // What earlier runs measured, for the order (never in deterministic runs, whose order
    // is fixed) and for flagging tests much slower than usual.
    let history_path = crate::history::path_in(&plan.workspace.target_dir);
    let (history, history_warning) = if plan.history {
        let (history, warning) = crate::history::History::load(&history_path);
        (Some(history), warning)
    } else {
        (None, None)
    };
    let mode = if plan.caps.shuffle() {
        OrderMode::Shuffled(plan.caps.seed())
    } else if plan.caps.deterministic() {
        OrderMode::Sorted
    } else {
        OrderMode::Heuristic
    };
    // Bounded: a child that writes faster than the loop reads waits in its pipe instead of
    // growing the runner's memory.
    let (sender, receiver) = mpsc::sync_channel(runner::WAKE_QUEUE);
    let start_width = hooks.width(plan.caps.test_threads());
    let width = start_width.width.clamp(1, plan.caps.test_threads().max(1));
    let feed = intake::ListingFeed::new(binaries.len(), sender.clone());
    // Live output would have to be held until every listing is in; a partition may
    // depend on every test.
    let may_start_early = plan.partition.is_none()
        && !capped_model::libtest_args::has(
            &plan.test_args,
            &capped_model::libtest_args::NOCAPTURE,
        );
    let intake = intake::Intake::new(
        &feed,
        binaries.clone(),
        |binary| !plan.groups_claiming(&binary.id.target).is_empty(),
        history.as_ref(),
        mode,
        may_start_early,
        intake::Opening {
            started_at,
            start_width,
            width,
            notices: starting_notices.into_iter().chain(build_notices).collect(),
            history_warning: history_warning.clone(),
        },
    );
    let listing_order = intake.listing_order().to_vec();
    let probe_dir = run_dir.path().to_path_buf();
    let list_args = list::ListArgs {
        target_dir: &plan.workspace.target_dir,
        env: &env,
        filter: plan.filter.as_deref(),
        test_args: &plan.test_args,
        probe_dir: Some(&probe_dir),
        stop: Some(feed.stop_flag()),
    };
    let mut runner = Runner {
        plan,
        caps,
        env: env.clone(),
        run_dir,
        units: Vec::new(),
        order: Vec::new(),
        sender,
        receiver,
        hooks,
        sink,
        held: Some(intake::Held::default()),
        intake: Some(intake),
        results: Vec::new(),
        measurements: Measurements::default(),
        failed: false,
        failing_seen: false,
        interrupted: None,
        loop_started: Instant::now(),
        listed_at: std::collections::HashMap::new(),
        reproduce: crate::plan::reproduce::ReproduceBase::from_plan(plan),
        degrade_width: width,
        width,
        emfile: EmfileAdapter::new(plan.caps.test_threads() as usize),
        width_check_due: false,
        width_changes: Vec::new(),
        peaks: Vec::new(),
        attempts: std::collections::HashMap::new(),
        binary_runs: Vec::new(),
        learned_times: Default::default(),
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
    // Only now: the build's processes are done, so what is re-parented to the runner from
    // here on comes from a test or a listing ([`crate::process::orphans`]; listings are
    // spawned children, never taken for orphans). Without it (not Linux, or refused),
    // orphans of tests go to init as before.
    let _ = crate::process::orphans::become_subreaper();
    // The listings run on their own threads while the loop starts what it may (see
    // [`intake`]); the loop ends only once every listing is in.
    let looped = std::thread::scope(|scope| {
        let feed = &feed;
        let binaries = &binaries;
        let listing_order = &listing_order;
        scope.spawn(move || {
            let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                list::list_each(binaries, listing_order, list_args, &|index, listing| {
                    feed.put(index, listing)
                })
            }));
            // Whatever happened to the listing threads, every binary gets an answer.
            feed.fail_unanswered(match listed {
                Ok(()) => "not listed",
                Err(_) => "listing failed in cargo capped",
            });
        });
        runner.run_loop()
    });
    // What the tests left behind and no unit's end took: gone before the summary.
    crate::process::orphans::sweep_all();
    looped?;
    if let Some(history) = &history {
        for message in slower_than_usual(history, &runner.results) {
            runner.emit(RunEvent::Notice { message });
        }
        let results = runner.results.clone();
        let binaries = std::mem::take(&mut runner.binary_runs);
        // A path left as it is says so once, when it is read.
        if let Some(message) = crate::history::History::record(&history_path, &results, &binaries)
            && Some(&message) != history_warning.as_ref()
        {
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
