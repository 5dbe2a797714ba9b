//! Signalling a child's process group (or, for the watchdog, one process).

use std::io;

use rustix::process::{Pid, Signal};

/// Sends `signal` to every process of group `pgid`. Returns `Ok(false)` when the group no
/// longer exists (`ESRCH`). Refuses `pgid` 0 and 1 (our own group, and init's), which are
/// never a child's group.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<bool> {
    let pid = checked_pid(pgid, "process group")?;
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// SIGKILLs group `pgid` now. A group that is gone already is fine, and there is nothing
/// useful to do when the kill fails, so errors are dropped.
pub fn kill_group(pgid: u32) {
    let _ = signal_group(pgid, Signal::KILL);
}

/// Forwards `signal`, a raw number cargo capped itself received (SIGINT, SIGTERM, SIGHUP),
/// to group `pgid`, ignoring a group that is gone. A number without a name here becomes
/// SIGTERM: the point of forwarding is to ask the group to stop.
pub fn forward_to_group(pgid: u32, signal: i32) {
    let signal = Signal::from_named_raw(signal).unwrap_or(Signal::TERM);
    let _ = signal_group(pgid, signal);
}

/// SIGKILLs the single process `pid` (a member of a tree that left its group), never
/// init or cargo capped itself; a process that is gone already is fine.
pub fn kill_one(pid: u32) {
    if pid == std::process::id() {
        return;
    }
    if let Ok(pid) = checked_pid(pid, "process") {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

/// `id` as a pid to signal, refusing 0, 1 and what does not fit.
fn checked_pid(id: u32, what: &str) -> io::Result<Pid> {
    i32::try_from(id)
        .ok()
        .filter(|&p| p > 1)
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to signal {what} {id}"),
            )
        })
}
