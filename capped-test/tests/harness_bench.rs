//! Harness mode's benchmark (ignored in normal runs). Run it in release:
//!
//! ```text
//! cargo test --release -p capped-test --test harness_bench -- --ignored --nocapture
//! ```
//!
//! It measures
//!
//! * the per-test overhead of the capped harness on 2000 no-op `#[capped]` tests
//!   (`harness_noop`) against libtest running 2000 plain `#[test]`s and 2000 `#[capped]`
//!   tests (`harness_noop_libtest`), all with `--test-threads 2`, in one process each; and
//!   against `cargo nextest run` (a process per test) for reference;
//! * the makespan of a mixed suite whose best schedule is known (width 2, 3 gpu tests of 300 ms, 6 light tests
//!   of 200 ms; best schedule 1100 ms) under the capped harness and under libtest.
//!
//! Each result is printed for people and as one line `capped-bench {json}` for
//! `cargo xtask bench` to collect: `{"name": .., "value": .., "unit": .., "note": ..}`.

mod harness_support;

use std::time::Duration;

use harness_support::{Output, Sandbox, makespan};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(name: &str, value: f64, unit: &str, note: &str) {
    println!("{name:<44} {value:>10.3} {unit:<6} {note}");
    println!(
        "capped-bench {}",
        serde_json::json!({ "name": name, "value": value, "unit": unit, "note": note })
    );
}

fn timed(sandbox: &Sandbox, target: &str, args: &[&str]) -> Output {
    let out = sandbox.run(target, args, Duration::from_secs(300));
    assert_eq!(out.code, Some(0), "{target} {args:?}: {}", out.stderr);
    out
}

/// CPU time (user + system) of this process's waited-for children so far, in ms, from
/// `/proc/self/stat` (in clock ticks of 10 ms; summed over many runs).
fn children_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // Fields 16 and 17 (cutime, cstime), counted from field 3 after the command.
    let ticks: f64 = fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap();
    ticks * 10.0
}

/// Wall and CPU time in ms of one run of `target args`.
fn measure(target: &str, args: &[&str]) -> (f64, f64) {
    let cpu = children_cpu_ms();
    let wall = timed(&Sandbox::new(), target, args).took.as_secs_f64() * 1e3;
    (wall, children_cpu_ms() - cpu)
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
fn harness_bench() {
    const RUNS: usize = 15;
    const TESTS: f64 = 2000.0;
    let threads = ["--test-threads", "2"];
    let with = |filter: &'static str| [threads[0], threads[1], filter];

    // Warm the page cache and find the binaries.
    for target in ["harness_noop", "harness_noop_libtest"] {
        timed(&Sandbox::new(), target, &with("none-match"));
    }
    // Interleaved, so drifting machine load hits every variant alike.
    let mut samples: [Vec<f64>; 6] = Default::default();
    let mut cpu = [0.0f64; 6];
    for _ in 0..RUNS {
        let runs: [(&str, [&str; 3]); 6] = [
            ("harness_noop", with("m")),
            ("harness_noop_libtest", with("plain::")),
            ("harness_noop_libtest", with("capped::")),
            ("harness_noop", with("none-match")),
            ("harness_noop_libtest", with("plain::none-match")),
            ("harness_noop_libtest", with("capped::none-match")),
        ];
        for (i, (target, args)) in runs.iter().enumerate() {
            let (wall, used) = measure(target, args);
            samples[i].push(wall);
            cpu[i] += used;
        }
    }
    // The machine is shared: the best of the runs is the estimate least disturbed by other
    // load (the medians are printed too).
    let best_of = |values: &Vec<f64>| values.iter().copied().fold(f64::INFINITY, f64::min);
    let medians = samples.clone().map(median);
    let [ours, plain, capped, ours_0, plain_0, capped_0] = samples.each_ref().map(best_of);
    let per_test = |total: f64, empty: f64| (total - empty).max(0.0) / TESTS * 1e3;
    let (ours_us, plain_us, capped_us) = (
        per_test(ours, ours_0),
        per_test(plain, plain_0),
        per_test(capped, capped_0),
    );
    report(
        "noop.harness.total",
        ours,
        "ms",
        "2000 #[capped] no-op tests, capped harness",
    );
    report(
        "noop.libtest_plain.total",
        plain,
        "ms",
        "2000 plain #[test], libtest",
    );
    report(
        "noop.libtest_capped.total",
        capped,
        "ms",
        "2000 #[capped], libtest",
    );
    report(
        "noop.harness.per_test",
        ours_us,
        "us",
        "process start subtracted",
    );
    report(
        "noop.libtest_plain.per_test",
        plain_us,
        "us",
        "process start subtracted",
    );
    report(
        "noop.libtest_capped.per_test",
        capped_us,
        "us",
        "process start subtracted",
    );
    report(
        "noop.harness_vs_libtest_plain",
        ours / plain,
        "x",
        "whole run; target <= 1.2",
    );
    report(
        "noop.harness_vs_libtest_capped",
        ours / capped,
        "x",
        "whole run, same #[capped] tests",
    );
    report(
        "noop.harness_vs_libtest_plain.median",
        medians[0] / medians[1],
        "x",
        "medians of the runs",
    );
    report(
        "noop.harness_vs_libtest_capped.median",
        medians[0] / medians[2],
        "x",
        "medians of the runs",
    );
    // CPU time is less disturbed by other load than wall time.
    let cpu_per_test = |i: usize, empty: usize| (cpu[i] - cpu[empty]) / RUNS as f64 / TESTS * 1e3;
    let (ours_cpu, plain_cpu, capped_cpu) =
        (cpu_per_test(0, 3), cpu_per_test(1, 4), cpu_per_test(2, 5));
    report(
        "noop.harness.cpu_per_test",
        ours_cpu,
        "us",
        "user+sys, process start subtracted",
    );
    report(
        "noop.libtest_plain.cpu_per_test",
        plain_cpu,
        "us",
        "user+sys, process start subtracted",
    );
    report(
        "noop.libtest_capped.cpu_per_test",
        capped_cpu,
        "us",
        "user+sys, process start subtracted",
    );
    report(
        "noop.harness_vs_libtest_plain.cpu",
        cpu[0] / cpu[1],
        "x",
        "CPU time of the whole runs",
    );
    report(
        "noop.harness_vs_libtest_capped.cpu",
        cpu[0] / cpu[2],
        "x",
        "CPU time of the whole runs",
    );
    nextest_reference();

    // The mixed suite: the makespan from the tests' own start/end records, and the whole
    // process's wall time.
    let best = 1100.0;
    for (target, label) in [
        ("harness_fixture", "mixed.harness"),
        ("harness_fixture_libtest", "mixed.libtest_capped"),
    ] {
        let mut spans = Vec::new();
        let mut walls = Vec::new();
        for _ in 0..5 {
            let sandbox = Sandbox::new().env("HARNESS_FIXTURE_UNIT_MS", 100);
            let out = timed(&sandbox, target, &with("mixed::"));
            let all: Vec<(u64, u64)> = sandbox.spans().values().copied().collect();
            assert_eq!(all.len(), 9);
            spans.push(makespan(&all).as_secs_f64() * 1e3);
            walls.push(out.took.as_secs_f64() * 1e3);
        }
        let span = median(spans);
        report(
            &format!("{label}.makespan"),
            span,
            "ms",
            "first start to last end; best 1100",
        );
        report(
            &format!("{label}.vs_best"),
            span / best,
            "x",
            if label == "mixed.harness" {
                "target <= 1.10"
            } else {
                "libtest parks a thread on the busy gpu"
            },
        );
        report(
            &format!("{label}.wall"),
            median(walls),
            "ms",
            "whole process",
        );
    }
}

/// `cargo nextest run` on 100 and on 10 of the no-op tests: the difference per test.
fn nextest_reference() {
    let available = std::process::Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        println!("cargo nextest is not installed: no nextest reference");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap().to_path_buf();
    let release = exe.ancestors().nth(2).and_then(|p| p.file_name()) == Some("release".as_ref());
    harness_support::binary("harness_noop");
    let run = |filter: &str| {
        let sandbox = Sandbox::new();
        let mut command =
            sandbox.command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .args(["nextest", "run", "--test-threads", "2", "--package"])
            .arg(env!("CARGO_PKG_NAME"))
            .args(["--test", "harness_noop", "--manifest-path"])
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg(filter)
            .env("CARGO_TARGET_DIR", &target_dir);
        if release {
            command.arg("--release");
        }
        let out = sandbox.run_command(command, Duration::from_secs(600));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.took.as_secs_f64() * 1e3
    };
    let mut hundred = Vec::new();
    let mut ten = Vec::new();
    for _ in 0..3 {
        hundred.push(run("m00::"));
        ten.push(run("m00::d0::"));
    }
    let per_test = (median(hundred) - median(ten)) / 90.0 * 1e3;
    report(
        "noop.nextest.per_test",
        per_test,
        "us",
        "cargo nextest run -j 2, a process per test (reference)",
    );
}
