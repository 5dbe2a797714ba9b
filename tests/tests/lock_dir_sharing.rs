//! Lock dirs end to end: a dir an administrator shares lets two users take turns on one
//! slot (the second user is created here, and the test is skipped where that is
//! impossible); an existing dir's mode is never changed; an unsafe dir is refused with the
//! fix; a planted symlink is never followed; a relative `CAPPED_LOCK_DIR` is one dir for
//! every package of a workspace.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The second user of the two-user test.
const PEER: &str = "capped-e2e-peer";

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `cargo-capped gate --lock-dir DIR ARGS` run by `binary` from `cwd`.
fn gate(binary: &Path, cwd: &Path, lock_dir: &Path, args: &[&str]) -> Command {
    let mut command = clean_command(binary, cwd);
    command
        .arg("gate")
        .arg("--lock-dir")
        .arg(lock_dir)
        .args(args)
        .stdin(Stdio::null());
    command
}

/// The uid and gid of [`PEER`], created if missing; `None` (with the reason printed) where
/// no second user can be had.
fn peer_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: creating and becoming a second user needs root");
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, PEER]).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let created = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", PEER])
            .status();
        // Another test process may have created it meanwhile: look again either way.
        if id("-u").is_none() {
            eprintln!("skipped: cannot create user {PEER} with useradd ({created:?})");
            return None;
        }
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return None;
    }
    Some((id("-u")?, id("-g")?))
}

/// A copy of `cargo-capped` in a dir every user may enter (the repo may not be).
fn binary_for_everyone(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    set_mode(&bin, 0o755);
    let copy = bin.join("cargo-capped");
    std::fs::copy(cargo_capped(), &copy).unwrap();
    set_mode(&copy, 0o755);
    copy
}

/// A gate that holds the `gpu` slot until `release` appears, having touched `holding`.
fn holder(command: &mut Command, holding: &Path, release: &Path) -> Child {
    let job = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.01; done",
        holding.display(),
        release.display()
    );
    command
        .args(["--group", "gpu", "--", "sh", "-c", &job])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `child` (a waiting gate) has said who holds the slot; returns what it said.
fn waiting_message(child: &mut Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .next()
        .expect("the waiting gate says something")
        .unwrap();
    // Keep draining so the gate never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    line
}

#[test]
fn a_shared_dir_passes_a_slot_between_two_users() {
    let Some((uid, gid)) = peer_user() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    set_mode(scratch.path(), 0o755);
    let binary = binary_for_everyone(scratch.path());
    // What an administrator provisions: `install -d -m 1777 DIR`.
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let marks = scratch.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    set_mode(&marks, 0o1777);
    let as_peer = |args: &[&str]| {
        let mut command = clean_command("setpriv", scratch.path());
        command
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
                "--clear-groups",
                "--",
            ])
            .arg(&binary)
            .arg("gate")
            .arg("--lock-dir")
            .arg(&shared)
            .args(args)
            .stdin(Stdio::null());
        command
    };

    // Root holds the slot; the peer waits, seeing root's gate as the holder, then gets it.
    let mut root_holder = holder(
        &mut gate(&binary, scratch.path(), &shared, &[]),
        &marks.join("root-holding"),
        &marks.join("root-release"),
    );
    wait_for("root holding the slot", || {
        marks.join("root-holding").exists()
    });
    let mut peer = holder(
        &mut as_peer(&[]),
        &marks.join("peer-holding"),
        &marks.join("peer-release"),
    );
    let said = waiting_message(&mut peer);
    assert!(
        said.contains("waiting for") && said.contains(&format!("pid {}", root_holder.id())),
        "the peer names root's gate as the holder: {said}"
    );
    assert!(!marks.join("peer-holding").exists());
    std::fs::write(marks.join("root-release"), "").unwrap();
    assert!(root_holder.wait().unwrap().success());
    wait_for("the peer taking the slot", || {
        marks.join("peer-holding").exists()
    });

    // Now root waits for the peer, in a lock file root created and the peer could only
    // read: the holder still shows (the kernel's word, not a stale record).
    let mut root_waiter = holder(
        &mut gate(&binary, scratch.path(), &shared, &[]),
        &marks.join("root-holding-2"),
        &marks.join("root-release-2"),
    );
    let said = waiting_message(&mut root_waiter);
    assert!(
        said.contains(&format!("pid {}", peer.id())),
        "root names the peer's gate as the holder: {said}"
    );
    std::fs::write(marks.join("peer-release"), "").unwrap();
    let peer_status = peer.wait().unwrap();
    assert!(peer_status.success(), "the peer's gate: {peer_status:?}");
    wait_for("root taking the slot back", || {
        marks.join("root-holding-2").exists()
    });
    std::fs::write(marks.join("root-release-2"), "").unwrap();
    assert!(root_waiter.wait().unwrap().success());

    assert_eq!(mode_of(&shared), 0o1777, "the shared dir keeps its mode");
    let slot = shared.join("gpu/0.lock");
    assert_eq!(std::fs::metadata(&slot).unwrap().uid(), 0);
    assert_eq!(mode_of(&slot), 0o644);
}

#[test]
fn an_existing_dir_keeps_its_mode_and_an_unsafe_one_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let binary = cargo_capped();
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let output = gate(
        &binary,
        scratch.path(),
        &shared,
        &["--group", "g", "--", "true"],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(mode_of(&shared), 0o1777, "a 1777 dir is never tightened");

    let loose = scratch.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    set_mode(&loose, 0o777);
    let output = gate(
        &binary,
        scratch.path(),
        &loose,
        &["--group", "g", "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let said = stderr(&output);
    assert!(
        said.contains("without the sticky bit") && said.contains("chmod +t"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert_eq!(mode_of(&loose), 0o777);
}

#[test]
fn a_lock_file_planted_as_a_symlink_is_never_followed() {
    let scratch = tempfile::tempdir().unwrap();
    let locks = scratch.path().join("locks");
    std::fs::create_dir_all(locks.join("gpu")).unwrap();
    set_mode(&locks, 0o700);
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "precious contents").unwrap();
    std::os::unix::fs::symlink(&victim, locks.join("gpu/0.lock")).unwrap();
    let output = gate(
        &cargo_capped(),
        scratch.path(),
        &locks,
        &["--group", "gpu", "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let said = stderr(&output);
    assert!(
        said.contains("is not a regular file") && said.contains("0.lock"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious contents"
    );
}

#[test]
fn a_relative_lock_dir_is_one_dir_for_every_package() {
    let scratch = RunScratch::new();
    let fixture_dir = fixture("lockdir-ws");
    let output = clean_command(cargo_capped(), &scratch.path(""))
        .arg("capped")
        .env("CARGO", cargo_path())
        .env("CARGO_TARGET_DIR", fixtures_target_dir())
        .env("CAPPED_HOST_ROOT", host_fixture("idle"))
        .env("RECORD_FILE", scratch.record_file())
        .env("CAPPED_LOCK_DIR", "locks")
        .arg("t2")
        .arg("--manifest-path")
        .arg(fixture_dir.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let intervals = read_intervals(&scratch.record_file());
    let solo = of_kind(&intervals, "solo");
    assert_eq!(solo.len(), 2, "both packages' tests ran: {intervals:?}");
    assert_eq!(
        max_overlap(solo),
        1,
        "a max = 1 host group ran two at once: {intervals:?}"
    );
    assert!(
        scratch.path("locks/solo").is_dir(),
        "the run's cwd anchors it"
    );
    for package in ["one", "two"] {
        assert!(!fixture_dir.join(package).join("locks").exists());
    }
}
