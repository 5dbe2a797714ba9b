//! Benchmarks of the watchdog, for `cargo xtask bench`: its CPU overhead while trees are
//! watched, and the time from crossing a cap to the kill.
//!
//! `cargo-capped` is a binary crate, so xtask cannot call these directly: the hidden
//! subcommand `cargo capped __bench watchdog` (`crate::bench`) prints their rows.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(test)]
use super::DEFAULT_INTERVAL;
use super::Watchdog;
use crate::process;

/// The watchdog's cost while it watches `trees` idle process trees.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadBench {
    /// Trees watched.
    pub trees: usize,
    /// A full `/proc` scan every this many ticks.
    pub rescan_every: u32,
    /// Processes on the host (what one `/proc` scan reads).
    pub host_processes: usize,
    /// The sampling interval, in ms.
    pub interval_ms: f64,
    /// Wall time measured, in ms.
    pub wall_ms: f64,
    /// Ticks taken.
    pub ticks: u64,
    /// CPU time of the watchdog thread, in ms.
    pub cpu_ms: f64,
    /// That CPU time as a percentage of one core over the wall time.
    pub cpu_percent_of_one_core: f64,
    /// Mean wall time of one tick's `sample_many`, in µs.
    pub mean_sample_us: f64,
    /// The slowest tick, in µs.
    pub max_sample_us: f64,
}

/// The time from crossing a cap to the kill, measured on a real allocating tree.
#[derive(Debug, Clone, Serialize)]
pub struct KillBench {
    /// The cap, in bytes.
    pub limit: u64,
    /// The sampling interval, in ms.
    pub interval_ms: f64,
    /// Upper bound of crossing → kill: the kill minus the last sample under the cap, in ms.
    pub crossing_to_kill_bound_ms: f64,
    /// From spawning the allocator to the kill, in ms.
    pub spawn_to_kill_ms: f64,
    /// RSS in the sample that crossed, in bytes.
    pub rss_at_kill: u64,
    /// The highest RSS seen, in bytes.
    pub peak_rss: u64,
}

/// Kills the spawned children (their groups) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            process::kill_group(child.id());
            let _ = child.wait();
        }
    }
}

fn spawn_in_group(command: &mut Command) -> std::io::Result<Child> {
    command.stdin(Stdio::null()).stdout(Stdio::null());
    process::spawn(command)
}

/// Watches `trees` sleeping processes (each its own group, with a cap they never reach) at
/// `interval` for `duration`, and reports the watchdog thread's CPU time.
pub fn bench_overhead(
    trees: usize,
    duration: Duration,
    interval: Duration,
) -> std::io::Result<OverheadBench> {
    bench_overhead_tuned(trees, duration, interval, super::DEFAULT_RESCAN_EVERY)
}

/// [`bench_overhead`] with a full `/proc` scan every `rescan_every` ticks.
pub fn bench_overhead_tuned(
    trees: usize,
    duration: Duration,
    interval: Duration,
    rescan_every: u32,
) -> std::io::Result<OverheadBench> {
    let mut children = Children(Vec::with_capacity(trees));
    for _ in 0..trees {
        children
            .0
            .push(spawn_in_group(Command::new("sleep").arg("3600"))?);
    }
    let watchdog = Watchdog::start_tuned(interval, rescan_every)?;
    // Let the thread record its id before the first reading.
    std::thread::sleep(Duration::from_millis(5));
    let cpu_before = watchdog.cpu_time().unwrap_or_default();
    let started = Instant::now();
    let handles: Vec<_> = children
        .0
        .iter()
        .map(|child| watchdog.watch(child.id(), Some(child.id()), Some(1 << 40)))
        .collect();
    std::thread::sleep(duration);
    let wall = started.elapsed();
    let cpu = watchdog
        .cpu_time()
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let stats = watchdog.stats();
    drop(handles);
    let host_processes = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(OverheadBench {
        trees,
        rescan_every,
        host_processes,
        interval_ms: ms(watchdog.interval()),
        wall_ms: ms(wall),
        ticks: stats.ticks,
        cpu_ms: ms(cpu),
        cpu_percent_of_one_core: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64().max(1e-9),
        mean_sample_us: stats.sample_time.as_secs_f64() * 1e6 / stats.ticks.max(1) as f64,
        max_sample_us: stats.max_sample_time.as_secs_f64() * 1e6,
    })
}

/// Runs `sh -c 'head -c 4G /dev/zero | tail'` (tail keeps the endless "line" in memory,
/// growing at hundreds of MiB/s) under a cap of `limit` bytes and measures the kill.
pub fn bench_kill_latency(limit: u64, interval: Duration) -> std::io::Result<KillBench> {
    let watchdog = Watchdog::start(interval)?;
    let started = Instant::now();
    let mut children = Children(vec![spawn_in_group(
        Command::new("sh").args(["-c", "head -c 4G /dev/zero | tail"]),
    )?]);
    let pid = children.0[0].id();
    let handle = watchdog.watch(pid, Some(pid), Some(limit));
    let deadline = started + Duration::from_secs(30);
    while handle.snapshot().killed.is_none() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "the allocator was not killed within 30 s (report: {:?})",
                handle.snapshot()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = children.0[0].wait();
    children.0.clear();
    let report = handle.finish();
    let kill = report.killed.clone().expect("checked above");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(KillBench {
        limit,
        interval_ms: ms(watchdog.interval()),
        crossing_to_kill_bound_ms: kill.latency_bound().map_or(f64::NAN, ms),
        spawn_to_kill_ms: ms(kill.at.saturating_duration_since(started)),
        rss_at_kill: kill.peak,
        peak_rss: report.peak_rss,
    })
}

/// Both benchmarks at the default interval (overhead with 1, 4 and 16 trees over 3 s each,
/// scanning `/proc` every tick and every [`super::DEFAULT_RESCAN_EVERY`] ticks; kill
/// latency under a 300 MiB cap), as one JSON object. (`cargo xtask bench` takes the
/// lighter rows of `cargo capped __bench watchdog` instead.)
#[cfg(test)]
pub fn bench_json() -> String {
    let overhead: Vec<_> = [(1, 1), (4, 1), (16, 1), (1, 4), (4, 4), (16, 4)]
        .into_iter()
        .map(|(trees, rescan_every)| {
            bench_overhead_tuned(
                trees,
                Duration::from_secs(3),
                DEFAULT_INTERVAL,
                rescan_every,
            )
            .map_err(|e| e.to_string())
        })
        .collect();
    let kill = bench_kill_latency(300 << 20, DEFAULT_INTERVAL).map_err(|e| e.to_string());
    serde_json::json!({ "watchdog_overhead": overhead, "watchdog_kill": kill }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full benchmark (`cargo test --release -p cargo-capped watchdog::bench -- --ignored
    /// --nocapture`), until `cargo xtask bench` can reach [`bench_json`] through the binary.
    #[test]
    #[ignore = "a benchmark: ~10 s"]
    fn report() {
        println!("{}", bench_json());
    }

    /// Prints the numbers (no timing assertion: the host is noisy).
    #[test]
    fn overhead_and_kill_latency_are_measurable() {
        let overhead = bench_overhead(4, Duration::from_millis(600), DEFAULT_INTERVAL).unwrap();
        eprintln!("{overhead:?}");
        assert!(overhead.ticks > 0, "{overhead:?}");
        assert!(overhead.cpu_percent_of_one_core.is_finite());
        let kill = bench_kill_latency(200 << 20, DEFAULT_INTERVAL).unwrap();
        eprintln!("{kill:?}");
        assert!(kill.rss_at_kill > 200 << 20);
    }
}
