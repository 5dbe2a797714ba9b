//! Descendants that left their test's process group: the runner is a child subreaper, so
//! they are re-parented to it when their parent dies, and it ends them with their unit.
//!
//! A test may start a helper that calls `setsid` (or `setpgid`): the SIGKILL to the test's
//! group no longer reaches it, and once its parent is gone it would be re-parented to init
//! and run on, holding ports, files and memory after the run. With
//! `PR_SET_CHILD_SUBREAPER` ([`become_subreaper`]) such a process is re-parented to the
//! runner instead, where [`sweep`] finds it: a child of the runner that the runner did not
//! spawn ([`spawn`](super::spawn) records every child it starts).
//!
//! Which unit an orphan belongs to is read from its environment: every test process gets a
//! variable whose value is unique to its unit (its events file), which descendants
//! inherit, and [`sweep`] kills an orphan only once no process of its unit runs any more
//! ([`unit_started`], [`unit_ended`]). So a helper a still running test daemonized keeps
//! running, and one whose test ended goes with it. An orphan whose environment names no
//! unit (it cleared its environment) is ended at the run's end ([`sweep_all`]). Orphans
//! that exited on their own are reaped at every sweep, so no zombies pile up.
//!
//! A unit's sweep reads only processes whose pid is at least the lowest the runner spawned
//! (a test's descendants are younger than the runner's first child, until pids wrap
//! around), so its cost follows what the run started, not the host's process count; the
//! run's last sweep reads every process. Once pids wrapped around (with the default
//! `pid_max` of 32768, a run that builds or spawns much can see it), which the kernel's
//! last pid or a child's lower pid tells, a unit's sweep reads every process too.
//!
//! Killing an orphan is safe from pid reuse: it is an unreaped child of the runner, so its
//! pid (and, when it leads one, its process group id) cannot be handed to anyone else
//! until the runner reaps it, after the kill.
//!
//! What still escapes: everything, when the runner itself is SIGKILLed (no sweep runs;
//! `PR_SET_PDEATHSIG` ends the test binaries, not their descendants, unless a delegated
//! cgroup v2 holds them); a descendant whose parent outlives the sweep of its unit (it is
//! ended at a later sweep, at the latest at the run's end); and a process that escapes
//! the runner's subtree altogether (handed to a system service, e.g. `systemd-run`).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::host::HostRoot;

use super::signal::{kill_group, kill_one};

/// How long a sweep waits for the orphans it killed to exit before it leaves the rest to
/// a later sweep (a process in uninterruptible sleep dies only when it wakes).
const REAP_WAIT: Duration = Duration::from_millis(500);

/// How many rounds of killing one sweep makes: a killed orphan's own children are
/// re-parented to the runner when it dies, and the next round ends them.
const ROUNDS: usize = 8;

/// The children the runner spawned, and its units' markers.
#[derive(Default)]
struct Registry {
    /// Pids of children started by [`super::spawn`], not yet known to be reaped.
    spawned: HashSet<u32>,
    /// Processes running per unit marker; a marker with none is a unit that ended.
    live: HashMap<OsString, usize>,
    /// The lowest pid spawned: a test's orphan descends from a unit spawned after it, so
    /// (until pids wrap around) its pid is higher, and a unit's sweep reads no older
    /// process.
    floor: Option<u32>,
    /// The newest child's pid: a pid handed out later that is lower means pids wrapped.
    newest: Option<u32>,
    /// Pids wrapped around since the first spawn: an orphan may have any pid.
    wrapped: bool,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    // Every mutation is complete before a panic could happen; a poisoned lock is fine.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `spawn` (which forks a child and returns its pid) with the registry locked, and
/// records the child: a sweep, which takes the same lock, never sees the new child as an
/// orphan.
pub(super) fn spawning<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid: impl Fn(&T) -> u32,
) -> std::io::Result<T> {
    let mut guard = registry();
    let child = spawn()?;
    guard
        .get_or_insert_with(Registry::default)
        .spawned_child(pid(&child));
    Ok(child)
}

impl Registry {
    /// Records child `pid`, just spawned.
    fn spawned_child(&mut self, pid: u32) {
        self.spawned.insert(pid);
        self.floor = Some(self.floor.map_or(pid, |floor| floor.min(pid)));
        // Spawns are made under the lock, so only a wrap-around gives a lower pid; an
        // orphan started between the wrap and this spawn has a lower one still.
        self.wrapped |= self.newest.is_some_and(|newest| pid < newest);
        self.newest = Some(pid);
    }

    /// The lowest pid a unit's sweep reads; `last_pid` is the last pid the kernel handed
    /// out, where it can be read ([`last_pid`]). Once pids wrapped around (the kernel's
    /// last pid, or a child's, below the newest child's), every process, for the rest of
    /// the run: what a test started may have any pid then.
    fn unit_floor(&mut self, last_pid: Option<u32>) -> u32 {
        self.wrapped |=
            last_pid.is_some_and(|last| self.newest.is_some_and(|newest| last < newest));
        if self.wrapped {
            0
        } else {
            self.floor.unwrap_or(0)
        }
    }
}

/// The last pid handed out in our pid namespace (`/proc/sys/kernel/ns_last_pid`, there
/// when the kernel has checkpoint/restore support).
fn last_pid(host: &HostRoot) -> Option<u32> {
    std::fs::read_to_string(host.path("/proc/sys/kernel/ns_last_pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Forgets child `pid`, which its owner reaped.
pub fn reaped(pid: u32) {
    if let Some(registry) = registry().as_mut() {
        registry.spawned.remove(&pid);
    }
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned descendants
/// are re-parented to it instead of init, so [`sweep`] can end them. Call it once the
/// build is done (a build's daemons, a compiler cache's server, must not become ours).
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

/// A process of the unit marked `marker` started.
pub fn unit_started(marker: &OsStr) {
    *registry()
        .get_or_insert_with(Registry::default)
        .live
        .entry(marker.to_owned())
        .or_default() += 1;
}

/// A process of the unit marked `marker` ended (and was reaped); when it was the unit's
/// last, its orphans are killed at the next [`sweep`].
pub fn unit_ended(marker: &OsStr) {
    if let Some(count) = registry()
        .get_or_insert_with(Registry::default)
        .live
        .get_mut(marker)
    {
        *count = count.saturating_sub(1);
    }
}

/// Kills the orphans whose unit ended (environment variable `var` names the unit), reaps
/// them and every orphan that exited on its own. Returns how many were killed.
pub fn sweep(var: &str) -> usize {
    sweep_with(&HostRoot::system(), Some(var))
}

/// Kills every orphan, whatever its unit, and reaps them: the run's end. Returns how many
/// were killed.
pub fn sweep_all() -> usize {
    sweep_with(&HostRoot::system(), None)
}

/// One orphan: a child of ours we did not spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Orphan {
    pid: u32,
    /// It leads its own process group (`setsid`, `setpgid(0, 0)`).
    leader: bool,
    zombie: bool,
}

/// The children of `me` under `host`'s `/proc` that are not in `spawned`, among the
/// processes with a pid of at least `floor`.
fn orphans(host: &HostRoot, me: u32, spawned: &HashSet<u32>, floor: u32) -> Vec<Orphan> {
    let Ok(entries) = std::fs::read_dir(host.path("/proc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid >= floor && !spawned.contains(pid))
        .filter_map(|pid| host.proc_stat(pid).ok().flatten())
        .filter(|stat| stat.ppid == me)
        .map(|stat| Orphan {
            pid: stat.pid,
            leader: stat.pgrp == stat.pid,
            zombie: stat.state == 'Z' || stat.state == 'X',
        })
        .collect()
}

/// The value of `var` in `/proc/<pid>/environ` (the environment it was started with).
fn environ_var(host: &HostRoot, pid: u32, var: &str) -> Option<OsString> {
    let bytes = std::fs::read(host.path(format!("/proc/{pid}/environ"))).ok()?;
    bytes.split(|&b| b == 0).find_map(|pair| {
        let value = pair.strip_prefix(var.as_bytes())?.strip_prefix(b"=")?;
        Some(OsStr::from_bytes(value).to_owned())
    })
}

/// Reaps child `pid` if it has exited; `true` when it is gone.
fn reap(pid: u32) -> bool {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return true;
    };
    match rustix::process::waitid(
        WaitId::Pid(raw),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        // Not our child (any more): nothing to reap.
        Err(_) => true,
    }
}

fn sweep_with(host: &HostRoot, var: Option<&str>) -> usize {
    let mut guard = registry();
    let registry = guard.get_or_insert_with(Registry::default);
    let me = std::process::id();
    // Children reaped by their owners without telling us: their pids are no longer ours.
    registry.spawned.retain(|&pid| {
        host.proc_stat(pid)
            .ok()
            .flatten()
            .is_some_and(|stat| stat.ppid == me)
    });
    // A unit's sweep looks at processes started since the first spawn (every process
    // once pids wrapped around); the run's last sweep at every one.
    let floor = match var {
        Some(_) => registry.unit_floor(last_pid(host)),
        None => 0,
    };
    let mut killed = 0;
    for _ in 0..ROUNDS {
        let mut waiting = Vec::new();
        for orphan in orphans(host, me, &registry.spawned, floor) {
            if orphan.zombie {
                reap(orphan.pid);
                continue;
            }
            let ended = match var {
                None => true,
                Some(var) => environ_var(host, orphan.pid, var)
                    .is_some_and(|marker| registry.live.get(&marker) == Some(&0)),
            };
            if !ended {
                continue;
            }
            if orphan.leader {
                kill_group(orphan.pid);
            }
            kill_one(orphan.pid);
            killed += 1;
            waiting.push(orphan.pid);
        }
        if waiting.is_empty() {
            break;
        }
        let deadline = Instant::now() + REAP_WAIT;
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(|&pid| !reap(pid));
            if !waiting.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !waiting.is_empty() {
            // Still dying: a later sweep reaps them.
            break;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::fake_root;

    #[test]
    fn orphans_are_our_children_we_did_not_spawn() {
        let stat = |pid: u32, ppid: u32, pgrp: u32, state: char| {
            format!(
                "{pid} (x) {state} {ppid} {pgrp} {pgrp} 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 100 0 10"
            )
        };
        let files = [
            ("/proc/10/stat".to_string(), stat(10, 7, 10, 'S')),
            ("/proc/11/stat".to_string(), stat(11, 7, 10, 'S')),
            ("/proc/12/stat".to_string(), stat(12, 7, 12, 'Z')),
            ("/proc/13/stat".to_string(), stat(13, 99, 13, 'S')),
            ("/proc/14/stat".to_string(), stat(14, 7, 14, 'S')),
            (
                "/proc/14/environ".to_string(),
                "A=1\0CAPPED_EVENTS=/run/u1\0B=2\0".to_string(),
            ),
        ];
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let (_dir, host) = fake_root(&files);
        let spawned: HashSet<u32> = [10].into();
        let found = |floor: u32| -> Vec<(u32, bool, bool)> {
            let mut v: Vec<_> = orphans(&host, 7, &spawned, floor)
                .iter()
                .map(|o| (o.pid, o.leader, o.zombie))
                .collect();
            v.sort();
            v
        };
        // 10 is ours, 13 is someone else's child.
        assert_eq!(
            found(0),
            vec![(11, false, false), (12, true, true), (14, true, false)]
        );
        // Processes older than the floor are not looked at.
        assert_eq!(found(12), vec![(12, true, true), (14, true, false)]);
        assert_eq!(
            environ_var(&host, 14, "CAPPED_EVENTS"),
            Some(OsString::from("/run/u1"))
        );
        assert_eq!(environ_var(&host, 14, "CAPPED"), None);
        assert_eq!(environ_var(&host, 11, "CAPPED_EVENTS"), None);
    }

    #[test]
    fn after_a_pid_wrap_around_a_units_sweep_reads_every_process() {
        let spawned = |pids: &[u32]| {
            let mut registry = Registry::default();
            for &pid in pids {
                registry.spawned_child(pid);
            }
            registry
        };
        // Children at 30000 and 30100: what they start gets higher pids.
        let mut registry = spawned(&[30_000, 30_100]);
        assert_eq!(registry.unit_floor(None), 30_000);
        assert_eq!(registry.unit_floor(Some(30_500)), 30_000);
        // The kernel's last pid is below the newest child's: pids wrapped since, and what
        // the child at 30100 started meanwhile (pid 400, say) must still be read, for the
        // rest of the run.
        assert_eq!(registry.unit_floor(Some(500)), 0);
        assert_eq!(registry.unit_floor(Some(30_600)), 0);
        // Without the kernel's last pid, a child spawned after the wrap tells it: an
        // orphan started between the wrap and that spawn (pid 400) has a lower pid.
        let mut registry = spawned(&[30_000, 30_100, 600]);
        assert_eq!(registry.unit_floor(None), 0);
        let (_dir, host) = fake_root(&[("/proc/sys/kernel/ns_last_pid", "32715\n")]);
        assert_eq!(last_pid(&host), Some(32_715));
        let (_dir, host) = fake_root(&[]);
        assert_eq!(last_pid(&host), None);
    }
}
