//! The host-safety hooks of a run: what [`super::RunHooks`] does in a real run.
//!
//! * **NOFILE**: before anything is spawned, the runner's soft `RLIMIT_NOFILE` is raised to
//!   the hard limit (every test process inherits it); a hard limit low for the width is a
//!   notice with `ulimit` advice ([`crate::adapt::nofile`]).
//! * **Auto-degrade**: before the run a full preflight report (its critical readings are
//!   notices), and after each binary a few cheap readings ([`Signals::read`]), go to a
//!   [`Degrader`] with the `[preflight]` levels and hysteresis; a change of width is one
//!   notice naming the reading and the level that decided it. The
//!   1-minute load includes the load of this very run, so the run's own share is estimated
//!   ([`OwnLoad`]) and subtracted: otherwise `t2` on two CPUs would degrade itself.
//! * **Memory**: one [`Watchdog`] thread samples every running binary's process tree at
//!   50 ms, records its peak RSS and kills a tree past `--mem-limit`; a SIGKILL the runner did
//!   not send is reported as a kernel OOM kill only when the kernel counted one during the
//!   binary's run ([`OomKills`], [`classify_exit`]), otherwise as a SIGKILL cargo capped did
//!   not send. Where a writable cgroup v2 is delegated, each binary also gets a child cgroup
//!   (with `memory.max` under a cap), and `cgroup.kill` at its end ends whatever it left.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::adapt::nofile;
use crate::events::BinaryId;
use crate::host::HostRoot;
use crate::host::cgroup::OomKills;
use crate::libtest::KillReason;
use crate::plan::Plan;
use crate::preflight::degrade::{Degrader, Signals};
use crate::preflight::{Status, Thresholds, collect};
use crate::watchdog::cgroup::{CgroupLimiter, ChildCgroup};
use crate::watchdog::{
    DEFAULT_INTERVAL, MemoryReport, MemoryVerdict, RunWatches, Watchdog, classify_exit,
};

use super::{MemoryEnd, RunHooks, WidthDecision};

/// The time constant of the kernel's 1-minute load average.
const LOAD_WINDOW: Duration = Duration::from_secs(60);

/// Clock ticks per second of `/proc/*/stat` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// An estimate of the load this run puts on the host, on the scale of `load.1m`.
///
/// The kernel's load average is an exponentially weighted mean of runnable tasks with a
/// 60 s time constant. This keeps the same mean of the CPUs our own processes used: the
/// reaped children (the cargo build, finished test binaries; `cutime + cstime` of
/// `/proc/self/stat`) plus the running test binaries (their `stat`). A test keeping one CPU
/// busy thus counts 1, as it does in `load.1m`; a test that sleeps counts nothing.
#[derive(Debug, Clone)]
pub struct OwnLoad {
    /// CPU seconds counted at the last update.
    cpu: f64,
    at: Instant,
    mean: f64,
}

impl OwnLoad {
    /// Starts counting now (call it before the build, so the build's load is ours too).
    pub fn start(host: &HostRoot) -> OwnLoad {
        OwnLoad {
            cpu: children_cpu_seconds(host),
            at: Instant::now(),
            mean: 0.0,
        }
    }

    /// Adds the CPU used since the last update (`cpu_now`: the same total, now) and returns
    /// the mean.
    pub fn update(&mut self, cpu_now: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        if elapsed <= 0.0 {
            return self.mean;
        }
        let rate = ((cpu_now - self.cpu) / elapsed).max(0.0);
        let keep = (-elapsed / LOAD_WINDOW.as_secs_f64()).exp();
        self.mean = self.mean * keep + rate * (1.0 - keep);
        self.cpu = cpu_now.max(self.cpu);
        self.at = now;
        self.mean
    }
}

/// Fields 14–17 of a `/proc/PID/stat` (utime, stime, cutime, cstime), in clock ticks.
pub fn stat_cpu_ticks(stat: &str) -> Option<[u64; 4]> {
    // The command name may hold spaces and parentheses: fields restart after the last `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let mut ticks = [0u64; 4];
    for (i, slot) in ticks.iter_mut().enumerate() {
        *slot = fields.get(11 + i)?.parse().ok()?;
    }
    Some(ticks)
}

/// CPU seconds of our reaped children (`cutime + cstime` of `/proc/self/stat`).
fn children_cpu_seconds(host: &HostRoot) -> f64 {
    host.read("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu_ticks(&stat))
        .map_or(0.0, |t| (t[2] + t[3]) as f64 / TICKS_PER_SECOND)
}

/// CPU seconds of a running child and the children it reaped.
fn process_cpu_seconds(host: &HostRoot, pid: u32) -> f64 {
    host.read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_cpu_ticks(&stat))
        .map_or(0.0, |t| t.iter().sum::<u64>() as f64 / TICKS_PER_SECOND)
}

/// What a binary's end means for memory (see [`RunHooks::ended`]): `killed` is the runner's
/// own reason, `report` the watchdog's, `peak` the highest RSS known, `signal` what ended
/// it, `cgroup_oom` the cgroup limit when the kernel killed inside the binary's cgroup,
/// `kernel_oom` whether the kernel counted an OOM kill during its run.
pub fn memory_kill(
    killed: Option<&KillReason>,
    report: Option<&MemoryReport>,
    peak: u64,
    signal: Option<i32>,
    cgroup_oom: Option<u64>,
    kernel_oom: bool,
) -> Option<KillReason> {
    match killed {
        // Ours, for memory: the peak may have grown after the crossing sample.
        Some(KillReason::Memory {
            limit,
            peak: at_kill,
            by_watchdog,
        }) => Some(KillReason::Memory {
            limit: *limit,
            peak: peak.max(*at_kill),
            by_watchdog: *by_watchdog,
        }),
        // A timeout or Ctrl-C: the runner says so itself.
        Some(_) => None,
        None if cgroup_oom.is_some() => Some(KillReason::Memory {
            limit: cgroup_oom,
            peak,
            by_watchdog: false,
        }),
        None => {
            let unsampled = MemoryReport {
                peak_rss: peak,
                samples: 0,
                killed: None,
            };
            match classify_exit(signal, report.unwrap_or(&unsampled), kernel_oom) {
                MemoryVerdict::Normal => None,
                MemoryVerdict::CapExceeded { limit, peak } => Some(KillReason::Memory {
                    limit: Some(limit),
                    peak,
                    by_watchdog: true,
                }),
                MemoryVerdict::OomKill { peak } => Some(KillReason::Memory {
                    limit: None,
                    peak,
                    by_watchdog: false,
                }),
            }
        }
    }
}

/// The host-safety hooks of one run.
pub struct HostSafety {
    /// Where degrade readings come from (fixture files in e2e tests).
    readings: HostRoot,
    /// Our own processes, always the live system.
    live: HostRoot,
    degrader: Degrader,
    degrade: bool,
    /// Whether the pre-run decision (from a full report) was made.
    decided_once: bool,
    target_dir: PathBuf,
    thresholds: Thresholds,
    own: OwnLoad,
    watches: Option<RunWatches>,
    mem_limit: Option<u64>,
    cgroups: Option<CgroupLimiter>,
    children: HashMap<u32, ChildCgroup>,
    /// Killed cgroups whose processes were still dying: removed at a later end.
    dying: Vec<ChildCgroup>,
    /// Our cgroup v2's `memory.events`, where it counts OOM kills.
    oom_events: Option<PathBuf>,
    /// The kernel's OOM-kill counts when each running binary started.
    oom_at_start: HashMap<u32, OomKills>,
    running: HashMap<u32, BinaryId>,
    pending: Vec<String>,
    verbose: bool,
    cgroup_failed: bool,
}

impl HostSafety {
    /// The hooks for `plan`. Call before the build: the build's load counts as the run's own.
    /// Starts the memory watchdog (a failure to start it is a notice, not an error).
    pub fn new(plan: &Plan) -> HostSafety {
        let live = HostRoot::system();
        let verbose = plan.output.verbose > 0;
        let mut pending = Vec::new();
        let watches = match Watchdog::start(DEFAULT_INTERVAL) {
            Ok(watchdog) => Some(RunWatches::new(watchdog, plan.mem_limit)),
            Err(e) => {
                pending.push(format!(
                    "warning: {e}; no memory cap{} and no peak RSS in this run",
                    plan.mem_limit.map_or(String::new(), |limit| format!(
                        " ({})",
                        capped_model::units::format_size(limit)
                    ))
                ));
                None
            }
        };
        // Before the runner may move into a leaf: the parent's count includes the children.
        let oom_events = plan.host.oom_events_path();
        let cgroups = match plan.mem_limit {
            // Only to end each binary's processes at its end: silently skipped without.
            None => CgroupLimiter::detect_for_kill(&live).ok(),
            Some(_) => match CgroupLimiter::detect_and_enable(&live) {
                Ok(limiter) => {
                    if verbose {
                        let moved = limiter.runner_leaf().map_or(String::new(), |leaf| {
                            format!(" (the runner moved into {})", leaf.display())
                        });
                        pending.push(format!(
                            "each test binary also gets a cgroup with memory.max under {}{moved}",
                            limiter.parent().display()
                        ));
                    }
                    Some(limiter)
                }
                Err(skip) => {
                    if verbose {
                        pending.push(format!("{skip}; the watchdog alone enforces --mem-limit"));
                    }
                    None
                }
            },
        };
        let label = plan.profile.clone();
        let degrader = if plan.degrade {
            let degrader = Degrader::new(&plan.thresholds, plan.caps.test_threads() as usize)
                .with_label(label);
            // A width asked for on the command line is the user's decision: only a critical
            // reading overrides it.
            if plan.options.test_threads.is_some() {
                degrader.explicit()
            } else {
                degrader
            }
        } else {
            Degrader::disabled(plan.caps.test_threads() as usize)
        };
        HostSafety {
            readings: plan.host.clone(),
            own: OwnLoad::start(&live),
            live,
            degrader,
            degrade: plan.degrade,
            decided_once: false,
            target_dir: plan.workspace.target_dir.clone(),
            thresholds: plan.thresholds.clone(),
            watches,
            mem_limit: plan.mem_limit,
            cgroups,
            children: HashMap::new(),
            dying: Vec::new(),
            oom_events,
            oom_at_start: HashMap::new(),
            running: HashMap::new(),
            pending,
            verbose,
            cgroup_failed: false,
        }
    }

    /// The load this run puts on the host now (see [`OwnLoad`]).
    fn own_load(&mut self) -> f64 {
        let cpu = children_cpu_seconds(&self.live)
            + self
                .running
                .keys()
                .map(|&pid| process_cpu_seconds(&self.live, pid))
                .sum::<f64>();
        self.own.update(cpu, Instant::now())
    }
}

impl RunHooks for HostSafety {
    fn starting(&mut self, width: u32) -> Vec<String> {
        let mut notices = std::mem::take(&mut self.pending);
        for notice in nofile::raise_at_start(width as usize) {
            // The raise itself is routine; a limit still low for the width is not.
            if notice.starts_with("warning:") || self.verbose {
                notices.push(notice);
            }
        }
        notices
    }

    fn width(&mut self, requested: u32) -> WidthDecision {
        let keep = WidthDecision {
            width: requested,
            notice: None,
            why: None,
        };
        if !self.degrade && self.decided_once {
            return keep;
        }
        let own = self.own_load();
        let signals = if self.decided_once {
            Signals::read(&self.readings)
        } else {
            // Before the run: the whole preflight, whose critical readings are worth a line.
            self.decided_once = true;
            let report = collect(&self.readings, &self.target_dir, &self.thresholds);
            for reading in report.problems() {
                if reading.status == Status::Critical {
                    self.pending.push(format!(
                        "preflight: {} is critical ({}): {}",
                        reading.key, reading.display, reading.advice
                    ));
                }
            }
            Signals::from_report(&report)
        };
        if !self.degrade {
            return keep;
        }
        let decision = self.degrader.decide_signals(&signals.with_own_load(own));
        WidthDecision {
            width: (decision.width as u32).clamp(1, requested.max(1)),
            notice: decision.reason.filter(|_| decision.changed),
            why: decision.why,
        }
    }

    fn spawned(&mut self, binary: &BinaryId, pid: u32) {
        self.running.insert(pid, binary.clone());
        self.oom_at_start
            .insert(pid, self.readings.oom_kills(self.oom_events.as_deref()));
        if let Some(watches) = &mut self.watches {
            let _ = watches.poll(pid);
        }
        let Some(limiter) = &self.cgroups else {
            return;
        };
        let limit = self.mem_limit;
        let name: String = format!("{}-{pid}", binary.target)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let placed = limiter
            .create(&name, limit)
            .and_then(|cgroup| cgroup.add(pid).map(|()| cgroup));
        match placed {
            Ok(cgroup) => {
                self.children.insert(pid, cgroup);
            }
            Err(e) if !self.cgroup_failed && limit.is_some() => {
                self.cgroup_failed = true;
                self.pending.push(format!(
                    "warning: cannot put {binary} into a cgroup with memory.max: {e}; the watchdog alone enforces --mem-limit"
                ));
            }
            Err(_) => {}
        }
    }

    fn watch(&mut self, _binary: &BinaryId, pid: u32) -> Option<KillReason> {
        let kill = self.watches.as_mut()?.poll(pid)?;
        Some(KillReason::Memory {
            limit: Some(kill.limit),
            peak: kill.peak,
            by_watchdog: true,
        })
    }

    fn ended(
        &mut self,
        _binary: &BinaryId,
        pid: u32,
        signal: Option<i32>,
        killed: Option<&KillReason>,
    ) -> MemoryEnd {
        self.running.remove(&pid);
        let report = self.watches.as_mut().and_then(|w| w.finish(pid));
        let cgroup = self.children.remove(&pid);
        let sampled_peak = report
            .as_ref()
            .filter(|r| r.samples > 0)
            .map(|r| r.peak_rss);
        let cgroup_peak = cgroup.as_ref().and_then(ChildCgroup::peak);
        let peak_rss = match (sampled_peak, cgroup_peak) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let cgroup_oom = cgroup
            .as_ref()
            .and_then(ChildCgroup::oom_kills)
            .unwrap_or(0)
            > 0;
        let kernel_oom = self.oom_at_start.remove(&pid).is_some_and(|start| {
            self.readings
                .oom_kills(self.oom_events.as_deref())
                .rose_since(&start)
        });
        let killed = memory_kill(
            killed,
            report.as_ref(),
            peak_rss.unwrap_or(0),
            signal,
            cgroup_oom.then_some(self.mem_limit).flatten(),
            kernel_oom,
        );
        // Whatever the binary started, wherever it went in the process tree, ends with it.
        self.dying.retain(|cgroup| !cgroup.remove());
        if let Some(cgroup) = cgroup {
            let _ = cgroup.kill();
            if !cgroup.remove() {
                self.dying.push(cgroup);
            }
        }
        MemoryEnd { peak_rss, killed }
    }

    fn notice(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            Some(self.pending.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::fixture;
    use crate::preflight::Thresholds;
    use crate::preflight::degrade::Degrader;

    #[test]
    fn stat_cpu_fields() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some([250, 50, 7, 3]));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&own).is_some());
    }

    #[test]
    fn memory_verdicts_at_a_binarys_end() {
        let mib = 1u64 << 20;
        let ours = KillReason::Memory {
            limit: Some(300 * mib),
            peak: 310 * mib,
            by_watchdog: true,
        };
        // The runner's own memory kill keeps its cap and takes the highest peak.
        assert_eq!(
            memory_kill(Some(&ours), None, 400 * mib, Some(9), None, false),
            Some(KillReason::Memory {
                limit: Some(300 * mib),
                peak: 400 * mib,
                by_watchdog: true
            })
        );
        // A timeout stays a timeout.
        let timeout = KillReason::Timeout {
            after: Duration::from_secs(1),
        };
        assert_eq!(
            memory_kill(Some(&timeout), None, 0, Some(9), None, true),
            None
        );
        // A SIGKILL nobody here sent: the kernel's OOM killer when it counted a kill…
        let report = MemoryReport {
            peak_rss: 900 * mib,
            samples: 12,
            killed: None,
        };
        assert_eq!(
            memory_kill(None, Some(&report), 900 * mib, Some(9), None, true),
            Some(KillReason::Memory {
                limit: None,
                peak: 900 * mib,
                by_watchdog: false
            })
        );
        // … and not about memory when it did not: someone else sent it.
        assert_eq!(
            memory_kill(None, Some(&report), 900 * mib, Some(9), None, false),
            None
        );
        // Other signals and plain exits are not about memory.
        assert_eq!(
            memory_kill(None, Some(&report), 900 * mib, Some(11), None, true),
            None
        );
        assert_eq!(memory_kill(None, None, 0, None, None, false), None);
        // The kernel inside the binary's cgroup.
        assert_eq!(
            memory_kill(
                None,
                Some(&report),
                900 * mib,
                Some(9),
                Some(512 * mib),
                false
            ),
            Some(KillReason::Memory {
                limit: Some(512 * mib),
                peak: 900 * mib,
                by_watchdog: false
            })
        );
    }

    #[test]
    fn own_load_follows_the_kernels_one_minute_mean() {
        let start = Instant::now();
        let mut own = OwnLoad {
            cpu: 0.0,
            at: start,
            mean: 0.0,
        };
        // Two CPUs busy for a minute: the mean reaches 2 × (1 − 1/e) ≈ 1.26, like load.1m.
        let mut cpu = 0.0;
        for second in 1..=60 {
            cpu += 2.0;
            own.update(cpu, start + Duration::from_secs(second));
        }
        assert!(
            (own.mean - 2.0 * (1.0 - (-1.0f64).exp())).abs() < 0.05,
            "{}",
            own.mean
        );
        // Idle for five minutes: it decays.
        own.update(cpu, start + Duration::from_secs(360));
        assert!(own.mean < 0.02, "{}", own.mean);
        // Time going nowhere changes nothing; a counter going back is no negative load.
        let before = own.mean;
        assert_eq!(
            own.update(cpu + 5.0, start + Duration::from_secs(360)),
            before
        );
        own.update(0.0, start + Duration::from_secs(370));
        assert!(own.mean >= 0.0);
    }

    /// The decision integration: fixture readings, our own load subtracted, hysteresis, one
    /// line naming the reading and the level.
    #[test]
    fn fixture_readings_decide_the_width() {
        let thresholds = Thresholds::default();
        let mut degrader = Degrader::new(&thresholds, 2).with_label("t2");
        // busy: load 7.90 on 2 CPUs. Even with two CPUs of our own it stays busy.
        let busy = Signals::read(&fixture("busy")).with_own_load(2.0);
        let decision = degrader.decide_signals(&busy);
        assert_eq!((decision.width, decision.changed), (1, true));
        let reason = decision.reason.unwrap();
        assert!(
            reason.starts_with("degraded t2 → width 1: load.1m 7.90 less our 2.00 = 2.95 per CPU > 1.50 ([preflight] degrade-load-per-cpu)"),
            "{reason}"
        );
        // idle: restores (and says so once).
        let idle = Signals::read(&fixture("idle"));
        let decision = degrader.decide_signals(&idle);
        assert_eq!((decision.width, decision.changed), (2, true));
        assert!(
            decision
                .reason
                .unwrap()
                .starts_with("restored t2 (width 2)")
        );
        // A host loaded mostly by us does not degrade us: 3.5 on 2 CPUs, 2.0 of it ours.
        let mut ours = Signals::read(&fixture("idle"));
        ours.load_1m = Some(3.5);
        ours.cpus = 2;
        assert_eq!(
            Degrader::new(&thresholds, 2).decide_signals(&ours).width,
            1,
            "without subtracting its own load, t2 would degrade itself"
        );
        assert_eq!(
            Degrader::new(&thresholds, 2)
                .decide_signals(&ours.with_own_load(2.0))
                .width,
            2
        );
        // Configured levels decide: a strict [preflight] degrades the same reading.
        let strict = Thresholds {
            degrade_load_per_cpu: 0.4,
            ..Thresholds::default()
        };
        let decision = Degrader::new(&strict, 2).decide_signals(&ours.with_own_load(2.0));
        assert_eq!(decision.width, 1);
        assert!(
            decision
                .reason
                .unwrap()
                .contains("> 0.40 ([preflight] degrade-load-per-cpu)")
        );
    }
}
