//! The project's own chores.
//!
//! * `cargo xtask ci` — what CI runs: `cargo fmt --check`, `cargo clippy -D warnings`,
//!   the docs with warnings denied, and the whole test suite (`--locked`), last.
//! * `cargo xtask bench` — the benchmarks: every bench prints JSON lines
//!   `{"bench": name, "value": v, "unit": u, "target": t?}`; this collects them into one
//!   table, so ratios come from one run on one machine. `cargo xtask bench NAME` runs only
//!   the benches whose name contains NAME (`cargo xtask bench output`: the runner's output
//!   handling; `cargo xtask bench isolation`: the cost of a process per test).

mod isolation_suite;
mod mixed_suite;
mod output_suite;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a step, printing its name and time; false when it failed.
fn step(name: &str, mut command: Command) -> bool {
    eprintln!("==> {name}");
    let started = Instant::now();
    let status = command.status();
    let ok = matches!(status, Ok(s) if s.success());
    eprintln!(
        "==> {name}: {} in {:.1}s",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    ok
}

fn ci() -> ExitCode {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"]);
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    let steps = [
        ("format", fmt),
        ("clippy", clippy),
        ("docs", doc),
        ("tests", test),
    ];
    let mut failed = Vec::new();
    for (name, command) in steps {
        if !step(name, command) {
            failed.push(name);
        }
    }
    if failed.is_empty() {
        eprintln!("xtask ci: all steps passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask ci: failed steps: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// How a benchmark runs.
enum Kind {
    /// A cargo invocation whose stdout carries JSON result lines.
    Cargo(&'static [&'static str]),
    /// Code in this program that prints JSON result lines itself.
    Here(fn(&Path) -> Result<Vec<serde_json::Value>, String>),
}

/// One benchmark.
struct Bench {
    name: &'static str,
    kind: Kind,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "resource model",
        kind: Kind::Cargo(&["bench", "-p", "capped-test", "--bench", "slots"]),
    },
    Bench {
        name: "harness mode",
        kind: Kind::Cargo(&[
            "test",
            "--release",
            "--locked",
            "-p",
            "capped-test",
            "--test",
            "harness_bench",
            "--",
            "--ignored",
            "--nocapture",
        ]),
    },
    Bench {
        name: "runner mixed suite",
        kind: Kind::Here(runner_mixed_suite),
    },
    Bench {
        name: "runner output",
        kind: Kind::Here(runner_output),
    },
    Bench {
        name: "runner isolation",
        kind: Kind::Here(runner_isolation),
    },
    Bench {
        name: "watchdog",
        kind: Kind::Cargo(&[
            "bench",
            "--locked",
            "-p",
            "cargo-capped",
            "--bench",
            "host_safety",
            "--",
            "watchdog",
        ]),
    },
    Bench {
        name: "preflight",
        kind: Kind::Cargo(&[
            "bench",
            "--locked",
            "-p",
            "cargo-capped",
            "--bench",
            "host_safety",
            "--",
            "preflight",
        ]),
    },
];

/// A result row from one line of a bench's stdout: `{"bench": ..}` JSON, or
/// `capped-bench {"name": ..}` as the harness bench prints it among libtest's lines.
fn parse_row(line: &str) -> Option<serde_json::Value> {
    let (json, key) = match line.strip_prefix("capped-bench ") {
        Some(rest) => (rest, "name"),
        None => (line, "bench"),
    };
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    let name = value.get(key)?.clone();
    value["bench"] = name;
    Some(value)
}

/// Builds the release cargo-capped (what users install); returns its path.
fn release_runner(root: &Path) -> Result<PathBuf, String> {
    let status = cargo()
        .args(["build", "--release", "--locked", "-p", "cargo-capped"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building cargo-capped failed".into());
    }
    Ok(root.join("target/release/cargo-capped"))
}

/// Runs the mixed suite with the release runner.
fn runner_mixed_suite(root: &Path) -> Result<Vec<serde_json::Value>, String> {
    mixed_suite::run(root, &release_runner(root)?)
}

/// Runs the output benchmark with the release runner.
fn runner_output(root: &Path) -> Result<Vec<serde_json::Value>, String> {
    output_suite::run(root, &release_runner(root)?)
}

/// Runs the isolation benchmark with the release runner.
fn runner_isolation(root: &Path) -> Result<Vec<serde_json::Value>, String> {
    isolation_suite::run(root, &release_runner(root)?)
}

fn bench(filter: Option<&str>) -> ExitCode {
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut failed = false;
    for bench in BENCHES
        .iter()
        .filter(|b| filter.is_none_or(|f| b.name.contains(f)))
    {
        eprintln!("==> bench: {}", bench.name);
        let args = match bench.kind {
            Kind::Cargo(args) => args,
            Kind::Here(run) => {
                match run(&workspace_root()) {
                    Ok(more) => rows.extend(more),
                    Err(e) => {
                        eprintln!("bench {} failed: {e}", bench.name);
                        failed = true;
                    }
                }
                continue;
            }
        };
        let output = cargo().args(args).stderr(Stdio::inherit()).output();
        let Ok(output) = output else {
            eprintln!("cannot run cargo for {}", bench.name);
            failed = true;
            continue;
        };
        if !output.status.success() {
            eprintln!("bench {} failed ({})", bench.name, output.status);
            failed = true;
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            match parse_row(line) {
                Some(row) => rows.push(row),
                None => eprintln!("{line}"),
            }
        }
    }
    println!(
        "{:<58} {:>12} {:<6} {:>10}  verdict",
        "benchmark", "value", "unit", "target"
    );
    for row in &rows {
        let value = row["value"].as_f64().unwrap_or(f64::NAN);
        let target = row.get("target").and_then(serde_json::Value::as_f64);
        let verdict = match target {
            Some(t) if value <= t => "meets target",
            Some(_) => "MISSES target",
            None => row
                .get("note")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(""),
        };
        println!(
            "{:<58} {:>12.3} {:<6} {:>10}  {verdict}",
            row["bench"].as_str().unwrap_or("?"),
            value,
            row["unit"].as_str().unwrap_or(""),
            target.map_or(String::new(), |t| format!("{t}")),
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 ci             format check, clippy -D warnings, all tests (--locked), docs\n  \
                 bench [NAME]   run the benchmarks (those whose name contains NAME) and print one table"
            );
            ExitCode::from(2)
        }
    }
}
