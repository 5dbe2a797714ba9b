//! Verdicts no test output can forge, and output that cannot sink the runner: tests that
//! print other tests' result lines, a binary that prints a green run and exits 0, a plain
//! test that aborts beside `#[capped]` tests, a `#[capped]` test that hangs past its own
//! timeout, a flood under `--timeout`, a 64 MiB line, durations at width 2.

mod common;

use std::process::Output;

use common::*;

/// `cargo capped ARGS --message-format json` in the verdicts fixture, in a scratch of its own.
fn run(args: &[&str]) -> Output {
    capped_json("verdicts", &RunScratch::new(), args, &[])
}

#[test]
fn printed_result_lines_do_not_change_verdicts() {
    for profile in ["t1", "t2"] {
        let output = run(&[profile, "--test", "forge"]);
        let results = test_results(&output);
        let text = describe(&output);
        assert_eq!(exit_code(&output), 100, "{profile}: {text}");
        assert_eq!(
            status_in(&results, "a_fails"),
            "failed",
            "{profile}: {text}"
        );
        assert_eq!(status_in(&results, "b_forges_directly"), "passed", "{text}");
        assert_eq!(
            status_in(&results, "c_forges_through_a_child"),
            "passed",
            "{text}"
        );
        assert_eq!(results.len(), 3, "one result per test: {text}");
        let output = results["a_fails"]["output"].as_str().unwrap_or_default();
        assert!(output.contains("a_fails really failed"), "{text}");
    }
}

#[test]
fn a_green_run_printed_before_exit_0_fails_the_run() {
    let output = run(&["t1", "--test", "green_exit"]);
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    assert_eq!(status_in(&results, "a_passes"), "passed", "{text}");
    assert_eq!(status_in(&results, "b_exits_green"), "failed", "{text}");
    let why = results["b_exits_green"]["output"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("exited with code 0"), "{text}");
    assert_eq!(status_in(&results, "c_never_runs"), "not-run", "{text}");
}

#[test]
fn an_abort_is_pinned_on_the_plain_test_that_ran_not_on_capped_tests() {
    for profile in ["t1", "t2"] {
        let output = run(&[profile, "--test", "mixed_abort"]);
        let results = test_results(&output);
        let text = describe(&output);
        assert_eq!(exit_code(&output), 100, "{profile}: {text}");
        assert_eq!(status_in(&results, "b_plain_aborts"), "failed", "{text}");
        let why = results["b_plain_aborts"]["output"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("crashed"), "{profile}: {text}");
        if profile == "t1" {
            // One at a time: exactly the aborting test is blamed.
            assert_eq!(status_in(&results, "a_capped_passes"), "passed", "{text}");
            assert!(!why.contains("also running"), "{text}");
            assert_eq!(status_in(&results, "c_capped_after"), "not-run", "{text}");
        } else {
            // Two at a time: a test beside it is named as possibly running only if it had no
            // verdict yet; one that finished before the abort keeps its pass (the third can
            // start and finish while the aborting test still runs).
            for name in ["a_capped_passes", "c_capped_after"] {
                let other = status_in(&results, name);
                assert!(
                    matches!(other.as_str(), "passed" | "failed" | "not-run"),
                    "{name}: {text}"
                );
            }
        }
    }
}

#[test]
fn a_hung_capped_test_costs_only_itself() {
    for profile in ["t1", "t2"] {
        let output = run(&[profile, "--test", "capped_hang"]);
        let results = test_results(&output);
        let text = describe(&output);
        assert_eq!(exit_code(&output), 100, "{profile}: {text}");
        assert_eq!(
            status_in(&results, "a_first"),
            "passed",
            "{profile}: {text}"
        );
        assert_eq!(
            status_in(&results, "b_hangs"),
            "timed-out",
            "{profile}: {text}"
        );
        assert_eq!(
            status_in(&results, "c_after"),
            "passed",
            "{profile}: {text}"
        );
        assert_eq!(
            status_in(&results, "d_plain_after"),
            "passed",
            "{profile}: {text}"
        );
    }
}

#[test]
fn a_flood_under_timeout_ends_with_the_verdict() {
    let output = run(&[
        "t1",
        "--test",
        "flood",
        "--timeout",
        "5s",
        "--",
        "--ignored",
        "--exact",
        "b_floods_forever",
    ]);
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    assert_eq!(
        status_in(&results, "b_floods_forever"),
        "timed-out",
        "{text}"
    );
    let kept = results["b_floods_forever"]["output"]
        .as_str()
        .unwrap_or_default()
        .len();
    assert!(kept < 4 << 20, "the output kept is bounded: {kept} bytes");
}

#[test]
fn a_64_mib_line_passes() {
    let output = run(&["t1", "--test", "flood"]);
    let results = test_results(&output);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(status_in(&results, "a_long_line"), "passed");
    assert_eq!(status_in(&results, "b_floods_forever"), "ignored");
}

#[test]
fn every_test_has_its_own_duration_at_width_2() {
    let output = run(&["t2", "--test", "durations", "--test-threads", "2"]);
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    let ms = |name: &str| {
        results[name]["duration_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} has no duration: {text}"))
    };
    for name in ["a_short", "b_long", "c_medium", "d_short"] {
        assert!(ms(name) > 0.0, "{name}: {text}");
    }
    // `b_long` started with the process and the runner can only see its end late, so its
    // duration is never under what it waited; it is per test, not the binary's.
    assert!(ms("b_long") >= 600.0, "{text}");
    assert!(ms("b_long") > ms("d_short"), "{text}");
}

/// The human report of `cargo capped ARGS` in the verdicts fixture.
fn run_human(args: &[&str]) -> Output {
    let scratch = RunScratch::new();
    let mut command = capped_in("verdicts");
    let (ours, theirs) = match args.iter().position(|a| *a == "--") {
        Some(at) => args.split_at(at),
        None => (args, &[][..]),
    };
    command.args(ours);
    scratch.apply(&mut command);
    command.args(["--color", "never"]).args(theirs);
    command.output().expect("running cargo capped")
}

#[test]
fn nocapture_shows_passing_tests_output_live_under_their_names() {
    let output = run_human(&["t1", "--test", "nocapture", "--", "--nocapture"]);
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    assert!(text.contains("a_prints | hello from a_prints"), "{text}");
    assert!(
        text.contains("b_prints_too | hello from b_prints_too"),
        "{text}"
    );
    // Shown once, live, not again under the result.
    assert_eq!(text.matches("hello from a_prints").count(), 1, "{text}");
    assert!(
        !text.contains("deprecated"),
        "libtest's notice is ours: {text}"
    );
    // Two at a time the lines cannot be pinned on one test: the binary's name, and still
    // every line.
    let output = run_human(&["t2", "--test", "nocapture", "--", "--nocapture"]);
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    for line in [
        "hello from a_prints",
        "to stderr from a_prints",
        "hello from b_prints_too",
    ] {
        assert!(
            text.contains(&format!("verdicts-fixture::nocapture | {line}"))
                || text.contains(&format!("a_prints | {line}"))
                || text.contains(&format!("b_prints_too | {line}")),
            "{line}: {text}"
        );
    }
}

#[test]
fn show_output_keeps_passing_tests_output() {
    let output = run(&["t2", "--test", "nocapture", "--", "--show-output"]);
    let results = test_results(&output);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    let a = results["a_prints"]["output"].as_str().unwrap_or_default();
    assert!(a.contains("hello from a_prints"), "{text}");
    let b = results["b_prints_too"]["output"]
        .as_str()
        .unwrap_or_default();
    assert!(b.contains("hello from b_prints_too"), "{text}");
}

#[test]
fn odd_output_keeps_every_verdict() {
    for profile in ["t1", "t2"] {
        let output = run(&[profile, "--test", "odd_output"]);
        let results = test_results(&output);
        let text = describe(&output);
        assert_eq!(exit_code(&output), 0, "{profile}: {text}");
        for name in [
            "a_not_utf8",
            "b_child_keeps_the_pipes",
            "c_closes_its_streams",
        ] {
            assert_eq!(
                status_in(&results, name),
                "passed",
                "{profile} {name}: {text}"
            );
        }
    }
}

#[test]
fn ctrl_c_stops_a_flood() {
    use std::io::BufRead;
    let scratch = RunScratch::new();
    let mut command = capped_in("verdicts");
    command.args(["t1", "--test", "flood"]);
    scratch.apply(&mut command);
    command
        .args([
            "--message-format",
            "json",
            "--",
            "--ignored",
            "--exact",
            "b_floods_forever",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut signalled = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !signalled && line.contains("\"test-started\"") && line.contains("b_floods_forever")
            {
                signalled = true;
                let _ = sender.send(());
            }
        }
    });
    receiver
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("the flooding test started");
    let runner = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(runner, rustix::process::Signal::INT).unwrap();
    // The loop looks at signals between bounded batches of output: the run ends (a hang
    // here would be the bug; the bound only keeps a broken build from blocking forever).
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the run ended after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn no_run_builds_and_names_the_binaries_without_running_them() {
    // The whole fixture: several of its tests fail or abort, so anything run would show.
    let output = run(&["t2", "--no-run"]);
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(events.iter().all(|e| e["type"] == "test-binary"), "{text}");
    let nocapture = events
        .iter()
        .find(|e| e["binary"]["id"] == "verdicts-fixture::mixed_abort")
        .unwrap_or_else(|| panic!("no mixed_abort binary: {text}"));
    let executable = nocapture["executable"].as_str().unwrap_or_default();
    assert!(std::path::Path::new(executable).is_file(), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Executable verdicts-fixture::mixed_abort ("),
        "{text}"
    );
    assert!(!stderr.contains("Summary"), "nothing ran: {text}");

    let output = run_human(&["t1", "--test", "nocapture", "--no-run"]);
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    assert!(
        text.contains("Executable verdicts-fixture::nocapture ("),
        "{text}"
    );
    assert!(!text.contains("a_prints"), "nothing ran: {text}");
}

#[test]
fn no_capture_is_nocapture_after_the_separator() {
    let output = run_human(&["t1", "--test", "nocapture", "--no-capture"]);
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    assert!(text.contains("a_prints | hello from a_prints"), "{text}");
    assert_eq!(text.matches("hello from a_prints").count(), 1, "{text}");
    // Both spellings at once are one `--nocapture`.
    let output = run_human(&[
        "t1",
        "--test",
        "nocapture",
        "--no-capture",
        "--",
        "--nocapture",
    ]);
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    assert!(
        text.contains("b_prints_too | hello from b_prints_too"),
        "{text}"
    );
}

/// The attribute `name="VALUE"` of the first element that starts with `start` in `xml`.
fn attribute(xml: &str, start: &str, name: &str) -> Option<String> {
    let element = &xml[xml.find(start)?..];
    let element = &element[..element.find('>')?];
    let value = &element[element.find(&format!(" {name}=\""))? + name.len() + 3..];
    Some(value[..value.find('"')?].to_string())
}

#[test]
fn junit_carries_what_ci_systems_read() {
    let scratch = RunScratch::new();
    let junit = scratch.path("junit.xml");
    let mut command = capped_in("verdicts");
    command.args([
        "t1",
        "--test",
        "reports",
        "--test",
        "mixed_abort",
        "--junit",
    ]);
    command.arg(&junit);
    scratch.apply(&mut command);
    let output = command.output().expect("running cargo capped");
    let text = describe(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("{e}: {text}"));
    xml_elements(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));

    // The panic message, not the first line printed, is the failure's message; the whole
    // output is its body and the testcase's system-out.
    let failing = "<testcase name=\"b_fails_after_printing\"";
    let case = &xml[xml.find(failing).unwrap_or_else(|| panic!("{xml}"))..];
    let case = &case[..case.find("</testcase>").unwrap()];
    let message = attribute(case, "<failure", "message").unwrap_or_else(|| panic!("{xml}"));
    assert!(
        message.starts_with("assertion `left == right` failed: the sum is off"),
        "{message}\n{xml}"
    );
    let body = &case[case.find("<failure").unwrap()..case.find("</failure>").unwrap()];
    assert!(
        body.contains("setting up b") && body.contains("panicked at"),
        "{xml}"
    );
    let system_out = &case[case.find("<system-out>").unwrap_or_else(|| panic!("{xml}"))..];
    assert!(
        system_out.contains("setting up b\na warning from b"),
        "{xml}"
    );

    // Every suite has a timestamp, every testcase a time.
    for suite in xml.split("<testsuite ").skip(1) {
        assert!(attribute(suite, "", "timestamp").is_some(), "{xml}");
    }
    for case in xml.split("<testcase ").skip(1) {
        let tag = &case[..case.find('>').unwrap()];
        assert!(tag.contains(" time=\""), "no time: {tag}\n{xml}");
    }

    // Ignored is skipped; not run is an error of type "not run", counted apart.
    let ignored = &xml[xml.find("<testcase name=\"c_ignored\"").unwrap()..];
    assert!(
        ignored[..ignored.find("</testcase>").unwrap()]
            .contains("<skipped message=\"needs a GPU\""),
        "{xml}"
    );
    let not_run = &xml[xml.find("<testcase name=\"c_capped_after\"").unwrap()..];
    let not_run = &not_run[..not_run.find("</testcase>").unwrap()];
    assert_eq!(
        attribute(not_run, "<error", "type").as_deref(),
        Some("not run"),
        "{xml}"
    );

    // The schema Jenkins and GitLab read, when xmllint is there to check it.
    let schema = repo_root().join("tests/junit/junit.xsd");
    match std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&junit)
        .output()
    {
        Ok(check) => assert!(
            check.status.success(),
            "the report does not match {}:\n{}\n{xml}",
            schema.display(),
            String::from_utf8_lossy(&check.stderr)
        ),
        Err(e) => eprintln!(
            "skipping the XSD check of the JUnit report: cannot run xmllint ({e}); \
             install libxml2-utils to run it"
        ),
    }
}
