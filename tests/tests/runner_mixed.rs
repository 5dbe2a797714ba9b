//! `cargo capped` end to end on the `mixed` fixture: plain `#[test]`s, `#[capped]`
//! attribute tests (a `gpu` group), two heavy binaries claimed by the `crossval` group, and
//! tests that fail or hang on demand. Every test records when it worked; the checks below
//! read those intervals.

mod common;

use std::time::Duration;

use common::*;

const FIXTURE: &str = "mixed";

/// The names of the tests in the order they started.
fn start_order(intervals: &[Interval]) -> Vec<String> {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|i| i.start);
    sorted.into_iter().map(|i| i.name).collect()
}

/// `seed NAME SEED` records, sorted by name.
fn seeds(scratch: &RunScratch) -> Vec<(String, String)> {
    let mut seeds: Vec<(String, String)> = records(&scratch.record_file(), "seed")
        .into_iter()
        .map(|r| (r[1].clone(), r[2].clone()))
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn t2_holds_the_width_and_every_group_and_counts_like_cargo_test() {
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command.args(["t2", "--message-format", "json", "--junit"]);
    command.arg(scratch.path("junit.xml"));
    scratch.apply(&mut command).env("FIXTURE_FAIL", "1");
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    assert!(
        all_text(&output).contains("fails_when_asked"),
        "the failing test is named: {}",
        describe(&output)
    );

    let intervals = read_intervals(&scratch.record_file());
    assert_eq!(
        intervals.len(),
        19,
        "every test that runs recorded once: {intervals:#?}"
    );
    assert!(
        max_overlap(&intervals) <= 2,
        "more than 2 tests at once across the run: {intervals:#?}"
    );
    assert_eq!(
        max_overlap(&intervals),
        2,
        "the width is used: {intervals:#?}"
    );
    assert_eq!(max_overlap(of_kind(&intervals, "gpu")), 1, "{intervals:#?}");
    assert_eq!(
        max_overlap(of_kind(&intervals, "crossval")),
        1,
        "{intervals:#?}"
    );

    // Every `#[capped]` test reports its duration (from its end event, which the harness
    // and the attribute write before libtest or the harness prints the result line).
    let finished: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "test-finished")
        .collect();
    let capped_targets = ["harnessed", "attr"];
    let capped: Vec<&serde_json::Value> = finished
        .iter()
        .filter(|e| {
            capped_targets.contains(&e["binary"]["target"].as_str().unwrap_or(""))
                && e["status"] == "passed"
        })
        .collect();
    assert_eq!(capped.len(), 11, "{finished:#?}");
    let without: Vec<&&serde_json::Value> = capped
        .iter()
        .filter(|e| !e["duration_ms"].is_number())
        .collect();
    assert!(
        without.is_empty(),
        "capped tests without a duration: {without:#?}"
    );

    // Rayon pools and cargo's variables as the plain tests saw them.
    let rayon = records(&scratch.record_file(), "rayon");
    assert_eq!(rayon, [["rayon", "light::rayon_pool", "2"]]);
    let env = records(&scratch.record_file(), "env");
    assert!(
        env.contains(&vec![
            "env".into(),
            "light::rayon_pool".into(),
            "CARGO_PKG_NAME".into(),
            "light".into()
        ]),
        "{env:?}"
    );

    // The same tests under plain `cargo test` give the same counts.
    let cargo = cargo_in(FIXTURE)
        .args(["test", "--no-fail-fast"])
        .env("FIXTURE_FAIL", "1")
        .output()
        .unwrap();
    assert_eq!(exit_code(&cargo), 101, "{}", describe(&cargo));
    let expected = libtest_counts(&cargo);
    assert_eq!(
        expected,
        Counts::from([
            ("passed".into(), 19),
            ("failed".into(), 1),
            ("ignored".into(), 1)
        ])
    );
    assert_eq!(capped_counts(&output), expected, "{}", describe(&output));

    // The JUnit report is well formed and has every test, the failure among them.
    let junit = std::fs::read_to_string(scratch.path("junit.xml")).unwrap();
    let elements = xml_elements(&junit).unwrap_or_else(|e| panic!("{e}:\n{junit}"));
    assert_eq!(
        elements.iter().filter(|e| *e == "testcase").count(),
        21,
        "{junit}"
    );
    assert_eq!(
        elements.iter().filter(|e| *e == "failure").count(),
        1,
        "{junit}"
    );
    assert!(junit.contains("name=\"fails_when_asked\""), "{junit}");
}

#[test]
fn serial_runs_alone_in_a_libtest_binary_given_several_width_slots() {
    // The attribute binary alone at width 3: the runner holds 3 slots for it and runs it
    // with `--test-threads 3`; `#[capped(serial)]` must still keep its other tests out.
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command.args(["t2", "-p", "light", "--test", "attr", "--test-threads", "3"]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let intervals = read_intervals(&scratch.record_file());
    assert_eq!(intervals.len(), 6, "{intervals:#?}");
    let serial = of_kind(&intervals, "serial");
    assert_eq!(serial.len(), 1, "{intervals:#?}");
    let serial = &serial[0];
    for other in intervals.iter().filter(|i| i.name != serial.name) {
        assert!(
            other.end <= serial.start || other.start >= serial.end,
            "{} overlapped the serial test: {intervals:#?}",
            other.name
        );
    }
    assert!(
        max_overlap(&intervals) >= 2,
        "the binary did get more than one slot: {intervals:#?}"
    );
}

#[test]
fn a_binary_that_starts_narrow_runs_its_other_tests_in_a_second_process() {
    // crossval_a (claimed, first in order) takes one of the two slots; the attribute binary
    // starts next with the other one. Kept at one thread it would leave a slot idle once
    // crossval_a ends, so it keeps half of its tests and the rest run in a process of their
    // own. `split-binaries = false` (profile `whole`) keeps it in one process.
    let run = |args: &[&str]| {
        let scratch = RunScratch::new();
        let mut command = capped_in(FIXTURE);
        command.args(args);
        scratch.apply(&mut command);
        let output = command.output().unwrap();
        assert_eq!(exit_code(&output), 0, "{}", describe(&output));
        let intervals = read_intervals(&scratch.record_file());
        assert_eq!(intervals.len(), 19, "each test once: {intervals:#?}");
        assert!(max_overlap(&intervals) <= 2, "{intervals:#?}");
        assert_eq!(max_overlap(of_kind(&intervals, "gpu")), 1, "{intervals:#?}");
        let attr_pids: std::collections::BTreeSet<u32> = intervals
            .iter()
            .filter(|i| i.name.starts_with("attr::"))
            .map(|i| i.pid)
            .collect();
        (attr_pids.len(), output)
    };
    let (processes, output) = run(&["t2", "-v"]);
    assert!(
        processes >= 2,
        "the attribute binary ran in {processes} process(es): {}",
        describe(&output)
    );
    let (processes, output) = run(&["run", "--profile", "whole", "-v"]);
    assert_eq!(processes, 1, "{}", describe(&output));
}

#[test]
fn cli_caps_reach_plain_tests_and_the_width_grows() {
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command.args([
        "t2",
        "-p",
        "light",
        "--lib",
        "--test-threads",
        "3",
        "--rayon-threads",
        "3",
    ]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    // 3 is above this machine's core count: the pool has the size we asked for.
    let rayon = records(&scratch.record_file(), "rayon");
    assert_eq!(rayon, [["rayon", "light::rayon_pool", "3"]]);
    let intervals = read_intervals(&scratch.record_file());
    assert_eq!(intervals.len(), 4, "{intervals:#?}");
    assert!(max_overlap(&intervals) <= 3, "{intervals:#?}");
}

#[test]
fn capped_variables_in_the_runners_environment_are_not_its_caps() {
    // The runner forms its caps from the profile and its command line only: these are for
    // test processes (which get the runner's own values instead), so malformed ones in the
    // runner's environment must neither fail the run nor change its caps.
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command
        .args(["t2", "-p", "light", "--lib"])
        .env("CAPPED_TEST_THREADS", "two")
        .env("CAPPED_SEED", "-1")
        .env("CAPPED_RAYON_THREADS", "7")
        .env("RAYON_NUM_THREADS", "many");
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let rayon = records(&scratch.record_file(), "rayon");
    assert_eq!(rayon, [["rayon", "light::rayon_pool", "2"]], "t2's pool");
}

#[test]
fn t1_deterministic_repeats_order_and_seeds_and_seed_changes_them() {
    let run = |extra: &[&str]| {
        let scratch = RunScratch::new();
        let mut command = capped_in(FIXTURE);
        command.args(["t1", "--deterministic"]).args(extra);
        scratch.apply(&mut command);
        let output = command.output().unwrap();
        assert_eq!(exit_code(&output), 0, "{}", describe(&output));
        (scratch, output)
    };
    let (first, first_output) = run(&[]);
    let (second, _) = run(&[]);
    let (other, _) = run(&["--seed", "7"]);

    let first_intervals = read_intervals(&first.record_file());
    assert_eq!(max_overlap(&first_intervals), 1, "{first_intervals:#?}");
    let order = start_order(&first_intervals);
    assert_eq!(order.len(), 19);
    assert_eq!(order, start_order(&read_intervals(&second.record_file())));
    assert_eq!(order, start_order(&read_intervals(&other.record_file())));
    // Binaries run in sorted order: heavy's before light's.
    assert!(order[0].starts_with("crossval_a"), "{order:?}");

    assert_eq!(seeds(&first), seeds(&second), "same seeds twice");
    let changed = seeds(&first)
        .iter()
        .zip(seeds(&other))
        .all(|(a, b)| a.0 == b.0 && a.1 != b.1);
    assert!(changed, "--seed 7 changes every seed");
    assert!(
        all_text(&first_output).contains("42"),
        "the seed is printed: {}",
        describe(&first_output)
    );

    // One thread everywhere, and the profile's [env] reaches the tests.
    let rayon = records(&first.record_file(), "rayon");
    assert_eq!(rayon, [["rayon", "light::rayon_pool", "1"]]);
    let env = records(&first.record_file(), "env");
    assert!(
        env.iter()
            .any(|r| r[2] == "FIXTURE_PROFILE_ENV" && r[3] == "from-t1"),
        "{env:?}"
    );
}

#[test]
fn a_hanging_test_is_killed_at_the_timeout_named_and_nothing_is_left() {
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command.args(["t2", "-p", "light", "--test", "ondemand", "--timeout", "2s"]);
    scratch.apply(&mut command).env("FIXTURE_HANG", "1");
    let started = std::time::Instant::now();
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let text = all_text(&output);
    assert!(text.contains("hangs_when_asked"), "{text}");
    assert!(text.contains("timed"), "{text}");
    // Killed after 2 s (plus at most the 2 s grace), not left to hang.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let pids = records(&scratch.record_file(), "pid");
    assert_eq!(
        pids.len(),
        2,
        "the test and its grandchild recorded: {pids:?}"
    );
    for pid in pids {
        let number: u32 = pid[2].parse().unwrap();
        assert!(
            process_gone(number, Duration::from_secs(5)),
            "{} (pid {number}) is still running",
            pid[1]
        );
    }
}

#[test]
fn ctrl_c_stops_every_binary_and_exits_130_leaving_nothing() {
    let scratch = RunScratch::new();
    let mut command = capped_in(FIXTURE);
    command.args(["t2", "-p", "light", "--test", "ondemand"]);
    scratch
        .apply(&mut command)
        .env("FIXTURE_HANG", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    // Wait until the hanging test and its grandchild run (the build may come first).
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while records(&scratch.record_file(), "pid").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hanging test never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runner = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(runner, rustix::process::Signal::INT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&output), 130, "{}", describe(&output));
    assert!(
        all_text(&output).contains("interrupted"),
        "{}",
        describe(&output)
    );
    for pid in records(&scratch.record_file(), "pid") {
        let number: u32 = pid[2].parse().unwrap();
        assert!(
            process_gone(number, Duration::from_secs(5)),
            "{} (pid {number}) is still running",
            pid[1]
        );
    }
}
