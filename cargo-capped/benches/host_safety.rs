//! The host-safety benchmarks for `cargo xtask bench`, printed as one JSON object per line
//! on stdout: `{"bench":NAME,"value":N,"unit":U,"target":T}` (`target` only where one is
//! set; `note` says what a row without one means).
//!
//! Run: `cargo bench -p cargo-capped --bench host_safety -- watchdog|preflight` (both
//! when neither is named).
//!
//! * `watchdog`: the watchdog thread's CPU time while it watches 2 and 16 idle binaries
//!   (50 ms interval, a full `/proc` scan every fourth tick), and the time from a tree
//!   crossing a 300 MiB cap to its kill, on a real allocating process tree.
//! * `watchdog-tuning`: the overhead with 1, 4 and 16 trees, scanning `/proc` every tick
//!   and every [`DEFAULT_RESCAN_EVERY`] ticks, and the kill latency, as one JSON object
//!   (for choosing the rescan period; ~20 s).
//! * `preflight`: the wall time of a full preflight report (target ≤ 50 ms) and of the
//!   readings a degrade decision takes between binaries.
//!
//! Under `cargo test --benches` (no `--bench` argument) it only checks, briefly, that the
//! watchdog measurements work, so a broken benchmark shows up without a benchmark run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cargo_capped::host::HostRoot;
use cargo_capped::host::process_tree::TreeSampler;
use cargo_capped::preflight::degrade::Signals;
use cargo_capped::preflight::{Thresholds, collect};
use cargo_capped::process;
use cargo_capped::watchdog::{DEFAULT_INTERVAL, DEFAULT_RESCAN_EVERY, Watchdog};
use serde::Serialize;
use serde_json::json;

/// How long each overhead measurement watches.
const OVERHEAD_WINDOW: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benchmarking = args.iter().any(|arg| arg == "--bench");
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !benchmarking && named.is_empty() {
        return smoke_check();
    }
    let whats = if named.is_empty() {
        vec!["watchdog", "preflight"]
    } else {
        named
    };
    for what in whats {
        let rows = match what {
            "watchdog" => watchdog_rows(),
            "watchdog-tuning" => watchdog_tuning().map(|row| vec![row]),
            "preflight" => preflight_rows(),
            other => {
                eprintln!(
                    "host_safety: unknown benchmark `{other}`; expected watchdog, watchdog-tuning or preflight"
                );
                return ExitCode::from(2);
            }
        };
        match rows {
            Ok(rows) => rows.iter().for_each(|row| println!("{row}")),
            Err(e) => {
                eprintln!("host_safety: the {what} benchmark failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The watchdog's cost while it watches `trees` idle process trees.
#[derive(Debug, Clone, Serialize)]
struct OverheadBench {
    /// Trees watched.
    trees: usize,
    /// A full `/proc` scan every this many ticks.
    rescan_every: u32,
    /// Processes on the host (what one `/proc` scan reads).
    host_processes: usize,
    /// The sampling interval, in ms.
    interval_ms: f64,
    /// Wall time measured, in ms.
    wall_ms: f64,
    /// Ticks taken.
    ticks: u64,
    /// CPU time of the watchdog thread, in ms.
    cpu_ms: f64,
    /// That CPU time as a percentage of one core over the wall time.
    cpu_percent_of_one_core: f64,
    /// Mean wall time of one tick's `sample_many`, in µs.
    mean_sample_us: f64,
    /// The slowest tick, in µs.
    max_sample_us: f64,
}

/// The time from crossing a cap to the kill, measured on a real allocating tree.
#[derive(Debug, Clone, Serialize)]
struct KillBench {
    /// The cap, in bytes.
    limit: u64,
    /// The sampling interval, in ms.
    interval_ms: f64,
    /// Upper bound of crossing → kill: the kill minus the last sample under the cap, in ms.
    crossing_to_kill_bound_ms: f64,
    /// From spawning the allocator to the kill, in ms.
    spawn_to_kill_ms: f64,
    /// RSS in the sample that crossed, in bytes.
    rss_at_kill: u64,
    /// The highest RSS seen, in bytes.
    peak_rss: u64,
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
    process::spawn(command.stdin(Stdio::null()).stdout(Stdio::null()))
}

/// Watches `trees` sleeping processes (each its own group, with a cap they never reach) at
/// `interval` for `duration`, with a full `/proc` scan every `rescan_every` ticks, and
/// reports the watchdog thread's CPU time.
fn bench_overhead(
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
fn bench_kill_latency(limit: u64, interval: Duration) -> std::io::Result<KillBench> {
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

/// Mean time of one [`TreeSampler::sample`] of `root`'s tree on the live system, over
/// `iterations` samples.
fn bench_sample(root: u32, iterations: u32) -> Duration {
    let mut sampler = TreeSampler::new(HostRoot::system());
    let iterations = iterations.max(1);
    let start = Instant::now();
    for _ in 0..iterations {
        let _ = std::hint::black_box(sampler.sample(root, Some(root)));
    }
    start.elapsed() / iterations
}

fn watchdog_rows() -> std::io::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for (trees, note) in [
        (2, "as in a t2 run: one or two binaries at once"),
        (16, "a wide run; grows with the host's process count"),
    ] {
        let overhead = bench_overhead(
            trees,
            OVERHEAD_WINDOW,
            DEFAULT_INTERVAL,
            DEFAULT_RESCAN_EVERY,
        )?;
        rows.push(json!({
            "bench": format!("watchdog CPU, {trees} binaries watched (50 ms), % of one core"),
            "value": overhead.cpu_percent_of_one_core,
            "unit": "%",
            "note": note,
            "ticks": overhead.ticks,
            "mean_sample_us": overhead.mean_sample_us,
            "host_processes": overhead.host_processes,
        }));
    }
    let scan = bench_sample(std::process::id(), 50);
    rows.push(json!({
        "bench": "watchdog one full /proc scan of a tree",
        "value": scan.as_secs_f64() * 1e3,
        "unit": "ms",
        "note": "every 4th tick; the others re-read known members",
    }));
    let kill = bench_kill_latency(300 << 20, DEFAULT_INTERVAL)?;
    rows.push(json!({
        "bench": "watchdog crossing 300 MiB cap → kill (upper bound)",
        "value": kill.crossing_to_kill_bound_ms,
        "unit": "ms",
        "target": 1000.0,
        "interval_ms": kill.interval_ms,
        "rss_at_kill": kill.rss_at_kill,
    }));
    rows.push(json!({
        "bench": "watchdog spawn of a 4 GiB allocator → kill",
        "value": kill.spawn_to_kill_ms,
        "unit": "ms",
        "note": "includes the allocation up to the cap",
    }));
    Ok(rows)
}

/// The overhead with 1, 4 and 16 trees over 3 s each, scanning `/proc` every tick and
/// every [`DEFAULT_RESCAN_EVERY`] ticks, and the kill latency under a 300 MiB cap, as one
/// JSON object (each measurement, or the error that stopped it).
fn watchdog_tuning() -> std::io::Result<serde_json::Value> {
    let overhead: Vec<_> = [1, 4, 16]
        .into_iter()
        .flat_map(|trees| [(trees, 1), (trees, DEFAULT_RESCAN_EVERY)])
        .map(|(trees, rescan_every)| {
            bench_overhead(trees, OVERHEAD_WINDOW, DEFAULT_INTERVAL, rescan_every)
                .map_err(|e| e.to_string())
        })
        .collect();
    let kill = bench_kill_latency(300 << 20, DEFAULT_INTERVAL).map_err(|e| e.to_string());
    Ok(json!({ "watchdog_overhead": overhead, "watchdog_kill": kill }))
}

/// The median of `runs` timings of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Mean time of one [`collect`] on the live system with default thresholds, over
/// `iterations` runs.
fn bench_collect(target_dir: &Path, iterations: u32) -> Duration {
    let host = HostRoot::system();
    let thresholds = Thresholds::default();
    let iterations = iterations.max(1);
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(collect(&host, target_dir, &thresholds));
    }
    start.elapsed() / iterations
}

fn preflight_rows() -> std::io::Result<Vec<serde_json::Value>> {
    let host = HostRoot::system();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let thresholds = Thresholds::default();
    let first = {
        let started = Instant::now();
        let report = collect(&host, &target, &thresholds);
        std::hint::black_box(report);
        started.elapsed().as_secs_f64() * 1e3
    };
    let full = median_ms(21, || {
        std::hint::black_box(collect(&host, &target, &thresholds));
    });
    let mean = bench_collect(&target, 21).as_secs_f64() * 1e3;
    let signals = median_ms(201, || {
        std::hint::black_box(Signals::read(&host));
    });
    Ok(vec![
        json!({
            "bench": "preflight: full report (median of 21)",
            "value": full,
            "unit": "ms",
            "target": 50.0,
            "first_ms": first,
            "mean_ms": mean,
        }),
        json!({
            "bench": "preflight: degrade readings between binaries (median)",
            "value": signals,
            "unit": "ms",
            "note": "paid after each binary",
        }),
    ])
}

/// Checks briefly that the measurements work (no timing assertion: the host is noisy).
fn smoke_check() -> ExitCode {
    let overhead = bench_overhead(
        4,
        Duration::from_millis(600),
        DEFAULT_INTERVAL,
        DEFAULT_RESCAN_EVERY,
    )
    .expect("measuring the watchdog's overhead");
    eprintln!("{overhead:?}");
    assert!(overhead.ticks > 0, "{overhead:?}");
    assert!(overhead.cpu_percent_of_one_core.is_finite());
    let kill = bench_kill_latency(200 << 20, DEFAULT_INTERVAL).expect("measuring a kill");
    eprintln!("{kill:?}");
    assert!(kill.rss_at_kill > 200 << 20);
    assert!(bench_collect(Path::new(env!("CARGO_MANIFEST_DIR")), 1) > Duration::ZERO);
    ExitCode::SUCCESS
}
