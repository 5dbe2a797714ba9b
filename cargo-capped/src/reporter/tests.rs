//! The reports against a scripted run: human text snapshots, JSON lines, JUnit parsed back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use capped_model::Percentiles;
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

use super::*;
use crate::events::{BinaryId, GroupStats, RunSummary, TestResult, TestStatus};

/// A writer tests can read back.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A writer that always fails, like a closed pipe.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn integration() -> BinaryId {
    BinaryId {
        package: "pkg".into(),
        target: "integration".into(),
        kind: "test".into(),
    }
}

fn lib() -> BinaryId {
    BinaryId {
        package: "pkg".into(),
        target: "pkg".into(),
        kind: "lib".into(),
    }
}

fn result(
    binary: BinaryId,
    name: &str,
    status: TestStatus,
    ms: Option<u64>,
    output: &str,
) -> RunEvent {
    RunEvent::TestFinished(TestResult {
        binary,
        name: name.into(),
        status,
        duration: ms.map(Duration::from_millis),
        output: output.into(),
    })
}

const PANIC: &str = "thread 'tests::divides' (77) panicked at tests/integration.rs:9:5:\nattempt to divide by zero\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";

fn summary(junit: Option<&Path>) -> RunSummary {
    let counts = BTreeMap::from([
        ("passed", 1),
        ("failed", 2),
        ("ignored", 1),
        ("timed-out", 1),
        ("killed-mem", 1),
        ("not-run", 1),
    ]);
    let waits = |p50, p95, p99| Percentiles {
        count: 6,
        p50: Duration::from_millis(p50),
        p95: Duration::from_millis(p95),
        p99: Duration::from_millis(p99),
        max: Duration::from_millis(p99),
    };
    RunSummary {
        counts,
        duration: Duration::from_millis(12_300),
        slowest: vec![
            ("tests::hangs".into(), Duration::from_secs(30)),
            ("tests::divides".into(), Duration::from_millis(503)),
        ],
        groups: BTreeMap::from([
            (
                "gpu".to_string(),
                GroupStats {
                    count: 6,
                    wait: waits(0, 310, 320),
                    peak_holders: 1,
                    binary_waits: 0,
                },
            ),
            (
                "width".to_string(),
                GroupStats {
                    count: 7,
                    wait: waits(0, 12, 30),
                    peak_holders: 2,
                    binary_waits: 3,
                },
            ),
        ]),
        peak_concurrency: 2,
        width_changes: Vec::new(),
        runner_peak_rss: Some(22 * 1024 * 1024),
        binary_peak_rss: vec![
            ("pkg".into(), 31 << 20),
            ("pkg::integration".into(), 3 << 30),
        ],
        junit_path: junit.map(Path::to_path_buf),
        exit_code: 100,
    }
}

/// A run with every kind of outcome.
fn events(junit: Option<&Path>) -> Vec<RunEvent> {
    vec![
        RunEvent::RunStarted {
            profile: "t2".into(),
            width: 2,
            requested_width: 2,
            explicit_width: false,
            degraded_because: None,
            rayon_threads: 2,
            seed: 42,
            deterministic: true,
            shuffle: false,
            binaries: 2,
            tests: 7,
            binary_tests: Vec::new(),
            learned: Default::default(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            reproduce: crate::plan::reproduce::ReproduceBase {
                seed_origin: capped_model::SeedOrigin::Deterministic,
                before: [
                    "cargo",
                    "capped",
                    "run",
                    "--profile",
                    "t2",
                    "--seed",
                    "42",
                    "--deterministic",
                    "--features",
                    "a b",
                ]
                .map(String::from)
                .to_vec(),
                test_flags: Vec::new(),
            },
        },
        RunEvent::Notice {
            message: "raised RLIMIT_NOFILE to 65536".into(),
        },
        RunEvent::BinaryStarted {
            binary: integration(),
            pid: 4242,
            width_slots: 2,
            groups: vec!["gpu".into()],
        },
        RunEvent::TestStarted {
            binary: integration(),
            name: "tests::adds".into(),
        },
        result(
            integration(),
            "tests::adds",
            TestStatus::Passed,
            Some(12),
            "",
        ),
        result(
            integration(),
            "tests::divides",
            TestStatus::Failed,
            Some(503),
            PANIC,
        ),
        result(
            integration(),
            "tests::seeded",
            TestStatus::Failed,
            None,
            "assertion failed\ncapped: tests::seeded failed with seed 7 (run seed 42, given); reproduce: cargo capped run --profile t2 --seed 42 -- --exact tests::seeded",
        ),
        result(
            integration(),
            "gpu::matmul",
            TestStatus::Ignored,
            None,
            "needs a GPU",
        ),
        result(
            integration(),
            "tests::hangs",
            TestStatus::TimedOut {
                after: Duration::from_secs(30),
            },
            Some(30_001),
            "",
        ),
        result(
            integration(),
            "tests::eats_memory",
            TestStatus::KilledForMemory {
                limit: Some(2 << 30),
                peak: 3 << 30,
                by_watchdog: true,
            },
            None,
            "",
        ),
        RunEvent::BinaryFinished {
            binary: integration(),
            exit_code: None,
            signal: Some(9),
            killed_because: Some("timed out after 30s".into()),
            duration: Duration::from_millis(30_500),
            peak_rss: Some(3 << 30),
            stray_output: String::new(),
        },
        RunEvent::BinaryStarted {
            binary: lib(),
            pid: 4243,
            width_slots: 1,
            groups: vec![],
        },
        result(
            lib(),
            "ffi::call",
            TestStatus::NotRun {
                reason: "the test binary crashed (signal 11 (SIGSEGV)) before this test ran".into(),
            },
            None,
            "",
        ),
        RunEvent::BinaryFinished {
            binary: lib(),
            exit_code: None,
            signal: Some(11),
            killed_because: None,
            duration: Duration::from_millis(1_204),
            peak_rss: None,
            stray_output: "Segmentation fault in libfoo".into(),
        },
        RunEvent::RunFinished(summary(junit)),
    ]
}

fn report(options: ReporterOptions, events: &[RunEvent]) -> (String, String) {
    let (out, err) = (Buf::default(), Buf::default());
    let mut reporter =
        Reporter::with_writers(options, Box::new(out.clone()), Box::new(err.clone()));
    for event in events {
        reporter.event(event);
    }
    reporter.finish().unwrap();
    (out.text(), err.text())
}

const HUMAN: &str = "\
cargo capped: profile t2 — width 2, rayon 2, seed 42 (deterministic)
    Starting 7 tests across 2 binaries
      NOTICE raised RLIMIT_NOFILE to 65536
        PASS [    0.012s] pkg::integration tests::adds
        FAIL [    0.503s] pkg::integration tests::divides
--- OUTPUT: pkg::integration tests::divides ---
thread 'tests::divides' (77) panicked at tests/integration.rs:9:5:
attempt to divide by zero
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

        FAIL [          ] pkg::integration tests::seeded
--- OUTPUT: pkg::integration tests::seeded ---
assertion failed
capped: tests::seeded failed with seed 7 (run seed 42, given); reproduce: cargo capped run --profile t2 --seed 42 -- --exact tests::seeded

        SKIP [          ] pkg::integration gpu::matmul (needs a GPU)
     TIMEOUT [   30.001s] pkg::integration tests::hangs (after 30.00s)
KILLED (memory) [          ] pkg::integration tests::eats_memory (peak 3 GiB, cap 2 GiB, by the watchdog)
      KILLED [   30.500s] pkg::integration: timed out after 30s
     NOT RUN [          ] pkg ffi::call: the test binary crashed (signal 11 (SIGSEGV)) before this test ran
     CRASHED [    1.204s] pkg: signal 11 (SIGSEGV)
--- OUTPUT: pkg (not from any one test) ---
Segmentation fault in libfoo

------------
     Summary [   12.300s] 5 tests run: 1 passed, 2 failed, 1 timed out, 1 killed for memory, 1 skipped, 1 not run
     Not run pkg ffi::call: the test binary crashed (signal 11 (SIGSEGV)) before this test ran
    Binaries pkg::integration: timed out after 30s
             pkg: signal 11 (SIGSEGV)
     Slowest   30.000s tests::hangs
                0.503s tests::divides
      Groups gpu: 6 acquisitions, wait p50 0ms p95 310ms p99 320ms, peak holders 1
             width: 7 acquisitions (3 by binaries waiting their turn), wait p50 0ms p95 12ms p99 30ms, peak holders 2/2
 Concurrency 2 tests at once at peak, width 2
      Memory runner peak RSS 22 MiB
             peak RSS per test binary: pkg::integration 3 GiB, pkg 31 MiB

failures:
    pkg::integration tests::divides (failed)
        reproduce: cargo capped run --profile t2 --seed 42 --deterministic --features 'a b' -p pkg --test integration -- --exact tests::divides  # the deterministic seed
    pkg::integration tests::seeded (failed)
        reproduce: cargo capped run --profile t2 --seed 42 --deterministic --features 'a b' -p pkg --test integration -- --exact tests::seeded  # the deterministic seed
    pkg::integration tests::hangs (timed-out)
        reproduce: cargo capped run --profile t2 --seed 42 --deterministic --features 'a b' -p pkg --test integration -- --exact tests::hangs  # the deterministic seed
    pkg::integration tests::eats_memory (killed-mem)
        reproduce: cargo capped run --profile t2 --seed 42 --deterministic --features 'a b' -p pkg --test integration -- --exact tests::eats_memory  # the deterministic seed
";

#[test]
fn human_report() {
    let (out, err) = report(ReporterOptions::default(), &events(None));
    assert_eq!(out, "", "stdout carries JSON only");
    if err != HUMAN {
        for (got, want) in err.lines().zip(HUMAN.lines()) {
            assert_eq!(got, want);
        }
        assert_eq!(err, HUMAN);
    }
}

#[test]
fn quiet_report_shows_failures_and_the_summary() {
    let options = ReporterOptions {
        verbosity: Verbosity::Quiet,
        ..ReporterOptions::default()
    };
    let (_, err) = report(options, &events(None));
    assert!(!err.contains("cargo capped: profile"), "{err}");
    assert!(!err.contains("PASS"), "{err}");
    assert!(!err.contains("SKIP"), "{err}");
    assert!(!err.contains("     NOT RUN ["), "{err}");
    assert!(err.contains("        FAIL [    0.503s] pkg::integration tests::divides\n--- OUTPUT"));
    assert!(err.contains("     TIMEOUT ["));
    assert!(err.contains("     CRASHED [    1.204s] pkg: signal 11 (SIGSEGV)"));
    assert!(err.contains("      NOTICE raised"));
    assert!(err.contains("     Summary [   12.300s] 5 tests run"));
    assert!(err.contains("     Not run pkg ffi::call"));
}

#[test]
fn verbose_report_shows_binaries() {
    let options = ReporterOptions {
        verbosity: Verbosity::Verbose,
        ..ReporterOptions::default()
    };
    let mut events = events(None);
    events.insert(
        3,
        RunEvent::BinaryFinished {
            binary: lib(),
            exit_code: Some(0),
            signal: None,
            killed_because: None,
            duration: Duration::from_millis(5),
            peak_rss: Some(10 << 20),
            stray_output: "printed by a test".into(),
        },
    );
    let (_, err) = report(options, &events);
    assert!(err.contains("       START pkg::integration (pid 4242, 2 width slots, holds gpu)\n"));
    assert!(err.contains("        DONE [    0.005s] pkg (exit code 0, peak RSS 10 MiB)\n"));
    assert!(err.contains("--- OUTPUT: pkg (not from any one test) ---\nprinted by a test\n"));
    assert!(err.contains("        PASS [    0.012s]"));
}

#[test]
fn colors() {
    let options = ReporterOptions {
        color: ColorChoice::Always,
        ..ReporterOptions::default()
    };
    let (_, err) = report(options, &events(None));
    assert!(err.contains("\u{1b}[1;32m        PASS\u{1b}[0m"));
    assert!(err.contains("\u{1b}[1;31m--- OUTPUT: pkg::integration tests::divides ---\u{1b}[0m"));
    assert!(err.contains("\u{1b}[35mpkg::integration\u{1b}[0m"));
    // the same text once the colors are gone
    assert_eq!(crate::libtest::strip_ansi(&err), HUMAN);
}

#[test]
fn color_choice() {
    use ColorChoice::*;
    assert!(color_enabled(Always, false, Some("never"), Some("1")));
    assert!(!color_enabled(Never, true, Some("always"), None));
    assert!(color_enabled(Auto, true, None, None));
    assert!(!color_enabled(Auto, false, None, None));
    assert!(!color_enabled(Auto, true, None, Some("1")));
    assert!(color_enabled(Auto, true, None, Some("")));
    assert!(color_enabled(Auto, false, Some("always"), Some("1")));
    assert!(!color_enabled(Auto, true, Some("never"), None));
    assert!(color_enabled(Auto, true, Some("auto"), None));
}

#[test]
fn progress_only_on_a_terminal_outside_ci() {
    assert!(progress_enabled(true, None));
    assert!(progress_enabled(true, Some("")));
    assert!(progress_enabled(true, Some("false")));
    assert!(progress_enabled(true, Some("0")));
    assert!(!progress_enabled(true, Some("true")));
    assert!(!progress_enabled(true, Some("1")));
    assert!(!progress_enabled(false, None), "a pipe or a file");
}

#[test]
fn json_lines() {
    let options = ReporterOptions {
        format: ReportFormat::Json,
        verbosity: Verbosity::Quiet,
        ..ReporterOptions::default()
    };
    let events = events(None);
    let (out, err) = report(options, &events);
    assert!(err.contains("Summary"), "human lines go to stderr");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "run-started",
            "notice",
            "binary-started",
            "test-started",
            "test-finished",
            "test-finished",
            "test-finished",
            "test-finished",
            "test-finished",
            "test-finished",
            "binary-finished",
            "binary-started",
            "test-finished",
            "binary-finished",
            "run-finished"
        ]
    );
    let started = &lines[0];
    assert_eq!(started["profile"], "t2");
    assert_eq!(started["seed"], 42);
    assert_eq!(started["deterministic"], true);
    assert_eq!(started["started_at_ms"], 1_767_225_600_000u64);
    let failed = &lines[5];
    assert_eq!(failed["binary"]["id"], "pkg::integration");
    assert_eq!(failed["binary"]["kind"], "test");
    assert_eq!(failed["name"], "tests::divides");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["duration_ms"], 503.0);
    assert_eq!(failed["output"], PANIC);
    assert_eq!(lines[7]["status"], "ignored");
    assert_eq!(lines[7]["reason"], "needs a GPU");
    assert_eq!(lines[7]["output"], "");
    assert_eq!(lines[8]["status"], "timed-out");
    assert_eq!(lines[8]["timeout_ms"], 30_000.0);
    assert_eq!(lines[9]["mem_peak"], 3u64 << 30);
    assert_eq!(lines[9]["by_watchdog"], true);
    assert_eq!(lines[12]["status"], "not-run");
    assert!(lines[12]["duration_ms"].is_null());
    assert!(lines[12]["reason"].as_str().unwrap().contains("SIGSEGV"));
    let crashed = &lines[13];
    assert_eq!(crashed["signal"], 11);
    assert!(crashed["exit_code"].is_null());
    assert_eq!(crashed["stray_output"], "Segmentation fault in libfoo");
    let finished = &lines[14];
    assert_eq!(finished["counts"]["failed"], 2);
    assert_eq!(finished["exit_code"], 100);
    assert_eq!(finished["groups"]["gpu"]["wait_ms"]["p95"], 310.0);
    assert_eq!(finished["groups"]["gpu"]["peak_holders"], 1);
    assert_eq!(finished["slowest"][0]["name"], "tests::hangs");
    assert_eq!(finished["peak_concurrency"], 2);
}

#[test]
fn junit_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reports/junit.xml");
    let options = ReporterOptions {
        junit: Some(path.clone()),
        ..ReporterOptions::default()
    };
    let (_, err) = report(options, &events(Some(&path)));
    assert!(
        err.contains(&format!("       JUnit {}\n", path.display())),
        "{err}"
    );
    let xml = std::fs::read_to_string(&path).unwrap();
    let report = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suites: Vec<&str> = report.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        suites,
        ["pkg::integration", "pkg"],
        "in the order binaries started"
    );
    let integration = &report.test_suites[0];
    let case = |name: &str| {
        integration
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(matches!(
        case("tests::adds").status,
        TestCaseStatus::Success { .. }
    ));
    assert_eq!(case("tests::adds").time, Some(Duration::from_millis(12)));
    let TestCaseStatus::NonSuccess {
        kind,
        message,
        ty,
        description,
        ..
    } = &case("tests::divides").status
    else {
        panic!("divides")
    };
    assert_eq!(*kind, NonSuccessKind::Failure);
    assert_eq!(ty.as_ref().unwrap().as_str(), "test failure");
    // The panic message, not the `panicked at` line; the whole output in the body and in
    // the testcase's system-out.
    assert_eq!(
        message.as_ref().unwrap().as_str(),
        "attempt to divide by zero"
    );
    assert_eq!(description.as_ref().unwrap().as_str(), PANIC);
    assert_eq!(
        case("tests::divides").system_out.as_ref().unwrap().as_str(),
        PANIC
    );
    assert!(integration.timestamp.is_some(), "a suite has a timestamp");
    let TestCaseStatus::NonSuccess { ty, .. } = &case("tests::hangs").status else {
        panic!("hangs")
    };
    assert_eq!(ty.as_ref().unwrap().as_str(), "timeout");
    let TestCaseStatus::NonSuccess { ty, .. } = &case("tests::eats_memory").status else {
        panic!("eats_memory")
    };
    assert_eq!(ty.as_ref().unwrap().as_str(), "killed for memory");
    let TestCaseStatus::Skipped { message, .. } = &case("gpu::matmul").status else {
        panic!("matmul")
    };
    assert_eq!(message.as_ref().unwrap().as_str(), "needs a GPU");
    assert_eq!(
        case("gpu::matmul").time,
        Some(Duration::ZERO),
        "every case has a time"
    );
    // the lib binary crashed with no failed test: not run (an error, apart from skipped
    // tests), plus a `(binary)` error
    let lib = &report.test_suites[1];
    let TestCaseStatus::NonSuccess {
        kind, ty, message, ..
    } = &lib.test_cases[0].status
    else {
        panic!("ffi::call")
    };
    assert_eq!(*kind, NonSuccessKind::Error);
    assert_eq!(ty.as_ref().unwrap().as_str(), "not run");
    let message = message.as_ref().unwrap().as_str();
    assert!(
        message.starts_with("not run: ") && message.contains("SIGSEGV"),
        "{message}"
    );
    let binary = &lib.test_cases[1];
    assert_eq!(binary.name.as_str(), "(binary)");
    let TestCaseStatus::NonSuccess { kind, message, .. } = &binary.status else {
        panic!("(binary)")
    };
    assert_eq!(*kind, NonSuccessKind::Error);
    assert_eq!(
        message.as_ref().unwrap().as_str(),
        "the test binary crashed: signal 11 (SIGSEGV)"
    );
    assert_eq!(
        lib.system_err.as_ref().unwrap().as_str(),
        "Segmentation fault in libfoo"
    );
}

#[test]
fn a_failure_message_is_the_panic_message() {
    use super::junit::failure_message;
    let output = "setting up\nthread 't' (7) panicked at tests/a.rs:3:5:\nassertion `left == right` failed: off\n  left: 2\n right: 3\nnote: run with `RUST_BACKTRACE=1`\n";
    assert_eq!(
        failure_message(output),
        "assertion `left == right` failed: off\n  left: 2\n right: 3"
    );
    let backtrace = "thread 't' panicked at src/lib.rs:1:1:\nboom\nstack backtrace:\n   0: x\n";
    assert_eq!(failure_message(backtrace), "boom");
    assert_eq!(
        failure_message("\n  Error: no file\nmore\n"),
        "Error: no file"
    );
    assert_eq!(failure_message(""), "test failed");
}

#[test]
fn junit_escapes_and_strips_what_xml_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    let options = ReporterOptions {
        junit: Some(path.clone()),
        ..ReporterOptions::default()
    };
    // U+FFFE and U+FFFF are no XML characters either: a strict parser (Jenkins's) rejects
    // the whole report for one of them.
    let nasty =
        "<b>&amp;</b> \"quoted\" ]]> \u{1b}[31mred\u{1b}[0m \u{0}\u{7}\u{fffe}\u{ffff} done";
    let events = vec![
        result(integration(), "t<&>\"", TestStatus::Failed, Some(1), nasty),
        RunEvent::RunFinished(RunSummary::default()),
    ];
    report(options, &events);
    let xml = std::fs::read_to_string(&path).unwrap();
    assert!(!xml.contains(['\u{fffe}', '\u{ffff}']), "{xml}");
    let report = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let case = &report.test_suites[0].test_cases[0];
    assert_eq!(case.name.as_str(), "t<&>\"");
    let TestCaseStatus::NonSuccess { description, .. } = &case.status else {
        panic!()
    };
    let description = description.as_ref().unwrap().as_str();
    assert!(
        description.starts_with("<b>&amp;</b> \"quoted\" ]]> red"),
        "{description}"
    );
    assert!(description.ends_with("done"));
}

#[test]
fn junit_is_written_by_finish_when_the_run_did_not_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    let options = ReporterOptions {
        junit: Some(path.clone()),
        ..ReporterOptions::default()
    };
    let events = events(None);
    report(options, &events[..6]);
    let report = Report::deserialize_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report.test_suites[0].test_cases.len(), 2);
}

#[test]
fn junit_has_one_suite_for_a_binary_run_as_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    let options = ReporterOptions {
        junit: Some(path.clone()),
        ..ReporterOptions::default()
    };
    let part = |pid: u32, name: &str, ms: u64, stray: &str| {
        vec![
            RunEvent::BinaryStarted {
                binary: integration(),
                pid,
                width_slots: 1,
                groups: Vec::new(),
            },
            result(integration(), name, TestStatus::Passed, Some(ms), ""),
            RunEvent::BinaryFinished {
                binary: integration(),
                exit_code: Some(0),
                signal: None,
                killed_because: None,
                duration: Duration::from_millis(ms),
                peak_rss: None,
                stray_output: stray.into(),
            },
        ]
    };
    let mut events = part(1, "tests::first", 100, "from the first");
    events.extend(part(2, "tests::second", 50, "from the second"));
    report(options, &events);
    let report = Report::deserialize_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert_eq!(suite.test_cases.len(), 2);
    assert_eq!(suite.time, Some(Duration::from_millis(150)));
    assert_eq!(
        suite.system_err.as_ref().unwrap().as_str(),
        "from the first\nfrom the second"
    );
}

#[test]
fn junit_write_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let options = ReporterOptions {
        junit: Some(file.join("junit.xml")),
        ..ReporterOptions::default()
    };
    let err = Buf::default();
    let mut reporter =
        Reporter::with_writers(options, Box::new(Buf::default()), Box::new(err.clone()));
    reporter.event(&RunEvent::RunFinished(RunSummary::default()));
    assert!(
        err.text().contains("       JUnit cannot create"),
        "{}",
        err.text()
    );
    // Reported once, in the summary; finish says the run's reports are incomplete.
    let error = reporter.finish().unwrap_err();
    assert!(error.shown, "{error}");
}

#[test]
fn output_errors_come_back_from_finish() {
    let options = ReporterOptions {
        format: ReportFormat::Json,
        ..ReporterOptions::default()
    };
    let err = Buf::default();
    let mut reporter = Reporter::with_writers(options, Box::new(Broken), Box::new(err.clone()));
    for event in events(None) {
        reporter.event(&event);
    }
    assert!(err.text().contains("Summary"), "the human report goes on");
    assert_eq!(
        reporter.finish().unwrap_err().error.kind(),
        io::ErrorKind::BrokenPipe
    );
}

#[test]
fn progress_bar_path() {
    // A hidden bar takes the same code path as a terminal's.
    let err = Buf::default();
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    let mut reporter = Reporter::build(
        ReporterOptions::default(),
        false,
        Box::new(Buf::default()),
        Box::new(err.clone()),
        Some(bar.clone()),
    );
    let events = events(None);
    for event in &events[..5] {
        reporter.event(event);
    }
    assert_eq!(bar.length(), Some(7));
    assert_eq!(bar.position(), 1);
    // What the bar shows after itself (its style renders this on every tick).
    let work = reporter
        .work
        .lock()
        .unwrap()
        .render(std::time::Instant::now());
    assert!(
        work.starts_with("1/7 tests, 0/1 binaries, ETA <1s, running: pkg::integration "),
        "{work}"
    );
    for event in &events[5..] {
        reporter.event(event);
    }
    assert!(bar.is_finished());
    reporter.finish().unwrap();
    assert_eq!(err.text(), HUMAN);
}

#[test]
fn summary_without_a_header_or_runner_counts() {
    let events = vec![
        result(integration(), "a", TestStatus::Passed, Some(1), ""),
        result(integration(), "b", TestStatus::Ignored, None, ""),
        RunEvent::RunFinished(RunSummary::default()),
    ];
    let (_, err) = report(ReporterOptions::default(), &events);
    assert!(
        err.contains("     Summary [    0.000s] 1 test run: 1 passed, 1 skipped\n"),
        "{err}"
    );
    assert!(!err.contains("failures:"));
    assert!(!err.contains("Concurrency"));
}

#[test]
fn many_not_run_tests_are_cut_short() {
    let mut events: Vec<RunEvent> = (0..25)
        .map(|i| {
            result(
                lib(),
                &format!("t{i}"),
                TestStatus::NotRun {
                    reason: "the run was interrupted before this test ran".into(),
                },
                None,
                "",
            )
        })
        .collect();
    events.push(RunEvent::RunFinished(RunSummary::default()));
    let (_, err) = report(ReporterOptions::default(), &events);
    assert!(err.contains("     Not run pkg t0: the run was interrupted"));
    assert!(err.contains("             pkg t19: "));
    assert!(!err.contains("pkg t20: the run was interrupted before this test ran\n------"));
    assert!(err.contains("… and 5 more\n"));
}

#[test]
fn a_degraded_start_is_on_the_header_line_with_what_it_was_and_why() {
    let mut started = events(None).remove(0);
    let RunEvent::RunStarted {
        width,
        degraded_because,
        explicit_width,
        ..
    } = &mut started
    else {
        unreachable!()
    };
    *width = 1;
    *explicit_width = true;
    *degraded_because =
        Some("load.1m 5.00 = 2.50 per CPU > 2.00 ([preflight] load-per-cpu-critical)".into());
    let (out, err) = report(ReporterOptions::default(), &[started.clone()]);
    assert_eq!(out, "");
    assert_eq!(
        err.lines().next().unwrap(),
        "cargo capped: profile t2 — width 1 (degraded from --test-threads 2: load.1m 5.00 = 2.50 per CPU > 2.00 ([preflight] load-per-cpu-critical)), rayon 2, seed 42 (deterministic)"
    );
    let json = crate::reporter::json::line(&started);
    assert!(
        json.contains(r#""width":1,"requested_width":2,"degraded_because":"load.1m 5.00"#),
        "{json}"
    );
}

#[test]
fn the_summary_says_when_the_width_changed_during_the_run() {
    let mut summary = summary(None);
    summary.width_changes = vec![
        (Duration::from_millis(3200), 1),
        (Duration::from_millis(15_000), 2),
    ];
    let mut events = events(None);
    events.truncate(1);
    events.push(RunEvent::RunFinished(summary.clone()));
    let (_, err) = report(ReporterOptions::default(), &events);
    assert!(
        err.contains(
            " Concurrency 2 tests at once at peak, width 2, lowered to 1 at 3.200s, raised to 2 at 15.000s\n"
        ),
        "{err}"
    );
    summary.width_changes = (0..6)
        .map(|i| (Duration::from_secs(i), if i % 2 == 0 { 1 } else { 2 }))
        .collect();
    events.pop();
    events.push(RunEvent::RunFinished(summary));
    let (_, err) = report(ReporterOptions::default(), &events);
    assert!(
        err.contains(", raised to 2 at 3.000s, … 6 changes in all, ending at 2\n"),
        "{err}"
    );
}
