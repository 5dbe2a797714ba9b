//! The memory watchdog: one thread that sums the RSS of every running test binary's
//! process tree from `/proc` at a fixed interval (≤ 50 ms), kills a tree past its cap, and
//! records each tree's peak.
//!
//! A tick that looks for new members takes all watched trees from **one** scan of `/proc`
//! ([`TreeSampler::sample_many`]), so its cost grows with the host's process count, not
//! with the number of binaries running; such a scan happens every [`DEFAULT_RESCAN_EVERY`]
//! ticks, and the ticks between re-read only the known members (`stat` and `VmRSS`), which
//! cuts the CPU cost about threefold on a quiet host. With nothing watched the thread
//! sleeps on a condition variable and costs nothing.
//!
//! ```no_run
//! # fn demo(child: std::process::Child) {
//! use std::time::Duration;
//! use cargo_capped::watchdog::Watchdog;
//! let watchdog = Watchdog::start(Duration::from_millis(50)).unwrap();
//! let pid = child.id(); // spawned with `process::spawn`, so its pgid is its pid
//! let handle = watchdog.watch(pid, Some(pid), Some(300 << 20));
//! // … wait for the child …
//! let report = handle.finish();
//! println!("peak RSS {}", report.peak_rss);
//! # }
//! ```
//!
//! # In the run loop
//!
//! `run::host_safety::HostSafety` owns one [`RunWatches`] per run (always: peak RSS per
//! binary is in every summary; with `--mem-limit` / `mem-limit` it also enforces the cap):
//!
//! 1. right after a binary is spawned, `poll(pid)` starts watching its tree;
//! 2. every runner tick, `poll(pid)` returns the [`Kill`] once the watchdog has SIGKILLed the
//!    tree (no grace period: a tree past its cap must stop now), which the runner records as
//!    `KillReason::Memory { by_watchdog: true, .. }`;
//! 3. after the binary is reaped, `finish(pid)` gives its peak RSS, and when the runner did
//!    not kill it itself, [`classify_exit`] turns a kill after the runner's last look into
//!    `CapExceeded`, and a SIGKILL nobody here sent into `OomKill` only when the kernel
//!    counted an OOM kill meanwhile (see [`crate::host::cgroup::OomKills`]); any other
//!    SIGKILL is reported as one cargo capped did not send. The report line names the
//!    binary and the tests that were running;
//! 4. with a cap and a delegated cgroup v2 ([`cgroup::CgroupLimiter::detect_and_enable`]),
//!    each binary also gets a child cgroup with `memory.max`, whose `oom_kill` count is read
//!    at its end; otherwise `-v` prints the [`cgroup::Skip`] reason once.
//!
//! The numbers for `cargo xtask bench` come from the `host_safety` bench target
//! (`cargo bench -p cargo-capped --bench host_safety -- watchdog`), through
//! [`Watchdog::start_tuned`], [`Watchdog::cpu_time`] and [`Watchdog::stats`].

pub mod cgroup;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use capped_model::units::format_size;

use crate::host::HostRoot;
use crate::host::process_tree::{TreeSample, TreeSampler};
use crate::process;

/// The longest interval between two samples: a tree allocating hundreds of MiB/s must be
/// killed within a second of crossing its cap, long before the kernel's OOM killer picks a
/// victim of its own.
pub const MAX_INTERVAL: Duration = Duration::from_millis(50);

/// The interval the runner uses: the cap is crossed at most this long before it is seen.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// The shortest interval accepted (tighter would only burn CPU).
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A full `/proc` scan (which finds new members of the trees) happens every this many
/// ticks, and whenever a new tree is watched; the ticks between re-read only the members
/// the last scan found (their `stat`, to check they are still the same processes, and their
/// `VmRSS`). A process a test starts is thus counted within `RESCAN_EVERY × interval`, and
/// a tick on a host of hundreds of processes costs a few file reads instead of hundreds.
pub const DEFAULT_RESCAN_EVERY: u32 = 4;

/// `SIGKILL`'s number, as `ExitStatus::signal` gives it.
pub const SIGKILL: i32 = 9;

/// Why the watchdog killed a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// The cap, in bytes.
    pub limit: u64,
    /// The tree's summed RSS in the sample that crossed it, in bytes.
    pub peak: u64,
    /// When the kill was sent.
    pub at: Instant,
    /// The same instant on the wall clock (for logs and cross-process timing).
    pub at_wall: SystemTime,
    /// The last sample that was still under the cap, if any: the cap was crossed between
    /// it and `at`, so `at − last_below` bounds the time from crossing to kill.
    pub last_below: Option<Instant>,
    /// The pids signalled (the tree's members in that sample).
    pub pids: Vec<u32>,
}

impl Kill {
    /// An upper bound of the time from crossing the cap to the kill (`at − last_below`);
    /// `None` when the first sample was already over the cap.
    pub fn latency_bound(&self) -> Option<Duration> {
        self.last_below
            .map(|below| self.at.saturating_duration_since(below))
    }
}

/// What the watchdog saw of one tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryReport {
    /// The highest summed RSS of the tree over its samples, in bytes (0 for a binary that
    /// lived less than one interval).
    pub peak_rss: u64,
    /// How many samples were taken.
    pub samples: u64,
    /// Set when the watchdog killed the tree for exceeding its cap.
    pub killed: Option<Kill>,
}

impl MemoryReport {
    /// `peak RSS 512 MiB` (or `peak RSS not sampled` for a very short binary).
    #[cfg(test)]
    pub fn summary(&self) -> String {
        if self.samples == 0 {
            "peak RSS not sampled".to_string()
        } else {
            format!("peak RSS {}", format_size(self.peak_rss))
        }
    }
}

/// What an exit means for memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryVerdict {
    /// Nothing memory-related happened.
    Normal,
    /// The watchdog killed the tree for exceeding its cap.
    CapExceeded {
        /// The cap.
        limit: u64,
        /// The highest RSS seen.
        peak: u64,
    },
    /// Killed by a SIGKILL the watchdog did not send while the kernel counted an OOM kill
    /// (`oom_kill` of `/proc/vmstat` or of the cgroup's `memory.events` rose).
    OomKill {
        /// The highest RSS seen.
        peak: u64,
    },
}

impl MemoryVerdict {
    /// `killed: memory cap 300 MiB exceeded (peak 2.0 GiB)`, or the OOM-kill line;
    /// `None` for [`MemoryVerdict::Normal`].
    pub fn message(&self) -> Option<String> {
        match *self {
            MemoryVerdict::Normal => None,
            MemoryVerdict::CapExceeded { limit, peak } => Some(format!(
                "killed: memory cap {} exceeded (peak {})",
                format_size(limit),
                format_size(peak)
            )),
            MemoryVerdict::OomKill { peak } => Some(format!(
                "killed by the kernel's OOM killer (peak RSS seen {})",
                format_size(peak)
            )),
        }
    }

    /// The line for the report, naming the binary and the tests that were running:
    /// ``crossval: killed: memory cap 300 MiB exceeded (peak 2.0 GiB) while running a::big, a::huge``.
    #[cfg(test)]
    pub fn describe(&self, binary: &str, running_tests: &[String]) -> Option<String> {
        let message = self.message()?;
        Some(if running_tests.is_empty() {
            format!("{binary}: {message}")
        } else {
            format!(
                "{binary}: {message} while running {}",
                running_tests.join(", ")
            )
        })
    }
}

impl fmt::Display for MemoryVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message().as_deref().unwrap_or("ok"))
    }
}

/// Classifies an exit: `signal` is the signal that ended the binary
/// (`ExitStatus::signal()`), `report` what its watch saw, `kernel_oom` whether the kernel
/// counted an OOM kill during its run. Pass `None` as the signal when the runner itself
/// killed the binary (a timeout), which is reported as such instead. A SIGKILL without the
/// kernel's word is not about memory: someone else sent it.
pub fn classify_exit(
    signal: Option<i32>,
    report: &MemoryReport,
    kernel_oom: bool,
) -> MemoryVerdict {
    if let Some(kill) = &report.killed {
        return MemoryVerdict::CapExceeded {
            limit: kill.limit,
            peak: report.peak_rss.max(kill.peak),
        };
    }
    if signal == Some(SIGKILL) && kernel_oom {
        return MemoryVerdict::OomKill {
            peak: report.peak_rss,
        };
    }
    MemoryVerdict::Normal
}

/// Counters of the watchdog thread, for benchmarks and `-v`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchdogStats {
    /// Ticks that sampled at least one tree.
    pub ticks: u64,
    /// Of those, the ticks that scanned all of `/proc`.
    pub full_scans: u64,
    /// Time spent in `sample_many` over all ticks.
    pub sample_time: Duration,
    /// The slowest tick.
    pub max_sample_time: Duration,
    /// Ticks whose `/proc` scan failed.
    pub errors: u64,
    /// The last such failure.
    pub last_error: Option<String>,
    /// Kill signals sent (a tree over its cap for several ticks is signalled each tick).
    pub kills_sent: u64,
}

/// What a kill must reach: the tree's process group and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KillOrder {
    pub pgid: Option<u32>,
    pub pids: Vec<u32>,
}

type Killer = Arc<dyn Fn(&KillOrder) + Send + Sync>;

/// SIGKILLs the group and every member, never this process or its own group.
fn kill_tree(order: &KillOrder) {
    let my_group = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
    if let Some(pgid) = order.pgid.filter(|&g| g != my_group) {
        process::kill_group(pgid);
    }
    // Members that left the group (`setsid`, their own `process_group`) still count
    // towards the tree's memory.
    for &pid in &order.pids {
        process::kill_one(pid);
    }
}

#[derive(Debug)]
struct Entry {
    root: u32,
    pgid: Option<u32>,
    limit: Option<u64>,
    peak: u64,
    samples: u64,
    last_below: Option<Instant>,
    killed: Option<Kill>,
    /// The tree is gone (root dead, no members): no longer sampled.
    gone: bool,
    /// The members found by the last sample; `None` before the first full scan.
    members: Option<Vec<u32>>,
}

impl Entry {
    fn report(&self) -> MemoryReport {
        MemoryReport {
            peak_rss: self.peak,
            samples: self.samples,
            killed: self.killed.clone(),
        }
    }

    /// Takes one sample into account; returns a kill order when the tree is over its cap.
    fn update(&mut self, sample: &TreeSample, now: Instant) -> Option<KillOrder> {
        self.members = Some(sample.pids.clone());
        if !sample.root_alive && sample.pids.is_empty() {
            self.gone = true;
            return None;
        }
        self.samples += 1;
        self.peak = self.peak.max(sample.rss_bytes);
        let limit = self.limit?;
        if sample.rss_bytes <= limit {
            self.last_below = Some(now);
            return None;
        }
        if self.killed.is_none() {
            self.killed = Some(Kill {
                limit,
                peak: sample.rss_bytes,
                at: now,
                at_wall: SystemTime::now(),
                last_below: self.last_below,
                pids: sample.pids.clone(),
            });
        }
        Some(KillOrder {
            pgid: self.pgid,
            pids: sample.pids.clone(),
        })
    }
}

#[derive(Default)]
struct State {
    stop: bool,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    stats: WatchdogStats,
    /// The thread's id, for reading its CPU time.
    tid: Option<u32>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is complete before a panic could happen; a poisoned lock is fine.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The watchdog thread; dropping it stops and joins the thread.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    interval: Duration,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("interval", &self.interval)
            .field("watched", &self.shared.lock().entries.len())
            .finish()
    }
}

/// One watched tree; [`finish`](WatchHandle::finish) it when the binary has exited.
/// Dropping it unfinished stops watching too.
#[must_use = "finish() the handle to get the tree's memory report"]
pub struct WatchHandle {
    id: u64,
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Starts the watchdog thread over the live `/proc`, sampling every `interval`
    /// (clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]), with a full scan every
    /// [`DEFAULT_RESCAN_EVERY`] ticks.
    pub fn start(interval: Duration) -> io::Result<Watchdog> {
        Self::start_tuned(interval, DEFAULT_RESCAN_EVERY)
    }

    /// [`Watchdog::start`] with a full `/proc` scan every `rescan_every` ticks (1: every
    /// tick); for benchmarks.
    pub fn start_tuned(interval: Duration, rescan_every: u32) -> io::Result<Watchdog> {
        Self::start_with(
            HostRoot::system(),
            interval,
            rescan_every,
            Arc::new(kill_tree),
        )
    }

    /// Starts over `host` with a custom `killer` (tests use fixture roots and a recorder).
    pub(crate) fn start_with(
        host: HostRoot,
        interval: Duration,
        rescan_every: u32,
        killer: Killer,
    ) -> io::Result<Watchdog> {
        let interval = interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let rescan_every = rescan_every.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("capped-watchdog".to_string())
            .spawn(move || watch_loop(&thread_shared, host, interval, rescan_every, &killer))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start the memory watchdog thread: {e}"),
                )
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
            interval,
        })
    }

    /// The sampling interval in force.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Watches the tree of `root_pid` (its descendants, plus every member of process group
    /// `pgid` when given, which catches orphans re-parented away from the tree). With a
    /// `limit`, a tree whose summed RSS exceeds it is SIGKILLed (its group and members).
    /// Sampling starts at the next tick.
    pub fn watch(&self, root_pid: u32, pgid: Option<u32>, limit: Option<u64>) -> WatchHandle {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(
            id,
            Entry {
                root: root_pid,
                pgid,
                limit,
                peak: 0,
                samples: 0,
                last_below: None,
                killed: None,
                gone: false,
                members: None,
            },
        );
        drop(state);
        self.shared.wake.notify_all();
        WatchHandle {
            id,
            shared: Arc::clone(&self.shared),
        }
    }

    /// The thread's counters so far.
    pub fn stats(&self) -> WatchdogStats {
        self.shared.lock().stats.clone()
    }

    /// CPU time the watchdog thread has used so far (from
    /// `/proc/self/task/<tid>/schedstat`, else its `stat`); `None` if unreadable.
    pub fn cpu_time(&self) -> Option<Duration> {
        let tid = self.shared.lock().tid?;
        thread_cpu_time(tid)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle").field("id", &self.id).finish()
    }
}

impl WatchHandle {
    /// What the watchdog has seen of the tree so far.
    pub fn snapshot(&self) -> MemoryReport {
        self.shared
            .lock()
            .entries
            .get(&self.id)
            .map(Entry::report)
            .unwrap_or(MemoryReport {
                peak_rss: 0,
                samples: 0,
                killed: None,
            })
    }

    /// Stops watching and returns the report. Call it right after the binary is reaped.
    pub fn finish(self) -> MemoryReport {
        // Drop removes the entry.
        self.snapshot()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shared.lock().entries.remove(&self.id);
    }
}

/// The watchdog keyed by the pid of each running binary, for the runner's per-tick hooks
/// (`RunHooks::watch` / `RunHooks::peak_rss`): the first [`poll`](RunWatches::poll) of a pid
/// starts watching its tree (its pid is its process group id), and
/// [`finish`](RunWatches::finish) ends it.
#[derive(Debug)]
pub struct RunWatches {
    watchdog: Watchdog,
    limit: Option<u64>,
    handles: std::collections::HashMap<u32, WatchHandle>,
}

impl RunWatches {
    /// Watches every binary under the memory cap `limit` (`None`: only record peaks).
    pub fn new(watchdog: Watchdog, limit: Option<u64>) -> Self {
        RunWatches {
            watchdog,
            limit,
            handles: std::collections::HashMap::new(),
        }
    }

    /// Starts watching `pid` (its own process group) if not yet watched; returns the kill
    /// when the watchdog has killed its tree for exceeding the cap.
    pub fn poll(&mut self, pid: u32) -> Option<Kill> {
        let watchdog = &self.watchdog;
        let limit = self.limit;
        self.handles
            .entry(pid)
            .or_insert_with(|| watchdog.watch(pid, Some(pid), limit))
            .snapshot()
            .killed
    }

    /// Stops watching `pid` and returns its report (`None` if it was never polled). Call
    /// right after the binary was reaped.
    pub fn finish(&mut self, pid: u32) -> Option<MemoryReport> {
        self.handles.remove(&pid).map(WatchHandle::finish)
    }

    /// The watchdog, for its [`stats`](Watchdog::stats) and [`cpu_time`](Watchdog::cpu_time).
    #[cfg(test)]
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }
}

/// One watched tree as the loop sees it between two locks.
struct Tree {
    id: u64,
    root: u32,
    pgid: Option<u32>,
    members: Option<Vec<u32>>,
}

fn watch_loop(
    shared: &Shared,
    host: HostRoot,
    interval: Duration,
    rescan_every: u32,
    killer: &Killer,
) {
    shared.lock().tid = current_tid();
    let mut sampler = TreeSampler::new(host.clone());
    let mut trees: Vec<Tree> = Vec::new();
    let mut pairs: Vec<(u32, Option<u32>)> = Vec::new();
    let mut next_tick = Instant::now();
    let mut tick: u64 = 0;
    loop {
        {
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                if state.entries.values().any(|e| !e.gone) {
                    break;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                next_tick = Instant::now();
            }
            trees.clear();
            for (&id, entry) in state.entries.iter().filter(|(_, e)| !e.gone) {
                trees.push(Tree {
                    id,
                    root: entry.root,
                    pgid: entry.pgid,
                    members: entry.members.clone(),
                });
            }
        }
        let full = tick.is_multiple_of(u64::from(rescan_every))
            || trees.iter().any(|t| t.members.is_none());
        tick += 1;
        let started = Instant::now();
        let result = if full {
            pairs.clear();
            pairs.extend(trees.iter().map(|t| (t.root, t.pgid)));
            sampler.sample_many(&pairs)
        } else {
            Ok(trees
                .iter()
                .map(|t| {
                    sample_members(
                        &host,
                        t.root,
                        t.pgid,
                        t.members.as_deref().unwrap_or_default(),
                    )
                })
                .collect())
        };
        let now = Instant::now();
        let took = now - started;
        let mut orders = Vec::new();
        {
            let mut state = shared.lock();
            state.stats.ticks += 1;
            state.stats.full_scans += u64::from(full);
            state.stats.sample_time += took;
            state.stats.max_sample_time = state.stats.max_sample_time.max(took);
            match result {
                Ok(samples) => {
                    for (tree, sample) in trees.iter().zip(&samples) {
                        if let Some(entry) = state.entries.get_mut(&tree.id)
                            && let Some(order) = entry.update(sample, now)
                        {
                            orders.push(order);
                        }
                    }
                }
                Err(e) => {
                    state.stats.errors += 1;
                    state.stats.last_error = Some(e.to_string());
                }
            }
            state.stats.kills_sent += orders.len() as u64;
        }
        for order in &orders {
            killer(order);
        }
        // Fixed rate; ticks missed while a scan was slow are skipped, not bunched.
        next_tick += interval;
        let now = Instant::now();
        if next_tick <= now {
            next_tick = now + interval;
        }
        let state = shared.lock();
        let _unused = shared
            .wake
            .wait_timeout_while(state, next_tick - now, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// A cheap sample of a tree whose members a full scan found: each member still counts if
/// its `stat` shows it is the root, in the group, or a child of another member (a pid
/// reused by an unrelated process shows none of these); their `VmRSS` is summed.
fn sample_members(host: &HostRoot, root: u32, pgid: Option<u32>, members: &[u32]) -> TreeSample {
    let mut pids = Vec::with_capacity(members.len());
    let mut rss_bytes = 0u64;
    for &pid in members {
        let Ok(Some(stat)) = host.proc_stat(pid) else {
            continue;
        };
        let belongs = pid == root || pgid == Some(stat.pgrp) || members.contains(&stat.ppid);
        if !belongs {
            continue;
        }
        if let Ok(Some(rss)) = host.vm_rss(pid) {
            rss_bytes = rss_bytes.saturating_add(rss);
            pids.push(pid);
        }
    }
    TreeSample {
        root,
        root_alive: pids.contains(&root),
        pids,
        rss_bytes,
    }
}

/// This thread's id, from the `/proc/thread-self` link (`<pid>/task/<tid>`).
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time of thread `tid` of this process: `schedstat`'s first field (ns), else
/// `utime + stime` of its `stat` in clock ticks (assumed 100 Hz).
pub fn thread_cpu_time(tid: u32) -> Option<Duration> {
    let task = format!("/proc/self/task/{tid}");
    if let Ok(text) = std::fs::read_to_string(format!("{task}/schedstat"))
        && let Some(ns) = text.split_whitespace().next().and_then(|n| n.parse().ok())
    {
        return Some(Duration::from_nanos(ns));
    }
    let bytes = std::fs::read(format!("{task}/stat")).ok()?;
    let stat = crate::host::process_tree::parse_stat(&bytes).ok()?;
    Some(Duration::from_millis(
        (stat.utime_ticks + stat.stime_ticks) * 10,
    ))
}

#[cfg(test)]
mod tests;
