//! A test binary's process, from spawn to reap: started through [`crate::process`] (a
//! process group of its own, bound to the runner's life), its output read by threads, its
//! exit observed without reaping it, killed as a group (SIGTERM, [`GRACE`], SIGKILL), and
//! reaped.
//!
//! ## Invariants
//!
//! * **Its own process group, and nothing outlives the runner**: see [`crate::process`].
//!   Test binaries are spawned from the run loop's thread (the main thread, which lives as
//!   long as the runner), so `PR_SET_PDEATHSIG` fires only when the runner dies.
//! * **No pid reuse.** The exit is observed without reaping the child, so its pid (the group
//!   id) cannot be reused while the runner SIGKILLs whatever the child left in its group.
//!   Only then is it reaped ([`ChildProcess::reap_if_exited`]). So no zombie and no orphan
//!   in the group survive a binary.
//! * **Every exit wakes the loop.** Three threads per child send [`Wake`]s on the loop's
//!   one channel: a reader per output stream (chunks, then `Closed`) and an exit waiter
//!   (blocked in [`crate::process::wait_exited`], then `Exited`). The loop thus learns of an
//!   exit at once, not at its next periodic look.

use std::ffi::OsString;
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use capped_model::protocol::env::EVENTS;

use crate::process::{self, Termination, orphans};

/// Between SIGTERM (timeout, Ctrl-C, watchdog) and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a child's pipes to close after it exited (a grandchild may hold
/// them open).
pub const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What a child's threads tell the run loop; `unit` is the loop's index of the binary.
pub enum Wake {
    /// A chunk of the child's stdout or stderr, as read at `at`.
    Output {
        unit: usize,
        stderr: bool,
        bytes: Vec<u8>,
        at: Instant,
    },
    /// One of its two output streams reached its end.
    Closed { unit: usize },
    /// It exited (it is a zombie until the loop reaps it).
    Exited { unit: usize },
    /// A binary's listing ended (not a child's thread: a listing worker's); the listing
    /// waits in the run's intake ([`super::intake`]).
    Listed,
}

/// A running (or exited, not yet finished) test binary.
pub struct ChildProcess {
    child: Child,
    pid: u32,
    /// SIGTERM (timeout, Ctrl-C, watchdog), then SIGKILL after [`GRACE`].
    termination: Termination,
    /// Output streams not yet at their end (of 2).
    open_streams: u8,
    status: Option<ExitStatus>,
    /// When the loop saw it exit (and reaped it).
    exited_at: Option<Instant>,
    /// Its unit's mark in its environment (its events file), which its descendants
    /// inherit: what ties an orphan that left its group to it ([`orphans`]).
    unit_marker: Option<OsString>,
}

impl ChildProcess {
    /// Spawns `command` as the loop's binary `unit`: stdin null, stdout and stderr piped
    /// and read by threads of their own, in a new process group, killed if the runner dies
    /// ([`process::spawn`]: call this from the loop's thread), its exit reported on `wake`.
    pub fn spawn(mut command: Command, unit: usize, wake: &SyncSender<Wake>) -> io::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let unit_marker = command
            .get_envs()
            .find(|(key, _)| *key == EVENTS)
            .and_then(|(_, value)| value.map(OsString::from));
        let mut child = process::spawn(&mut command)?;
        let pid = child.id();
        if let Some(marker) = &unit_marker {
            orphans::unit_started(marker);
        }
        for (stream, stderr) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                false,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                true,
            ),
        ] {
            if let Some(stream) = stream {
                let sender = wake.clone();
                std::thread::spawn(move || read_stream(stream, unit, stderr, sender));
            }
        }
        let sender = wake.clone();
        // Without the waiter (no thread to be had), the loop's periodic look still sees the
        // exit.
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || wait_for_exit(pid, unit, sender));
        Ok(ChildProcess {
            child,
            pid,
            termination: Termination::new(pid, GRACE),
            open_streams: 2,
            status: None,
            exited_at: None,
            unit_marker,
        })
    }

    /// Its pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it exited (after [`ChildProcess::reap_if_exited`]; `None` if waiting failed).
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether it exited and was reaped.
    pub fn has_exited(&self) -> bool {
        self.exited_at.is_some()
    }

    /// One of its output streams reached its end.
    pub fn stream_closed(&mut self) {
        self.open_streams = self.open_streams.saturating_sub(1);
    }

    /// Sends SIGTERM to its group; SIGKILL follows after [`GRACE`]
    /// ([`ChildProcess::kill_after_grace`]).
    pub fn terminate(&mut self, now: Instant) {
        self.termination.terminate(now);
    }

    /// Forwards the runner's `signal` (SIGINT, SIGTERM, SIGHUP) to its group, which counts
    /// as the SIGTERM of [`ChildProcess::terminate`] unless one was sent already.
    pub fn forward(&mut self, signal: i32, now: Instant) {
        self.termination.forward(signal, now);
    }

    /// SIGKILLs its group now.
    pub fn kill(&mut self) {
        self.termination.kill();
    }

    /// SIGKILLs its group once [`GRACE`] has passed since SIGTERM.
    pub fn kill_after_grace(&mut self, now: Instant) {
        self.termination.kill_after_grace(now);
    }

    /// If it exited: SIGKILLs whatever it left in its group (its pid still held, so the
    /// group id is still its own), reaps it, ends the descendants that left its group and
    /// were re-parented to the runner ([`orphans::sweep`]) and returns `true`. Once
    /// reaped, only returns `true`.
    pub fn reap_if_exited(&mut self, now: Instant) -> bool {
        if self.exited_at.is_some() {
            return true;
        }
        if !process::has_exited(self.pid) {
            return false;
        }
        process::kill_group(self.pid);
        self.status = self.child.wait().ok();
        orphans::reaped(self.pid);
        if let Some(marker) = &self.unit_marker {
            orphans::unit_ended(marker);
            orphans::sweep(EVENTS);
        }
        self.exited_at = Some(now);
        true
    }

    /// Whether it is done: exited, and its output read to the end (or [`PIPE_GRACE`]
    /// passed: something it started holds its pipes open).
    pub fn is_done(&self, now: Instant) -> bool {
        self.exited_at.is_some_and(|exited| {
            self.open_streams == 0 || now.duration_since(exited) >= PIPE_GRACE
        })
    }

    /// The next instant something is due without any wake-up: SIGKILL after the grace,
    /// or giving up on its pipes.
    pub fn next_due(&self) -> Option<Instant> {
        match self.exited_at {
            Some(exited) => (self.open_streams > 0).then_some(exited + PIPE_GRACE),
            None => self.termination.next_due(),
        }
    }
}

/// Blocks until child `pid` exits (without reaping it), then wakes the loop. When the loop
/// reaped it first (it looked on its own), the wait fails with `ECHILD`: the wake is then
/// a harmless extra.
fn wait_for_exit(pid: u32, unit: usize, wake: SyncSender<Wake>) {
    let _ = process::wait_exited(pid);
    let _ = wake.send(Wake::Exited { unit });
}

/// Sends what `stream` yields, chunk by chunk, then `Closed`.
fn read_stream(
    mut stream: Box<dyn Read + Send>,
    unit: usize,
    stderr: bool,
    wake: SyncSender<Wake>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = Wake::Output {
                    unit,
                    stderr,
                    bytes: buffer[..n].to_vec(),
                    at: Instant::now(),
                };
                if wake.send(chunk).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = wake.send(Wake::Closed { unit });
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    /// Waits for wakes until `done` says so (or 10 s pass).
    fn wait_for(
        receiver: &mpsc::Receiver<Wake>,
        child: &mut ChildProcess,
        mut done: impl FnMut(&mut ChildProcess, &Wake) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(wake) = receiver.recv_timeout(Duration::from_millis(100)) {
                if let Wake::Closed { .. } = wake {
                    child.stream_closed();
                }
                if done(child, &wake) {
                    return;
                }
            }
        }
        panic!("timed out");
    }

    #[test]
    fn output_then_exit_wake_the_loop_and_the_child_is_reaped() {
        let (sender, receiver) = mpsc::sync_channel(64);
        let mut child = ChildProcess::spawn(sh("echo out; echo err >&2; exit 3"), 7, &sender)
            .expect("spawn sh");
        let mut out = Vec::new();
        let mut exited = false;
        wait_for(&receiver, &mut child, |child, wake| {
            match wake {
                Wake::Output { unit, bytes, .. } => {
                    assert_eq!(*unit, 7);
                    out.extend_from_slice(bytes);
                }
                Wake::Exited { unit } => {
                    assert_eq!(*unit, 7);
                    exited = true;
                }
                Wake::Closed { .. } => {}
                Wake::Listed => panic!("no listing runs here"),
            }
            exited && child.reap_if_exited(Instant::now()) && child.is_done(Instant::now())
        });
        assert_eq!(child.status().and_then(|s| s.code()), Some(3));
        let mut out = String::from_utf8(out).unwrap();
        out.retain(|c| c != '\n');
        assert!(out == "outerr" || out == "errout", "{out}");
        assert_eq!(child.next_due(), None);
    }

    #[test]
    fn terminate_then_kill_after_grace_ends_the_whole_group() {
        let (sender, receiver) = mpsc::sync_channel(64);
        // A shell that ignores SIGTERM, with a grandchild in its group.
        let mut child = ChildProcess::spawn(
            sh("trap '' TERM; sleep 30 & echo $!; while :; do sleep 1; done"),
            0,
            &sender,
        )
        .expect("spawn sh");
        let grandchild: u32 = match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(Wake::Output { bytes, .. }) => {
                String::from_utf8_lossy(&bytes).trim().parse().unwrap()
            }
            _ => panic!("no pid from the shell"),
        };
        let now = Instant::now();
        child.terminate(now);
        assert_eq!(child.next_due(), Some(now + GRACE));
        child.kill_after_grace(now);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!child.reap_if_exited(Instant::now()), "SIGTERM is ignored");
        child.kill_after_grace(now + GRACE);
        assert_eq!(child.next_due(), None, "nothing more to send");
        wait_for(&receiver, &mut child, |child, wake| {
            matches!(wake, Wake::Exited { .. }) && child.reap_if_exited(Instant::now())
        });
        assert!(child.has_exited());
        // The grandchild went with the group (it may linger as a zombie of init).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()));
            match state {
                None => break,
                Some(s) if s.starts_with('Z') || s.starts_with('X') => break,
                Some(_) if Instant::now() > deadline => panic!("grandchild {grandchild} alive"),
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn a_child_of_a_dead_thread_is_killed() {
        // The thread that spawns the child dies at once: PDEATHSIG kills the child.
        let (sender, receiver) = mpsc::sync_channel(64);
        let child = std::thread::spawn(move || {
            ChildProcess::spawn(sh("sleep 30"), 0, &sender).expect("spawn sh")
        })
        .join()
        .unwrap();
        let mut child = child;
        wait_for(&receiver, &mut child, |child, wake| {
            matches!(wake, Wake::Exited { .. }) && child.reap_if_exited(Instant::now())
        });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.status().and_then(|s| s.signal()), Some(9));
    }
}
