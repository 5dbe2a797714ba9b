//! Process hygiene end to end: a helper a test starts in a session of its own (`setsid`),
//! out of reach of the SIGKILL to the test's process group, still ends with its test,
//! whether a `--timeout` ended the test or it passed.

mod common;

use common::*;

/// Whether `pid` is a live process still running the helper's `sleep` (a pid reused by
/// something else, or a zombie, is not).
fn helper_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((comm, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    comm.ends_with("(sleep") && !rest.trim_start().starts_with(['Z', 'X'])
}

#[test]
fn a_setsid_grandchild_ends_with_its_test_after_a_timeout_and_a_pass() {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args([
        "t2",
        "--test",
        "orphan_hang",
        "--test",
        "orphan_pass",
        "--timeout",
        "5s",
    ]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    let text = std::fs::read_to_string(scratch.record_file()).unwrap_or_default();
    let pids: Vec<(String, u32)> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 3 && f[0] == "orphan").then(|| (f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect();
    // Whatever the verdict, no helper may outlive this test.
    let survivors: Vec<(String, u32)> = pids
        .iter()
        .filter(|(_, pid)| helper_alive(*pid))
        .cloned()
        .collect();
    for (_, pid) in &survivors {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out after 5s"), "{stderr}");
    let mut names: Vec<&str> = pids.iter().map(|(name, _)| name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["hang", "pass"], "both helpers started: {text}");
    assert!(
        survivors.is_empty(),
        "helpers that left their test's process group outlived it: {survivors:?}"
    );
}
