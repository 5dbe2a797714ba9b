//! File descriptors end to end: a test opening 1500 files passes under `cargo capped t2`
//! started with a soft `RLIMIT_NOFILE` of 512 (the runner raises it for its children), and a
//! test failing with "Too many open files" lowers the width, is rerun once at the lower width,
//! passes, and the run says what happened and exits 0.

mod common;

use std::process::Command;

use common::*;

/// `command` started through `sh` with its soft `RLIMIT_NOFILE` lowered to `soft` first
/// (same program, arguments, environment and directory).
fn with_soft_nofile(command: &Command, soft: u64) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => sh.env(key, value),
            None => sh.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        sh.current_dir(dir);
    }
    sh
}

#[test]
fn a_test_opening_1500_files_passes_under_a_soft_limit_of_512() {
    // Without the runner, the limit of 512 makes the test fail: it needs the raise.
    let binary = fixture_test_binary("host-safety", "nofile");
    let direct = with_soft_nofile(&clean_command(&binary, &fixture("host-safety")), 512)
        .output()
        .unwrap();
    assert_ne!(exit_code(&direct), 0, "{}", describe(&direct));
    assert!(
        all_text(&direct).contains("Too many open files"),
        "{}",
        describe(&direct)
    );

    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args(["t2", "--test", "nofile", "-v"]);
    scratch.apply(&mut command);
    let output = with_soft_nofile(&command, 512).output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("raised the open-files limit (RLIMIT_NOFILE) from 512 to"),
        "{stderr}"
    );
    let seen = records(&scratch.record_file(), "nofile");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (soft, hard): (u64, u64) = (seen[0][1].parse().unwrap(), seen[0][2].parse().unwrap());
    eprintln!("the test saw RLIMIT_NOFILE {soft}/{hard}");
    assert_eq!(soft, hard, "the soft limit was raised to the hard one");
    assert!(soft >= 1500 + 64, "{soft}");
}

#[test]
fn an_emfile_failure_lowers_the_width_and_is_rerun_once() {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command
        .args([
            "t2",
            "--test",
            "emfile",
            "--timeout",
            "120s",
            "--message-format",
            "json",
        ])
        .env("EMFILE_MARKER", scratch.path("emfile-marker"));
    scratch.apply(&mut command);
    let started = std::time::Instant::now();
    let output = command.output().unwrap();
    eprintln!("the run took {:?}", started.elapsed());
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let notice = stderr
        .lines()
        .find(|l| l.contains("Too many open files"))
        .unwrap_or_else(|| panic!("no EMFILE notice: {stderr}"));
    for expected in [
        "opens_files_until_emfile",
        "width lowered from 2 to 1 for the rest of the run",
        "rerunning it once at width 1",
        "ulimit -n",
    ] {
        assert!(notice.contains(expected), "{expected} in {notice}");
    }
    // First at width 2 (its binary's two tests side by side), then alone at width 1.
    let attempts = records(&scratch.record_file(), "attempt");
    let shown: Vec<(String, String)> = attempts
        .iter()
        .map(|a| (a[2].clone(), a[3].clone()))
        .collect();
    assert_eq!(
        shown,
        [("1".to_string(), "2".to_string()), ("2".into(), "1".into())],
        "{attempts:?}"
    );
    // Reported once, as passed; nothing failed.
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == "test-finished" && l["name"] == "opens_files_until_emfile")
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], "passed");
    assert_eq!(
        capped_counts(&output),
        Counts::from([("passed".to_string(), 2)])
    );
}
