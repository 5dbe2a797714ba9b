//! Per-test isolation and retries: a hang and a crash cost only themselves under
//! `--isolation test`, a group can ask for isolation for its own tests, a test that fails
//! once is FLAKY under `--retries`, and bad values are usage errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use common::*;

/// `cargo capped ARGS --message-format json` in the isolation fixture, recording into
/// `scratch`; `FLAKY_DIR` is the scratch dir.
fn run(scratch: &RunScratch, args: &[&str]) -> Output {
    let dir = scratch.path("");
    capped_json(
        "isolation",
        scratch,
        args,
        &[("FLAKY_DIR", dir.as_os_str())],
    )
}

#[test]
fn a_hang_and_a_crash_cost_only_themselves_under_isolation() {
    let scratch = RunScratch::new();
    let output = run(
        &scratch,
        &[
            "t2",
            "--test",
            "faulty",
            "--isolation",
            "test",
            "--timeout",
            "5s",
        ],
    );
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    assert_eq!(status_in(&results, "b_hangs"), "timed-out", "{text}");
    assert_eq!(status_in(&results, "c_segfaults"), "failed", "{text}");
    for good in ["a_good", "d_good", "e_good"] {
        assert_eq!(status_in(&results, good), "passed", "{good}: {text}");
    }
    // Without isolation the crash takes the process's later tests with it.
    let output = run(
        &scratch,
        &["t1", "--test", "faulty", "--", "--skip", "b_hangs"],
    );
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(status_in(&results, "c_segfaults"), "failed", "{text}");
    assert_eq!(status_in(&results, "d_good"), "not-run", "{text}");
}

#[test]
fn a_test_that_fails_once_is_flaky_under_retries() {
    let scratch = RunScratch::new();
    let output = run(&scratch, &["t2", "--test", "flaky", "--retries", "2"]);
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    assert_eq!(status_in(&results, "fails_once"), "flaky", "{text}");
    assert_eq!(results["fails_once"]["attempts"], 2, "{text}");
    let first = &results["fails_once"]["failed_attempts"][0];
    assert_eq!(first["status"], "failed", "{text}");
    assert!(
        first["output"]
            .as_str()
            .unwrap_or_default()
            .contains("first attempt fails"),
        "{text}"
    );
    assert_eq!(status_in(&results, "steady"), "passed", "{text}");

    // The same test without retries fails the run.
    let scratch = RunScratch::new();
    let output = run(&scratch, &["t2", "--test", "flaky"]);
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    assert_eq!(status_in(&test_results(&output), "fails_once"), "failed");
}

#[test]
fn flaky_tests_reach_junit_as_flaky_failures() {
    let scratch = RunScratch::new();
    let junit = scratch.path("junit.xml");
    let output = run(
        &scratch,
        &[
            "t2",
            "--test",
            "flaky",
            "--retries",
            "1",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<flakyFailure"), "{xml}");
    assert!(!xml.contains("<failure"), "a flaky test passed: {xml}");
}

#[test]
fn a_group_with_test_isolation_runs_its_tests_alone() {
    let scratch = RunScratch::new();
    let output = run(
        &scratch,
        &["t2", "--test", "harnessed", "--test", "grouped"],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let pids: BTreeMap<String, String> = records(&scratch.record_file(), "pid")
        .into_iter()
        .map(|fields| (fields[1].clone(), fields[2].clone()))
        .collect();
    let pid = |name: &str| {
        pids.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} did not run: {pids:?}"))
    };
    // The harness binary's `alone` tests each had a process; its light tests shared one.
    assert_eq!(pid("harnessed::light_one"), pid("harnessed::light_two"));
    let alone: BTreeSet<String> = [
        pid("harnessed::alone_one"),
        pid("harnessed::alone_two"),
        pid("harnessed::light_one"),
    ]
    .into();
    assert_eq!(alone.len(), 3, "{pids:?}");
    // The binary the `solo` group claims: a process per test.
    let grouped: BTreeSet<String> = ["grouped::one", "grouped::two", "grouped::three"]
        .iter()
        .map(|name| pid(name))
        .collect();
    assert_eq!(grouped.len(), 3, "{pids:?}");
}

#[test]
fn bad_isolation_and_retries_values_are_usage_errors() {
    for (args, expected) in [
        (&["t2", "--isolation", "process"][..], "process"),
        (&["t2", "--retries=-1"][..], "retries"),
        (&["t2", "--retries", "1000"][..], "retries"),
        (&["t2", "--retries", "many"][..], "retries"),
    ] {
        let output = capped_in("isolation").args(args).output().unwrap();
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
