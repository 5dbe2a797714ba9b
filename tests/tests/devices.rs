//! Device-backed groups: each test holding slot i of `gpu` sees device i and never the
//! device of a concurrent test; without devices the group's tests are skipped with the
//! reason, or the run fails before any test with `--require`; devices are detected from
//! `/dev` nodes and from `nvidia-smi -L`; the gate pins its command too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::*;

fn run(scratch: &RunScratch, devices: &str, args: &[&str]) -> Output {
    let mut command = capped_in("devices");
    command.args(args);
    scratch.apply(&mut command);
    command
        .env("CAPPED_DEVICES_GPU", devices)
        .args(["--message-format", "json"]);
    command.output().expect("running cargo capped")
}

fn statuses(output: &Output) -> BTreeMap<String, (String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["type"] == "test-finished")
        .map(|event| {
            (
                event["name"].as_str().unwrap_or_default().to_string(),
                (
                    event["status"].as_str().unwrap_or_default().to_string(),
                    event["reason"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn each_gpu_test_sees_its_slots_device_and_never_a_concurrent_ones() {
    let scratch = RunScratch::new();
    let output = run(&scratch, "3,5", &["t2"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let seen: BTreeMap<String, Vec<String>> = records(&scratch.record_file(), "dev")
        .into_iter()
        .map(|fields| (fields[1].clone(), fields[2..].to_vec()))
        .collect();
    assert_eq!(seen.len(), 4, "every gpu test ran: {seen:?}");
    for (test, values) in &seen {
        // CUDA_VISIBLE_DEVICES, CAPPED_DEVICE_GPU and capped_test::device agree.
        assert!(values[0] == "3" || values[0] == "5", "{test}: {values:?}");
        assert!(values.iter().all(|v| *v == values[0]), "{test}: {values:?}");
    }
    let intervals = read_intervals(&scratch.record_file());
    let gpu = of_kind(&intervals, "gpu");
    assert_eq!(gpu.len(), 4);
    assert!(max_overlap(gpu.iter().copied()) <= 2, "{gpu:?}");
    for a in &gpu {
        for b in &gpu {
            let overlap = a.name != b.name && a.start < b.end && b.start < a.end;
            assert!(
                !overlap || seen[&a.name][0] != seen[&b.name][0],
                "{} and {} ran at once on device {}",
                a.name,
                b.name,
                seen[&a.name][0]
            );
        }
    }
}

#[test]
fn without_devices_the_groups_tests_are_skipped_with_the_reason() {
    let scratch = RunScratch::new();
    let output = run(&scratch, "", &["t2"]);
    let statuses = statuses(&output);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    for test in ["gpu_a", "gpu_b", "gpu_c", "gpu_d", "plain_gpu"] {
        let (status, reason) = &statuses[test];
        assert_eq!(status, "ignored", "{test}: {}", describe(&output));
        assert!(reason.contains("no devices"), "{test}: {reason}");
    }
    assert_eq!(statuses["light"].0, "passed");
    assert_eq!(statuses["plain_light"].0, "passed");
    assert!(
        records(&scratch.record_file(), "gpu").is_empty(),
        "no gpu test body ran"
    );
    assert!(records(&scratch.record_file(), "plain-dev").is_empty());
}

/// A test skipped for want of devices belongs to one partition, as any test does: across
/// the shards of a matrix each is reported once, and counted once.
#[test]
fn skipped_tests_are_reported_by_their_own_partition_only() {
    let scratch = RunScratch::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for scheme in ["hash", "slice", "time"] {
        seen.clear();
        for index in 1..=2 {
            let partition = format!("{scheme}:{index}/2");
            // A shard may hold only skipped tests: that is no empty selection to fail on.
            let output = run(
                &scratch,
                "",
                &["t2", "--no-tests=pass", "--partition", &partition],
            );
            assert_eq!(exit_code(&output), 0, "{partition}: {}", describe(&output));
            for (test, _) in statuses(&output) {
                *seen.entry(test).or_default() += 1;
            }
        }
        for test in [
            "gpu_a",
            "gpu_b",
            "gpu_c",
            "gpu_d",
            "plain_gpu",
            "light",
            "plain_light",
        ] {
            assert_eq!(seen.get(test), Some(&1), "{scheme}: {test} in {seen:?}");
        }
    }
}

#[test]
fn require_fails_before_any_test_when_the_group_has_no_devices() {
    let scratch = RunScratch::new();
    let output = run(&scratch, "", &["t2", "--require", "gpu"]);
    assert_ne!(exit_code(&output), 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`gpu` has no devices") && stderr.contains("CAPPED_DEVICES_GPU"),
        "{stderr}"
    );
    assert!(statuses(&output).is_empty(), "{}", describe(&output));
    assert!(!scratch.record_file().exists(), "no test ran");
    // With devices the same run passes.
    let output = run(&scratch, "0", &["t2", "--require", "gpu"]);
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
}

/// A fake host root: the idle host's `/proc` and `/sys`, and a `/dev` of our own.
fn host_with_dev(dir: &Path, nodes: &[&str]) -> std::path::PathBuf {
    let root = dir.join("host");
    let idle = host_fixture("idle");
    std::fs::create_dir_all(root.join("dev")).unwrap();
    for entry in std::fs::read_dir(&idle).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), root.join(entry.file_name())).unwrap();
    }
    for node in nodes {
        std::fs::write(root.join("dev").join(node), "").unwrap();
    }
    root
}

fn preflight_devices(host: &Path, path: Option<&Path>) -> serde_json::Value {
    let mut command = capped_in("devices");
    command
        .args(["preflight", "--message-format", "json"])
        .env("CAPPED_HOST_ROOT", host);
    if let Some(bin) = path {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin.to_path_buf()];
        dirs.extend(std::env::split_paths(&inherited));
        command.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    let output = command.output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&output)));
    json["device_groups"][0].clone()
}

#[test]
fn devices_are_detected_from_dev_nodes_and_from_nvidia_smi() {
    let scratch = RunScratch::new();
    let host = host_with_dev(&scratch.path("nodes"), &["nvidia0", "nvidia1", "nvidiactl"]);
    let group = preflight_devices(&host, None);
    assert_eq!(group["group"], "gpu", "{group}");
    assert_eq!(group["devices"], serde_json::json!(["0", "1"]), "{group}");

    // No nodes: a fake nvidia-smi on PATH lists two GPUs.
    let bare = host_with_dev(&scratch.path("bare"), &[]);
    let bin = scratch.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\n[ \"$1\" = -L ] || exit 1\necho 'GPU 0: Fake (UUID: GPU-a)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let group = preflight_devices(&bare, Some(&bin));
    assert_eq!(group["devices"], serde_json::json!(["0", "1"]), "{group}");
    assert_eq!(group["how"], "nvidia-smi -L", "{group}");

    // Neither: no devices, and why.
    let group = preflight_devices(&bare, None);
    assert_eq!(group["devices"], serde_json::json!([]), "{group}");
    assert!(
        group["how"].as_str().unwrap_or_default().contains("nvidia"),
        "{group}"
    );
}

#[test]
fn the_gate_pins_its_command_to_its_slots_device() {
    let scratch = RunScratch::new();
    let output = capped_in("devices")
        .args(["gate", "--group", "gpu", "--lock-dir"])
        .arg(scratch.lock_dir())
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$CUDA_VISIBLE_DEVICES $CAPPED_DEVICE_GPU\"",
        ])
        .env("CAPPED_DEVICES_GPU", "3,5")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3 3");
    let output = capped_in("devices")
        .args(["gate", "--group", "gpu", "--lock-dir"])
        .arg(scratch.lock_dir())
        .args(["--", "true"])
        .env("CAPPED_DEVICES_GPU", "")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no devices"));
}

#[test]
fn real_gpus_are_found_where_the_machine_has_them() {
    let nodes = std::fs::read_dir("/dev")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("nvidia")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .unwrap_or(false);
    let smi = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nvidia-smi").is_file())
    });
    if !nodes && !smi {
        eprintln!("skipped: this machine has no NVIDIA GPU (no /dev/nvidia*, no nvidia-smi)");
        return;
    }
    // On a GPU machine: the live /dev and PATH, no override.
    let output = capped_in("devices")
        .args(["preflight", "--message-format", "json"])
        .env_remove("CAPPED_HOST_ROOT")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", describe(&output)));
    let devices = json["device_groups"][0]["devices"].as_array().cloned();
    assert!(
        devices.is_some_and(|d| !d.is_empty()),
        "a GPU machine shows its devices: {json}"
    );
    let scratch = RunScratch::new();
    let mut command = capped_in("devices");
    command.args(["t2", "--no-degrade"]);
    scratch.apply(&mut command);
    let output = command
        .env_remove("CAPPED_DEVICES_GPU")
        .env_remove("CAPPED_HOST_ROOT")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let seen = records(&scratch.record_file(), "dev");
    assert_eq!(
        seen.len(),
        4,
        "every gpu test ran on the hardware: {seen:?}"
    );
}

#[test]
fn a_malformed_device_list_is_an_error_not_a_fallback() {
    use std::os::unix::ffi::OsStrExt;
    let scratch = RunScratch::new();
    for value in [
        std::ffi::OsStr::from_bytes(b"\xff"),
        std::ffi::OsStr::new("a b"),
    ] {
        let mut command = capped_in("devices");
        command.arg("t2");
        scratch.apply(&mut command);
        let output = command.env("CAPPED_DEVICES_GPU", value).output().unwrap();
        assert_eq!(exit_code(&output), 2, "{value:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("CAPPED_DEVICES_GPU"), "{stderr}");
        assert!(!scratch.record_file().exists(), "no test ran");
    }
}
