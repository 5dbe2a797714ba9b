//! One unit of the run and its life: a test binary run whole (as `cargo test` runs it), or
//! the tests of one that the runner selected by name (a `--partition` chunk, an EMFILE
//! rerun). A unit goes `Pending` → `Running` → `Done`, or `Pending` → `Done` without running
//! (a listing error, every test ignored, resources that cannot be had, a stopped run).
//!
//! ## Invariants
//!
//! * A `Running` unit owns its process ([`ChildProcess`]) and the [`Guard`] of the width
//!   and group slots the runner took for it: the guard is dropped only once the unit is
//!   `Done`, which is after its process was reaped and its group SIGKILLed, so no slot is
//!   released while anything of the binary still runs.
//! * Results are reported once: a result held back as a possible EMFILE rerun
//!   ([`Unit::deferred`]) is either reported when the unit is done or replaced by the
//!   rerun's.

use std::path::PathBuf;
use std::time::Instant;

use capped_model::Guard;

use super::binary_schedule;
use super::child::ChildProcess;
use super::events_tail::EventsTail;
use super::verdicts::Verdicts;
use crate::build::TestBinary;
use crate::events::TestResult;
use crate::libtest::{KillReason, Listing};

/// One run of a test binary: the whole binary, or the tests the runner selected by name.
pub(super) struct Unit {
    pub(super) binary: TestBinary,
    pub(super) listing: Listing,
    pub(super) list_error: Option<String>,
    /// Groups that claim the whole binary (`binaries = [..]` in the config).
    pub(super) claimed: Vec<String>,
    pub(super) events_path: PathBuf,
    /// Tests that will execute (not skipped as ignored).
    pub(super) runnable: usize,
    /// When it was first found unable to start because a group was busy.
    pub(super) first_blocked: Option<Instant>,
    pub(super) state: State,
    /// The tests to run by exact name, instead of the run's filter and arguments.
    pub(super) selection: Option<Vec<String>>,
    /// How many times its tests were run again after a `#[capped]` test's timeout ended
    /// their process.
    pub(super) restarts: u8,
    /// An EMFILE rerun: its results are final.
    pub(super) rerun: bool,
    /// A `--retries` attempt: it goes first in the order.
    pub(super) retry: bool,
    /// How many times its tests were split from their binary's (see [`super::split`]).
    pub(super) splits: u8,
    /// Failed tests whose output says "Too many open files", held back until the binary is
    /// done (they may be rerun, and then only the second result counts).
    pub(super) deferred: Vec<TestResult>,
}

impl Unit {
    pub(super) fn new(
        binary: TestBinary,
        listing: Listing,
        list_error: Option<String>,
        claimed: Vec<String>,
        events_path: PathBuf,
        selection: Option<Vec<String>>,
        test_args: &[String],
    ) -> Unit {
        let runnable = binary_schedule::runnable(&listing.tests, test_args).len();
        Unit {
            binary,
            listing,
            list_error,
            claimed,
            events_path,
            runnable,
            first_blocked: None,
            state: State::Pending,
            selection,
            restarts: 0,
            rerun: false,
            retry: false,
            splits: 0,
            deferred: Vec::new(),
        }
    }

    pub(super) fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending)
    }

    pub(super) fn running(&self) -> Option<&RunningBinary> {
        match &self.state {
            State::Running(running) => Some(running),
            _ => None,
        }
    }

    pub(super) fn running_mut(&mut self) -> Option<&mut RunningBinary> {
        match &mut self.state {
            State::Running(running) => Some(running),
            _ => None,
        }
    }
}

pub(super) enum State {
    Pending,
    Running(Box<RunningBinary>),
    Done,
}

/// A binary's running process and what is known of it.
pub(super) struct RunningBinary {
    pub(super) process: ChildProcess,
    /// Width and group slots the runner holds for it; released when it is finished.
    pub(super) guard: Guard,
    /// Width slots the runner holds for it (0 for a harness binary, whose tests take their
    /// own).
    pub(super) width_held: u32,
    pub(super) started: Instant,
    pub(super) started_us: u64,
    /// When `--timeout` kills it.
    pub(super) deadline: Option<Instant>,
    /// The run's width when it started.
    pub(super) run_width: u32,
    /// Why the runner killed it (timeout, Ctrl-C, watchdog), if it did.
    pub(super) killed: Option<KillReason>,
    /// Its tests' verdicts and output.
    pub(super) verdicts: Verdicts,
    pub(super) tail: EventsTail,
}

impl RunningBinary {
    /// The next instant the loop must look at it even if nothing wakes the loop: its
    /// timeout, SIGKILL after the grace, giving up on its pipes.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let timeout = self
            .deadline
            .filter(|_| self.killed.is_none() && !self.process.has_exited());
        match (timeout, self.process.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
