//! Stopping a child's group with grace: SIGTERM, a grace period, SIGKILL.

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::signal::{forward_to_group, kill_group, signal_group};

/// The termination of one child's process group, as a deadline the caller's loop polls: it
/// never sleeps, so one child's grace never holds up a loop that watches many.
#[derive(Debug)]
pub struct Termination {
    pgid: u32,
    grace: Duration,
    /// When SIGTERM (or a forwarded signal standing for it) was sent.
    term_sent: Option<Instant>,
    kill_sent: bool,
}

impl Termination {
    /// Nothing sent yet to group `pgid`; SIGKILL will follow a SIGTERM after `grace`.
    pub fn new(pgid: u32, grace: Duration) -> Self {
        Termination {
            pgid,
            grace,
            term_sent: None,
            kill_sent: false,
        }
    }

    /// Sends SIGTERM to the group; SIGKILL follows after the grace
    /// ([`Termination::kill_after_grace`]).
    pub fn terminate(&mut self, now: Instant) {
        let _ = signal_group(self.pgid, Signal::TERM);
        self.term_sent = Some(now);
    }

    /// Forwards `signal` (a raw number, see [`forward_to_group`]) to the group, which
    /// counts as the SIGTERM of [`Termination::terminate`] unless one was sent already.
    pub fn forward(&mut self, signal: i32, now: Instant) {
        forward_to_group(self.pgid, signal);
        self.term_sent.get_or_insert(now);
    }

    /// SIGKILLs the group now.
    pub fn kill(&mut self) {
        kill_group(self.pgid);
        self.kill_sent = true;
    }

    /// SIGKILLs the group once the grace has passed since SIGTERM (not before, and only
    /// once).
    pub fn kill_after_grace(&mut self, now: Instant) {
        if !self.kill_sent
            && self
                .term_sent
                .is_some_and(|sent| now.duration_since(sent) >= self.grace)
        {
            self.kill();
        }
    }

    /// When SIGKILL is due: after a SIGTERM, until it has been sent.
    pub fn next_due(&self) -> Option<Instant> {
        self.term_sent
            .filter(|_| !self.kill_sent)
            .map(|sent| sent + self.grace)
    }
}
