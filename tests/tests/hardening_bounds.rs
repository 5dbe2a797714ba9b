//! Hostile input end to end: counts past every sane bound, bad environment names, bad
//! arguments after `--`, a bad `-j`, a report that cannot be written and a selection that
//! runs nothing. Each ends with its documented exit status and one clear line, never an
//! allocation abort (exit 134) in the runner or in a test process.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// The one line of a rejection: exit 2, exactly one `error:` line, no panic, no abort.
fn assert_rejected(output: &Output, what: &str, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(output), 2, "{what}: {}", describe(output));
    assert!(
        !stderr.contains("memory allocation") && !stderr.contains("panicked"),
        "{what}: {stderr}"
    );
    // `error: …` from the runner and clap, `capped gate: error: …` from the gate.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line: {stderr}");
    for needle in says {
        assert!(errors[0].contains(needle), "{what}: `{needle}` in {stderr}");
    }
}

/// A workspace of one empty library with `config` as its `.config/capped.toml`: enough
/// for the runner and the gate to read the config (nothing is built before it is).
fn workspace_with_config(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"cfg-only\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::fs::create_dir_all(dir.path().join(".config")).unwrap();
    std::fs::write(dir.path().join(".config/capped.toml"), config).unwrap();
    dir
}

/// `cargo capped ARGS` in `dir`.
fn capped_at(dir: &Path) -> Command {
    let mut command = clean_command(cargo_capped(), dir);
    command
        .arg("capped")
        .env("CARGO", cargo_path())
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("RUST_BACKTRACE", "0");
    command
}

#[test]
fn huge_and_hostile_counts_on_the_command_line_exit_2() {
    let scratch = RunScratch::new();
    let huge = "9".repeat(5000);
    for args in [
        &["t2", "--test-threads", "4294967295"][..],
        &["t2", "--test-threads", "4097"],
        &["t2", "--test-threads", huge.as_str()],
        &["t2", "--rayon-threads", "100000"],
        &["t2", "--test-threads=-5"],
        &["gate", "--group", "g", "--max", "4294967295", "--", "true"],
        &[
            "gate",
            "--group",
            "g",
            "--rayon-threads",
            "5000",
            "--",
            "true",
        ],
        &["gate", "--group", "g", "--async-threads", "0", "--", "true"],
    ] {
        let mut command = capped_in("tiny");
        command
            .args(args)
            .env("CAPPED_LOCK_DIR", scratch.lock_dir());
        let output = command.output().unwrap();
        assert_rejected(&output, &format!("{args:?}"), &[]);
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("from 1 to 4096")
                || String::from_utf8_lossy(&output.stderr).contains("unexpected argument"),
            "{args:?}: {}",
            describe(&output)
        );
    }
    // Not UTF-8 at all: still one line and exit 2.
    let output = capped_in("tiny")
        .arg("t2")
        .arg("--test-threads")
        .arg(OsString::from_vec(vec![b'4', 0xff, 0xfe]))
        .output()
        .unwrap();
    assert_rejected(&output, "non-UTF-8 width", &[]);
}

#[test]
fn huge_counts_in_the_config_exit_2_naming_the_line() {
    for (config, position) in [
        (
            "[groups.g]\nmax = 4294967295\nbinaries = [\"*\"]\n",
            "capped.toml:2:7:",
        ),
        (
            "[profile.t2]\ntest-threads = 4294967295\n",
            "capped.toml:2:16:",
        ),
        ("[profile.t2]\nblas-threads = -1\n", "capped.toml:2:16:"),
        (
            "[profile.t2]\nasync-threads = 99999999999999999999\n",
            "capped.toml:2:17:",
        ),
    ] {
        let ws = workspace_with_config(config);
        let lock_dir = ws.path().join("locks");
        let output = capped_at(ws.path())
            .arg("t2")
            .arg("--lock-dir")
            .arg(&lock_dir)
            .output()
            .unwrap();
        assert_rejected(&output, config, &[position]);
        // The gate reads the same config from its current dir.
        if config.starts_with("[groups") {
            let output = capped_at(ws.path())
                .args(["gate", "--group", "g", "--lock-dir"])
                .arg(&lock_dir)
                .args(["--", "true"])
                .output()
                .unwrap();
            assert_rejected(&output, "gate", &[position, "from 1 to 4096"]);
        }
    }
}

#[test]
fn a_huge_group_max_in_the_environment_is_refused_by_the_gate() {
    let scratch = RunScratch::new();
    let output = capped_in("tiny")
        .args(["gate", "--group", "g", "--", "true"])
        .env("CAPPED_GROUPS", "g=4294967295")
        .env("CAPPED_LOCK_DIR", scratch.lock_dir())
        .output()
        .unwrap();
    assert_rejected(
        &output,
        "CAPPED_GROUPS",
        &["CAPPED_GROUPS", "from 1 to 4096"],
    );
}

#[test]
fn a_test_process_given_huge_counts_fails_its_tests_with_the_reason_not_an_abort() {
    let binary = fixture_test_binary("mixed", "attr");
    let scratch = RunScratch::new();
    for (var, value, args) in [
        ("CAPPED_GROUPS", "gpu=4294967295", &["gpu_1"][..]),
        ("CAPPED_TEST_THREADS", "4294967295", &["gpu_1"]),
        ("RUST_TEST_THREADS", "4294967295", &["gpu_1"]),
        ("CAPPED_WIDTH_HELD", "4294967295", &["gpu_1"]),
        ("UNUSED", "", &["gpu_1", "--test-threads", "4294967295"]),
    ] {
        let output = clean_command(&binary, &fixture("mixed"))
            .args(args)
            .env(var, value)
            .env("CAPPED_LOCK_DIR", scratch.lock_dir())
            .env("RECORD_FILE", scratch.record_file())
            .env("CARGO_MANIFEST_DIR", fixture("mixed").join("light"))
            .output()
            .unwrap();
        let text = all_text(&output);
        assert_eq!(
            exit_code(&output),
            101,
            "{var}={value} {args:?}: the test fails: {}",
            describe(&output)
        );
        assert!(!text.contains("memory allocation"), "{text}");
        assert!(
            text.contains("4096"),
            "{var}={value} {args:?}: says why: {text}"
        );
    }
}

#[test]
fn profile_env_names_and_nul_values_are_checked_at_load() {
    for (config, position, says) in [
        (
            "[profile.t2.env]\n\"A=B\" = \"1\"\n",
            "capped.toml:2:1:",
            "`=`",
        ),
        (
            "[profile.t2.env]\n\"\" = \"1\"\n",
            "capped.toml:2:1:",
            "empty",
        ),
        (
            "[profile.t2.env]\nA = \"x\\u0000y\"\n",
            "capped.toml:2:5:",
            "NUL",
        ),
    ] {
        let ws = workspace_with_config(config);
        let output = capped_at(ws.path())
            .arg("t2")
            .arg("--lock-dir")
            .arg(ws.path().join("locks"))
            .output()
            .unwrap();
        assert_rejected(&output, config, &[position, says]);
    }
}

#[test]
fn bad_arguments_after_dashdash_and_a_bad_jobs_count_are_usage_errors() {
    for (args, says) in [
        (&["t2", "--", "--bogus"][..], "not an option of libtest"),
        (&["t2", "--", "--exact", "--exact"], "more than once"),
        (&["t2", "--", "--skip"], "needs a value"),
        (
            &["t2", "--", "--ignored", "--include-ignored"],
            "mutually exclusive",
        ),
        (&["list", "--", "--bogus"], "not an option of libtest"),
        (&["t2", "-j", "abc"], "jobs"),
        (&["t2", "-j", "0"], "jobs"),
    ] {
        let scratch = RunScratch::new();
        let mut command = capped_in("tiny");
        command.args(&args[..1]);
        if args[0] == "t2" {
            scratch.apply(&mut command);
        }
        command.args(&args[1..]);
        let output = command.output().unwrap();
        assert_rejected(&output, &format!("{args:?}"), &[says]);
    }
    // A filter that starts with `-` still goes through after a second `--`.
    let scratch = RunScratch::new();
    let mut command = capped_in("tiny");
    command.args(["t2", "--no-tests", "pass"]);
    scratch.apply(&mut command);
    let output = command.args(["--", "--", "--bogus"]).output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_and_says_so_once() {
    let scratch = RunScratch::new();
    std::fs::write(scratch.path("file"), "").unwrap();
    let junit = scratch.path("file").join("junit.xml");
    let mut command = capped_in("tiny");
    command.arg("t2");
    scratch.apply(&mut command);
    let output = command.arg("--junit").arg(&junit).output().unwrap();
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 passed"),
        "the test itself passed: {stderr}"
    );
    assert_eq!(
        stderr.matches("cannot create").count(),
        1,
        "said once: {stderr}"
    );

    // JSON lines into a full disk.
    let mut command = capped_in("tiny");
    command.arg("t2");
    scratch.apply(&mut command);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command
        .args(["--message-format", "json"])
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 1, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("cannot write the report").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_selection_that_runs_nothing_fails_by_default_as_nextest() {
    let run = |extra: &[&str]| {
        let scratch = RunScratch::new();
        let mut command = capped_in("tiny");
        command.arg("t2");
        scratch.apply(&mut command);
        command.args(extra).output().unwrap()
    };
    let output = run(&["no_such_test"]);
    assert_eq!(exit_code(&output), 4, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no tests to run") && stderr.contains("no_such_test"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--no-tests=warn"),
        "says how to accept: {stderr}"
    );

    let output = run(&["--no-tests", "warn", "no_such_test"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no tests to run"));

    let output = run(&["--no-tests=pass", "no_such_test"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("no tests to run"));

    // A selection that runs something is not affected.
    let output = run(&["passes"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
}

/// A binary whose `--list` prints without end is stopped once it passed any real
/// listing's size: its listing fails with the reason, and the runner's memory stays
/// bounded (it never holds more than that), long before the listing's timeout.
#[test]
fn a_listing_that_prints_without_end_is_stopped_with_the_runner_bounded() {
    let scratch = RunScratch::new();
    let output = capped_json(
        "listing-gate",
        &scratch,
        &["t2", "--test", "waiter"],
        &[("LISTING_FLOOD", "1".as_ref())],
    );
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let text = all_text(&output);
    assert!(text.contains("--list` printed more than"), "{text}");
    let finished = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "run-finished")
        .unwrap_or_else(|| panic!("no run-finished: {}", describe(&output)));
    let peak = finished["runner_peak_rss"].as_u64().unwrap();
    assert!(peak < 512 << 20, "the runner peaked at {peak} bytes");
}
