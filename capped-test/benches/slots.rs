//! Costs of the resource model, printed as JSON lines for `cargo xtask bench`:
//! uncontended acquire+release per scope, and how soon a waiter notices a freed slot
//! (in-process and across processes).
//!
//! Run: `cargo bench -p capped-test --bench slots`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capped_test::{Caps, Percentiles, Request};

fn caps_for(lock_dir: &Path, groups: &str) -> Caps {
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("CAPPED_LOCK_DIR", lock_dir.display().to_string()),
        ("CAPPED_GROUPS", groups.to_string()),
    ]);
    Caps::from_sources(&|var| env.get(var).cloned(), &[], None).expect("bench caps")
}

fn report(name: &str, value: f64, unit: &str, target: Option<f64>) {
    let mut line = serde_json::json!({ "bench": name, "value": value, "unit": unit });
    if let Some(target) = target {
        line["target"] = serde_json::json!(target);
    }
    println!("{line}");
}

fn uncontended(lock_dir: &Path, scope: &str, iterations: u32) -> f64 {
    let caps = caps_for(lock_dir, &format!("bench-{scope}=1@{scope}"));
    let request = Request::new().group(format!("bench-{scope}"));
    let resolved = request.resolve(&caps).unwrap();
    // Warm up: opens the lock file once.
    drop(resolved.try_take(Instant::now()).unwrap());
    let started = Instant::now();
    for _ in 0..iterations {
        let guard = resolved
            .try_take(Instant::now())
            .unwrap()
            .expect("uncontended");
        drop(guard);
    }
    started.elapsed().as_nanos() as f64 / f64::from(iterations)
}

/// Time from a holder's release (in another thread) to the waiter holding the slot.
fn notice_in_process(lock_dir: &Path, scope: &str, rounds: u32) -> Percentiles {
    let caps = std::sync::Arc::new(caps_for(
        lock_dir,
        &format!("bench-notice-{scope}=1@{scope}"),
    ));
    let name = format!("bench-notice-{scope}");
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let holder = Request::new().group(&name).acquire_with(&caps).unwrap();
        let (caps2, name2) = (caps.clone(), name.clone());
        let waiter = std::thread::spawn(move || {
            let guard = Request::new().group(&name2).acquire_with(&caps2).unwrap();
            let at = Instant::now();
            drop(guard);
            at
        });
        std::thread::sleep(Duration::from_millis(20));
        let released = Instant::now();
        drop(holder);
        let acquired = waiter.join().unwrap();
        samples.push(acquired.saturating_duration_since(released));
    }
    Percentiles::of(&samples)
}

/// The child side of `notice_across_processes`: hold the slot until told, then say when
/// it was released (unix µs) and exit.
fn holder_child(lock_dir: &Path) {
    let caps = caps_for(lock_dir, "bench-xp=1@host");
    let guard = Request::new()
        .group("bench-xp")
        .acquire_with(&caps)
        .unwrap();
    println!("held");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let at = capped_test::protocol::now_us();
    drop(guard);
    println!("{at}");
}

fn notice_across_processes(lock_dir: &Path, rounds: u32) -> Percentiles {
    let caps = std::sync::Arc::new(caps_for(lock_dir, "bench-xp=1@host"));
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let caps = caps.clone();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--holder", &lock_dir.display().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held");
        let waiter = std::thread::spawn(move || {
            let guard = Request::new()
                .group("bench-xp")
                .acquire_with(&caps)
                .unwrap();
            let at = capped_test::protocol::now_us();
            drop(guard);
            at
        });
        std::thread::sleep(Duration::from_millis(30));
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let released: u64 = line.trim().parse().unwrap();
        let acquired = waiter.join().unwrap();
        child.wait().unwrap();
        samples.push(Duration::from_micros(acquired.saturating_sub(released)));
    }
    Percentiles::of(&samples)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--holder") {
        holder_child(Path::new(&args[2]));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let process_ns = uncontended(dir.path(), "process", 200_000);
    report(
        "slot acquire+release, process scope",
        process_ns / 1000.0,
        "us",
        Some(1.0),
    );
    let host_ns = uncontended(dir.path(), "host", 20_000);
    report(
        "slot acquire+release, host scope",
        host_ns / 1000.0,
        "us",
        Some(50.0),
    );
    let p = notice_in_process(dir.path(), "process", 30);
    report(
        "notice a freed slot, in-process p50",
        p.p50.as_secs_f64() * 1000.0,
        "ms",
        None,
    );
    report(
        "notice a freed slot, in-process max",
        p.max.as_secs_f64() * 1000.0,
        "ms",
        Some(20.0),
    );
    let p = notice_across_processes(dir.path(), 30);
    report(
        "notice a freed slot, across processes p50",
        p.p50.as_secs_f64() * 1000.0,
        "ms",
        None,
    );
    report(
        "notice a freed slot, across processes p95",
        p.p95.as_secs_f64() * 1000.0,
        "ms",
        Some(20.0),
    );
    report(
        "notice a freed slot, across processes max",
        p.max.as_secs_f64() * 1000.0,
        "ms",
        None,
    );
}
