//! `cargo capped`'s front door end to end: bad usage and bad config exit 2 with a clear
//! message, a failed build exits 101 with the compiler's error, `list` names the tests.

mod common;

use common::*;

#[test]
fn bad_config_is_reported_with_its_line_and_exit_2() {
    let scratch = RunScratch::new();
    let mut command = capped_in("badconfig");
    command.arg("t2");
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(".config/capped.toml:3:1:"),
        "file:line:col named: {stderr}"
    );
    assert!(stderr.contains("rayon-thread"), "{stderr}");
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let scratch = RunScratch::new();
    let mut command = capped_in("mixed");
    command.args(["run", "--profile", "nope"]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown profile `nope`"), "{stderr}");
    assert!(stderr.contains("t1, t2"), "{stderr}");
}

#[test]
fn bad_usage_exits_2_with_a_hint() {
    for (args, expected) in [
        (&["t2", "--test-threads", "0"][..], "test-threads"),
        (&["t2", "--profile", "release"][..], "--cargo-profile"),
        (&["t2", "--", "--test-threads", "4"][..], "before `--`"),
        (&["t2", "--doc", "--lib"][..], "--doc selects"),
        (
            &["t2", "--doc", "--no-run"][..],
            "--no-run cannot be combined with --doc",
        ),
        (&["t2", "--timeout", "soon"][..], "timeout"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let output = capped_in("mixed").args(args).output().unwrap();
        assert_eq!(exit_code(&output), 2, "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Run directly (not through cargo), `--help` works and exits 0.
    let output = clean_command(cargo_capped(), &fixture("mixed"))
        .args(["t2", "--help"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--cargo-profile"));
}

#[test]
fn a_failed_build_exits_101_showing_the_compiler_error() {
    let scratch = RunScratch::new();
    let mut command = capped_in("broken");
    command.arg("t2");
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 101, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[E0308]"), "{stderr}");
    assert!(stderr.contains("src/lib.rs"), "{stderr}");
}

#[test]
fn list_names_every_test_with_its_binary_and_groups() {
    let output = capped_in("mixed")
        .args(["list", "--message-format", "json"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 21, "{lines:#?}");
    let crossval = lines
        .iter()
        .find(|l| l["name"] == "xa_1")
        .expect("crossval_a's test");
    assert_eq!(crossval["binary_groups"], serde_json::json!(["crossval"]));
    let ignored = lines
        .iter()
        .find(|l| l["name"] == "tests::ignored_one")
        .expect("the ignored test");
    assert_eq!(ignored["ignored"], true);
}

/// A Ctrl-C while `cargo metadata` runs reaches it too (it shares the runner's process
/// group, as under a terminal): the run was interrupted (130), not misused (2).
#[test]
fn ctrl_c_while_cargo_metadata_runs_exits_130() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let scratch = RunScratch::new();
    // A cargo whose `metadata` is the moment of the Ctrl-C: SIGINT to its process group.
    let fake = scratch.path("cargo");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in metadata) kill -INT 0; exit 1;; esac\nexec \"$REAL_CARGO\" \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = capped_in("tiny");
    command.arg("t2");
    scratch.apply(&mut command);
    let output = command
        .env("CARGO", &fake)
        .env("REAL_CARGO", cargo_path())
        // The terminal's process group, so the SIGINT reaches no one else.
        .process_group(0)
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 130, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
}

/// A reader that went away (`list | head`) is no reason to panic: a listing ends as it
/// would have, and prints no panic. (A closed stderr during a run is not tested here:
/// cargo, which shares the runner's stderr, may fail on it first with its own code.)
#[test]
fn a_closed_stderr_or_stdout_is_no_panic() {
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        std::process::Stdio::from(writer)
    };
    let built = capped_in("tiny").args(["t2", "--no-run"]).output().unwrap();
    assert_eq!(exit_code(&built), 0, "{}", describe(&built));
    let output = capped_in("tiny")
        .arg("list")
        .stdout(closed())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(exit_code(&output), 0, "a closed stdout: {stderr}");
}
