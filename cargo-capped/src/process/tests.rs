use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// `sh -c script`, spawned through [`spawn`] with its stdout piped.
fn sh(script: &str) -> (std::process::Child, BufReader<ChildStdout>) {
    let mut command = Command::new("sh");
    command
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = spawn(&mut command).expect("spawn sh");
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    (child, stdout)
}

fn read_line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the child's stdout");
    line.trim().to_string()
}

/// Reads to the end: returns once every process holding the pipe (the child and the
/// grandchildren that inherited it) has let go of it, which a `sleep` does only as it
/// exits. This is the proof that a grandchild died: its `/proc` state lags behind (it
/// closes its files before it becomes a zombie), so reading that would need polling.
fn read_to_end(mut stdout: BufReader<ChildStdout>) -> String {
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read to the end");
    rest
}

/// The state letter of `pid` in `/proc`, `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn the_child_leads_its_own_group() {
    let (mut child, stdout) = sh("exit 0");
    let pid = child.id();
    let pgid = rustix::process::getpgid(rustix::process::Pid::from_raw(pid as i32))
        .map(|p| p.as_raw_nonzero().get() as u32);
    // Read before it is reaped: the zombie still has its group.
    wait_exited(pid).unwrap();
    assert_eq!(pgid.ok(), Some(pid));
    assert_ne!(
        pid,
        rustix::process::getpgrp().as_raw_nonzero().get() as u32
    );
    drop(stdout);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
    let (mut child, mut stdout) =
        sh("trap 'echo term' TERM; echo ready; while :; do sleep 1; done");
    let pid = child.id();
    assert_eq!(read_line(&mut stdout), "ready");
    let grace = Duration::from_secs(2);
    let mut termination = Termination::new(pid, grace);
    assert_eq!(termination.next_due(), None, "nothing sent yet");
    let now = Instant::now();
    termination.terminate(now);
    // The shell's trap ran and it went on: SIGTERM alone does not stop it.
    assert_eq!(read_line(&mut stdout), "term");
    assert!(!has_exited(pid));
    assert_eq!(termination.next_due(), Some(now + grace));
    // Before the grace is over, nothing more is sent.
    termination.kill_after_grace(now + grace - Duration::from_millis(1));
    assert_eq!(termination.next_due(), Some(now + grace));
    termination.kill_after_grace(now + grace);
    assert_eq!(termination.next_due(), None, "nothing more to send");
    wait_exited(pid).unwrap();
    assert!(has_exited(pid));
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn a_grandchild_in_the_group_dies_with_it() {
    let (mut child, mut stdout) = sh("sleep 30 & echo $!; wait");
    let pid = child.id();
    let grandchild: u32 = read_line(&mut stdout).parse().expect("the sleep's pid");
    assert_ne!(grandchild, pid);
    kill_group(pid);
    // The sleep holds the pipe too: the end of it means it is gone.
    assert_eq!(read_to_end(stdout), "", "grandchild {grandchild} wrote");
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn waiting_without_reaping_keeps_the_group_safe_to_kill() {
    // The child exits at once, leaving a grandchild in its group.
    let (mut child, mut stdout) = sh("sleep 30 & echo $!; exit 3");
    let pid = child.id();
    let grandchild: u32 = read_line(&mut stdout).parse().expect("the sleep's pid");
    wait_exited(pid).unwrap();
    assert!(has_exited(pid));
    // Not reaped: a zombie still holds the pid, so the group id is still the child's.
    assert_eq!(state(pid), Some('Z'));
    wait_exited(pid).expect("waiting again still sees the unreaped exit");
    assert!(
        signal_group(pid, Signal::KILL).unwrap(),
        "the group is there"
    );
    assert_eq!(read_to_end(stdout), "", "grandchild {grandchild} wrote");
    assert_eq!(child.wait().unwrap().code(), Some(3));
    // Reaped, the pid is no longer ours to wait for.
    assert!(has_exited(pid));
    assert!(wait_exited(pid).is_err());
}

#[test]
fn forwarding_sends_the_signal_received() {
    let (mut child, mut stdout) = sh("trap 'exit 7' INT; echo ready; while :; do sleep 1; done");
    let pid = child.id();
    assert_eq!(read_line(&mut stdout), "ready");
    let mut termination = Termination::new(pid, Duration::from_secs(60));
    let now = Instant::now();
    termination.forward(signal_hook::consts::SIGINT, now);
    assert_eq!(termination.next_due(), Some(now + Duration::from_secs(60)));
    assert_eq!(child.wait().unwrap().code(), Some(7), "SIGINT, not SIGTERM");
}

#[test]
fn a_child_of_a_dead_thread_is_killed() {
    // The thread that spawns the child ends at once: PDEATHSIG kills the child.
    let (mut child, stdout) = std::thread::spawn(|| sh("sleep 30")).join().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    drop(stdout);
}

#[test]
fn refuses_dangerous_groups() {
    for pgid in [0, 1, u32::MAX] {
        let err = signal_group(pgid, Signal::TERM).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(&pgid.to_string()), "{err}");
    }
}
