//! The resource model across processes and threads: group maxima hold between processes,
//! a SIGKILLed holder frees its slot, a wait past its deadline names the holder.
//!
//! Child processes are this test binary run again with `--exact child_entry`; the
//! `CHILD_ROLE` variable says what the child does. Every test uses its own lock dir, so
//! these tests never contend with each other or with other suites on the host.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use capped_test::{Caps, Error, Request};

/// Caps for a test: `CAPPED_LOCK_DIR` = `lock_dir`, the given groups, width 2.
fn caps_with(lock_dir: &Path, groups: &str) -> Caps {
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("CAPPED_LOCK_DIR", lock_dir.display().to_string()),
        ("CAPPED_GROUPS", groups.to_string()),
        ("CAPPED_TEST_THREADS", "2".to_string()),
    ]);
    Caps::from_sources(&|var| env.get(var).cloned(), &[], None).expect("valid test caps")
}

fn now_us() -> u64 {
    capped_test::protocol::now_us()
}

/// Runs this binary's `child_entry` with `role` and extra env.
fn spawn_child(role: &str, lock_dir: &Path, extra: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env("CHILD_ROLE", role)
        .env("CHILD_LOCK_DIR", lock_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in extra {
        command.env(key, value);
    }
    command
        .spawn()
        .expect("spawning this test binary as a child")
}

/// Reads the child's stdout until a line equal to `marker`.
fn wait_for_line(child: &mut Child, marker: &str) {
    let stdout = child.stdout.as_mut().expect("piped");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before printing {marker:?}");
        // libtest prints `test child_entry ... ` before the child's own output.
        if line.trim_end().ends_with(marker) {
            return;
        }
    }
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child side: not a test of its own (ignored, and inert without `CHILD_ROLE`).
#[test]
#[ignore = "run as a child process by the other tests"]
fn child_entry() {
    let Ok(role) = std::env::var("CHILD_ROLE") else {
        return;
    };
    let lock_dir = PathBuf::from(std::env::var("CHILD_LOCK_DIR").unwrap());
    match role.as_str() {
        "hold-forever" => {
            let caps = caps_with(&lock_dir, "xp-kill=1@host");
            let _guard = Request::new().group("xp-kill").acquire_with(&caps).unwrap();
            println!("held");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        "record" => {
            let caps = caps_with(&lock_dir, &std::env::var("CHILD_GROUPS").unwrap());
            let log = PathBuf::from(std::env::var("CHILD_LOG").unwrap());
            let rounds: u32 = std::env::var("CHILD_ROUNDS").unwrap().parse().unwrap();
            for _ in 0..rounds {
                let guard = Request::new().group("xp-gpu").acquire_with(&caps).unwrap();
                let start = now_us();
                std::thread::sleep(Duration::from_millis(15));
                let end = now_us();
                let line = format!(
                    "{} {start} {end} {}\n",
                    std::process::id(),
                    guard.slot("xp-gpu").unwrap()
                );
                drop(guard);
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap()
                    .write_all(line.as_bytes())
                    .unwrap();
            }
        }
        other => panic!("unknown CHILD_ROLE {other}"),
    }
}

/// The most intervals open at any instant.
fn max_overlap(intervals: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    // At equal times, count ends before starts: touching intervals do not overlap.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

fn run_recorders(max: u32, children: usize, rounds: u32) -> Vec<(u64, u64, u32)> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("intervals.log");
    let groups = format!("xp-gpu={max}@host");
    let mut running: Vec<Child> = (0..children)
        .map(|_| {
            spawn_child(
                "record",
                dir.path(),
                &[
                    ("CHILD_LOG", log.display().to_string()),
                    ("CHILD_GROUPS", groups.clone()),
                    ("CHILD_ROUNDS", rounds.to_string()),
                ],
            )
        })
        .collect();
    for child in &mut running {
        assert!(child.wait().unwrap().success(), "a recording child failed");
    }
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            (fields[1], fields[2], fields[3] as u32)
        })
        .collect()
}

#[test]
fn a_group_of_max_one_never_overlaps_across_processes() {
    let records = run_recorders(1, 4, 6);
    assert_eq!(records.len(), 24);
    let intervals: Vec<(u64, u64)> = records.iter().map(|&(s, e, _)| (s, e)).collect();
    assert_eq!(
        max_overlap(&intervals),
        1,
        "two holders of a max-1 group overlapped: {records:?}"
    );
    assert!(records.iter().all(|&(_, _, slot)| slot == 0));
}

#[test]
fn a_group_of_max_two_holds_at_most_two_across_processes() {
    let records = run_recorders(2, 4, 6);
    let intervals: Vec<(u64, u64)> = records.iter().map(|&(s, e, _)| (s, e)).collect();
    assert!(
        max_overlap(&intervals) <= 2,
        "more than two holders at once: {records:?}"
    );
    assert!(records.iter().all(|&(_, _, slot)| slot < 2));
    // Two holders at once never share a slot id.
    for (i, a) in records.iter().enumerate() {
        for b in &records[i + 1..] {
            if a.0 < b.1 && b.0 < a.1 {
                assert_ne!(a.2, b.2, "overlapping holders {a:?} and {b:?} share a slot");
            }
        }
    }
}

#[test]
fn a_sigkilled_holder_frees_its_slot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let caps = caps_with(dir.path(), "xp-kill=1@host");
    let mut child = KillOnDrop(spawn_child("hold-forever", dir.path(), &[]));
    wait_for_line(&mut child.0, "held");
    let child = &mut child.0;

    let busy = Request::new()
        .group("xp-kill")
        .try_acquire_with(&caps)
        .unwrap();
    assert!(busy.is_none(), "the child holds the only slot");
    // While it is held, a deadline is kept and the error names the holder.
    let error = Request::new()
        .group("xp-kill")
        .timeout(Duration::from_millis(100))
        .acquire_with(&caps)
        .unwrap_err();
    let Error::Timeout { holders, .. } = &error else {
        panic!("expected a timeout, got {error}")
    };
    assert!(
        holders.iter().any(|h| h.contains(&child.id().to_string())),
        "{error}"
    );
    assert!(error.to_string().contains("xp-kill"), "{error}");

    let killed_at = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let guard = Request::new()
        .group("xp-kill")
        .timeout(Duration::from_secs(1))
        .acquire_with(&caps)
        .expect("the slot of a SIGKILLed holder is free within a second");
    eprintln!("acquired {:?} after the kill", killed_at.elapsed());
    assert_eq!(guard.slot("xp-kill"), Some(0));
    let _ = child.wait();
}

#[test]
fn threads_of_one_process_share_slots_correctly() {
    let dir = tempfile::tempdir().unwrap();
    for groups in ["xp-threads=2@process", "xp-threads=2@host"] {
        let caps = Arc::new(caps_with(dir.path(), groups));
        let inside = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let start = Arc::new(Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (caps, inside, most, start) =
                    (caps.clone(), inside.clone(), most.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..10 {
                        let guard = Request::new()
                            .group("xp-threads")
                            .acquire_with(&caps)
                            .unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        assert!(guard.slot("xp-threads").unwrap() < 2);
                        std::thread::sleep(Duration::from_millis(1));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "{groups}: max 2 must be reached and never passed"
        );
    }
}

#[test]
fn all_or_nothing_never_holds_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let caps = caps_with(dir.path(), "xp-a=1@host,xp-b=1@host");
    let a = Request::new().group("xp-a").acquire_with(&caps).unwrap();
    // Wanting a and b while a is busy takes neither: b stays free for others.
    assert!(
        Request::new()
            .groups(["xp-b", "xp-a"])
            .try_acquire_with(&caps)
            .unwrap()
            .is_none()
    );
    let b = Request::new()
        .group("xp-b")
        .try_acquire_with(&caps)
        .unwrap();
    assert!(
        b.is_some(),
        "a failed all-or-nothing request must not keep xp-b"
    );
    drop((a, b));
    let both = Request::new()
        .groups(["xp-b", "xp-a"])
        .acquire_with(&caps)
        .unwrap();
    assert_eq!((both.slot("xp-a"), both.slot("xp-b")), (Some(0), Some(0)));
}

#[test]
fn width_slots_are_counted_and_serial_takes_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("CAPPED_LOCK_DIR", dir.path().display().to_string()),
        ("CAPPED_RUN_DIR", run_dir.path().display().to_string()),
        ("CAPPED_TEST_THREADS", "3".to_string()),
    ]);
    let caps = Caps::from_sources(&|var| env.get(var).cloned(), &[], None).unwrap();
    let one = Request::new().width(1).acquire_with(&caps).unwrap();
    assert!(
        Request::new()
            .width(3)
            .try_acquire_with(&caps)
            .unwrap()
            .is_none(),
        "only 2 of 3 are free"
    );
    let two = Request::new()
        .width(2)
        .try_acquire_with(&caps)
        .unwrap()
        .expect("2 are free");
    assert_eq!(two.slots()["width"], vec![1, 2]);
    assert!(
        Request::new()
            .width(1)
            .try_acquire_with(&caps)
            .unwrap()
            .is_none()
    );
    drop((one, two));
    let clamped = Request::new().width(5).acquire_with(&caps).unwrap();
    assert_eq!(
        clamped.slots()["width"].len(),
        3,
        "threads beyond the width are clamped to it"
    );
    drop(clamped);
    let all = Request::new().serial().acquire_with(&caps).unwrap();
    assert_eq!(all.slots()["width"], vec![0, 1, 2]);
    assert!(
        run_dir.path().join("locks/.width/2.lock").exists(),
        "width slots live in the run dir"
    );
}

#[test]
fn an_unusable_lock_dir_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let caps = caps_with(&link, "");
    let error = Request::new()
        .group("xp-any")
        .acquire_with(&caps)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("symlink") && error.contains(&link.display().to_string()),
        "{error}"
    );
    let error = Request::new()
        .group("Not/A/Group")
        .acquire_with(&caps_with(&real, ""))
        .unwrap_err()
        .to_string();
    assert!(error.contains("[a-z0-9]"), "{error}");
}

#[test]
fn memory_reservations_fit_the_budget_across_processes_and_guards() {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("CAPPED_LOCK_DIR", dir.path().display().to_string()),
        ("CAPPED_MEM_BUDGET", "1GiB".to_string()),
    ]);
    let caps = Caps::from_sources(&|var| env.get(var).cloned(), &[], None).unwrap();
    let big = Request::new().mem(700 << 20).acquire_with(&caps).unwrap();
    assert_eq!(big.mem(), Some(700 << 20));
    assert!(
        Request::new()
            .mem(400 << 20)
            .try_acquire_with(&caps)
            .unwrap()
            .is_none()
    );
    let small = Request::new()
        .mem(300 << 20)
        .try_acquire_with(&caps)
        .unwrap();
    assert!(small.is_some());
    let error = Request::new()
        .mem(2 << 30)
        .acquire_with(&caps)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("can never fit") && error.contains("1 GiB"),
        "{error}"
    );
    drop((big, small));
    assert_eq!(
        capped_test::resource::reserved_bytes(dir.path()).unwrap(),
        0
    );
}
