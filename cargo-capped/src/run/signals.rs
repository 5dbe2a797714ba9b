//! SIGINT/SIGTERM/SIGHUP to the runner: noticed by flags, forwarded to every child group
//! ([`crate::process::forward_to_group`]).
//!
//! Test binaries run in process groups of their own, so a terminal's Ctrl-C reaches only
//! the runner; the runner forwards the signal to every child group, gives them a grace
//! period, SIGKILLs what is left, prints a partial summary and exits 130. A second signal
//! skips the grace period.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
