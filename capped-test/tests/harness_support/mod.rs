//! Helpers shared by `harness_mode.rs` and `harness_bench.rs`: find the fixture binaries,
//! run them in a clean, isolated environment with a deadline, and read what they recorded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The executable of test target `target` of this package, built as this test binary was
/// (same target dir and profile).
///
/// A sibling in this binary's `deps` dir is used when it is newer than every source it is
/// built from (the usual case: `cargo test` builds all test targets together); otherwise the
/// target is built with `cargo test --no-run`, whose JSON output names the executable.
pub fn binary(target: &str) -> PathBuf {
    static CACHE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = cache.get(target) {
        return path.clone();
    }
    let path = fresh_sibling(target).unwrap_or_else(|| build(target));
    cache.insert(target.to_string(), path.clone());
    path
}

fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent().expect("the deps dir").to_path_buf()
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let mtime = if meta.is_dir() {
            newest_mtime(&path)
        } else {
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(mtime);
    }
    newest
}

fn fresh_sibling(target: &str) -> Option<PathBuf> {
    let prefix = format!("{target}-");
    let (mtime, path) = std::fs::read_dir(deps_dir())
        .ok()?
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()?;
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = package.join("tests");
    // The library, the macros, the target's own files and the suite a `_libtest` twin
    // includes.
    let sources = [
        package.join("src"),
        package.join("macros/src"),
        package.join("Cargo.toml"),
        tests.join(format!("{target}.rs")),
        tests.join(target),
        tests.join(target.trim_end_matches("_libtest")),
    ];
    let newest_source = sources
        .iter()
        .map(|p| {
            if p.is_dir() {
                newest_mtime(p)
            } else {
                // A missing path is no source.
                p.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            }
        })
        .max()
        .unwrap();
    (mtime >= newest_source).then_some(path)
}

fn build(target: &str) -> PathBuf {
    let deps = deps_dir();
    let profile_dir = deps.parent().expect("the profile dir");
    let target_dir = profile_dir.parent().expect("the target dir");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["test", "--no-run", "--message-format=json", "--package"])
        .arg(env!("CARGO_PKG_NAME"))
        .args(["--test", target, "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .stderr(Stdio::inherit());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
    }
    let output = command.output().expect("cargo runs");
    assert!(output.status.success(), "building {target} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == target
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no executable for {target}"))
}

/// A finished child.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub took: Duration,
}

impl Output {
    /// The `test NAME ... RESULT` lines, as (name, result).
    pub fn results(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix("test "))
            .filter_map(|rest| rest.split_once(" ... "))
            .map(|(name, result)| (name.to_string(), result.to_string()))
            .collect()
    }

    /// The closing `test result:` line without its time.
    pub fn summary(&self) -> String {
        let line = self
            .stdout
            .lines()
            .rfind(|line| line.starts_with("test result:"))
            .unwrap_or_else(|| panic!("no `test result:` line in\n{}", self.stdout));
        line.split("; finished in").next().unwrap().to_string()
    }
}

/// An isolated environment for one child: its own lock dir and run dir (so neither the
/// groups nor the width are shared with other tests or runs), a log file, and nothing of
/// the caller's `CAPPED_*`, `RUST_TEST_THREADS`, nextest or fixture variables.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Sandbox {
            dir,
            envs: Vec::new(),
        }
    }

    /// Sets a variable for the child.
    pub fn env(mut self, var: &str, value: impl ToString) -> Sandbox {
        self.envs.push((var.to_string(), value.to_string()));
        self
    }

    /// Sets `CAPPED_EVENTS` to [`Sandbox::events_path`].
    pub fn with_events(self) -> Sandbox {
        let path = self.events_path();
        self.env("CAPPED_EVENTS", path.display())
    }

    /// The fixture log's path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The events file's path.
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// A command for `program` in this sandbox.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for (var, _) in std::env::vars() {
            if var.starts_with("CAPPED")
                || var.starts_with("NEXTEST")
                || var.starts_with("HARNESS_FIXTURE_")
                || var == "RUST_TEST_THREADS"
                || var == "RUST_BACKTRACE"
            {
                command.env_remove(var);
            }
        }
        command
            .env("CAPPED_LOCK_DIR", self.dir.path().join("locks"))
            .env("CAPPED_RUN_DIR", self.dir.path().join("run"))
            .env("HARNESS_FIXTURE_LOG", self.log_path())
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs test target `target` with `args`; kills it and fails after `deadline`.
    pub fn run(&self, target: &str, args: &[&str], deadline: Duration) -> Output {
        let mut command = self.command(binary(target));
        command.args(args);
        self.run_command(command, deadline)
    }

    /// Runs `command` with its output in files; kills it and fails after `deadline`.
    pub fn run_command(&self, mut command: Command, deadline: Duration) -> Output {
        let stdout_path = self.dir.path().join("stdout");
        let stderr_path = self.dir.path().join("stderr");
        command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let started = Instant::now();
        let mut child = command.spawn().expect("the child starts");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{command:?} did not finish within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                    std::fs::read_to_string(&stdout_path).unwrap_or_default(),
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            code: status.code(),
            took: started.elapsed(),
            stdout: std::fs::read_to_string(&stdout_path).unwrap(),
            stderr: std::fs::read_to_string(&stderr_path).unwrap(),
        }
    }

    /// What the fixture's tests recorded: each test's (start, end) in µs of Unix time.
    pub fn spans(&self) -> BTreeMap<String, (u64, u64)> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut spans: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split(' ');
            let (Some(name), Some(what), Some(at)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let at: u64 = at.parse().unwrap();
            let span = spans.entry(name.to_string()).or_insert((0, 0));
            match what {
                "start" => span.0 = at,
                "end" => span.1 = at,
                _ => {}
            }
        }
        spans
    }

    /// The `NAME seed N` lines the fixture recorded.
    pub fn seeds(&self) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut words = line.split(' ');
                let (name, what, value) = (words.next()?, words.next()?, words.next()?);
                if what != "seed" {
                    return None;
                }
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }
}

/// Over the spans: the most that run at once, and for how much of the makespan exactly
/// `n` run at once.
pub fn concurrency(spans: &[(u64, u64)], n: usize) -> (usize, f64) {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for &(start, end) in spans {
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // Ends before starts at the same instant.
    edges.sort();
    let (mut running, mut max, mut at_n) = (0i32, 0usize, 0u64);
    let first = edges.first().map_or(0, |e| e.0);
    let last = edges.last().map_or(0, |e| e.0);
    for pair in edges.windows(2) {
        running += pair[0].1;
        max = max.max(running as usize);
        if running as usize == n {
            at_n += pair[1].0 - pair[0].0;
        }
    }
    let total = (last - first).max(1);
    (max, at_n as f64 / total as f64)
}

/// The spans' makespan: first start to last end.
pub fn makespan(spans: &[(u64, u64)]) -> Duration {
    let first = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let last = spans.iter().map(|s| s.1).max().unwrap_or(0);
    Duration::from_micros(last - first)
}

/// Whether two spans overlap in time.
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}
