//! The test history: runs are recorded and shown, `--no-history` writes nothing, a corrupt
//! file is set aside without failing the run, two concurrent runs both land, and
//! `--partition time:K/N` shards cover every test exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::*;

/// `cargo capped ARGS --message-format json` in the verdicts fixture with its history at
/// `history`.
fn run(scratch: &RunScratch, history: &Path, args: &[&str]) -> Output {
    capped_json(
        "verdicts",
        scratch,
        args,
        &[("CAPPED_HISTORY", history.as_os_str())],
    )
}

fn finished(output: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "test-finished")
        .map(|event| event["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn notices(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "notice")
        .map(|event| event["message"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn show(history: &Path) -> String {
    let output = capped_in("verdicts")
        .args(["history", "durations"])
        .env("CAPPED_HISTORY", history)
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn runs_are_recorded_and_shown_and_no_history_writes_nothing() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let output = run(
        &scratch,
        &history,
        &["t2", "--test", "durations", "--no-history"],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(!history.exists(), "--no-history wrote a history");
    for _ in 0..2 {
        let output = run(&scratch, &history, &["t2", "--test", "durations"]);
        assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    }
    let shown = show(&history);
    for test in ["a_short", "b_long", "c_medium", "d_short"] {
        let line = shown
            .lines()
            .find(|line| line.contains(test))
            .unwrap_or_else(|| panic!("{test} not shown: {shown}"));
        assert!(line.contains("2/2 passed"), "{line}");
    }
}

#[test]
fn a_corrupt_history_is_set_aside_and_the_run_goes_on() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    std::fs::write(&history, "{ this is not json").unwrap();
    let output = run(&scratch, &history, &["t2", "--test", "durations"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(notices(&output).contains("aside"), "{}", describe(&output));
    assert!(scratch.path("history.json.bad").exists());
    assert!(show(&history).contains("b_long"), "a new history started");
}

/// `CAPPED_HISTORY` naming something that is no regular file of the runner's — a symlink
/// to a file someone cares about, a FIFO nobody writes to — is neither read through, set
/// aside nor replaced: the run goes on without a history and says so.
#[test]
fn a_history_path_that_is_no_regular_file_is_left_as_it_is() {
    use std::os::unix::fs::FileTypeExt;
    let scratch = RunScratch::new();
    let precious = scratch.path("precious.txt");
    std::fs::write(&precious, "not a history").unwrap();
    let link = scratch.path("link.json");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let fifo = scratch.path("fifo.json");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    for history in [&link, &fifo] {
        let mut command = capped_in("verdicts");
        command.args(["t2", "--test", "durations", "--message-format", "json"]);
        scratch.apply(&mut command);
        let mut child = command
            .env("CAPPED_HISTORY", history)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a runner that opened the FIFO to read would wait for a writer forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the run with CAPPED_HISTORY={} hangs", history.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(exit_code(&output), 0, "{}", describe(&output));
        let said = notices(&output);
        assert!(said.contains("not a regular file"), "{}", describe(&output));
        assert_eq!(said.matches("not a regular file").count(), 1, "{said}");
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), precious);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a history");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let mut left: Vec<String> = std::fs::read_dir(scratch.path(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("link") || name.starts_with("fifo") || name.starts_with("history.json")
        })
        .collect();
    left.sort();
    assert_eq!(left, ["fifo.json", "link.json"]);
}

#[test]
fn two_concurrent_runs_both_land_in_the_history() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let spawn = |test: &str| {
        let mut command = capped_in("verdicts");
        command.args(["t2", "--test", test]);
        scratch.apply(&mut command);
        command
            .env("CAPPED_HISTORY", &history)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut one = spawn("durations");
    let mut two = spawn("nocapture");
    assert!(one.wait().unwrap().success());
    assert!(two.wait().unwrap().success());
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(text.contains("durations b_long"), "{text}");
    assert!(text.contains("nocapture a_prints"), "{text}");
}

#[test]
fn time_shards_cover_every_test_exactly_once() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    // A history first, so the shards are dealt by time; a test the history does not know
    // (renamed or new) is dealt at the median.
    let output = run(&scratch, &history, &["t2", "--test", "durations"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let text = std::fs::read_to_string(&history)
        .unwrap()
        .replace("durations a_short", "durations a_renamed");
    std::fs::write(&history, text).unwrap();
    let mut seen = Vec::new();
    for (k, shard) in ["time:1/2", "time:2/2"].into_iter().enumerate() {
        // Each job of a matrix starts from the same history (restored from one cache): a
        // copy each, since a run also records into the file it read.
        let copy = scratch.path(&format!("history-{k}.json"));
        std::fs::copy(&history, &copy).unwrap();
        let output = run(
            &scratch,
            &copy,
            &[
                "t2",
                "--test",
                "durations",
                "--partition",
                shard,
                "--no-tests",
                "pass",
            ],
        );
        assert_eq!(exit_code(&output), 0, "{shard}: {}", describe(&output));
        seen.extend(finished(&output));
    }
    seen.sort();
    assert_eq!(
        seen,
        ["a_short", "b_long", "c_medium", "d_short"],
        "{seen:?}"
    );
}

#[test]
fn a_binary_that_peaked_high_waits_for_memory_beside_another() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Earlier runs say each binary peaked at 6 GiB; the `budget` profile's 10 GiB holds one
    // at a time.
    let entry =
        serde_json::json!({"runs": [{"outcome": "ran", "peak_rss": 6u64 << 30, "at": now}]});
    let file = serde_json::json!({
        "version": 1,
        "tests": {},
        "binaries": {
            "verdicts-fixture::durations": entry,
            "verdicts-fixture::nocapture": entry,
        }
    });
    std::fs::write(&history, file.to_string()).unwrap();
    let output = run(
        &scratch,
        &history,
        &[
            "run",
            "--profile",
            "budget",
            "--test-threads",
            "2",
            "--test",
            "durations",
            "--test",
            "nocapture",
            // One test each: either binary could start beside the other.
            "--",
            "--exact",
            "b_long",
            "a_prints",
        ],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert!(
        notices(&output).contains("waits for memory"),
        "{}",
        describe(&output)
    );
    // The two binaries never ran at once.
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|e: &serde_json::Value| {
            e["type"] == "binary-started" || e["type"] == "binary-finished"
        })
        .collect();
    let mut running = 0;
    for event in &events {
        if event["type"] == "binary-started" {
            running += 1;
            assert_eq!(running, 1, "two binaries at once: {events:?}");
        } else {
            running -= 1;
        }
    }
}

/// A scratch dir, its history file and an empty gate dir, after one ungated run of the
/// listing-gate fixture has taught that history that the opener is the longer binary.
fn learned_listing_gate() -> (RunScratch, std::path::PathBuf, std::path::PathBuf) {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let gate = scratch.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let output = capped_json(
        "listing-gate",
        &scratch,
        &["t2"],
        &[("CAPPED_HISTORY", history.as_os_str())],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    (scratch, history, gate)
}

/// With an order known before listing (a history, or a deterministic run's order by
/// name), the first binaries start while others are still being listed: the `waiter`
/// binary's listing waits for a gate that only the `opener` binary's test opens. Without
/// one, every binary is listed before any starts, and the gate stays shut.
#[test]
fn binaries_start_while_others_are_still_listed() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let gate = scratch.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let run = |args: &[&str], gated: bool, wait_ms: &str| {
        let mut env = vec![("CAPPED_HISTORY", history.as_os_str())];
        if gated {
            let _ = std::fs::remove_file(gate.join("open"));
            env.push(("LISTING_GATE", gate.as_os_str()));
            env.push(("LISTING_GATE_WAIT_MS", std::ffi::OsStr::new(wait_ms)));
        }
        capped_json("listing-gate", &scratch, args, &env)
    };
    // A first run learns the binaries' lengths (ungated: every listing answers at once).
    let output = run(&["t2"], false, "");
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));

    // No order before listing: the gate never opens, and the waiter's listing fails.
    let output = run(&["t2", "--no-history"], true, "1000");
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let results = test_results(&output);
    assert_eq!(status_in(&results, "(listing)"), "failed", "{results:?}");
    assert!(
        results["(listing)"]["output"]
            .as_str()
            .is_some_and(|o| o.contains("the gate never opened")),
        "{results:?}"
    );

    // The history puts the opener first: it starts while the waiter is still listed.
    for args in [&["t2"][..], &["t1", "--deterministic", "--no-history"][..]] {
        let output = run(args, true, "30000");
        assert_eq!(exit_code(&output), 0, "{args:?}: {}", describe(&output));
        let results = test_results(&output);
        assert_eq!(status_in(&results, "opens_the_gate"), "passed");
        assert_eq!(status_in(&results, "waits_for_the_gate"), "passed");
        // The run still opens with every test counted, before any result.
        let first: serde_json::Value = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| serde_json::from_str(line).ok())
            .expect("a JSON line");
        assert_eq!(first["type"], "run-started", "{first}");
        assert_eq!(first["tests"], 2, "{first}");
    }
}

/// Ctrl-C while a binary runs and another is still being listed: the listing is cut short
/// rather than waited for, the run exits 130 at once leaving nothing running, and its JSON
/// stream still opens with `run-started` and closes with `run-finished`. The binary whose
/// listing was cut short never ran: that is no failure of its own.
#[test]
fn ctrl_c_while_a_binary_is_still_listed_stops_the_run_at_once() {
    let (scratch, history, gate) = learned_listing_gate();

    // The opener runs with the gate shut, and the waiter's listing waits for it.
    let mut command = capped_in("listing-gate");
    command.arg("t2");
    scratch.apply(&mut command);
    let child = command
        .args(["--message-format", "json"])
        .env("CAPPED_HISTORY", &history)
        .env("LISTING_GATE", &gate)
        .env("LISTING_GATE_SHUT", "1")
        .env("LISTING_GATE_WAIT_MS", "120000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_in = |name: &str| -> u32 {
        let path = gate.join(name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "no {name} file");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let test = pid_in("running");
    let listing = pid_in("listing");
    let runner = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let interrupted = std::time::Instant::now();
    rustix::process::kill_process(runner, rustix::process::Signal::INT).unwrap();
    let output = child.wait_with_output().unwrap();
    // Not the listing's two minutes, nor the runner's 60 s listing timeout.
    assert!(
        interrupted.elapsed() < std::time::Duration::from_secs(30),
        "took {:?} after Ctrl-C",
        interrupted.elapsed()
    );
    assert_eq!(exit_code(&output), 130, "{}", describe(&output));
    for (what, pid) in [("the test", test), ("the listing", listing)] {
        assert!(
            process_gone(pid, std::time::Duration::from_secs(5)),
            "{what} (pid {pid}) still runs"
        );
    }
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(
        events.first().map(|e| &e["type"]),
        Some(&"run-started".into())
    );
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&"run-finished".into())
    );
    let results = test_results(&output);
    assert_eq!(
        status_in(&results, "opens_the_gate"),
        "not-run",
        "{results:?}"
    );
    assert!(!results.contains_key("(listing)"), "{results:?}");
    assert!(
        !capped_counts(&output).contains_key("failed"),
        "{}",
        describe(&output)
    );
    let waiter_ended = events.iter().any(|e| {
        e["type"] == "binary-finished"
            && e["binary"]["target"] == "waiter"
            && e["stray_output"] == "the run was interrupted"
    });
    assert!(waiter_ended, "{}", describe(&output));
}

/// A binary waits for the width from when it is listed, not from when the run's loop
/// started (listings now go on inside it): with a listing that takes 3 s and two binaries
/// of one test each at width 2, neither waits.
#[test]
fn a_binary_waits_for_the_width_only_from_its_listing() {
    let scratch = RunScratch::new();
    let output = capped_json(
        "listing-gate",
        &scratch,
        &["t2", "--no-history"],
        &[("LISTING_SLOW_MS", std::ffi::OsStr::new("3000"))],
    );
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let finished: serde_json::Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "run-finished")
        .expect("a run-finished event");
    let waits = &finished["groups"]["width"]["wait_ms"];
    assert!(
        waits["max"].as_f64().is_some_and(|max| max < 1500.0),
        "{waits}"
    );
}

/// Once the history knows a binary's tests, a test longer than the binary's work per slot
/// runs as a process of its own, beside the rest: `durations` (50, 600, 300 and 50 ms at
/// width 2) runs as `b_long`, `c_medium` and the two short tests, where without a history
/// it is one process.
#[test]
fn long_tests_run_as_processes_of_their_own_once_learned() {
    let scratch = RunScratch::new();
    let history = scratch.path("history.json");
    let args = ["t2", "--no-degrade", "--test", "durations"];
    // How many processes the binary ran, and the most at once.
    let processes = |output: &Output| -> (usize, usize) {
        let (mut started, mut running, mut most) = (0, 0usize, 0);
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["type"] == "binary-started" {
                started += 1;
                running += 1;
                most = most.max(running);
            } else if event["type"] == "binary-finished" {
                running = running.saturating_sub(1);
            }
        }
        (started, most)
    };
    let output = run(&scratch, &history, &args);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(processes(&output), (1, 1), "{}", describe(&output));

    let output = run(&scratch, &history, &args);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let results = test_results(&output);
    assert_eq!(results.len(), 4, "{results:?}");
    for test in ["a_short", "b_long", "c_medium", "d_short"] {
        assert_eq!(status_in(&results, test), "passed", "{test}: {results:?}");
    }
    // b_long and c_medium alone, then the short two (together, or split again when they
    // start one slot wide); two at once.
    let (started, most) = processes(&output);
    assert!(started >= 3 && most == 2, "{}", describe(&output));
}

/// `--fail-fast` ends the listings still going: an early binary's test fails while the
/// waiter's listing waits (for up to two minutes) for a gate that test never opens; the
/// run stops at once, and the waiter only never ran: no `(listing)` failure.
#[test]
fn fail_fast_ends_the_listings_still_going() {
    let (scratch, history, gate) = learned_listing_gate();

    let output = capped_json(
        "listing-gate",
        &scratch,
        &["t2", "--fail-fast"],
        &[
            ("CAPPED_HISTORY", history.as_os_str()),
            ("LISTING_GATE", gate.as_os_str()),
            ("LISTING_GATE_FAIL", std::ffi::OsStr::new("1")),
            ("LISTING_GATE_WAIT_MS", std::ffi::OsStr::new("120000")),
        ],
    );
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let results = test_results(&output);
    assert_eq!(
        status_in(&results, "opens_the_gate"),
        "failed",
        "{results:?}"
    );
    assert!(!results.contains_key("(listing)"), "{results:?}");
    let waiter_end = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|e| e["type"] == "binary-finished" && e["binary"]["target"] == "waiter")
        .unwrap_or_else(|| panic!("no end for the waiter: {}", describe(&output)));
    assert_eq!(
        waiter_end["stray_output"], "the run stopped before it was listed",
        "{waiter_end}"
    );
}
