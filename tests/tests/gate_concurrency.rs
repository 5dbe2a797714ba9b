//! `cargo capped gate` end to end, against the real binary: five jobs recording start and
//! end never overlap under `--max 1` (at most two, and at least once two, under
//! `--max 2`), a SIGKILLed holder freeing its slot,
//! `--timeout` naming the holder, CMD's exit status passing through, bad names refused.
//! (The same behaviours are unit-tested in `cargo-capped/src/gate/tests.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A temp dir with the record file and the lock dir of one test.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn lock_dir(&self) -> PathBuf {
        self.path("locks")
    }
    /// `cargo-capped gate --lock-dir <temp> ARGS`, with a clean environment whose
    /// `CAPPED_LOCK_DIR` is the same temp dir.
    fn gate(&self, args: &[&str]) -> Command {
        let mut command = clean_command(cargo_capped(), self.dir.path());
        command
            .env("CAPPED_LOCK_DIR", self.lock_dir())
            .arg("gate")
            .arg("--lock-dir")
            .arg(self.lock_dir())
            .args(args)
            .stdin(Stdio::null());
        command
    }
}

/// A job that records `gate job<i> <pid> <start µs> <end µs>` around a sleep.
fn recording_job(record: &Path, i: usize, secs: &str) -> String {
    format!(
        "s=$(date +%s%6N); sleep {secs}; e=$(date +%s%6N); echo \"gate job{i} $$ $s $e\" >> '{}'",
        record.display()
    )
}

fn start_jobs(scratch: &Scratch, jobs: usize, max: &str, secs: &str) -> Vec<Child> {
    let record = scratch.path("record");
    (0..jobs)
        .map(|i| {
            scratch
                .gate(&[
                    "--group",
                    "e2e",
                    "--max",
                    max,
                    "-q",
                    "--",
                    "sh",
                    "-c",
                    &recording_job(&record, i, secs),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn finish_all(children: Vec<Child>) {
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", describe(&output));
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts a gate of `group` whose CMD touches a marker and then sleeps (as `exec`, so CMD
/// is the sleep itself); returns once it holds the slot.
fn start_holder(scratch: &Scratch, group: &str, sleep: &str) -> Child {
    let marker = scratch.path("holding");
    let job = format!("touch '{}'; exec sleep {sleep}", marker.display());
    let holder = scratch
        .gate(&["--group", group, "--", "sh", "-c", &job])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&marker);
    holder
}

#[test]
fn gate_help_explains_and_names_the_exit_statuses() {
    let output = clean_command(cargo_capped(), &repo_root())
        .args(["gate", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in ["--group", "--max", "--timeout", "124", "CAPPED_SLOT_"] {
        assert!(help.contains(expected), "{expected} in {help}");
    }
}

#[test]
fn five_concurrent_gates_with_max_1_never_overlap() {
    let scratch = Scratch::new();
    finish_all(start_jobs(&scratch, 5, "1", "0.2"));
    let intervals = read_intervals(&scratch.path("record"));
    assert_eq!(
        intervals.len(),
        5,
        "every job recorded once: {intervals:#?}"
    );
    assert_eq!(
        max_overlap(&intervals),
        1,
        "two jobs overlapped: {intervals:#?}"
    );
}

#[test]
fn five_concurrent_gates_with_max_2_run_two_at_once_never_three() {
    let scratch = Scratch::new();
    // Started together and holding 1 s each: the first two overlap for about a second.
    finish_all(start_jobs(&scratch, 5, "2", "1"));
    let intervals = read_intervals(&scratch.path("record"));
    assert_eq!(
        intervals.len(),
        5,
        "every job recorded once: {intervals:#?}"
    );
    assert_eq!(max_overlap(&intervals), 2, "{intervals:#?}");
}

#[test]
fn a_sigkilled_holder_frees_its_slot() {
    let scratch = Scratch::new();
    let marker = "30.4242";
    let mut holder = start_holder(&scratch, "gpu", marker);
    let waiter = scratch
        .gate(&[
            "--group",
            "gpu",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            "echo got-the-slot",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    holder.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    holder.wait().unwrap();
    let output = waiter.wait_with_output().unwrap();
    let took = killed_at.elapsed();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("got-the-slot"));
    assert!(
        stderr(&output).contains("waiting for a `gpu` slot"),
        "the waiter said it waited: {}",
        describe(&output)
    );
    eprintln!("the next gate ran {took:?} after the holder was SIGKILLed");
    // A freed slot should be taken within a second; a noisy 2-core host gets 3 s here.
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The holder's CMD died with it (PR_SET_PDEATHSIG).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&format!("sleep {marker}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the killed gate's CMD outlived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timeout_exits_124_naming_the_holder() {
    let scratch = Scratch::new();
    let mut holder = start_holder(&scratch, "gpu", "30");
    let started = Instant::now();
    let output = scratch
        .gate(&["--group", "gpu", "--timeout", "500ms", "--", "true"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(124), "{}", describe(&output));
    assert!(text.contains("gave up waiting for a `gpu` slot"), "{text}");
    assert!(
        text.contains(&format!("pid {}", holder.id())),
        "names the holder: {text}"
    );
    assert!(
        text.contains("sleep 30"),
        "shows what the holder runs: {text}"
    );
    assert!(took >= Duration::from_millis(500), "{took:?}");
}

#[test]
fn cmd_exit_status_and_slot_env_pass_through() {
    let scratch = Scratch::new();
    let output = scratch
        .gate(&[
            "--group",
            "cross-val",
            "--max",
            "2",
            "--",
            "sh",
            "-c",
            "echo slot=$CAPPED_SLOT_CROSS_VAL; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("slot=0"));
    let output = scratch
        .gate(&["--group", "g", "--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(128 + 15),
        "{}",
        describe(&output)
    );
    let output = scratch
        .gate(&["--group", "g", "--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127), "{}", describe(&output));
}

#[test]
fn bad_group_names_are_refused() {
    let scratch = Scratch::new();
    for name in ["GPU", "../etc", "", "a b"] {
        let output = scratch
            .gate(&["--group", name, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name:?}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains("group name"),
            "{name:?}: {}",
            describe(&output)
        );
    }
    assert!(
        !scratch.lock_dir().join("..").join("etc").exists(),
        "no path was made of a bad name"
    );
}

/// `NAME=value` lines of `env` output.
fn env_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

const THREAD_VARS: [&str; 9] = [
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TOKIO_WORKER_THREADS",
    "CAPPED_RAYON_THREADS",
    "CAPPED_BLAS_THREADS",
    "CAPPED_ASYNC_THREADS",
];

#[test]
fn cmd_gets_its_slot_and_thread_caps_only_when_asked() {
    // The clean environment has none of the thread variables, so any CMD sees came from the gate.
    let scratch = Scratch::new();
    let output = scratch
        .gate(&["--group", "g", "-q", "--", "env"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let lines = env_lines(&output);
    assert!(lines.iter().any(|l| l == "CAPPED_SLOT_G=0"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "CAPPED_GROUPS=g=1@workspace"),
        "{lines:?}"
    );
    let lock_dir = format!("CAPPED_LOCK_DIR={}", scratch.lock_dir().display());
    assert!(lines.contains(&lock_dir), "{lines:?}");
    for var in THREAD_VARS {
        let prefix = format!("{var}=");
        assert!(
            !lines.iter().any(|l| l.starts_with(&prefix)),
            "{var} not asked for: {lines:?}"
        );
    }

    let output = scratch
        .gate(&["--group", "g", "-q", "--profile", "t2", "--", "env"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let lines = env_lines(&output);
    for expected in [
        "CAPPED_SLOT_G=0",
        "RAYON_NUM_THREADS=2",
        "CAPPED_RAYON_THREADS=2",
        "OMP_NUM_THREADS=1",
        "OPENBLAS_NUM_THREADS=1",
        "MKL_NUM_THREADS=1",
        "CAPPED_BLAS_THREADS=1",
        "TOKIO_WORKER_THREADS=2",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} in {lines:?}"
        );
    }

    let output = scratch
        .gate(&["--group", "g", "--profile", "nope", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("unknown capped profile `nope`"),
        "{}",
        describe(&output)
    );
}
