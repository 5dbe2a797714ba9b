//! The coordinator: feeds the [`Scheduler`] the real resources, runs each started test on
//! its own thread (named after the test, as libtest names it), reports each end, enforces
//! timeouts, and never hangs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::run_test::{
    context_for, emit_end, emit_start, judge, panic_message, reproduce_line, request_for, run_body,
    timeout_for,
};
use crate::test_spec::{Registration, ShouldPanic};
use capped_model::Caps;
use capped_model::Error;
use capped_model::protocol::Outcome;
use capped_model::resource::{Guard, Resolved};
use capped_model::units::format_duration;

use super::args::Args;
use super::report::{Counts, Report, Shown};
use super::select::{Selected, shuffled};
use super::test_scheduler::{Picked, Scheduler, Shape, priority_order};

/// How long the other running tests may go on after a test timed out.
pub(crate) const TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// libtest warns about a test running longer than this.
const SLOW_WARNING: Duration = Duration::from_secs(60);
/// Polling for slots other processes free: first and longest interval.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(8);
/// How often a run whose tests all wait for other processes says who holds what.
const STILL_WAITING: Duration = Duration::from_secs(30);

thread_local! {
    /// Where the last panic on this thread happened (set by the harness's panic hook).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The test on this thread is `#[should_panic]`: its panic is expected.
    static EXPECTS_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the panic hook so a failing test's report can say where it panicked. The previous
/// hook (std's, printing `thread 'NAME' panicked at …` to stderr) still runs, except for
/// the expected panic of a `#[should_panic]` test, which libtest's capture would hide too
/// (if it was not the expected one, the failures section shows its message).
pub(crate) fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(location) = info.location() {
            PANIC_LOCATION.with(|l| *l.borrow_mut() = Some(location.to_string()));
        }
        if !EXPECTS_PANIC.with(Cell::get) {
            previous(info);
        }
    }));
}

/// How a test body ended: `Ok(None)` passed, `Ok(Some(error))` returned an error,
/// `Err((message, location))` panicked.
type BodyResult = Result<Option<String>, (String, Option<String>)>;

struct Done {
    job: usize,
    result: BodyResult,
    took: Duration,
}

/// A test to run.
struct Job {
    name: String,
    reg: &'static Registration,
    resolved: Result<Resolved, Error>,
    timeout: Option<Duration>,
}

struct Running {
    started: Instant,
    deadline: Option<Instant>,
    warned: bool,
}

/// The number of tests this process runs at once: the caps' width, lowered by an explicit
/// `--test-threads` or `RUST_TEST_THREADS` (the caps already use them unless the runner
/// set `CAPPED_TEST_THREADS`), and by the width slots the runner holds for this process.
pub(crate) fn local_width(caps: &Caps, args: &Args) -> u32 {
    let requested = args.test_threads.or_else(|| {
        std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n > 0)
    });
    let mut width = caps.test_threads();
    if let Some(n) = requested {
        width = width.min(n);
    }
    if caps.width_held() > 0 {
        width = width.min(caps.width_held());
    }
    width.max(1)
}

/// What the scheduler needs of a test: its local width and resources.
fn shape_of(reg: &Registration, width: u32) -> Shape {
    let spec = reg.spec;
    let mut groups: Vec<String> = spec.groups.iter().map(|g| g.to_string()).collect();
    groups.sort();
    groups.dedup();
    Shape {
        width: if spec.serial {
            width
        } else {
            spec.threads.clamp(1, width)
        },
        groups,
        mem: spec.mem.unwrap_or(0),
    }
}

/// The text of a failing test's `---- NAME stdout ----` section.
fn failure_text(name: &str, body: &str, reg: &Registration, caps: &Caps) -> String {
    let mut text = body.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&reproduce_line(name, &reg.spec.full_path(), caps));
    text.push('\n');
    text
}

/// Runs the selected tests; returns the process's exit code.
pub(crate) fn run(
    selected: Vec<Selected<'static>>,
    filtered_out: usize,
    args: &Args,
    caps: &'static Caps,
) -> i32 {
    let run_started = Instant::now();
    let width = local_width(caps, args);
    let strict = caps.deterministic();
    let shuffle_seed = match args.shuffle_seed {
        Some(seed) => Some(seed),
        None if args.shuffle || caps.shuffle() => Some(caps.seed()),
        None => None,
    };
    let mut report = Report::new(std::io::stdout(), args.format, args.color, width == 1);
    if args.logfile.is_some() {
        eprintln!("capped-test: --logfile is not supported by the capped harness; it is ignored");
    }
    for test in &selected {
        if test.reg.spec.should_panic != ShouldPanic::No {
            report.mark_should_panic(&test.name);
        }
    }
    report.run_start(selected.len(), shuffle_seed);

    let mut counts = Counts {
        filtered_out,
        ..Counts::default()
    };
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for test in selected {
        if test.ignored {
            counts.ignored += 1;
            let reason = test.reg.spec.ignore.flatten().map(str::to_string);
            report.test_end(&test.name, &Shown::Ignored(reason), None);
            continue;
        }
        let spec = test.reg.spec;
        // A device-backed group without devices: skipped, with the reason, and said so in
        // the events file too.
        if let Some(reason) = crate::devices::skip_reason(spec.groups) {
            counts.ignored += 1;
            emit_end(
                caps,
                &test.name,
                Outcome::Ignored,
                Duration::ZERO,
                Some(reason.clone()),
            );
            report.test_end(&test.name, &Shown::Ignored(Some(reason)), None);
            continue;
        }
        jobs.push(Job {
            resolved: request_for(spec).resolve(caps),
            timeout: timeout_for(spec, caps),
            name: test.name,
            reg: test.reg,
        });
    }

    let shapes: Vec<Shape> = jobs.iter().map(|job| shape_of(job.reg, width)).collect();
    let base: Vec<usize> = match shuffle_seed {
        Some(seed) => {
            let names: Vec<&str> = jobs.iter().map(|job| job.name.as_str()).collect();
            shuffled(&names, seed)
        }
        None => (0..jobs.len()).collect(),
    };
    let order = if strict || width == 1 {
        base
    } else {
        priority_order(&shapes, &base, |g| caps.group(g).max, caps.mem_budget())
    };
    let mut scheduler = Scheduler::new(shapes, order, width, strict);

    let (sender, receiver) = mpsc::channel::<Done>();
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let mut timed_out: Vec<String> = Vec::new();
    let mut stop_at: Option<Instant> = None;
    let mut poll = POLL_MIN;
    let mut last_progress = Instant::now();

    loop {
        let now = Instant::now();
        if stop_at.is_none() {
            let picked = scheduler.pick(now, |job, asked_at| match &jobs[job].resolved {
                Ok(resolved) => resolved.try_take(asked_at).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            });
            for pick in picked {
                last_progress = now;
                poll = POLL_MIN;
                match pick {
                    Picked::Start(job, guard) => {
                        let test = &jobs[job];
                        report.test_start(&test.name);
                        let started = Instant::now();
                        match spawn(job, test, guard, caps, sender.clone()) {
                            Ok(()) => {
                                running.insert(
                                    job,
                                    Running {
                                        started,
                                        deadline: test.timeout.map(|t| started + t),
                                        warned: false,
                                    },
                                );
                            }
                            Err(e) => {
                                let message = format!("cannot start a thread for the test: {e}");
                                fail_unstarted(test, &message, caps, &mut report, &mut failures);
                                counts.failed += 1;
                                scheduler.finished(job, Duration::ZERO);
                            }
                        }
                    }
                    Picked::Fail(job, error) => {
                        let test = &jobs[job];
                        let message = format!("cannot take its resources: {error}");
                        fail_unstarted(test, &message, caps, &mut report, &mut failures);
                        counts.failed += 1;
                    }
                }
            }
        }
        if running.is_empty() && (stop_at.is_some() || scheduler.pending().is_empty()) {
            break;
        }

        // Sleep until a test ends, or the next thing to look at.
        let mut wake = now + Duration::from_secs(3600);
        if stop_at.is_none() && !scheduler.pending().is_empty() && scheduler.has_free_slot() {
            wake = wake.min(now + poll);
        }
        for state in running.values() {
            if let Some(deadline) = state.deadline {
                wake = wake.min(deadline);
            }
            if !state.warned {
                wake = wake.min(state.started + SLOW_WARNING);
            }
        }
        if let Some(stop_at) = stop_at {
            wake = wake.min(stop_at);
        }
        let mut handle =
            |done: Done, running: &mut BTreeMap<usize, Running>, scheduler: &mut Scheduler| {
                // A test that already timed out is reported; its late end changes nothing.
                if running.remove(&done.job).is_none() {
                    return;
                }
                let test = &jobs[done.job];
                finish(
                    test,
                    done.result,
                    done.took,
                    caps,
                    &mut report,
                    &mut counts,
                    &mut failures,
                );
                scheduler.finished(done.job, done.took);
            };
        match receiver.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(done) => {
                handle(done, &mut running, &mut scheduler);
                while let Ok(done) = receiver.try_recv() {
                    handle(done, &mut running, &mut scheduler);
                }
                poll = POLL_MIN;
                last_progress = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => poll = (poll * 2).min(POLL_MAX),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the coordinator holds a sender"),
        }

        let now = Instant::now();
        let expired: Vec<usize> = running
            .iter()
            .filter(|(_, state)| state.deadline.is_some_and(|d| now >= d))
            .map(|(&job, _)| job)
            .collect();
        for job in expired {
            let state = running.remove(&job).expect("listed above");
            let test = &jobs[job];
            let timeout = test.timeout.expect("only tests with a timeout expire");
            let note = format!("timed out after {}", format_duration(timeout));
            let body = format!(
                "the test {note}; its thread cannot be stopped and keeps its resources until \
                 the process exits, so the run stops: the other running tests get up to {} \
                 to finish",
                format_duration(TIMEOUT_GRACE)
            );
            let text = failure_text(&test.name, &body, test.reg, caps);
            emit_end(
                caps,
                &test.name,
                Outcome::TimedOut,
                now - state.started,
                Some(body),
            );
            report.test_end(&test.name, &Shown::Failed(Some(note.clone())), Some(&text));
            failures.push((test.name.clone(), text));
            counts.failed += 1;
            timed_out.push(test.name.clone());
            stop_at.get_or_insert(now + TIMEOUT_GRACE);
        }
        for (&job, state) in running.iter_mut() {
            if !state.warned && now >= state.started + SLOW_WARNING {
                state.warned = true;
                report.slow(&jobs[job].name, SLOW_WARNING);
            }
        }
        if stop_at.is_some_and(|stop_at| now >= stop_at) {
            break;
        }
        if running.is_empty()
            && stop_at.is_none()
            && now.duration_since(last_progress) >= STILL_WAITING
            && let Some(&first) = scheduler.pending().first()
            && let Ok(resolved) = &jobs[first].resolved
        {
            eprintln!(
                "capped: {} has waited {} for {resolved}; held by {}",
                jobs[first].name,
                format_duration(now.duration_since(scheduler.blocked_since(first).unwrap_or(now))),
                resolved.holders().join(", ")
            );
            last_progress = now;
        }
    }

    // Tests still running after the grace, and tests never started.
    let stopped_by = timed_out.join(", ");
    for (&job, state) in &running {
        let test = &jobs[job];
        let body = format!(
            "the test did not finish within the {} grace after {stopped_by} timed out; the run \
             stopped while it was running",
            format_duration(TIMEOUT_GRACE)
        );
        let text = failure_text(&test.name, &body, test.reg, caps);
        emit_end(
            caps,
            &test.name,
            Outcome::Failed,
            state.started.elapsed(),
            Some(body),
        );
        report.test_end(
            &test.name,
            &Shown::Failed(Some("did not finish".into())),
            Some(&text),
        );
        failures.push((test.name.clone(), text));
        counts.failed += 1;
    }
    let not_run: Vec<&str> = scheduler
        .pending()
        .iter()
        .map(|&job| jobs[job].name.as_str())
        .collect();
    if !not_run.is_empty() {
        let note = capped_model::protocol::NotRunNote {
            reason: format!("the run stopped after {stopped_by} timed out"),
            tests: not_run.iter().map(|name| name.to_string()).collect(),
        };
        report.note(&format!("\n{}", note.format()));
    }
    report.run_end(&failures, counts, run_started.elapsed());
    if counts.failed == 0 && not_run.is_empty() {
        0
    } else {
        101
    }
}

/// Runs the test on a new thread named after it; the thread sends [`Done`] when the body
/// ended and its resources are released.
fn spawn(
    job: usize,
    test: &Job,
    guard: Guard,
    caps: &'static Caps,
    sender: Sender<Done>,
) -> std::io::Result<()> {
    let reg = test.reg;
    let name = test.name.clone();
    let context = context_for(reg.spec, &name, &guard, caps);
    // Whatever happens on the thread, the coordinator hears that the test ended: a test
    // whose end went unreported would keep the run waiting forever.
    let end = EndReport {
        sender,
        job,
        done: None,
    };
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            emit_start(caps, &name, &guard);
            EXPECTS_PANIC.with(|e| e.set(reg.spec.should_panic != ShouldPanic::No));
            let started = Instant::now();
            let outcome = run_body(context, reg.run);
            let took = started.elapsed();
            drop(guard);
            let result = match outcome {
                Ok(Ok(())) => Ok(None),
                Ok(Err(error)) => Ok(Some(error)),
                Err(payload) => {
                    let location = PANIC_LOCATION.with(|l| l.borrow_mut().take());
                    Err((panic_message(payload.as_ref()), location))
                }
            };
            end.finish(Done { job, result, took });
        })
        .map(drop)
}

/// Sends the test's [`Done`] when dropped, or, if the thread ended some other way, a
/// failure saying so.
struct EndReport {
    sender: Sender<Done>,
    job: usize,
    done: Option<Done>,
}

impl EndReport {
    /// Sends `done` (the whole value moves into the thread's closure through this call).
    fn finish(mut self, done: Done) {
        self.done = Some(done);
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        let done = self.done.take().unwrap_or_else(|| Done {
            job: self.job,
            result: Err((
                "the harness lost the test's thread before the test ended".to_string(),
                None,
            )),
            took: Duration::ZERO,
        });
        let _ = self.sender.send(done);
    }
}

/// Reports a test that ended.
fn finish(
    test: &Job,
    result: BodyResult,
    took: Duration,
    caps: &Caps,
    report: &mut Report<std::io::Stdout>,
    counts: &mut Counts,
    failures: &mut Vec<(String, String)>,
) {
    let spec = test.reg.spec;
    let (outcome, message) = judge(spec, &result.as_ref().map_err(|(m, _)| m.clone()).cloned());
    // The end event before the result line: a runner reading both (`cargo capped`) has the
    // test's duration by the time it sees the line.
    emit_end(caps, &test.name, outcome, took, message.clone());
    match outcome {
        Outcome::Passed => {
            counts.passed += 1;
            report.test_end(&test.name, &Shown::Ok, None);
        }
        _ => {
            counts.failed += 1;
            let body = match (&result, spec.should_panic) {
                (Err((panic, location)), ShouldPanic::No) => match location {
                    Some(location) => {
                        format!("thread '{}' panicked at {location}:\n{panic}", test.name)
                    }
                    None => format!("thread '{}' panicked:\n{panic}", test.name),
                },
                (Ok(None), ShouldPanic::Yes | ShouldPanic::YesWithMessage(_)) => {
                    format!("note: {}", message.clone().unwrap_or_default())
                }
                _ => message.clone().unwrap_or_default(),
            };
            let text = failure_text(&test.name, &body, test.reg, caps);
            report.test_end(&test.name, &Shown::Failed(None), Some(&text));
            failures.push((test.name.clone(), text));
        }
    }
}

/// Reports a test that failed before its body ran.
fn fail_unstarted(
    test: &Job,
    message: &str,
    caps: &Caps,
    report: &mut Report<std::io::Stdout>,
    failures: &mut Vec<(String, String)>,
) {
    let text = failure_text(&test.name, &format!("capped: {message}"), test.reg, caps);
    emit_end(
        caps,
        &test.name,
        Outcome::Failed,
        Duration::ZERO,
        Some(message.to_string()),
    );
    report.test_end(&test.name, &Shown::Failed(None), Some(&text));
    failures.push((test.name.clone(), text));
}
