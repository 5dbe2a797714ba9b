//! Child processes of cargo capped, from spawn to reap: the one place that starts a child,
//! waits for it, signals it and kills it. The runner's test binaries ([`crate::run`]), its
//! listing runs, the `cargo test --no-run` build ([`crate::build`]), the gate's CMD
//! ([`crate::gate`]) and the memory watchdog's kills ([`crate::watchdog`]) all go through
//! here, so they share one set of guarantees:
//!
//! * **Its own process group** ([`spawn`]). The child's pid is its process group id, so one
//!   signal ([`signal_group`], [`kill_group`]) reaches everything it started that stayed in
//!   the group — a test's helper processes, cargo's rustc jobs — and a terminal's Ctrl-C
//!   reaches only cargo capped, which forwards it on its own terms ([`forward_to_group`])
//!   and can then follow up with SIGKILL. Signalling one pid would leave the child's own
//!   children running, holding slots, ports and files after the child is gone.
//! * **Nothing outlives its parent** ([`spawn`]). `PR_SET_PDEATHSIG` = SIGKILL makes the
//!   kernel kill the child when cargo capped dies, however it dies: a SIGKILLed runner
//!   cannot forward anything, and a SIGKILLed gate must not leave its CMD running unguarded
//!   once its slot is free. The signal fires when the *thread* that forked the child exits,
//!   not the process, so every caller spawns from a thread that outlives the child (the
//!   main thread, or a worker that waits for its child before it moves on). Not covered:
//!   **grandchildren**, which get the signal only if the child arranges it; they are
//!   orphaned when cargo capped dies by SIGKILL (in every other ending, the SIGKILL to the
//!   group ends those still in it, and the runner, a child subreaper, ends those that left
//!   the group once their unit ended: see [`orphans`]).
//! * **No pid reuse** ([`wait_exited`], [`has_exited`]). A child's exit is observed with
//!   `waitid(WEXITED | WNOWAIT)`, which leaves it a zombie. A zombie's pid, and so its
//!   process group id, cannot be reused, so cargo capped can still signal the group safely
//!   — forward a late Ctrl-C, SIGKILL what the child left behind — and only then reaps it
//!   (`Child::wait`). Reaping first would let the kernel hand the pid to an unrelated
//!   process, and a signal meant for the child's group would reach a stranger's.
//! * **Termination with grace** ([`Termination`]). SIGTERM to the group lets a test flush
//!   its output and clean up; SIGKILL follows after a grace period, for what ignores
//!   SIGTERM. The grace is a deadline the caller's control loop polls
//!   ([`Termination::next_due`], [`Termination::kill_after_grace`]), never a sleep, so a
//!   loop watching many children is never blocked by one of them.

pub mod orphans;
mod signal;
mod spawn;
mod terminate;
mod wait;

pub use rustix::process::Signal;
pub use signal::{forward_to_group, kill_group, kill_one, signal_group};
pub use spawn::spawn;
pub use terminate::Termination;
pub use wait::{has_exited, wait_exited};

#[cfg(test)]
mod tests;
