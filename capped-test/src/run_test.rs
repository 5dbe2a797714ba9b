//! Runs one `#[capped]` test: takes its resources, sets its context (name, seed, slots),
//! catches its panic, judges it against `#[should_panic]`, writes its events and, when it
//! fails, prints the line that reproduces it. Shared by libtest mode and harness mode.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::context::{TestContext, with_context};
use crate::init::ensure_init;
use crate::test_spec::{ShouldPanic, TestReturn, TestSpec};
use capped_model::derive_seed;
use capped_model::protocol::{Event, Outcome, Reproduce, now_us};
use capped_model::resource::{Guard, Request};
use capped_model::units::format_duration;
use capped_model::{Caps, caps};

/// The resources `spec` declares, as a request under `caps`.
pub fn request_for(spec: &TestSpec) -> Request {
    let request = Request::new()
        .groups(spec.groups.iter().copied())
        .label(spec.name());
    let request = if spec.serial {
        request.serial()
    } else {
        request.width(spec.threads.max(1))
    };
    match spec.mem {
        Some(bytes) => request.mem(bytes),
        None => request,
    }
}

/// The timeout that applies to `spec`: its own, else `CAPPED_TEST_TIMEOUT`.
pub fn timeout_for(spec: &TestSpec, caps: &Caps) -> Option<Duration> {
    spec.timeout.or(caps.test_timeout())
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "the test panicked with a non-string payload".to_string()
    }
}

/// How a test ended, judged against `#[should_panic]`: `Ok(())` for a body that returned
/// successfully, `Err(Some(message))` for a returned error, `Err(None)` + payload message
/// for a panic.
pub fn judge(
    spec: &TestSpec,
    result: &Result<Option<String>, String>,
) -> (Outcome, Option<String>) {
    match (result, spec.should_panic) {
        (Ok(None), ShouldPanic::No) => (Outcome::Passed, None),
        (Ok(Some(error)), _) => (Outcome::Failed, Some(error.clone())),
        (Ok(None), _) => (
            Outcome::Failed,
            Some("test did not panic as expected".to_string()),
        ),
        (Err(message), ShouldPanic::No) => (Outcome::Failed, Some(message.clone())),
        (Err(_), ShouldPanic::Yes) => (Outcome::Passed, None),
        (Err(message), ShouldPanic::YesWithMessage(expected)) if message.contains(expected) => {
            (Outcome::Passed, None)
        }
        (Err(message), ShouldPanic::YesWithMessage(expected)) => (
            Outcome::Failed,
            Some(format!(
                "panic did not contain expected string\n      panic message: {message:?}\n expected substring: {expected:?}"
            )),
        ),
    }
}

/// The line printed under a failing test: its seed and how to run it again. Under the
/// runner the command is the one the runner built for this binary (`CAPPED_REPRODUCE`:
/// the same build, package, target and seed), so it agrees with the runner's report.
pub fn reproduce_line(name: &str, full_path: &str, caps: &Caps) -> String {
    let from_runner = caps
        .under_runner()
        .then(|| std::env::var(capped_model::protocol::env::REPRODUCE).ok())
        .flatten()
        .and_then(|text| capped_model::protocol::parse_reproduce(&text).ok());
    reproduce_line_with(name, full_path, caps, from_runner.as_ref())
}

/// [`reproduce_line`] with the runner's `CAPPED_REPRODUCE`, when there is one.
pub fn reproduce_line_with(
    name: &str,
    full_path: &str,
    caps: &Caps,
    from_runner: Option<&Reproduce>,
) -> String {
    let seed = derive_seed(caps.seed(), full_path);
    // The runner hands every test process its seed as given; where it came from is the
    // runner's to say.
    let origin = from_runner.map_or(caps.seed_origin(), |r| r.seed_origin);
    let command = match (from_runner, caps.profile()) {
        (Some(reproduce), _) => reproduce.command_for(name),
        (None, Some(profile)) if caps.under_runner() => {
            format!(
                "cargo capped run --profile {profile} --seed {} -- --exact {name}",
                caps.seed()
            )
        }
        _ => format!("CAPPED_SEED={} cargo test -- --exact {name}", caps.seed()),
    };
    format!(
        "capped: {name} failed with seed {seed} (run seed {}, {}); reproduce: {command}",
        caps.seed(),
        origin.label()
    )
}

pub(crate) fn context_for(spec: &TestSpec, name: &str, guard: &Guard, caps: &Caps) -> TestContext {
    TestContext {
        name: name.to_string(),
        seed: derive_seed(caps.seed(), &spec.full_path()),
        slots: guard.slots(),
    }
}

fn emit(caps: &Caps, event: Event) {
    if let Some(path) = caps.events_path()
        && let Err(e) = event.append_to(path)
    {
        eprintln!(
            "capped-test: cannot write to the events file {}: {e}",
            path.display()
        );
    }
}

/// Writes the start event of a test that holds `guard`.
pub fn emit_start(caps: &Caps, name: &str, guard: &Guard) {
    if caps.events_path().is_none() {
        return;
    }
    let waited = guard.waited().as_micros() as u64;
    let slots = guard.slots();
    let mut waits: BTreeMap<String, u64> = slots.keys().map(|k| (k.clone(), waited)).collect();
    if guard.mem().is_some() {
        waits.insert(capped_model::resource::MEM.to_string(), waited);
    }
    emit(
        caps,
        Event::Start {
            test: name.to_string(),
            pid: std::process::id(),
            at_us: now_us(),
            slots,
            waits_us: waits,
        },
    );
}

/// Writes the end event of a test.
pub fn emit_end(
    caps: &Caps,
    name: &str,
    outcome: Outcome,
    duration: Duration,
    message: Option<String>,
) {
    emit(
        caps,
        Event::End {
            test: name.to_string(),
            pid: std::process::id(),
            at_us: now_us(),
            outcome,
            duration_us: duration.as_micros() as u64,
            message,
        },
    );
}

/// Runs `body` with the test's context; the body's failure message (`Ok(Some)`) or panic
/// (`Err(payload)`).
pub(crate) fn run_body<T: TestReturn>(
    context: TestContext,
    body: impl FnOnce() -> T,
) -> Result<T, Box<dyn Any + Send>> {
    with_context(context, || catch_unwind(AssertUnwindSafe(body)))
}

/// Runs one test under libtest: what `#[capped]` expands to.
pub fn run_libtest<T: TestReturn + 'static>(spec: &'static TestSpec, body: fn() -> T) -> T {
    ensure_init();
    #[cfg(feature = "harness")]
    crate::harness::warn_if_main_under_libtest();
    let caps = caps();
    let name = spec.name();
    if let Some(reason) = crate::devices::skip_reason(spec.groups) {
        // The body never runs; the events file says so (libtest can only say `ok`).
        println!("capped: {name} skipped: {reason}");
        emit_end(caps, &name, Outcome::Ignored, Duration::ZERO, Some(reason));
        return T::success();
    }
    let guard = request_for(spec)
        .acquire_with(caps)
        .unwrap_or_else(|e| panic!("capped: {name} cannot take its resources: {e}"));
    let context = context_for(spec, &name, &guard, caps);
    emit_start(caps, &name, &guard);
    let started = Instant::now();
    match timeout_for(spec, caps) {
        None => {
            let result = run_body(context, body);
            let judged = judge(
                spec,
                &result
                    .as_ref()
                    .map(TestReturn::failure)
                    .map_err(|p| panic_message(p.as_ref())),
            );
            finish(caps, spec, &name, judged, started.elapsed());
            drop(guard);
            match result {
                Ok(value) => value,
                Err(payload) => resume_unwind(payload),
            }
        }
        Some(timeout) => run_with_timeout(spec, name, body, guard, context, timeout, started),
    }
}

fn finish(
    caps: &Caps,
    spec: &TestSpec,
    name: &str,
    (outcome, message): (Outcome, Option<String>),
    took: Duration,
) {
    if outcome == Outcome::Failed {
        eprintln!("{}", reproduce_line(name, &spec.full_path(), caps));
    }
    emit_end(caps, name, outcome, took, message);
}

/// Runs the body on its own thread (named like libtest's test thread) and waits at most
/// `timeout`. A body past its timeout fails the test at once; its thread keeps running and
/// keeps its slots until it ends or the process exits, so no group is over-subscribed.
fn run_with_timeout<T: TestReturn + 'static>(
    spec: &'static TestSpec,
    name: String,
    body: fn() -> T,
    guard: Guard,
    context: TestContext,
    timeout: Duration,
    started: Instant,
) -> T {
    let caps = caps();
    let timed_out = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread_name = std::thread::current()
        .name()
        .map_or_else(|| name.clone(), str::to_string);
    let flag = Arc::clone(&timed_out);
    let thread_test_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let result = run_body(context, || body().into_result());
            let result = result.map_err(|payload| {
                let message = panic_message(payload.as_ref());
                (payload, message)
            });
            if !flag.swap(true, Ordering::SeqCst) {
                let judged = judge(
                    spec,
                    &result
                        .as_ref()
                        .map(|r| r.clone().err())
                        .map_err(|(_, m)| m.clone()),
                );
                finish(caps, spec, &thread_test_name, judged, started.elapsed());
            }
            drop(guard);
            let _ = sender.send(result.map_err(|(payload, _)| payload));
        });
    if let Err(e) = spawned {
        panic!("capped: {name}: cannot start the test thread: {e}");
    }
    match receiver.recv_timeout(timeout) {
        Ok(Ok(Ok(()))) => T::success(),
        Ok(Ok(Err(message))) => panic!("{message}"),
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => {
            let message = format!(
                "test {name} timed out after {}; its thread is left running (holding its slots) until the process exits",
                format_duration(timeout)
            );
            if !timed_out.swap(true, Ordering::SeqCst) {
                eprintln!("{}", reproduce_line(&name, &spec.full_path(), caps));
                emit_end(
                    caps,
                    &name,
                    Outcome::TimedOut,
                    started.elapsed(),
                    Some(message.clone()),
                );
            }
            if spec.should_panic != ShouldPanic::No {
                // A panic would count as the expected one; returning makes libtest fail
                // the test ("did not panic as expected") and the message says why.
                eprintln!("capped: {message}");
                return T::success();
            }
            panic!("capped: {message}")
        }
    }
}
