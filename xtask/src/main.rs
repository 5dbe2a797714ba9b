//! The project's own chores.
//!
//! * `cargo xtask ci` — what CI runs: `cargo fmt --check`, `cargo clippy -D warnings`,
//!   the docs with warnings denied, and the whole test suite (`--locked`), last: every
//!   test, doc tests included, through this repository's own runner (`cargo capped t2
//!   --workspace`, built from this checkout), so each change is tested by the runner it
//!   makes. The last line is the plain `N passed, M failed`, which log readers that know
//!   libtest's counts read.
//! * `cargo xtask bench` — the benchmarks: every bench prints JSON lines
//!   `{"bench": name, "value": v, "unit": u, "target": t?}`; this collects them into one
//!   table, so ratios come from one run on one machine. `cargo xtask bench NAME` runs only
//!   the benches whose name contains NAME (`cargo xtask bench output`: the runner's output
//!   handling; `cargo xtask bench isolation`: the cost of a process per test; `cargo xtask
//!   bench shards`: how evenly `--partition time:K/N` deals a suite, against `hash:K/N`).

mod isolation_suite;
mod mixed_suite;
mod output_suite;
mod shard_suite;

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

/// Passed and failed tests of the test step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: usize,
    failed: usize,
}

/// The counts of the runner's `run-finished` JSON event among `stdout`'s lines: flaky tests
/// passed; failed, timed out, killed for memory and not run ones failed (ignored: neither).
fn runner_counts(stdout: &str) -> Option<Counts> {
    let finished = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "run-finished")?;
    let counts = finished["counts"].as_object()?;
    let mut result = Counts::default();
    for (keyword, n) in counts {
        let n = n.as_u64().unwrap_or(0) as usize;
        match keyword.as_str() {
            "passed" | "flaky" => result.passed += n,
            "ignored" => {}
            _ => result.failed += n,
        }
    }
    Some(result)
}

/// Reads a test step's counts from its stdout.
type CountFn = fn(&str) -> Option<Counts>;

/// Runs a test step whose stdout is parsed by `count` (and passed on when `echo`): false
/// when it failed, with the counts it reported, if any.
fn test_step(
    name: &str,
    mut command: Command,
    echo: bool,
    count: CountFn,
) -> (bool, Option<Counts>) {
    eprintln!("==> {name}");
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output();
    let (ok, counts) = match output {
        Ok(output) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            if echo {
                print!("{stdout}");
            }
            let counts = count(&stdout);
            let failed_tests = counts.is_some_and(|c| c.failed > 0);
            (output.status.success() && !failed_tests, counts)
        }
        Err(e) => {
            eprintln!("cannot run {name}: {e}");
            (false, None)
        }
    };
    eprintln!(
        "==> {name}: {} in {:.1}s",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    (ok, counts)
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
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    let steps = [("format", fmt), ("clippy", clippy), ("docs", doc)];
    let mut failed = Vec::new();
    for (name, command) in steps {
        if !step(name, command) {
            failed.push(name);
        }
    }
    // The runner from this checkout (the debug build the end-to-end tests use too, so it
    // costs no extra build), run as cargo runs a subcommand: `cargo-capped capped t2 …`.
    // JSON events on stdout give the counts; the human report goes to stderr as usual.
    // `--no-degrade`: CI has a time limit, and two tests at once is no more than `cargo
    // test` would run on the 2-core machines CI uses.
    let mut tests = cargo();
    tests.args([
        "run",
        "--quiet",
        "--locked",
        "-p",
        "cargo-capped",
        "--",
        "capped",
        "t2",
        "--workspace",
        "--locked",
        "--no-degrade",
        "--message-format",
        "json",
    ]);
    // Doc tests included: the runner runs them under the caps too.
    let name = "tests (cargo capped t2)";
    let (ok, total) = test_step(name, tests, false, runner_counts);
    if !ok {
        failed.push(name);
    }
    let code = if failed.is_empty() {
        eprintln!("xtask ci: all steps passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask ci: failed steps: {}", failed.join(", "));
        ExitCode::FAILURE
    };
    // Last, alone on its line: the closing counts CI log readers recognize.
    if let Some(total) = total {
        println!("{} passed, {} failed", total.passed, total.failed);
    }
    code
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
        name: "runner time shards",
        kind: Kind::Here(runner_time_shards),
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

/// Runs the time-shard benchmark with the release runner.
fn runner_time_shards(root: &Path) -> Result<Vec<serde_json::Value>, String> {
    shard_suite::run(root, &release_runner(root)?)
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
    // As wide as the longest name, so the columns line up.
    let width = rows
        .iter()
        .filter_map(|row| row["bench"].as_str())
        .map(|name| name.chars().count())
        .fold(58, usize::max);
    println!(
        "{:<width$} {:>12} {:<6} {:>10}  verdict",
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
            "{:<width$} {:>12.3} {:<6} {:>10}  {verdict}",
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
                 ci             format check, clippy -D warnings, docs, all tests (--locked) through cargo capped\n  \
                 bench [NAME]   run the benchmarks (those whose name contains NAME) and print one table"
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_runners_run_finished_event() {
        let out = concat!(
            r#"{"type":"run-started","tests":9}"#,
            "\n",
            r#"{"type":"test-finished","status":"failed"}"#,
            "\n",
            r#"{"type":"run-finished","counts":{"passed":4,"flaky":1,"failed":1,"timed-out":1,"not-run":1,"ignored":2}}"#,
            "\n"
        );
        assert_eq!(
            runner_counts(out),
            Some(Counts {
                passed: 5,
                failed: 3
            })
        );
        assert_eq!(
            runner_counts(r#"{"type":"run-started"}"#),
            None,
            "no summary"
        );
    }
}
