//! The host's state end to end: a busy host (fixture readings through `CAPPED_HOST_ROOT`)
//! degrades `t2` to width 1, the header line naming the reading and the level, `--no-degrade`
//! keeps 2, an explicit `--test-threads` is kept unless a reading is critical; `cargo capped preflight --message-format json` has every reading and a bad
//! `[preflight]` table exits 2 naming its line; `--partition hash:K/N` and `slice:K/N` run
//! every test in exactly one of the N partitions.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

/// The preflight reading keys (`cargo-capped/src/preflight/mod.rs`, `keys::ALL`), in order.
const READING_KEYS: [&str; 21] = [
    "cpu.affinity",
    "cpu.quota",
    "cpu.count",
    "load.1m",
    "load.5m",
    "load.15m",
    "psi.cpu.some.avg10",
    "psi.memory.some.avg10",
    "psi.io.some.avg10",
    "procs",
    "pids",
    "pids.cgroup",
    "nproc",
    "files.system",
    "nofile.soft",
    "nofile.hard",
    "mem.total",
    "mem.available",
    "mem.cgroup.limit",
    "mem.cgroup.usage",
    "disk.free",
];

fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Runs `t2` over the eight light tests on the fake host `host`, with `extra` flags.
fn light_run(host: &str, extra: &[&str]) -> (std::process::Output, Vec<Interval>) {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command
        .args(["t2", "--test", "light", "--message-format", "json"])
        .args(extra)
        .env("CAPPED_HOST_ROOT", host_fixture(host));
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let intervals = read_intervals(&scratch.record_file());
    assert_eq!(of_kind(&intervals, "light").len(), 8, "{intervals:#?}");
    (output, intervals)
}

fn notices(output: &std::process::Output) -> Vec<String> {
    json_lines(output)
        .iter()
        .filter(|l| l["type"] == "notice")
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect()
}

fn started_width(output: &std::process::Output) -> u64 {
    json_lines(output)
        .iter()
        .find(|l| l["type"] == "run-started")
        .and_then(|l| l["width"].as_u64())
        .expect("run-started")
}

fn run_started(output: &std::process::Output) -> serde_json::Value {
    json_lines(output)
        .into_iter()
        .find(|l| l["type"] == "run-started")
        .expect("run-started")
}

/// The human header line (`cargo capped: profile …`), on stderr.
fn header_line(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|l| l.starts_with("cargo capped: profile"))
        .expect("a header line")
        .to_string()
}

#[test]
fn a_busy_host_degrades_t2_to_width_1_and_no_degrade_keeps_2() {
    let (output, intervals) = light_run("busy", &[]);
    // The reason is on the header line (and in run-started), not in a later notice.
    let header = header_line(&output);
    assert!(
        header.starts_with("cargo capped: profile t2 — width 1 (degraded from 2: load.1m 7.90"),
        "{header}"
    );
    assert!(
        header.contains("> 1.50 ([preflight] degrade-load-per-cpu)"),
        "names the level: {header}"
    );
    let started = run_started(&output);
    assert_eq!(started["requested_width"], 2, "{started}");
    assert!(
        started["degraded_because"]
            .as_str()
            .is_some_and(|why| why.starts_with("load.1m 7.90")),
        "{started}"
    );
    assert!(
        notices(&output).iter().all(|n| !n.starts_with("degraded ")),
        "said once, on the header: {:?}",
        notices(&output)
    );
    assert_eq!(started_width(&output), 1);
    assert_eq!(max_overlap(&intervals), 1, "{intervals:#?}");

    let (output, intervals) = light_run("busy", &["--no-degrade"]);
    assert!(
        notices(&output).iter().all(|n| !n.starts_with("degraded ")),
        "{:?}",
        notices(&output)
    );
    assert_eq!(started_width(&output), 2);
    assert!(header_line(&output).contains("— width 2, "));
    assert_eq!(max_overlap(&intervals), 2, "{intervals:#?}");

    // An idle host keeps the width without a word about it.
    let (output, intervals) = light_run("idle", &[]);
    assert!(
        notices(&output)
            .iter()
            .all(|n| !n.starts_with("degraded ") && !n.starts_with("restored ")),
        "{:?}",
        notices(&output)
    );
    assert_eq!(max_overlap(&intervals), 2, "{intervals:#?}");
}

#[test]
fn an_explicit_test_threads_is_kept_unless_a_reading_is_critical() {
    // warm: load 7.0 on 4 CPUs = 1.75 per CPU, past degrade-load-per-cpu (1.5) but below
    // load-per-cpu-critical (2.0). The profile's width degrades; an explicit one is kept.
    let (output, _) = light_run("warm", &[]);
    assert_eq!(started_width(&output), 1, "{}", header_line(&output));
    let (output, intervals) = light_run("warm", &["--test-threads", "2"]);
    assert_eq!(started_width(&output), 2, "{}", header_line(&output));
    assert!(
        header_line(&output).contains("— width 2, "),
        "{}",
        header_line(&output)
    );
    assert_eq!(max_overlap(&intervals), 2, "{intervals:#?}");
    // busy: 3.95 per CPU is critical, so even an explicit width is lowered, and the header
    // says from what and why.
    let (output, intervals) = light_run("busy", &["--test-threads", "2"]);
    let header = header_line(&output);
    assert!(
        header.starts_with(
            "cargo capped: profile t2 — width 1 (degraded from --test-threads 2: load.1m 7.90 = 3.95 per CPU > 2.00 ([preflight] load-per-cpu-critical)"
        ),
        "{header}"
    );
    assert_eq!(max_overlap(&intervals), 1, "{intervals:#?}");
}

/// Runs the light and partb tests (14) as partitions `SCHEME:1/N` … `SCHEME:N/N`; returns the
/// tests each one ran, after checking each ran its tests exactly once and said so.
fn partition_runs(scheme: &str, count: u32) -> Vec<BTreeSet<String>> {
    let mut seen: Vec<BTreeSet<String>> = Vec::new();
    for k in 1..=count {
        let scratch = RunScratch::new();
        let mut command = capped_in("host-safety");
        command.args([
            "t2",
            "--test",
            "light",
            "--test",
            "partb",
            "--partition",
            &format!("{scheme}:{k}/{count}"),
            "--message-format",
            "json",
        ]);
        scratch.apply(&mut command);
        let output = command.output().unwrap();
        assert_eq!(exit_code(&output), 0, "{}", describe(&output));
        let intervals = read_intervals(&scratch.record_file());
        let ran: BTreeSet<String> = intervals.iter().map(|i| i.name.clone()).collect();
        assert_eq!(
            ran.len(),
            intervals.len(),
            "each test ran once: {intervals:#?}"
        );
        let counted = capped_counts(&output);
        assert_eq!(counted.get("passed"), Some(&ran.len()), "{counted:?}");
        assert_eq!(counted.len(), 1, "only passed tests: {counted:?}");
        let notice = notices(&output)
            .into_iter()
            .find(|n| n.starts_with(&format!("partition {scheme}:{k}/{count}")))
            .expect("a partition notice");
        assert!(
            notice.contains(&format!("running {} of 14 tests", ran.len())),
            "{notice}"
        );
        assert!(notice.contains("not counted"), "{notice}");
        seen.push(ran);
    }
    let mut all: BTreeSet<String> = BTreeSet::new();
    for ran in &seen {
        for name in ran {
            assert!(
                all.insert(name.clone()),
                "{name} ran in two partitions: {seen:?}"
            );
        }
    }
    let expected: BTreeSet<String> = (1..=8)
        .map(|i| format!("light::l{i}"))
        .chain((1..=6).map(|i| format!("partb::p{i}")))
        .collect();
    assert_eq!(all, expected);
    seen
}

#[test]
fn partitions_run_every_test_exactly_once() {
    let seen = partition_runs("hash", 2);
    assert!(
        seen.iter().all(|s| !s.is_empty()),
        "both partitions have tests: {seen:?}"
    );
}

#[test]
fn slices_run_every_test_exactly_once_and_evenly() {
    let seen = partition_runs("slice", 3);
    let sizes: Vec<usize> = seen.iter().map(BTreeSet::len).collect();
    assert_eq!(sizes, [5, 5, 4], "14 tests in 3 slices: {seen:?}");
}

fn preflight(dir: &Path, host: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut command = clean_command(cargo_capped(), dir);
    command
        .args(["capped", "preflight"])
        .args(extra)
        .env("CARGO", cargo_path());
    if let Some(host) = host {
        command.env("CAPPED_HOST_ROOT", host_fixture(host));
    }
    command.output().unwrap()
}

#[test]
fn preflight_json_has_every_reading() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let target = target.to_str().unwrap();
    // The live host: whatever its state, every reading is there, with a status.
    let started = std::time::Instant::now();
    let output = preflight(
        dir.path(),
        None,
        &["--message-format", "json", "--target-dir", target],
    );
    eprintln!("preflight took {:?} (process included)", started.elapsed());
    assert!(matches!(exit_code(&output), 0 | 3), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys: Vec<&str> = report["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, READING_KEYS);
    for reading in report["readings"].as_array().unwrap() {
        assert!(
            matches!(reading["status"].as_str(), Some("ok" | "warn" | "critical")),
            "{reading}"
        );
    }
    // A fixture host that is in trouble: exit 3, the critical reading named.
    let output = preflight(
        dir.path(),
        Some("busy"),
        &["--message-format", "json", "--target-dir", target],
    );
    assert_eq!(exit_code(&output), 3, "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "critical");
    let load = &report["readings"][3];
    assert_eq!(
        (load["key"].as_str(), load["value"].as_f64()),
        (Some("load.1m"), Some(7.9))
    );
    assert!(
        load["advice"].as_str().unwrap().contains("degrade"),
        "{load}"
    );
    // The human table.
    let output = preflight(dir.path(), Some("idle"), &["--target-dir", target]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("STATUS"), "{table}");
    assert!(table.contains("load.1m"), "{table}");
}

#[test]
fn a_bad_preflight_table_exits_2_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"badpreflight\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/lib.rs"), "").unwrap();
    std::fs::create_dir_all(root.join(".config")).unwrap();
    std::fs::write(
        root.join(".config/capped.toml"),
        "[preflight]\nload-per-cpu-warn = 1.0\nload-warn = 2\n",
    )
    .unwrap();
    let target = root.join("target");
    let output = preflight(root, None, &["--target-dir", target.to_str().unwrap()]);
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".config/capped.toml:3:1"), "{stderr}");
    assert!(stderr.contains("load-warn"), "{stderr}");
    // A run reads the same table and refuses it the same way, before building anything.
    let scratch = RunScratch::new();
    let mut command = clean_command(cargo_capped(), root);
    command
        .args(["capped", "t2"])
        .env("CARGO", cargo_path())
        .env("CARGO_TARGET_DIR", &target);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".config/capped.toml:3:1"), "{stderr}");
    assert!(!target.exists(), "nothing was built");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_width_lowered_mid_run_is_in_the_summary() {
    // An idle fake host that the `heat` binary (first: its group claims it) makes busy;
    // the runner's reading after it ends lowers the width for the light tests left.
    let host = tempfile::tempdir().unwrap();
    copy_dir(&host_fixture("idle"), host.path());
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command
        .args(["t2", "--test", "heat", "--test", "light"])
        .env("CAPPED_HOST_ROOT", host.path())
        .env("HEAT_HOST_ROOT", host.path());
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    let header = header_line(&output);
    assert!(header.contains("— width 2, "), "started at 2: {header}");
    assert!(
        text.contains("degraded t2 → width 1: load.1m 20.00"),
        "a notice when it changes: {text}"
    );
    let concurrency = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|l| l.trim_start().starts_with("Concurrency"))
        .expect("a concurrency line")
        .to_string();
    assert!(
        concurrency.contains(", width 2, lowered to 1 at "),
        "{concurrency}"
    );
}
