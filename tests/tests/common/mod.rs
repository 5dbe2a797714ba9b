//! Helpers shared by the end-to-end tests: fixture workspaces, the real binaries, a clean
//! environment, temp lock dirs, and checks over the intervals tests record.
//!
//! Every fixture under `tests/fixtures/` is a workspace of its own; all of them build into
//! one target dir (`target/e2e-fixtures` of this repository), so dependencies compile once.
//! Each test gets its own lock dir, so e2e tests never contend with each other or with
//! anything else on the host.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repo")
        .to_path_buf()
}

/// The fixture workspace `name` (a folder under `tests/fixtures/`).
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The one target dir every fixture builds into.
pub fn fixtures_target_dir() -> PathBuf {
    repo_root().join("target/e2e-fixtures")
}

/// The `cargo` that runs these tests.
pub fn cargo_path() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Variables a child must not inherit from the process running these tests: when the suite
/// itself runs under `cargo capped` or nextest, their caps and ids would leak into the
/// fixtures' runs.
fn scrub(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let cargo_own = key.starts_with("CARGO_")
            && !["CARGO_HOME", "CARGO_REGISTR", "CARGO_NET", "CARGO_HTTP"]
                .iter()
                .any(|keep| key.starts_with(keep));
        if key.starts_with("CAPPED")
            || key.starts_with("NEXTEST")
            || cargo_own
            || matches!(
                key.as_ref(),
                "RUST_TEST_THREADS"
                    | "RAYON_NUM_THREADS"
                    | "TOKIO_WORKER_THREADS"
                    | "OMP_NUM_THREADS"
                    | "OPENBLAS_NUM_THREADS"
                    | "MKL_NUM_THREADS"
                    | "NUMEXPR_NUM_THREADS"
                    | "RUSTFLAGS"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    command.env("CARGO_TERM_COLOR", "never");
}

/// A command for `program` with a clean environment, run in `dir`.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    scrub(&mut command);
    command.current_dir(dir);
    command
}

/// `cargo ARGS` in fixture `name`, building into the shared fixtures target dir.
pub fn cargo_in(name: &str) -> Command {
    let mut command = clean_command(cargo_path(), &fixture(name));
    command.env("CARGO_TARGET_DIR", fixtures_target_dir());
    command
}

/// The `cargo-capped` binary of this repository, built once per test process.
pub fn cargo_capped() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let status = clean_command(cargo_path(), &root)
                .args(["build", "--quiet", "--locked", "-p", "cargo-capped"])
                .status()
                .expect("running cargo build -p cargo-capped");
            assert!(status.success(), "building cargo-capped failed");
            root.join("target/debug/cargo-capped")
        })
        .clone()
}

/// The test executables cargo built for fixture `name` (`cargo test --no-run`), by target
/// name.
pub fn build_fixture_tests(name: &str) -> Vec<(String, PathBuf)> {
    let output = cargo_in(name)
        .args(["test", "--no-run", "--message-format", "json"])
        .output()
        .expect("running cargo test --no-run");
    assert!(
        output.status.success(),
        "building fixture {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && let Some(exe) = message["executable"].as_str()
        {
            let target = message["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            executables.push((target, PathBuf::from(exe)));
        }
    }
    executables
}

/// The test executable of target `target` in fixture `name`.
pub fn fixture_test_binary(name: &str, target: &str) -> PathBuf {
    build_fixture_tests(name)
        .into_iter()
        .find(|(t, _)| t == target)
        .map(|(_, exe)| exe)
        .unwrap_or_else(|| panic!("fixture {name} has no test target {target}"))
}

/// Whether `cargo nextest` is installed; prints why a test is skipped when not.
pub fn nextest_available(test: &str) -> bool {
    let ok = Command::new(cargo_path())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping {test}: cargo-nextest is not installed");
    }
    ok
}

/// Text of an output, both streams, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One interval a fixture test recorded: `kind name pid start_us end_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// What kind of test (`gpu`, `light`, …).
    pub kind: String,
    /// The test's name.
    pub name: String,
    /// The process it ran in.
    pub pid: u32,
    /// Start, unix µs.
    pub start: u128,
    /// End, unix µs.
    pub end: u128,
}

/// Reads the intervals in a record file (lines of other shapes are skipped).
pub fn read_intervals(path: &Path) -> Vec<Interval> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 5 {
                return None;
            }
            Some(Interval {
                kind: f[0].to_string(),
                name: f[1].to_string(),
                pid: f[2].parse().ok()?,
                start: f[3].parse().ok()?,
                end: f[4].parse().ok()?,
            })
        })
        .collect()
}

/// The most intervals open at one instant (touching intervals do not overlap).
pub fn max_overlap<'a>(intervals: impl IntoIterator<Item = &'a Interval>) -> usize {
    let mut edges: Vec<(u128, i32)> = intervals
        .into_iter()
        .flat_map(|i| [(i.start, 1), (i.end, -1)])
        .collect();
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

/// The intervals of one kind.
pub fn of_kind<'a>(intervals: &'a [Interval], kind: &str) -> Vec<&'a Interval> {
    intervals.iter().filter(|i| i.kind == kind).collect()
}

/// Lines of a record file that start with `prefix ` (e.g. `seed`), split on spaces.
pub fn records(path: &Path, prefix: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split_whitespace().next() == Some(prefix))
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// No process whose command line mentions `marker` is left running.
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Running `cargo capped` on a fixture.
// ---------------------------------------------------------------------------------------

/// `cargo-capped capped ARGS…` in fixture `name`, as `cargo capped` would start it: a clean
/// environment, the shared fixtures target dir, short backtraces, and the host readings of
/// an idle host ([`host_fixture`]`("idle")`), so a busy test machine does not degrade the
/// run's width under the tests' feet (set `CAPPED_HOST_ROOT` again to play another host),
/// and a test history of its own that no run wrote yet, so what other tests ran does not
/// change this one's order, splits or early starts (set `CAPPED_HISTORY` again to share
/// one). Add the subcommand and its arguments with `.args(..)`.
pub fn capped_in(name: &str) -> Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let history = e2e_histories().join(format!("{}-{run}.json", std::process::id()));
    let _ = std::fs::remove_file(&history);
    let mut command = clean_command(cargo_capped(), &fixture(name));
    command
        .arg("capped")
        .env("CARGO", cargo_path())
        .env("CARGO_TARGET_DIR", fixtures_target_dir())
        .env("CAPPED_HOST_ROOT", host_fixture("idle"))
        .env("CAPPED_HISTORY", history)
        .env("RUST_BACKTRACE", "0");
    command
}

/// Where [`capped_in`]'s runs keep their histories, as `PID-N.json` (`PID` the test
/// process's). The first call in a test process removes those of test processes that
/// ended, so they do not pile up over the suite's runs.
fn e2e_histories() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = fixtures_target_dir().join("capped/e2e-histories");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|name| name.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            // Another test process that still runs may be using its own.
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        dir
    })
    .clone()
}

/// A fake host for `CAPPED_HOST_ROOT` (test-only): `/proc` and `/sys` files of an `idle`,
/// `busy`, `cgroup-v2-limited`… host, from `cargo-capped/tests/fixtures/host/`.
pub fn host_fixture(name: &str) -> PathBuf {
    repo_root()
        .join("cargo-capped/tests/fixtures/host")
        .join(name)
}

/// A temp dir for one run: the file fixture tests record into (`RECORD_FILE`) and a lock
/// dir of its own (`--lock-dir`), so concurrent e2e tests never share a host-scope group.
pub struct RunScratch {
    dir: tempfile::TempDir,
}

impl RunScratch {
    /// A fresh scratch dir.
    pub fn new() -> RunScratch {
        RunScratch {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }
    /// The record file.
    pub fn record_file(&self) -> PathBuf {
        self.dir.path().join("records.txt")
    }
    /// The lock dir.
    pub fn lock_dir(&self) -> PathBuf {
        self.dir.path().join("locks")
    }
    /// A path inside the scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Points a `cargo capped` command at this scratch dir (`RECORD_FILE`, `--lock-dir`).
    /// Call it after the subcommand (`t2`, …) was added.
    pub fn apply<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("RECORD_FILE", self.record_file())
            .arg("--lock-dir")
            .arg(self.lock_dir())
    }
}

impl Default for RunScratch {
    fn default() -> Self {
        RunScratch::new()
    }
}

/// The exit code of a finished command (`-1` when a signal ended it).
pub fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Both streams of an output, as text.
pub fn all_text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Test counts: `passed`, `failed`, `ignored` (and for `cargo capped`, `timed-out`,
/// `not-run`, …).
pub type Counts = std::collections::BTreeMap<String, usize>;

/// Sums libtest's `test result: ok. 3 passed; 1 failed; 2 ignored; …` lines (what
/// `cargo test` prints per binary).
pub fn libtest_counts(output: &Output) -> Counts {
    let mut counts = Counts::new();
    for line in all_text(output).lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, what] = words.as_slice()
                && let Ok(n) = n.parse::<usize>()
                && matches!(*what, "passed" | "failed" | "ignored")
            {
                *counts.entry(what.to_string()).or_default() += n;
            }
        }
    }
    counts
}

/// The counts of `cargo capped --message-format json`: the `counts` object of its final
/// summary line (looked for at the top level or one level down). Zero counts are dropped.
pub fn capped_counts(output: &Output) -> Counts {
    let mut found = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let counts = value.get("counts").cloned().or_else(|| {
            value
                .as_object()
                .and_then(|o| o.values().find_map(|v| v.get("counts").cloned()))
        });
        if let Some(counts) = counts.and_then(|c| c.as_object().cloned()) {
            found = Some(counts);
        }
    }
    let counts = found.unwrap_or_else(|| panic!("no summary with counts:\n{}", describe(output)));
    counts
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_u64()? as usize)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Whether process `pid` is gone (or a zombie about to be reaped) within `within`.
pub fn process_gone(pid: u32, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(after)
            });
        match state {
            None | Some('Z') | Some('X') => return true,
            Some(_) if std::time::Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Checks that `xml` is well formed enough for CI tools (every element closed, in order)
/// and returns the names of its elements in document order. A small checker: no DTDs, no
/// CDATA; quoted attribute values may contain `>`.
pub fn xml_elements(xml: &str) -> Result<Vec<String>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        // The tag runs to the first `>` outside quotes.
        let mut quote = None;
        let end = rest
            .char_indices()
            .find(|&(_, c)| match (quote, c) {
                (None, '"' | '\'') => {
                    quote = Some(c);
                    false
                }
                (Some(q), c) if c == q => {
                    quote = None;
                    false
                }
                (None, '>') => true,
                _ => false,
            })
            .map(|(i, _)| i)
            .ok_or("a tag is not closed")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if name.is_empty() {
            return Err(format!("an empty tag: <{tag}>"));
        }
        elements.push(name.clone());
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    match stack.is_empty() {
        true => Ok(elements),
        false => Err(format!("unclosed elements: {stack:?}")),
    }
}

/// `cargo capped ARGS --message-format json` in fixture `name`, pointed at `scratch` (its
/// record file and lock dir) and with `env` set; a `--` in `args` starts the test binaries'
/// arguments, which stay last.
pub fn capped_json(
    name: &str,
    scratch: &RunScratch,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Output {
    let mut command = capped_in(name);
    let (ours, theirs) = match args.iter().position(|a| *a == "--") {
        Some(at) => args.split_at(at),
        None => (args, &[][..]),
    };
    command.args(ours);
    scratch.apply(&mut command);
    command
        .envs(env.iter().copied())
        .args(["--message-format", "json"])
        .args(theirs);
    command.output().expect("running cargo capped")
}

/// Each test's final JSON event (`test-finished`) of a `--message-format json` run, by
/// test name.
pub fn test_results(output: &Output) -> std::collections::BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "test-finished")
        .map(|event| {
            (
                event["name"].as_str().unwrap_or_default().to_string(),
                event,
            )
        })
        .collect()
}

/// The status `results` ([`test_results`]) give test `name`, or `(no result)`.
pub fn status_in(
    results: &std::collections::BTreeMap<String, serde_json::Value>,
    name: &str,
) -> String {
    results
        .get(name)
        .and_then(|r| r["status"].as_str())
        .unwrap_or("(no result)")
        .to_string()
}
