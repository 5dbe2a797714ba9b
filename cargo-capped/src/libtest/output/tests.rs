//! The parser against real libtest output captured in `tests/fixtures/libtest/` (see its
//! `gen.sh` for how each file was made).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capped_model::protocol::{Event, ListedTest, Outcome};

use super::*;
use crate::libtest::list::{mark_ignored, parse_list};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/libtest/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn binary() -> BinaryId {
    BinaryId {
        package: "pkg".into(),
        target: "basic".into(),
        kind: "test".into(),
    }
}

fn listed(names: &[&str]) -> Vec<ListedTest> {
    names.iter().map(|name| ListedTest::plain(*name)).collect()
}

const BASIC: [&str; 8] = [
    "tests::fails_multiline",
    "tests::ignored_plain",
    "tests::ignored_with_reason",
    "tests::passes",
    "tests::passes_with_output",
    "tests::returns_err",
    "tests::should_panic_but_did_not",
    "tests::should_panic_ok",
];

/// What a run of the parser produced.
struct Run {
    events: Vec<OutputEvent>,
    parsed: ParsedBinary,
}

impl Run {
    /// Every final result: streamed ones and `remaining`, by name (each exactly once).
    fn results(&self) -> HashMap<String, TestResult> {
        let mut results = HashMap::new();
        let streamed = self.events.iter().filter_map(|e| match e {
            OutputEvent::Finished(r) => Some(r),
            _ => None,
        });
        for result in streamed.chain(&self.parsed.remaining) {
            let old = results.insert(result.name.clone(), result.clone());
            assert!(old.is_none(), "{} finished twice", result.name);
        }
        assert_eq!(results.len(), self.parsed.all.len());
        results
    }

    fn status(&self, name: &str) -> TestStatus {
        self.results()
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}"))
            .status
            .clone()
    }

    fn output(&self, name: &str) -> String {
        self.results()[name].output.clone()
    }

    fn streamed(&self, name: &str) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, OutputEvent::Finished(r) if r.name == name))
    }
}

/// Feeds `text` to a parser in chunks of `chunk` bytes (0: line by line), 1ms apart.
fn run_chunked(text: &str, names: &[&str], threads: usize, end: BinaryEnd, chunk: usize) -> Run {
    let mut parser = OutputParser::new(binary(), &listed(names), threads);
    let mut events = Vec::new();
    let mut at = Instant::now();
    let pieces: Vec<&[u8]> = if chunk == 0 {
        text.split_inclusive('\n').map(str::as_bytes).collect()
    } else {
        text.as_bytes().chunks(chunk).collect()
    };
    for piece in pieces {
        at += Duration::from_millis(1);
        events.extend(parser.stdout(piece, at));
    }
    let parsed = parser.finish(&end);
    Run { events, parsed }
}

fn run(text: &str, names: &[&str], threads: usize, end: BinaryEnd) -> Run {
    run_chunked(text, names, threads, end, 0)
}

fn exited(code: i32) -> BinaryEnd {
    BinaryEnd {
        exit_code: Some(code),
        ..BinaryEnd::default()
    }
}

fn signalled(signal: i32) -> BinaryEnd {
    BinaryEnd {
        signal: Some(signal),
        ..BinaryEnd::default()
    }
}

fn killed(reason: KillReason) -> BinaryEnd {
    BinaryEnd {
        signal: Some(9),
        killed: Some(reason),
        ..BinaryEnd::default()
    }
}

fn check_basic(run: &Run) {
    use TestStatus::*;
    assert_eq!(run.status("tests::passes"), Passed);
    assert_eq!(run.status("tests::passes_with_output"), Passed);
    assert_eq!(run.status("tests::should_panic_ok"), Passed);
    assert_eq!(run.status("tests::ignored_plain"), Ignored);
    assert_eq!(run.status("tests::ignored_with_reason"), Ignored);
    assert_eq!(run.output("tests::ignored_with_reason"), "needs a GPU");
    assert_eq!(run.output("tests::ignored_plain"), "");
    assert_eq!(run.output("tests::passes_with_output"), "");
    for failed in [
        "tests::fails_multiline",
        "tests::returns_err",
        "tests::should_panic_but_did_not",
    ] {
        assert_eq!(run.status(failed), Failed, "{failed}");
    }
    let output = run.output("tests::fails_multiline");
    for expected in [
        "line one of stdout\nline two of stdout\na line on stderr",
        "panicked at basic.rs:18:9:",
        "vectors differ\nsecond line of the message",
        "  left: [1, 2, 3]\n right: [1, 2, 4]",
    ] {
        assert!(output.contains(expected), "{expected:?} not in {output:?}");
    }
    assert!(!output.ends_with('\n'));
    assert!(!output.contains("returns_err"), "{output}");
    assert_eq!(run.output("tests::returns_err"), "Error: \"it went wrong\"");
    assert!(
        run.output("tests::should_panic_but_did_not")
            .starts_with("note: test did not panic as expected")
    );
    assert_eq!(run.parsed.total, Some(8));
    let summary = run.parsed.summary.as_ref().expect("summary");
    assert_eq!(
        (
            summary.ok,
            summary.passed,
            summary.failed,
            summary.ignored,
            summary.filtered_out
        ),
        (false, 3, 3, 2, 0)
    );
}

#[test]
fn one_thread() {
    let run = run(&fixture("basic_t1.txt"), &BASIC, 1, exited(101));
    check_basic(&run);
    assert!(
        run.parsed.remaining.is_empty(),
        "{:?}",
        run.parsed.remaining
    );
    assert_eq!(run.parsed.stray_output, "");
    // every result was streamed, and every passed test has a duration
    for name in BASIC {
        assert!(run.streamed(name), "{name}");
    }
    assert!(run.results()["tests::passes"].duration.is_some());
    // passed and ignored tests stream before the failures section
    let first_failure = run
        .events
        .iter()
        .position(|e| matches!(e, OutputEvent::Finished(r) if r.status == TestStatus::Failed))
        .unwrap();
    let last_pass = run
        .events
        .iter()
        .rposition(|e| matches!(e, OutputEvent::Finished(r) if r.status == TestStatus::Passed))
        .unwrap();
    assert!(last_pass < first_failure);
    assert!(run.events.contains(&OutputEvent::Failing {
        name: "tests::returns_err".into()
    }));
    // the order of `all` is the listing's
    let all: Vec<&str> = run.parsed.all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(all, BASIC);
}

#[test]
fn two_threads_have_no_durations() {
    let run = run(&fixture("basic_t2.txt"), &BASIC, 2, exited(101));
    check_basic(&run);
    assert!(run.parsed.remaining.is_empty());
    assert!(run.parsed.all.iter().all(|r| r.duration.is_none()));
}

#[test]
fn backtrace_stays_with_its_test() {
    let run = run(&fixture("basic_t1_backtrace.txt"), &BASIC, 1, exited(101));
    check_basic(&run);
    let output = run.output("tests::fails_multiline");
    assert!(output.contains("stack backtrace:"));
    assert!(output.ends_with("run with `RUST_BACKTRACE=full` for a verbose backtrace."));
}

#[test]
fn any_chunking_gives_the_same_results() {
    let text = fixture("basic_t1.txt");
    let whole = run(&text, &BASIC, 1, exited(101)).results();
    for chunk in [1, 3, 7, 64, 4096] {
        let run = run_chunked(&text, &BASIC, 1, exited(101), chunk);
        let mut results = run.results();
        for result in results.values_mut() {
            result.duration = whole[&result.name].duration;
        }
        assert_eq!(results, whole, "chunk {chunk}");
    }
}

#[test]
fn works_without_a_listing() {
    let run = run(&fixture("basic_t2.txt"), &[], 2, exited(101));
    check_basic(&run);
}

#[test]
fn colored_output() {
    let text = fixture("basic_t2.txt")
        .replace("... ok", "... \u{1b}[32mok\u{1b}[0m")
        .replace("... FAILED", "... \u{1b}[31mFAILED\u{1b}[0m")
        .replace("... ignored", "... \u{1b}[33mignored\u{1b}[0m");
    check_basic(&run(&text, &BASIC, 2, exited(101)));
}

#[test]
fn quiet_mode() {
    let mut names = parse_list(&fixture("list_terse.txt")).tests;
    mark_ignored(&mut names, &fixture("list_ignored.txt"));
    let mut parser = OutputParser::new(binary(), &names, 1);
    let events = parser.stdout(fixture("basic_quiet.txt").as_bytes(), Instant::now());
    let parsed = parser.finish(&exited(101));
    let run = Run { events, parsed };
    use TestStatus::*;
    assert_eq!(run.status("tests::passes"), Passed);
    assert_eq!(run.status("tests::ignored_plain"), Ignored);
    assert_eq!(run.status("tests::fails_multiline"), Failed);
    assert_eq!(run.output("tests::returns_err"), "Error: \"it went wrong\"");
    assert!(
        run.output("tests::fails_multiline")
            .contains("second line of the message")
    );
    assert_eq!(run.parsed.stray_output, "");
}

#[test]
fn nocapture_one_thread() {
    let run = run(
        &fixture("basic_t1_nocapture_merged.txt"),
        &BASIC,
        1,
        exited(101),
    );
    use TestStatus::*;
    assert_eq!(run.status("tests::passes_with_output"), Passed);
    assert_eq!(run.status("tests::should_panic_ok"), Passed);
    assert_eq!(run.status("tests::ignored_with_reason"), Ignored);
    // no `---- stdout ----` block under --nocapture: the output printed while it ran
    let output = run.output("tests::fails_multiline");
    assert!(
        output.starts_with("line one of stdout\nline two of stdout"),
        "{output}"
    );
    assert!(output.contains("second line of the message"));
    assert!(output.contains("right: [1, 2, 4]"));
    assert_eq!(run.output("tests::returns_err"), "Error: \"it went wrong\"");
    assert!(
        run.output("tests::should_panic_but_did_not")
            .contains("did not panic as expected")
    );
    assert_eq!(run.parsed.stray_output, "");
    assert!(run.parsed.remaining.is_empty());
}

const INTERLEAVE: [&str; 5] = [
    "tests::a_quick",
    "tests::b_slow",
    "tests::c_fails",
    "tests::d_quick",
    "tests::e_quick",
];

#[test]
fn two_threads_captured() {
    let run = run(&fixture("interleave_t2.txt"), &INTERLEAVE, 2, exited(101));
    for name in INTERLEAVE {
        let expected = if name == "tests::c_fails" {
            TestStatus::Failed
        } else {
            TestStatus::Passed
        };
        assert_eq!(run.status(name), expected, "{name}");
    }
    let output = run.output("tests::c_fails");
    assert!(output.starts_with("c partial 0 c done 0\nc partial 1 c done 1"));
    assert!(output.contains("c failed\nwith two lines"));
}

#[test]
fn two_threads_nocapture_interleaved() {
    let run = run(
        &fixture("interleave_t2_nocapture_merged.txt"),
        &INTERLEAVE,
        2,
        exited(101),
    );
    for name in INTERLEAVE {
        let expected = if name == "tests::c_fails" {
            TestStatus::Failed
        } else {
            TestStatus::Passed
        };
        assert_eq!(run.status(name), expected, "{name}");
    }
    // the panic message is found by its thread name; the rest is nobody's
    let output = run.output("tests::c_fails");
    assert!(output.starts_with("thread 'tests::c_fails'"), "{output}");
    assert!(output.contains("c failed\nwith two lines"));
    assert!(output.ends_with("environment variable to display a backtrace"));
    assert!(run.parsed.stray_output.contains("b done 5"));
    assert!(!run.parsed.stray_output.contains("c failed"));
}

const SPLICE: [&str; 4] = [
    "tests::a_waits",
    "tests::b_finishes_first",
    "tests::c_no_newline",
    "tests::d_fails_no_newline",
];

fn check_splice(run: &Run) {
    assert_eq!(run.status("tests::a_waits"), TestStatus::Passed);
    assert_eq!(run.status("tests::b_finishes_first"), TestStatus::Passed);
    assert_eq!(run.status("tests::c_no_newline"), TestStatus::Passed);
    assert_eq!(run.status("tests::d_fails_no_newline"), TestStatus::Failed);
    assert!(run.output("tests::d_fails_no_newline").contains("d broke"));
    assert!(run.parsed.remaining.is_empty());
}

#[test]
fn results_after_a_tests_own_unterminated_print() {
    // `test tests::c_no_newline ... c says okok`, and results on lines of their own
    let run = run(
        &fixture("splice_t1_nocapture_merged.txt"),
        &SPLICE,
        1,
        exited(101),
    );
    check_splice(&run);
    assert!(
        run.output("tests::d_fails_no_newline")
            .starts_with("d partial output\nthread 'tests::d_fails_no_newline'")
    );
}

#[test]
fn announcement_in_the_middle_of_a_line() {
    // `a is waiting...test tests::b_finishes_first ... ok`
    let run = run(
        &fixture("splice_t2_nocapture_merged.txt"),
        &SPLICE,
        2,
        exited(101),
    );
    check_splice(&run);
    assert!(run.parsed.stray_output.contains("a is waiting..."));
}

#[test]
fn a_line_ending_in_ok_is_output_when_more_output_follows() {
    let text = "running 1 test\ntest t ... all is ok\nstill going\nFAILED\n\nfailures:\n\nfailures:\n    t\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
    let run = run(text, &["t"], 1, exited(101));
    assert_eq!(run.status("t"), TestStatus::Failed);
    assert_eq!(run.output("t"), "all is \nstill going");
}

const CRASH: [&str; 4] = [
    "tests::a_passes",
    "tests::b_aborts",
    "tests::c_slow",
    "tests::d_never_runs",
];

#[test]
fn crash_with_one_thread_blames_the_running_test() {
    let run = run(&fixture("crash_t1.txt"), &CRASH, 1, signalled(6));
    assert_eq!(run.status("tests::a_passes"), TestStatus::Passed);
    assert_eq!(run.status("tests::b_aborts"), TestStatus::Failed);
    assert_eq!(
        run.output("tests::b_aborts"),
        "the test binary crashed (signal 6 (SIGABRT)) while this test was running"
    );
    for name in ["tests::c_slow", "tests::d_never_runs"] {
        let TestStatus::NotRun { reason } = run.status(name) else {
            panic!("{name}: {:?}", run.status(name));
        };
        assert_eq!(
            reason,
            "the test binary crashed (signal 6 (SIGABRT)) before this test ran"
        );
    }
    assert_eq!(run.parsed.remaining.len(), 3);
    assert!(run.parsed.summary.is_none());
    assert!(run.events.contains(&OutputEvent::Started {
        name: "tests::b_aborts".into()
    }));
}

#[test]
fn crash_with_two_threads_blames_the_tests_that_may_have_been_running() {
    let run = run(&fixture("crash_t2.txt"), &CRASH, 2, signalled(6));
    assert_eq!(run.status("tests::a_passes"), TestStatus::Passed);
    assert_eq!(run.status("tests::b_aborts"), TestStatus::Failed);
    assert_eq!(run.status("tests::c_slow"), TestStatus::Failed);
    assert!(
        run.output("tests::b_aborts")
            .ends_with("(also running: tests::c_slow)")
    );
    assert!(matches!(
        run.status("tests::d_never_runs"),
        TestStatus::NotRun { .. }
    ));
}

const HANG: [&str; 5] = [
    "tests::a_passes",
    "tests::b_fails",
    "tests::c_hangs",
    "tests::d_hangs_too",
    "tests::e_never_runs",
];

#[test]
fn timeout_with_one_thread() {
    let after = Duration::from_secs(1);
    let run = run(
        &fixture("hang_t1_killed.txt"),
        &HANG,
        1,
        killed(KillReason::Timeout { after }),
    );
    assert_eq!(run.status("tests::a_passes"), TestStatus::Passed);
    // failed before the binary was killed: its output block never came
    assert_eq!(run.status("tests::b_fails"), TestStatus::Failed);
    assert_eq!(
        run.output("tests::b_fails"),
        "(the binary ended before libtest printed this test's output)"
    );
    assert_eq!(run.status("tests::c_hangs"), TestStatus::TimedOut { after });
    for name in ["tests::d_hangs_too", "tests::e_never_runs"] {
        assert_eq!(
            run.status(name),
            TestStatus::NotRun {
                reason: "its binary was killed at its 1.00s timeout before this test ran".into()
            }
        );
    }
}

#[test]
fn timeout_with_two_threads() {
    let after = Duration::from_secs(1);
    let run = run(
        &fixture("hang_t2_killed.txt"),
        &HANG,
        2,
        killed(KillReason::Timeout { after }),
    );
    assert_eq!(run.status("tests::b_fails"), TestStatus::Failed);
    assert_eq!(run.status("tests::c_hangs"), TestStatus::TimedOut { after });
    assert_eq!(
        run.status("tests::d_hangs_too"),
        TestStatus::TimedOut { after }
    );
    assert!(matches!(
        run.status("tests::e_never_runs"),
        TestStatus::NotRun { .. }
    ));
}

#[test]
fn killed_for_memory_and_interrupted() {
    let memory = KillReason::Memory {
        limit: Some(1 << 30),
        peak: 3 << 29,
        by_watchdog: true,
    };
    let run1 = run(&fixture("hang_t1_killed.txt"), &HANG, 1, killed(memory));
    assert_eq!(
        run1.status("tests::c_hangs"),
        TestStatus::KilledForMemory {
            limit: Some(1 << 30),
            peak: 3 << 29,
            by_watchdog: true
        }
    );
    assert_eq!(
        run1.status("tests::e_never_runs"),
        TestStatus::NotRun {
            reason:
                "its binary was killed for memory (peak 1.5 GiB, cap 1 GiB) before this test ran"
                    .into()
        }
    );
    let run2 = run(
        &fixture("hang_t1_killed.txt"),
        &HANG,
        1,
        killed(KillReason::Interrupted),
    );
    assert_eq!(
        run2.status("tests::c_hangs"),
        TestStatus::NotRun {
            reason: "the run was interrupted while this test was running".into()
        }
    );
    assert_eq!(
        run2.status("tests::d_hangs_too"),
        TestStatus::NotRun {
            reason: "the run was interrupted before this test ran".into()
        }
    );
}

#[test]
fn exit_without_a_summary() {
    let text = "\nrunning 2 tests\ntest a ... ok\ntest b ... ";
    let run = run(text, &["a", "b"], 1, exited(3));
    assert!(run.output("b").contains("exited with code 3"));
    assert_eq!(run.status("b"), TestStatus::Failed);
}

#[test]
fn a_test_missing_after_a_normal_end_is_not_run() {
    let text = "running 1 test\ntest a ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\nafterwards\n";
    let run = run(text, &["a", "b"], 2, exited(0));
    assert_eq!(
        run.status("b"),
        TestStatus::NotRun {
            reason: "the test binary finished without reporting this test".into()
        }
    );
    assert_eq!(run.parsed.stray_output, "afterwards");
    assert_eq!(
        run.parsed.summary.as_ref().unwrap().duration,
        Some(Duration::ZERO)
    );
}

const MIMIC: [&str; 5] = [
    "gpu::a_passes",
    "gpu::b_fails",
    "long_name_test_c",
    "d_panics",
    "e_runtime_ignored",
];

fn check_mimic(run: &Run) {
    assert_eq!(run.status("gpu::a_passes"), TestStatus::Passed);
    assert_eq!(run.status("long_name_test_c"), TestStatus::Ignored);
    assert_eq!(
        run.output("gpu::b_fails"),
        "matrix mismatch\n  expected 1.0\n  got 2.0"
    );
    assert_eq!(run.output("d_panics"), "test panicked: d panicked");
    assert_eq!(run.output("e_runtime_ignored"), "x");
    assert!(run.parsed.remaining.is_empty());
    assert!(run.parsed.summary.is_some());
}

#[test]
fn libtest_mimic_output() {
    check_mimic(&run(
        &fixture("mimic_t1_merged.txt"),
        &MIMIC,
        1,
        exited(101),
    ));
    check_mimic(&run(&fixture("mimic_t2.txt"), &MIMIC, 2, exited(101)));
    // no listing: names are taken from line starts, padding removed
    check_mimic(&run(&fixture("mimic_t2.txt"), &[], 2, exited(101)));
}

#[test]
fn libtest_mimic_runtime_ignore_reason_and_kinds() {
    let text = "running 2 tests\ntest [unit] a ... ignored (no card)\ntest [unit] b ... ok\n";
    let run = run(text, &["a", "b"], 2, exited(0));
    assert_eq!(run.status("a"), TestStatus::Ignored);
    assert_eq!(run.output("a"), "no card");
    assert_eq!(run.status("b"), TestStatus::Passed);
}

#[test]
fn nested_libtest_output_inside_a_block_stays_there() {
    let text = "running 1 test\ntest outer ... FAILED\n\nfailures:\n\n---- outer stdout ----\nchild said:\nfailures:\n    inner::x\n---- inner::x stdout ----\n\nfailures:\n    outer\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
    let run = run(text, &["outer"], 1, exited(101));
    assert_eq!(
        run.output("outer"),
        "child said:\nfailures:\n    inner::x\n---- inner::x stdout ----"
    );
}

#[test]
fn show_output_successes_are_dropped() {
    let text = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\nsuccesses:\n\n---- a stdout ----\nhello from a\n\n\nsuccesses:\n    a\n\nfailures:\n\n---- b stdout ----\nb broke\n\n\nfailures:\n    b\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
    let run = run(text, &["a", "b"], 1, exited(101));
    assert_eq!(run.output("a"), "");
    assert_eq!(run.output("b"), "b broke");
    assert_eq!(run.parsed.stray_output, "");
}

#[test]
fn durations_with_one_thread_come_from_arrival_times() {
    let mut parser = OutputParser::new(binary(), &listed(&["a", "b"]), 1);
    let t0 = Instant::now();
    let mut events = parser.stdout(b"\nrunning 2 tests\ntest a ... ", t0);
    assert_eq!(events, vec![OutputEvent::Started { name: "a".into() }]);
    events = parser.stdout(b"ok\ntest b ... ok\n", t0 + Duration::from_millis(50));
    let OutputEvent::Finished(a) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(a.duration, Some(Duration::from_millis(50)));
    let OutputEvent::Finished(b) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(b.duration, Some(Duration::ZERO));
}

#[test]
fn slow_tests_are_reported() {
    let mut parser = OutputParser::new(binary(), &listed(&["a"]), 1);
    let events = parser.stdout(
        b"running 1 test\ntest a has been running for over 60 seconds\n",
        Instant::now(),
    );
    assert_eq!(events, vec![OutputEvent::Slow { name: "a".into() }]);
}

fn start(test: &str) -> Event {
    Event::Start {
        test: test.into(),
        pid: 1,
        at_us: 0,
        slots: Default::default(),
        waits_us: Default::default(),
    }
}

fn end(test: &str, outcome: Outcome, duration_us: u64) -> Event {
    Event::End {
        test: test.into(),
        pid: 1,
        at_us: 0,
        outcome,
        duration_us,
        message: None,
    }
}

#[test]
fn harness_events_give_durations_timeouts_and_the_running_tests() {
    let mut names = listed(&["a", "b", "c", "d"]);
    names[1].timeout_ms = Some(2_000);
    let mut parser = OutputParser::new(binary(), &names, 4);
    let at = Instant::now();
    let mut events = parser.harness_event(&start("a"));
    events.extend(parser.harness_event(&start("b")));
    events.extend(parser.harness_event(&start("c")));
    assert_eq!(events.len(), 3);
    parser.harness_event(&end("a", Outcome::Passed, 1_500));
    parser.harness_event(&end("b", Outcome::TimedOut, 2_000_100));
    let events = parser.stdout(b"running 4 tests\ntest a ... ok\ntest b ... FAILED\n", at);
    let OutputEvent::Finished(a) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(a.duration, Some(Duration::from_micros(1_500)));
    let parsed = parser.finish(&killed(KillReason::Timeout {
        after: Duration::from_secs(60),
    }));
    let status = |name: &str| {
        parsed
            .all
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(
        status("b"),
        TestStatus::TimedOut {
            after: Duration::from_secs(2)
        }
    );
    // c started and never ended: it was running; d never started
    assert_eq!(
        status("c"),
        TestStatus::TimedOut {
            after: Duration::from_secs(60)
        }
    );
    assert!(matches!(status("d"), TestStatus::NotRun { .. }));
}

#[test]
fn stderr_goes_to_the_running_test_or_stray() {
    let mut parser = OutputParser::new(binary(), &listed(&["a", "b"]), 1);
    let at = Instant::now();
    parser.stdout(b"running 2 tests\ntest a ... ", at);
    parser.stderr(b"fatal runtime error: stack overflow\n", at);
    let parsed = parser.finish(&signalled(6));
    assert!(
        parsed.all[0]
            .output
            .starts_with("fatal runtime error: stack overflow\n\nthe test binary crashed"),
        "{:?}",
        parsed.all
    );

    let mut parser = OutputParser::new(binary(), &listed(&["a"]), 1);
    parser.stderr(b"loader: cannot open shared object", at);
    let parsed = parser.finish(&exited(127));
    assert_eq!(parsed.stray_output, "loader: cannot open shared object");
    assert!(matches!(parsed.all[0].status, TestStatus::NotRun { .. }));
}

#[test]
fn huge_output_is_bounded() {
    let mut text = Text::default();
    for i in 0..200_000 {
        text.push(&format!("line {i}"));
    }
    let out = text.finish();
    assert!(out.len() < Text::HEAD + Text::TAIL + 100);
    assert!(out.starts_with("line 0\n"));
    assert!(out.contains("lines omitted"));
    assert!(out.ends_with("line 199999"));
}

#[test]
fn summary_lines() {
    let s = parse_summary(
        "test result: ok. 3 passed; 0 failed; 2 ignored; 1 measured; 4 filtered out; finished in 1.25s",
    )
    .unwrap();
    assert_eq!(
        s,
        LibtestSummary {
            ok: true,
            passed: 3,
            failed: 0,
            ignored: 2,
            measured: 1,
            filtered_out: 4,
            duration: Some(Duration::from_millis(1250)),
        }
    );
    assert!(parse_summary("test result: maybe. 1 passed").is_none());
    assert!(parse_summary("test result: ok.").is_none());
}

#[test]
fn terse_progress_lines() {
    assert!(is_terse_progress("..F.i"));
    assert!(is_terse_progress("ii.. 5/8"));
    assert!(!is_terse_progress(""));
    assert!(!is_terse_progress("ok"));
    assert!(!is_terse_progress(". x/y"));
}

#[test]
fn capped_harness_output() {
    // What `capped_test::main!()` prints with one test thread when a test times out: the
    // shuffle seed on the first line, the timeout on the result, and the tests it did not
    // start named in a note (see capped-test/src/harness/report.rs and runner.rs).
    let text = "\nrunning 4 tests (shuffle seed: 7)\n\
                test a ... ok\n\
                test slow ... FAILED (timed out after 1.50s)\n\
                \ncapped: 2 tests not run because the run stopped after slow timed out: c, d::e\n\
                \nfailures:\n\n---- slow stdout ----\nthread 'slow' timed out after 1.50s\n\n\
                \nfailures:\n    slow\n\
                \ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.60s\n\n";
    let run = run(text, &["a", "slow", "c", "d::e"], 1, exited(101));
    assert_eq!(run.parsed.total, Some(4));
    assert_eq!(
        run.status("slow"),
        TestStatus::TimedOut {
            after: Duration::from_millis(1500)
        }
    );
    assert_eq!(run.output("slow"), "thread 'slow' timed out after 1.50s");
    for name in ["c", "d::e"] {
        assert_eq!(
            run.status(name),
            TestStatus::NotRun {
                reason: "the run stopped after slow timed out".into()
            }
        );
    }
}

/// A binary of many tests that crashes before any finished leaves each one to judge: in
/// time linear in their number (a big suite's crash must not keep the runner busy for
/// minutes), all of them not run but the ones that may have been running.
#[test]
fn a_crash_in_a_binary_of_many_tests_is_judged_in_linear_time() {
    let names: Vec<String> = (0..200_000).map(|i| format!("tests::t{i:06}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let run = run("", &names, 2, signalled(6));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.parsed.all.len(), names.len());
    assert_eq!(run.status("tests::t000001"), TestStatus::Failed);
    assert!(matches!(
        run.status("tests::t199999"),
        TestStatus::NotRun { .. }
    ));
}
