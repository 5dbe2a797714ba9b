//! The project's own chores.
//!
//! * `cargo xtask ci` — what CI runs: `cargo fmt --check`, `cargo clippy -D warnings`,
//!   the docs with warnings denied, and the whole test suite (`--locked`), last.
//! * `cargo xtask bench` — the benchmarks: every bench prints JSON lines
//!   `{"bench": name, "value": v, "unit": u, "target": t?}`; this collects them into one
//!   table, so ratios come from one run on one machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
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
    clippy.args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]);
    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"]);
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"]).env("RUSTDOCFLAGS", "-D warnings");
    let steps = [("format", fmt), ("clippy", clippy), ("docs", doc), ("tests", test)];
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

/// One benchmark program: a cargo invocation whose stdout carries JSON result lines.
struct Bench {
    name: &'static str,
    args: &'static [&'static str],
}

const BENCHES: &[Bench] = &[Bench { name: "resource model", args: &["bench", "-p", "capped-test", "--bench", "slots"] }];

fn bench(filter: Option<&str>) -> ExitCode {
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut failed = false;
    for bench in BENCHES.iter().filter(|b| filter.is_none_or(|f| b.name.contains(f))) {
        eprintln!("==> bench: {}", bench.name);
        let output = cargo().args(bench.args).stderr(Stdio::inherit()).output();
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
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) if value.get("bench").is_some() => rows.push(value),
                _ => println!("{line}"),
            }
        }
    }
    println!("{:<58} {:>12} {:<6} {:>10}  verdict", "benchmark", "value", "unit", "target");
    for row in &rows {
        let value = row["value"].as_f64().unwrap_or(f64::NAN);
        let target = row.get("target").and_then(serde_json::Value::as_f64);
        let verdict = match target {
            Some(t) if value <= t => "meets target",
            Some(_) => "MISSES target",
            None => "",
        };
        println!(
            "{:<58} {:>12.3} {:<6} {:>10}  {verdict}",
            row["bench"].as_str().unwrap_or("?"),
            value,
            row["unit"].as_str().unwrap_or(""),
            target.map_or(String::new(), |t| format!("{t}")),
        );
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
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
