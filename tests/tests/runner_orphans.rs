//! Nothing outlives the runner: `cargo capped` SIGKILLed in the middle of a run (no chance to
//! forward anything) leaves no test binary of that run behind, and the next run on the same
//! lock dir completes, because every slot the dead run's processes held was freed by the
//! kernel with them.
//!
//! Test binaries run in process groups of their own, so the runner's death alone would not
//! reach them; the runner spawns each with `PR_SET_PDEATHSIG` = SIGKILL. What that does not
//! cover is a test's own children (here the `sh` grandchild of
//! `ondemand::hangs_when_asked`): they are orphaned, and this test cleans that one up itself.

mod common;

use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const FIXTURE: &str = "mixed";

/// `child`'s exit status, or `None` if it did not exit within `within` (then it is killed).
fn wait_at_most(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

#[test]
fn a_sigkilled_runner_leaves_no_test_binary_and_the_next_run_completes() {
    let scratch = RunScratch::new();
    // On every test binary's command line (a `--skip` no test matches): finds this run's
    // processes among those of concurrent e2e tests that run the same binaries. Profile
    // `whole` is t2 without splitting binaries: a split-off part is run by `--exact` names,
    // without the run's `--skip`, so it would not carry the marker.
    let marker = format!("capped-orphan-marker-{}", std::process::id());
    let stderr = std::fs::File::create(scratch.path("first.stderr")).unwrap();
    let mut command = capped_in(FIXTURE);
    command.args(["run", "--profile", "whole"]);
    scratch
        .apply(&mut command)
        .args(["--", "--skip", &marker])
        .env("FIXTURE_HANG", "1")
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut runner = command.spawn().unwrap();

    // Mid-run: the hanging test and its grandchild run (the build may come first).
    let deadline = Instant::now() + Duration::from_secs(300);
    while records(&scratch.record_file(), "pid").len() < 2 {
        if let Some(status) = runner.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the hanging test started:\n{}",
                std::fs::read_to_string(scratch.path("first.stderr")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the hanging test never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = records(&scratch.record_file(), "pid");
    let pid_of = |name: &str| -> u32 {
        pids.iter()
            .find(|r| r[1] == name)
            .unwrap_or_else(|| panic!("no pid record for {name}: {pids:?}"))[2]
            .parse()
            .unwrap()
    };
    let (test_pid, grandchild) = (
        pid_of("ondemand::hangs_when_asked"),
        pid_of("ondemand::grandchild"),
    );
    let before = processes_mentioning(&marker);
    assert!(
        before.contains(&test_pid),
        "the hanging test binary ({test_pid}) carries the marker: {before:?}"
    );
    eprintln!("test binaries of the run before the kill: {before:?}");

    signal(runner.id(), rustix::process::Signal::KILL);
    let killed_at = Instant::now();
    let status = runner.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );

    // Every test binary of the run goes with the runner.
    let bound = Duration::from_secs(5);
    let mut left = processes_mentioning(&marker);
    while !left.is_empty() && killed_at.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(10));
        left = processes_mentioning(&marker);
    }
    let took = killed_at.elapsed();
    eprintln!("test binaries gone {took:?} after the runner's SIGKILL (bound {bound:?})");
    // The grandchild is the test's own child: not covered, orphaned; clean it up (its group
    // is the dead test binary's).
    signal(grandchild, rustix::process::Signal::KILL);
    if let Some(group) = rustix::process::Pid::from_raw(test_pid as i32) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    assert!(
        left.is_empty(),
        "test binaries of the killed run still running after {took:?}: {left:?}"
    );
    assert!(
        process_gone(test_pid, Duration::from_secs(1)),
        "the hanging test binary ({test_pid}) survived the runner"
    );

    // The next run on the same lock dir is not blocked by anything the dead run held.
    let stderr = std::fs::File::create(scratch.path("second.stderr")).unwrap();
    let mut command = capped_in(FIXTURE);
    command.arg("t2");
    scratch
        .apply(&mut command)
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let mut second = command.spawn().unwrap();
    let status = wait_at_most(&mut second, Duration::from_secs(180));
    eprintln!("the second run took {:?}", started.elapsed());
    let stderr = std::fs::read_to_string(scratch.path("second.stderr")).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the second run hung:\n{stderr}"));
    assert_eq!(status.code(), Some(0), "{status}\n{stderr}");
}
