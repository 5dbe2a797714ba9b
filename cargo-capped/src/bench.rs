//! `cargo capped __bench watchdog|preflight` (hidden): the host-safety benchmarks for
//! `cargo xtask bench`, printed as one JSON object per line on stdout:
//! `{"bench":NAME,"value":N,"unit":U,"target":T}` (`target` only where the issue sets one;
//! `note` says what a row without one means).
//!
//! * `watchdog`: the watchdog thread's CPU time while it watches 2 and 16 idle binaries
//!   (50 ms interval, a full `/proc` scan every fourth tick), and the time from a tree
//!   crossing a 300 MiB cap to its kill, on a real allocating process tree.
//! * `preflight`: the wall time of a full preflight report (target ≤ 50 ms) and of the
//!   readings a degrade decision takes between binaries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::BenchWhat;
use crate::errors::{Error, Result};
use crate::host::HostRoot;
use crate::host::process_tree::bench_sample;
use crate::preflight::degrade::Signals;
use crate::preflight::{Thresholds, bench_collect, collect};
use crate::watchdog::DEFAULT_INTERVAL;
use crate::watchdog::bench::{bench_kill_latency, bench_overhead};

/// How long each overhead measurement watches.
const OVERHEAD_WINDOW: Duration = Duration::from_secs(3);

/// Runs one benchmark and prints its rows; the exit status is 0, or an error when the
/// benchmark itself could not run.
pub fn run(what: BenchWhat) -> Result<i32> {
    let rows = match what {
        BenchWhat::Watchdog => watchdog_rows(),
        BenchWhat::Preflight => preflight_rows(),
    }
    .map_err(|e| Error::internal("the benchmark failed", e))?;
    for row in rows {
        println!("{row}");
    }
    Ok(0)
}

fn watchdog_rows() -> std::io::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for (trees, note) in [
        (2, "as in a t2 run: one or two binaries at once"),
        (16, "a wide run; grows with the host's process count"),
    ] {
        let overhead = bench_overhead(trees, OVERHEAD_WINDOW, DEFAULT_INTERVAL)?;
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
