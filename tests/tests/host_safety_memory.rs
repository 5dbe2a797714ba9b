//! Memory end to end: a test allocating 2 GiB under `--mem-limit 300M` is killed soon after
//! it crosses the cap, named with the tests it was running, and the run goes on; peak RSS
//! per binary is in the summary; a SIGKILL the runner did not send, with no OOM kill counted
//! by the kernel, is reported as such and not as an OOM kill; two tests reserving 600 MiB each under a 1 GiB budget never run at once,
//! across two binaries (one plain, one in harness mode).

mod common;

use common::*;

const MIB: u64 = 1 << 20;

/// The JSON lines of a run's stdout.
fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn a_test_past_the_memory_cap_is_killed_named_and_the_run_goes_on() {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args([
        "t2",
        "--test",
        "memhog",
        "--test",
        "after",
        "--mem-limit",
        "300M",
        "--timeout",
        "120s",
        "--message-format",
        "json",
    ]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hostsafety::memhog: killed: memory cap 300 MiB exceeded (peak ")
            && stderr.contains("while running allocates_2gib"),
        "the binary and its running test are named: {stderr}"
    );
    assert!(
        stderr.contains("peak RSS per test binary: hostsafety::memhog"),
        "{stderr}"
    );

    let lines = json_lines(&output);
    let finished = |name: &str| {
        lines
            .iter()
            .find(|l| l["type"] == "test-finished" && l["name"] == name)
            .unwrap_or_else(|| panic!("no result for {name}: {}", describe(&output)))
            .clone()
    };
    let hog = finished("allocates_2gib");
    assert_eq!(hog["status"], "killed-mem", "{hog}");
    assert_eq!(hog["mem_limit"], 300 * MIB, "{hog}");
    assert_eq!(hog["by_watchdog"], true, "{hog}");
    assert_eq!(
        finished("still_runs")["status"],
        "passed",
        "another binary still ran"
    );
    let summary = lines
        .iter()
        .find(|l| l["type"] == "run-finished")
        .expect("a summary");
    assert_eq!(summary["counts"]["killed-mem"], 1, "{summary}");
    assert_eq!(summary["counts"]["passed"], 1, "{summary}");
    let peaks = summary["binary_peak_rss"].as_array().expect("peaks");
    let hog_peak = peaks
        .iter()
        .find(|p| p["binary"] == "hostsafety::memhog")
        .and_then(|p| p["bytes"].as_u64())
        .expect("the killed binary's peak");
    assert!(hog_peak > 300 * MIB, "{summary}");

    // The test recorded its RSS every 4 MiB until it died: from the first record past the
    // cap to the last one is how long it lived past the crossing.
    let text = std::fs::read_to_string(scratch.record_file()).unwrap();
    let rss: Vec<(u64, u128)> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 3 && f[0] == "rss").then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect();
    let crossed = rss
        .iter()
        .find(|(bytes, _)| *bytes > 300 * MIB)
        .map(|(_, at)| *at);
    let (last_bytes, last_at) = *rss.last().expect("RSS records");
    let lived_ms = crossed.map_or(0.0, |at| (last_at - at) as f64 / 1e3);
    eprintln!(
        "memhog: {} records, last RSS {} MiB, lived {lived_ms:.1} ms past the 300 MiB cap (watchdog peak {} MiB)",
        rss.len(),
        last_bytes / MIB,
        hog_peak / MIB
    );
    assert!(
        last_bytes < 1024 * MIB,
        "killed long before 2 GiB: {last_bytes}"
    );
    // The aim is a kill within a second of the crossing; a noisy host gets 2 s.
    assert!(lived_ms < 2000.0, "lived {lived_ms} ms past the cap");
}

#[test]
fn a_sigkill_the_runner_did_not_send_is_not_reported_as_an_oom_kill() {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args(["t2", "--test", "sigkill", "--message-format", "json"]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 100, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The host readings are the idle fixture's, whose /proc/vmstat counts no OOM kill: the
    // kernel did not say so, so it is not reported as one.
    assert!(
        stderr.contains("hostsafety::sigkill: killed by SIGKILL, not sent by cargo capped"),
        "{stderr}"
    );
    assert!(!stderr.contains("OOM"), "{stderr}");
    let result = json_lines(&output)
        .into_iter()
        .find(|l| l["type"] == "test-finished" && l["name"] == "killed_by_someone_else")
        .unwrap_or_else(|| panic!("{}", describe(&output)));
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["output"]
            .as_str()
            .is_some_and(|o| o.contains("killed by SIGKILL, not sent by cargo capped")),
        "{result}"
    );
}

#[test]
fn reservations_past_the_memory_budget_never_overlap() {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args([
        "run",
        "--profile",
        "membudget",
        "--test",
        "mem_a",
        "--test",
        "mem_b",
        "--message-format",
        "json",
    ]);
    scratch.apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let intervals = read_intervals(&scratch.record_file());
    let mem = of_kind(&intervals, "mem");
    assert_eq!(mem.len(), 2, "{intervals:#?}");
    assert_eq!(
        max_overlap(mem.iter().copied()),
        1,
        "600 MiB + 600 MiB do not fit 1 GiB: {intervals:#?}"
    );
    // The width let both binaries start together: the reservations alone kept the tests
    // apart.
    let lines = json_lines(&output);
    let position = |kind: &str| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l["type"] == kind)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let (started, finished) = (position("binary-started"), position("binary-finished"));
    assert_eq!(started.len(), 2, "{}", describe(&output));
    assert!(
        started.iter().all(|s| *s < finished[0]),
        "both binaries ran side by side: {}",
        describe(&output)
    );
    // Listing in harness mode shows the reservation the runner accounts for.
    let list = capped_in("host-safety")
        .args(["list", "--test", "mem_b", "--message-format", "json"])
        .output()
        .unwrap();
    assert_eq!(exit_code(&list), 0, "{}", describe(&list));
    let listed: Vec<serde_json::Value> = json_lines(&list);
    let test = listed
        .iter()
        .find(|t| t["name"] == "reserves_600mib_b")
        .unwrap_or_else(|| panic!("{}", describe(&list)));
    assert_eq!(test["mem"], 600 * MIB, "{test}");
}
