//! The host-safety seam of the run loop: [`RunHooks`], what the loop asks and tells the host
//! side ([`super::host_safety::HostSafety`] in a real run) at fixed points of a run.
//!
//! The loop calls the hooks only from its own thread, in this order: [`RunHooks::starting`]
//! once before anything is listed or spawned; [`RunHooks::width`] before the first binary
//! and again after each binary ends; [`RunHooks::may_start`] before each start;
//! [`RunHooks::spawned`] right after a spawn; [`RunHooks::watch`] each time the loop looks
//! at a running binary (at least every [`super::runner::TICK`]); [`RunHooks::ended`] once
//! per binary, after it was reaped and before its slots are released; [`RunHooks::notice`]
//! between binaries. Every default does nothing, so a run without hooks runs at the
//! requested width and never kills for memory.

use crate::build::TestBinary;
use crate::events::BinaryId;
use crate::libtest::KillReason;

/// The width to run at from now on, as [`RunHooks::width`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidthDecision {
    /// The width (1 ..= the requested width).
    pub width: u32,
    /// One line for the report when the width changed (which reading and level decided).
    pub notice: Option<String>,
    /// While the width is lowered: the readings and levels that keep it so.
    pub why: Option<String>,
}

/// What a binary's end means for memory, as [`RunHooks::ended`] says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEnd {
    /// The peak RSS of its process tree, when it was sampled.
    pub peak_rss: Option<u64>,
    /// Why it died, when memory is the reason: the runner's own memory kill with its final
    /// peak, a kill the watchdog sent after the runner's last look, or a SIGKILL nobody here
    /// sent while the kernel counted an OOM kill.
    pub killed: Option<KillReason>,
}

/// Host-safety hooks: degrade, memory watchdog, NOFILE and EMFILE adaptation. The defaults
/// do nothing, so a run without host safety (and the runner's tests) pay nothing for it.
pub trait RunHooks {
    /// Once, before the first binary is listed or spawned, for a run of `width`: lines to
    /// show (a raised open-files limit, a warning that it is low).
    fn starting(&mut self, _width: u32) -> Vec<String> {
        Vec::new()
    }
    /// Before the run and after each binary ends: the width to run at from now on, at most
    /// `requested` (auto-degrade on a busy host).
    fn width(&mut self, requested: u32) -> WidthDecision {
        WidthDecision {
            width: requested,
            notice: None,
            why: None,
        }
    }
    /// Whether `binary` may start now (a gate on host load or memory); `false` retries
    /// on the next tick.
    fn may_start(&mut self, _binary: &TestBinary) -> bool {
        true
    }
    /// Right after `binary` was spawned as `pid` (its own process group).
    fn spawned(&mut self, _binary: &BinaryId, _pid: u32) {}
    /// Called every tick for each running binary (`pid` is also its process group id).
    /// Returning a reason kills the binary's process group (SIGTERM, grace, SIGKILL).
    fn watch(&mut self, _binary: &BinaryId, _pid: u32) -> Option<KillReason> {
        None
    }
    /// After the binary was reaped: `signal` ended it (if one did), `killed` is why the
    /// runner killed it (if it did). Returns its peak RSS and the memory verdict.
    fn ended(
        &mut self,
        _binary: &BinaryId,
        _pid: u32,
        _signal: Option<i32>,
        _killed: Option<&KillReason>,
    ) -> MemoryEnd {
        MemoryEnd::default()
    }
    /// Called between binaries, with a line to show, if any.
    fn notice(&mut self) -> Option<String> {
        None
    }
}
