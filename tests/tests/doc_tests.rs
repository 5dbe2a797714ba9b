//! Doc tests under the caps: `cargo capped t2` runs a library's doc tests as a unit of the
//! run, with the run's caps and groups in their environment, each reported like any test;
//! `--doc` runs only them; a target selection (`--test X`) runs none of them, as under
//! `cargo test`.

mod common;

use std::process::Output;

use common::*;

/// `cargo capped t2 ARGS --message-format json` in the doctests fixture.
fn run(scratch: &RunScratch, args: &[&str]) -> Output {
    let args: Vec<&str> = std::iter::once("t2").chain(args.iter().copied()).collect();
    capped_json("doctests", scratch, &args, &[])
}

const PASSING: &str = "src/lib.rs - add (line 5)";
const FAILING: &str = "src/lib.rs - sub (line 15)";

#[test]
fn doc_tests_run_under_the_caps_beside_the_other_tests() {
    let scratch = RunScratch::new();
    let output = run(&scratch, &[]);
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let results = test_results(&output);
    let names: Vec<&str> = results.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["integration_passes", PASSING, FAILING],
        "{}",
        describe(&output)
    );
    assert_eq!(
        results[PASSING]["status"],
        "passed",
        "{}",
        describe(&output)
    );
    assert_eq!(
        results[FAILING]["status"],
        "failed",
        "{}",
        describe(&output)
    );
    assert_eq!(results[FAILING]["binary"]["kind"], "doc");
    assert_eq!(results[FAILING]["binary"]["id"], "doctests-fixture (doc)");
    let failure = results[FAILING]["output"].as_str().unwrap_or_default();
    assert!(
        failure.contains("doc test fails on purpose"),
        "the failing doc test's output: {failure}"
    );
    // The doc test ran with the run's caps and groups, as every test binary does.
    let records = std::fs::read_to_string(scratch.record_file()).unwrap_or_default();
    let fields: Vec<&str> = records.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"add"), "records: {records}");
    assert_eq!(fields.get(1), Some(&"2"), "CAPPED_TEST_THREADS: {records}");
    assert_eq!(fields.get(2), Some(&"2"), "RAYON_NUM_THREADS: {records}");
    assert_eq!(
        fields.get(3),
        Some(&"db=1@host"),
        "CAPPED_GROUPS: {records}"
    );
}

#[test]
fn doc_selects_only_the_doc_tests_and_a_target_selection_none() {
    let scratch = RunScratch::new();
    let output = run(&scratch, &["--doc"]);
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let names: Vec<String> = test_results(&output).into_keys().collect();
    assert_eq!(names, [PASSING, FAILING], "{}", describe(&output));

    let output = run(&scratch, &["--test", "it"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let names: Vec<String> = test_results(&output).into_keys().collect();
    assert_eq!(names, ["integration_passes"], "{}", describe(&output));
}
