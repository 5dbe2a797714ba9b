//! SIGINT/SIGTERM/SIGHUP to the runner: noticed by flags, forwarded to every child group.
//!
//! Test binaries run in process groups of their own, so a terminal's Ctrl-C reaches only
//! the runner; the runner forwards the signal to every child group, gives them a grace
//! period, SIGKILLs what is left, prints a partial summary and exits 130. A second signal
//! skips the grace period.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::process::{Pid, Signal, kill_process_group};

/// Set once any of the signals arrived.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The last signal that arrived and has not been taken yet (0: none).
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Installs the handlers (idempotent).
pub fn install() -> std::io::Result<()> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        for signal in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            let registered = signal_hook::flag::register(signal, &INTERRUPTED)
                .and_then(|_| signal_hook::flag::register_usize(signal, &PENDING, signal as usize));
            if let Err(e) = registered {
                result = Err(e);
                return;
            }
        }
    });
    result
}

/// The signal that arrived since the last call, if any.
pub fn take_pending() -> Option<i32> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        signal => Some(signal as i32),
    }
}

/// Sends `signal` (a raw number) to process group `pgid`; a group that is gone is fine.
pub fn forward_to_group(pgid: u32, signal: i32) {
    let signal = match signal {
        signal_hook::consts::SIGINT => Signal::INT,
        signal_hook::consts::SIGHUP => Signal::HUP,
        signal_hook::consts::SIGKILL => Signal::KILL,
        _ => Signal::TERM,
    };
    send_to_group(pgid, signal);
}

/// Sends `signal` to process group `pgid`, ignoring a group that is already gone.
pub fn send_to_group(pgid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid as i32) {
        let _ = kill_process_group(pid, signal);
    }
}
