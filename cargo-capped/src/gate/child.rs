//! Running the gated command: its own process group, forwarded signals, its exit status.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::iterator::Signals;

use super::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, signal_exit};
use crate::host::HostRoot;
use crate::process;

/// The exit status a shell would give for `status`: the code, or 128 + the signal.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => signal_exit(signal),
        (None, None) => 1,
    }
}

/// Spawns `command` with `envs` in a new process group, forwards the signals `signals`
/// receives to that group until it has exited, and returns its exit status (126/127 when
/// it cannot be started).
pub(crate) fn run(
    command: &[OsString],
    envs: &[(String, String)],
    mut signals: Signals,
    quiet: bool,
) -> i32 {
    let say = |message: &str| say!("capped gate: {message}");
    let Some((program, args)) = command.split_first() else {
        return EXIT_NOT_FOUND;
    };
    let mut cmd = Command::new(program);
    cmd.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
    // Its own group, so forwarded signals reach all of it; and if the gate dies (even by
    // SIGKILL), its slot is freed: CMD must not outlive it.
    let mut child = match process::spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            let shown = program.to_string_lossy();
            say(&format!("error: cannot run `{shown}`: {e}"));
            return match e.kind() {
                io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_EXECUTE,
            };
        }
    };
    let pid = child.id();
    // Forward signals until the child has exited; `exited` is set before the child is
    // reaped, so its pid (and group id) cannot have been reused when we signal it.
    let exited = Arc::new(Mutex::new(false));
    let forwarded = Arc::new(AtomicBool::new(false));
    let handle = signals.handle();
    let forward_exited = Arc::clone(&exited);
    let forward_noted = Arc::clone(&forwarded);
    let forwarder = std::thread::Builder::new()
        .name("capped-gate-signals".to_string())
        .spawn(move || {
            for raw in signals.forever() {
                let done = forward_exited.lock().unwrap_or_else(|p| p.into_inner());
                if *done {
                    break;
                }
                process::forward_to_group(pid, raw);
                forward_noted.store(true, Ordering::SeqCst);
            }
        });
    if let Err(e) = &forwarder {
        say(&format!(
            "warning: signals will not be forwarded to CMD: {e}"
        ));
    }
    // Wait for the exit without reaping, so the pid stays ours while the forwarder may
    // still use it. A failure here (it cannot be: CMD is our unreaped child) shows in the
    // `wait` below.
    let _ = process::wait_exited(pid);
    *exited.lock().unwrap_or_else(|p| p.into_inner()) = true;
    // Stopped by a signal: what CMD started and left in its group goes too (it was asked
    // to stop, and would run on ungated). Before the reap, while the group id is ours.
    if forwarded.load(Ordering::SeqCst) {
        end_leftovers(pid, quiet);
    }
    let status = child.wait();
    handle.close();
    if let Ok(thread) = forwarder {
        let _ = thread.join();
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            say(&format!("error: cannot wait for CMD: {e}"));
            return 1;
        }
    };
    if !quiet {
        warn_leftovers(pid);
    }
    exit_code(status)
}

/// How long processes CMD left in its group get between SIGTERM and SIGKILL once the gate
/// was stopped by a signal.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// The processes other than zombies in process group `pgid`.
fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let Ok(table) = HostRoot::system().process_table() else {
        return Vec::new();
    };
    table
        .processes()
        .iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z')
        .map(|p| (p.pid, p.comm.clone()))
        .collect()
}

/// Whether process group `pgid` has no member left (zombies aside) within `grace`.
fn group_ends_within(pgid: u32, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends what is left in CMD's process group `pgid` (CMD itself exited, unreaped): SIGTERM,
/// then SIGKILL after [`LEFTOVER_GRACE`] for whatever ignores it.
fn end_leftovers(pgid: u32, quiet: bool) {
    let left = group_members(pgid);
    if left.is_empty() {
        return;
    }
    let _ = process::signal_group(pgid, process::Signal::TERM);
    let killed = !group_ends_within(pgid, LEFTOVER_GRACE);
    if killed {
        process::kill_group(pgid);
        // Gone before the slot is released (SIGKILL ends a process at once unless it is
        // in uninterruptible sleep, which the grace bounds).
        group_ends_within(pgid, LEFTOVER_GRACE);
    }
    if !quiet {
        say!(
            "capped gate: ended {} process{} CMD left in its process group after the signal ({}){}",
            left.len(),
            if left.len() == 1 { "" } else { "es" },
            left.iter()
                .map(|(pid, comm)| format!("{pid} {comm}"))
                .collect::<Vec<_>>()
                .join(", "),
            if killed {
                format!(": SIGKILL after {}s", LEFTOVER_GRACE.as_secs())
            } else {
                String::new()
            }
        );
    }
}

/// Warns when processes CMD started are still running in its group after it exited: they
/// are no longer covered by the slot.
fn warn_leftovers(pgid: u32) {
    let left: Vec<String> = group_members(pgid)
        .into_iter()
        .map(|(pid, comm)| format!("{pid} ({comm})"))
        .collect();
    if !left.is_empty() {
        say!(
            "capped gate: warning: CMD exited but {} process{} it started still run{} in its process group: {}; the slot is released now, they are no longer gated",
            left.len(),
            if left.len() == 1 { "" } else { "es" },
            if left.len() == 1 { "s" } else { "" },
            left.join(", ")
        );
    }
}
