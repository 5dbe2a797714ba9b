//! Harness mode end to end: the `harness_fixture` target (`harness = false`, ending in
//! `capped_test::main!()`) run as `cargo test`, nextest and `cargo capped` run it, compared
//! with the same tests under libtest (`harness_fixture_libtest`).
//!
//! Every child runs in a sandbox of its own (lock dir, run dir, log), and the children run
//! one at a time, so the timing checks are not disturbed by each other. Timing bounds are
//! generous (the machine is shared); `harness_bench.rs` measures precisely.

mod harness_support;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use capped_test::protocol::{Event, ListedTest};
use harness_support::{Output, Sandbox, concurrency, makespan, overlaps};

const HARNESS: &str = "harness_fixture";
const LIBTEST: &str = "harness_fixture_libtest";
const DEADLINE: Duration = Duration::from_secs(120);

/// One child at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(sandbox: &Sandbox, target: &str, args: &[&str]) -> Output {
    sandbox.run(target, args, DEADLINE)
}

fn sorted(results: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut results = results;
    results.sort();
    results
}

#[test]
fn listing_is_libtests() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    for args in [
        &["--list", "--format", "terse"][..],
        &["--list", "--format", "terse", "--ignored"],
        &["--list"],
        &["--list", "--ignored"],
        &["--list", "mixed::light"],
        &["--list", "--exact", "mixed::light_1", "misc::passes"],
        &[
            "--list",
            "--format=terse",
            "--skip",
            "gpu",
            "--skip",
            "misc::ignored",
        ],
        &["--list", "--format", "terse", "--include-ignored", "misc"],
        &["--list", "--exact", "light_1"],
        &[
            "--list",
            "-q",
            "--exact",
            "--skip",
            "mixed::gpu_a",
            "mixed::gpu_a",
        ],
    ] {
        let ours = run(&sandbox, HARNESS, args);
        let libtest = run(&sandbox, LIBTEST, args);
        assert_eq!(ours.code, Some(0), "{args:?}: {}", ours.stderr);
        assert_eq!(ours.stdout, libtest.stdout, "{args:?}");
    }
    let terse = run(&sandbox, HARNESS, &["--list", "--format", "terse"]);
    assert!(terse.stdout.starts_with("misc::fails_on_request: test\n"));
    assert!(terse.stdout.contains("\nmixed::gpu_a: test\n"));
    assert_eq!(terse.stdout.lines().count(), 21);
    let ignored = run(
        &sandbox,
        HARNESS,
        &["--list", "--format", "terse", "--ignored"],
    );
    assert_eq!(
        ignored.stdout,
        "misc::ignored_plain: test\nmisc::ignored_with_reason: test\n"
    );
}

#[test]
fn selection_and_results_are_libtests() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    for args in [
        &[][..],
        &["mixed::light"],
        &["--exact", "mixed::light_1"],
        &["--skip", "gpu", "mixed"],
        &["--ignored"],
        &["--include-ignored", "misc::ignored"],
        &["misc::passes", "mixed::gpu_a"],
        &["--exact", "misc", "--skip", "x"],
        &["--test-threads", "1", "misc"],
        &["-q", "misc"],
    ] {
        let ours = run(&sandbox, HARNESS, args);
        let libtest = run(&sandbox, LIBTEST, args);
        assert_eq!(
            ours.code,
            Some(0),
            "{args:?}: {}\n{}",
            ours.stdout,
            ours.stderr
        );
        assert_eq!(ours.code, libtest.code, "{args:?}");
        assert_eq!(
            sorted(ours.results()),
            sorted(libtest.results()),
            "{args:?}\n{}",
            ours.stdout
        );
        assert_eq!(ours.summary(), libtest.summary(), "{args:?}");
        assert_eq!(
            ours.stdout.lines().nth(1),
            libtest.stdout.lines().nth(1),
            "{args:?}: the `running N tests` line differs"
        );
    }
}

#[test]
fn failures_are_reported_like_libtest_with_more_detail() {
    let _serial = serial();
    let sandbox = Sandbox::new()
        .env("HARNESS_FIXTURE_FAIL", 1)
        .env("CAPPED_SEED", 1234);
    let args = &["misc"];
    let ours = run(&sandbox, HARNESS, args);
    let libtest = run(&sandbox, LIBTEST, args);
    assert_eq!(ours.code, Some(101), "{}", ours.stdout);
    assert_eq!(libtest.code, Some(101));
    assert_eq!(sorted(ours.results()), sorted(libtest.results()));
    assert_eq!(ours.summary(), libtest.summary());
    let failed = "\nfailures:\n    misc::fails_on_request\n    misc::returns_an_error_on_request\n    misc::should_panic_unless_asked\n";
    assert!(ours.stdout.contains(failed), "{}", ours.stdout);
    assert!(libtest.stdout.contains(failed), "{}", libtest.stdout);
    for section in [
        "---- misc::fails_on_request stdout ----\nthread 'misc::fails_on_request' panicked at ",
        "suite.rs:",
        "asked to fail\ncapped: misc::fails_on_request failed with seed ",
        "(run seed 1234, given); reproduce: CAPPED_SEED=1234 cargo test -- --exact misc::fails_on_request",
        "---- misc::returns_an_error_on_request stdout ----\nError: \"asked to return an error\"\n",
        "---- misc::should_panic_unless_asked stdout ----\nnote: test did not panic as expected\n",
    ] {
        assert!(
            ours.stdout.contains(section),
            "{section:?} missing in\n{}",
            ours.stdout
        );
    }
    // The expected panic of a passing #[should_panic] test is not printed.
    assert!(!ours.stderr.contains("it went boom"), "{}", ours.stderr);
}

#[test]
fn gpu_never_overlaps_while_light_tests_fill_the_width() {
    let _serial = serial();
    for by_env in [false, true] {
        let mut sandbox = Sandbox::new()
            .env("HARNESS_FIXTURE_UNIT_MS", 100)
            .with_events();
        let args: &[&str] = if by_env {
            sandbox = sandbox.env("RUST_TEST_THREADS", 2);
            &["mixed::"]
        } else {
            &["--test-threads", "2", "mixed::"]
        };
        let out = run(&sandbox, HARNESS, args);
        let how = if by_env {
            "RUST_TEST_THREADS=2"
        } else {
            "--test-threads 2"
        };
        check_mixed_run(&sandbox, &out, how);
    }
}

fn check_mixed_run(sandbox: &Sandbox, out: &Output, how: &str) {
    assert_eq!(out.code, Some(0), "{how}: {}\n{}", out.stdout, out.stderr);
    assert!(
        out.summary()
            .starts_with("test result: ok. 9 passed; 0 failed;")
    );
    let spans = sandbox.spans();
    assert_eq!(spans.len(), 9, "{spans:?}");
    let gpu: Vec<(u64, u64)> = spans
        .iter()
        .filter(|(name, _)| name.contains("gpu"))
        .map(|(_, span)| *span)
        .collect();
    for (i, a) in gpu.iter().enumerate() {
        for b in &gpu[i + 1..] {
            assert!(!overlaps(*a, *b), "{how}: gpu tests overlap: {spans:?}");
        }
    }
    let all: Vec<(u64, u64)> = spans.values().copied().collect();
    let (max, two_at_once) = concurrency(&all, 2);
    assert!(max <= 2, "{how}: {max} tests ran at once: {spans:?}");
    // The best schedule has 2 running for 1000 of its 1100 ms.
    assert!(
        two_at_once > 0.7,
        "{how}: 2 ran at once {two_at_once:.2} of the time"
    );
    let took = makespan(&all);
    assert!(
        took < Duration::from_millis(2200),
        "{how}: makespan {took:?} (best 1.1s)"
    );
    // The events name each test's start with its slots, and its end.
    let events = Event::read_all(&sandbox.events_path()).unwrap();
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Start { test, slots, .. } => Some((test.clone(), slots.clone())),
            Event::End { .. } => None,
        })
        .collect();
    assert_eq!(starts.len(), 9);
    for (test, slots) in &starts {
        assert!(slots.contains_key("width"), "{test}: {slots:?}");
        assert_eq!(
            slots.contains_key("harness-gpu"),
            test.contains("gpu"),
            "{test}: {slots:?}"
        );
    }
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::End { outcome, .. } if *outcome == capped_test::protocol::Outcome::Passed))
        .count();
    assert_eq!(ends, 9);
}

#[test]
fn light_tests_run_while_another_process_holds_the_gpu() {
    let _serial = serial();
    let sandbox = Sandbox::new().env("HARNESS_FIXTURE_UNIT_MS", 100);
    // Another process's holder: the gpu's slot file, locked as capped-test locks it.
    let slot_dir = sandbox.dir.path().join("locks/harness-gpu");
    std::fs::create_dir_all(&slot_dir).unwrap();
    let slot = std::fs::File::create(slot_dir.join("0.lock")).unwrap();
    slot.lock().unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let released_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        slot.unlock().unwrap();
        released_at
    });
    let out = run(&sandbox, HARNESS, &["--test-threads", "2", "mixed::"]);
    let released_at = holder.join().unwrap();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let spans = sandbox.spans();
    let first_gpu = spans
        .iter()
        .filter(|(name, _)| name.contains("gpu"))
        .map(|(_, span)| span.0)
        .min()
        .unwrap();
    // No thread waited on the busy gpu: the light tests all ran (two at a time) meanwhile.
    for (name, span) in spans.iter().filter(|(name, _)| name.contains("light")) {
        assert!(
            span.1 <= released_at,
            "{name} ended after the gpu was released: {spans:?}"
        );
    }
    let lights: Vec<(u64, u64)> = spans
        .iter()
        .filter(|(name, _)| name.contains("light"))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(concurrency(&lights, 2).0, 2);
    // The freed slot is noticed by polling (every ≤ 8 ms); allow for a loaded machine.
    assert!(
        first_gpu >= released_at,
        "a gpu test ran while the gpu was held"
    );
    let noticed = Duration::from_micros(first_gpu - released_at);
    assert!(
        noticed < Duration::from_millis(300),
        "noticed after {noticed:?}"
    );
}

#[test]
fn one_thread_runs_one_test_at_a_time() {
    let _serial = serial();
    let sandbox = Sandbox::new()
        .env("HARNESS_FIXTURE_UNIT_MS", 20)
        .env("RUST_TEST_THREADS", 1);
    let out = run(&sandbox, HARNESS, &["mixed::"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let all: Vec<(u64, u64)> = sandbox.spans().values().copied().collect();
    assert_eq!(concurrency(&all, 1).0, 1);
    // One at a time, libtest names each test before it runs.
    assert!(out.stdout.contains("\ntest mixed::gpu_a ... ok\n"));
}

#[test]
fn deterministic_mode_runs_one_at_a_time_in_name_order() {
    let _serial = serial();
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let sandbox = Sandbox::new()
            .env("HARNESS_FIXTURE_UNIT_MS", 20)
            .env("CAPPED_DETERMINISTIC", 1);
        let out = run(
            &sandbox,
            HARNESS,
            &["--test-threads", "2", "mixed::", "misc::knows"],
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let spans = sandbox.spans();
        let mut by_start: Vec<(&String, &(u64, u64))> = spans.iter().collect();
        by_start.sort_by_key(|(_, span)| span.0);
        let started: Vec<&str> = by_start.iter().map(|(name, _)| name.as_str()).collect();
        let mut names = started.clone();
        names.sort();
        assert_eq!(started, names, "not in name order");
        for pair in by_start.windows(2) {
            assert!(pair[0].1.1 <= pair[1].1.0, "overlap: {by_start:?}");
        }
        let printed: Vec<String> = out.results().into_iter().map(|(name, _)| name).collect();
        let mut sorted_printed = printed.clone();
        sorted_printed.sort();
        assert_eq!(printed, sorted_printed);
        seeds.push(sandbox.seeds());
    }
    assert_eq!(seeds[0], seeds[1]);
    assert_eq!(seeds[0].len(), 1);
}

fn order_of(out: &Output) -> Vec<String> {
    out.results().into_iter().map(|(name, _)| name).collect()
}

#[test]
fn shuffling_with_a_seed_is_reproducible() {
    let _serial = serial();
    let sandbox = Sandbox::new().env("CAPPED_SEED", 7);
    let args = ["--test-threads", "1", "--shuffle", "mixed::"];
    let first = run(&sandbox, HARNESS, &args);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first
            .stdout
            .starts_with("\nrunning 9 tests (shuffle seed: 7)\n"),
        "{}",
        first.stdout
    );
    let order = order_of(&first);
    let mut by_name = order.clone();
    by_name.sort();
    assert_ne!(order, by_name, "shuffled into name order");
    assert_eq!(order_of(&run(&sandbox, HARNESS, &args)), order);
    let by_env = Sandbox::new()
        .env("CAPPED_SEED", 7)
        .env("CAPPED_SHUFFLE", 1);
    assert_eq!(
        order_of(&run(&by_env, HARNESS, &["--test-threads", "1", "mixed::"])),
        order
    );
    let by_flag = Sandbox::new();
    assert_eq!(
        order_of(&run(
            &by_flag,
            HARNESS,
            &["--test-threads=1", "--shuffle-seed", "7", "mixed::"]
        )),
        order
    );
    let other = Sandbox::new().env("CAPPED_SEED", 8);
    assert_ne!(order_of(&run(&other, HARNESS, &args)), order);
}

#[test]
fn a_timed_out_test_is_named_and_the_run_exits_without_hanging() {
    let _serial = serial();
    let sandbox = Sandbox::new()
        .env("HARNESS_FIXTURE_HANG", 1)
        .env("HARNESS_FIXTURE_UNIT_MS", 300)
        .with_events();
    let out = run(
        &sandbox,
        HARNESS,
        &[
            "--test-threads",
            "2",
            "misc::hangs_on_request",
            "mixed::light",
        ],
    );
    assert_eq!(out.code, Some(101), "{}\n{}", out.stdout, out.stderr);
    // The hung test sleeps 60 s: the harness stopped long before.
    assert!(out.took < Duration::from_secs(30), "took {:?}", out.took);
    assert!(
        out.stdout
            .contains("test misc::hangs_on_request ... FAILED (timed out after 1.00s)\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("failures:\n    misc::hangs_on_request\n")
    );
    assert!(
        out.stdout
            .contains("not run because the run stopped after misc::hangs_on_request timed out: "),
        "{}",
        out.stdout
    );
    assert!(out.summary().starts_with("test result: FAILED."));
    let timed_out = Event::read_all(&sandbox.events_path())
        .unwrap()
        .into_iter()
        .filter(|e| {
            matches!(e, Event::End { test, outcome, .. }
                if test == "misc::hangs_on_request"
                    && *outcome == capped_test::protocol::Outcome::TimedOut)
        })
        .count();
    assert_eq!(timed_out, 1);

    // The default timeout from the environment applies to a test without its own.
    let sandbox = Sandbox::new()
        .env("HARNESS_FIXTURE_UNIT_MS", 2000)
        .env("CAPPED_TEST_TIMEOUT", "300ms");
    let out = run(&sandbox, HARNESS, &["--exact", "mixed::light_1"]);
    assert_eq!(out.code, Some(101), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("test mixed::light_1 ... FAILED (timed out after 300ms)"),
        "{}",
        out.stdout
    );
    assert!(out.took < Duration::from_secs(3), "took {:?}", out.took);
}

#[test]
fn a_serial_test_runs_alone() {
    let _serial = serial();
    let sandbox = Sandbox::new().env("HARNESS_FIXTURE_UNIT_MS", 50);
    let out = run(
        &sandbox,
        HARNESS,
        &["--test-threads", "2", "misc::runs_alone", "mixed::light"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let spans = sandbox.spans();
    let alone = spans["misc::runs_alone"];
    for (name, span) in &spans {
        if name != "misc::runs_alone" {
            assert!(!overlaps(alone, *span), "{name} overlapped: {spans:?}");
        }
    }
    let lights: Vec<(u64, u64)> = spans
        .iter()
        .filter(|(name, _)| name.contains("light"))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(concurrency(&lights, 2).0, 2, "light tests never overlapped");
}

#[test]
fn listing_resources_for_the_runner() {
    let _serial = serial();
    let sandbox = Sandbox::new()
        .env("CAPPED_LIST_RESOURCES", 1)
        .env("CAPPED_TEST_THREADS", 3);
    let out = run(&sandbox, HARNESS, &["--list", "misc::"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listed: Vec<ListedTest> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 12);
    let find = |name: &str| listed.iter().find(|t| t.name == name).unwrap();
    assert_eq!(find("misc::holds_the_gpu_slot").groups, ["harness-gpu"]);
    assert_eq!(find("misc::hangs_on_request").timeout_ms, Some(1000));
    assert_eq!(find("misc::runs_alone").threads, 3);
    assert_eq!(find("misc::passes").threads, 1);
    assert!(find("misc::ignored_plain").ignored);
    assert!(!find("misc::passes").ignored);
}

#[test]
fn usage_errors_are_reported() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let out = run(&sandbox, HARNESS, &["--test-threads", "0"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--test-threads must not be 0"),
        "{}",
        out.stderr
    );
    let out = run(&sandbox, HARNESS, &["--ignored", "--include-ignored"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("mutually exclusive"), "{}", out.stderr);
    let out = run(&sandbox, HARNESS, &["--no-such-flag"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let bad = Sandbox::new().env("CAPPED_TEST_THREADS", "two");
    let out = run(&bad, HARNESS, &[]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("CAPPED_TEST_THREADS"), "{}", out.stderr);
}

#[test]
fn a_harness_without_capped_tests_says_why() {
    let _serial = serial();
    let out = run(&Sandbox::new(), "harness_empty", &[]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("running 0 tests"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("does not compile plain #[test] functions"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_output_is_one_event_per_line() {
    let _serial = serial();
    let out = run(
        &Sandbox::new(),
        HARNESS,
        &["--format", "json", "-Z", "unstable-options", "misc::"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "started");
    assert_eq!(events[0]["test_count"], 12);
    assert_eq!(events.last().unwrap()["event"], "ok");
    assert_eq!(events.last().unwrap()["passed"], 10);
    let names: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "test" && e["event"] == "ok")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10);
}

#[test]
fn nextest_runs_the_harness() {
    let _serial = serial();
    let nextest = std::process::Command::new("cargo")
        .args(["nextest", "--version"])
        .output();
    if !nextest.is_ok_and(|out| out.status.success()) {
        println!("cargo nextest is not installed: skipping the nextest run");
        return;
    }
    // Build (or find) the fixture first, so the nextest run below only reuses it.
    harness_support::binary(HARNESS);
    let sandbox = Sandbox::new().env("HARNESS_FIXTURE_UNIT_MS", 100);
    let mut command = sandbox.command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    command
        .args(["nextest", "run", "--no-fail-fast", "--test-threads", "4"])
        .args(["--package", env!("CARGO_PKG_NAME"), "--test", HARNESS])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("mixed::")
        .env("CARGO_TARGET_DIR", target_dir);
    if exe.ancestors().nth(2).and_then(|p| p.file_name()) == Some("release".as_ref()) {
        command.arg("--release");
    }
    let out = sandbox.run_command(command, Duration::from_secs(600));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("9 tests run: 9 passed"),
        "{}",
        out.stderr
    );
    let spans = sandbox.spans();
    assert_eq!(spans.len(), 9, "{spans:?}");
    let gpu: Vec<(u64, u64)> = spans
        .iter()
        .filter(|(name, _)| name.contains("gpu"))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(concurrency(&gpu, 1).0, 1, "gpu tests overlapped: {spans:?}");
    let all: Vec<(u64, u64)> = spans.values().copied().collect();
    assert!(concurrency(&all, 2).0 >= 2, "nothing overlapped: {spans:?}");
}
