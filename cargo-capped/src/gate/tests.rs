//! Gate tests. Until `gate` is wired into the command line, a gate runs as this test binary
//! re-executed on [`gate_child_entry`] (the arguments in an environment variable); the
//! same behaviours are checked against the real `cargo-capped gate` by
//! `tests/tests/gate_concurrency.rs` once it exists.

use super::*;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use clap::Parser;

/// The gate's arguments, separated by `\x1f`.
const CHILD_ARGS: &str = "CAPPED_TEST_GATE_ARGS";

#[derive(Debug, Parser)]
#[command(name = "gate")]
struct GateCli {
    #[command(flatten)]
    gate: GateArgs,
}

/// Runs the gate when this binary is re-executed for it; does nothing in a normal run.
#[test]
fn gate_child_entry() {
    let Ok(joined) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let argv = std::iter::once("gate").chain(joined.split('\x1f'));
    let code = match GateCli::try_parse_from(argv) {
        Ok(cli) => run(&cli.gate),
        Err(e) => {
            let _ = e.print();
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}

fn gate_command(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "gate::tests::gate_child_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ARGS, args.join("\x1f"))
        .env_remove(env::GROUPS)
        .env_remove(env::LOCK_DIR)
        .stdin(Stdio::null());
    command
}

fn gate_output(args: &[&str]) -> Output {
    gate_command(args).output().unwrap()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn lock_args(dir: &Path) -> Vec<String> {
    vec!["--lock-dir".into(), dir.join("locks").display().to_string()]
}

/// A job that records `gate <i> <pid> <start µs> <end µs>` after sleeping `secs`.
fn recording_job(record: &Path, i: usize, secs: &str) -> String {
    format!(
        "s=$(date +%s%6N); sleep {secs}; e=$(date +%s%6N); echo \"gate job{i} $$ $s $e\" >> {}",
        record.display()
    )
}

fn intervals(record: &Path) -> Vec<(u128, u128)> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?))
        })
        .collect()
}

fn max_overlap(intervals: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    edges.sort();
    let (mut open, mut most) = (0, 0);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

fn spawn_jobs(dir: &Path, n: usize, max: u32, secs: &str) -> Vec<Child> {
    let record = dir.join("record");
    let lock = lock_args(dir);
    (0..n)
        .map(|i| {
            let job = recording_job(&record, i, secs);
            let max = max.to_string();
            let mut args: Vec<&str> = vec!["--group", "e2e", "--max", &max];
            args.extend(lock.iter().map(String::as_str));
            args.extend(["--", "sh", "-c", &job]);
            gate_command(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_all(children: Vec<Child>) {
    for mut child in children {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "{status}: {stderr}");
    }
}

#[test]
fn concurrent_gates_with_max_1_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    wait_all(spawn_jobs(dir.path(), 4, 1, "0.2"));
    let found = intervals(&dir.path().join("record"));
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(max_overlap(&found), 1, "{found:?}");
}

#[test]
fn concurrent_gates_with_max_2_overlap_two_at_most() {
    let dir = tempfile::tempdir().unwrap();
    wait_all(spawn_jobs(dir.path(), 4, 2, "1"));
    let found = intervals(&dir.path().join("record"));
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(max_overlap(&found), 2, "{found:?}");
}

/// Waits until `path` exists (a job's "I hold the slot" marker).
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn timeout_names_the_holder_and_a_killed_holder_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_args(dir.path());
    let marker = dir.path().join("holding");
    let hold = format!("touch {}; sleep 30", marker.display());
    let mut args: Vec<&str> = vec!["--group", "gpu"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", &hold]);
    let mut holder = gate_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&marker);

    // A waiter with a deadline gives up with 124, naming the holder's command.
    let mut args: Vec<&str> = vec!["--group", "gpu", "--timeout", "300ms"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "true"]);
    let output = gate_output(&args);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(EXIT_TIMEOUT), "{stderr}");
    assert!(
        stderr.contains("gave up waiting for a `gpu` slot"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", holder.id())),
        "names the holder: {stderr}"
    );
    assert!(stderr.contains("sleep 30"), "shows its command: {stderr}");

    // SIGKILL the holding gate: its slot is free at once, and its CMD died with it.
    let waiter = {
        let mut args: Vec<&str> = vec!["--group", "gpu", "--timeout", "20s"];
        args.extend(lock.iter().map(String::as_str));
        args.extend(["--", "sh", "-c", "echo got-it"]);
        gate_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(200));
    holder.kill().unwrap();
    let killed_at = Instant::now();
    holder.wait().unwrap();
    let output = waiter.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("got-it"));
    eprintln!("slot taken {waited:?} after the holder was SIGKILLed");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn exit_status_and_slot_env_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_args(dir.path());
    let mut args: Vec<&str> = vec!["--group", "cross-val", "--max", "3"];
    args.extend(lock.iter().map(String::as_str));
    args.extend([
        "--",
        "sh",
        "-c",
        "echo slot=$CAPPED_SLOT_CROSS_VAL groups=$CAPPED_GROUPS dir=$CAPPED_LOCK_DIR; exit 7",
    ]);
    let output = gate_output(&args);
    assert_eq!(output.status.code(), Some(7), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("slot=0 "), "{stdout}");
    assert!(stdout.contains("groups=cross-val=1@workspace "), "{stdout}");
    assert!(
        stdout.contains(&format!("dir={}", dir.path().join("locks").display())),
        "{stdout}"
    );

    // Killed by a signal: 128 + N.
    let mut args: Vec<&str> = vec!["--group", "g"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(gate_output(&args).status.code(), Some(128 + 15));

    // Not found: 127.
    let mut args: Vec<&str> = vec!["--group", "g"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "/nonexistent/cmd"]);
    let output = gate_output(&args);
    assert_eq!(output.status.code(), Some(EXIT_NOT_FOUND));
    assert!(stderr_of(&output).contains("cannot run `/nonexistent/cmd`"));
}

#[test]
fn sigterm_to_the_gate_reaches_cmd() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_args(dir.path());
    let marker = dir.path().join("started");
    let job = format!(
        "trap 'echo got-term; exit 42' TERM; touch {}; while :; do sleep 0.05; done",
        marker.display()
    );
    let mut args: Vec<&str> = vec!["--group", "sig"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", &job]);
    let gate = gate_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&marker);
    let pid = rustix::process::Pid::from_raw(gate.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = gate.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(42), "{}", stderr_of(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("got-term"));
}

#[test]
fn a_grandchild_that_ignores_the_signal_is_ended_with_cmd() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_args(dir.path());
    let marker = dir.path().join("started");
    let pid_file = dir.path().join("grandchild");
    // The grandchild ignores SIGINT and SIGTERM; CMD (the outer shell) exits on SIGINT.
    let job = format!(
        "sh -c 'trap \"\" INT TERM; echo $$ > {}; touch {}; while :; do sleep 0.05; done' & wait",
        pid_file.display(),
        marker.display()
    );
    let mut args: Vec<&str> = vec!["--group", "sig"];
    args.extend(lock.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", &job]);
    let gate = gate_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&marker);
    let grandchild: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(gate.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let output = gate.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert!(stderr.contains("CMD left in its process group"), "{stderr}");
    assert!(stderr.contains("SIGKILL"), "{stderr}");
    // Gone (or a zombie until init reaps it), not running on ungated.
    let running = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    });
    assert!(!running, "the grandchild {grandchild} still runs: {stderr}");
}

#[test]
fn bad_input_is_refused_with_status_2() {
    for (args, expected) in [
        (
            &["--group", "GPU", "--", "true"][..],
            "must start with a lower-case letter",
        ),
        (&["--group", "../x", "--", "true"][..], "must start with"),
        (&["--group", "gpu", "--max", "0", "--", "true"][..], "--max"),
        (
            &["--group", "gpu", "--timeout", "soon", "--", "true"][..],
            "not a duration",
        ),
        (&["--group", "gpu"][..], "CMD"),
    ] {
        let output = gate_output(args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(EXIT_USAGE), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Programmatic use checks the name too.
    let args = GateArgs {
        group: "Bad Name".into(),
        max: None,
        timeout: None,
        lock_dir: None,
        quiet: true,
        threads: ThreadArgs::default(),
        command: vec!["true".into()],
    };
    assert_eq!(run(&args), EXIT_USAGE);
}

#[test]
fn an_unusable_lock_dir_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real");
    std::fs::create_dir(&target).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = gate_output(&[
        "--group",
        "gpu",
        "--lock-dir",
        link.to_str().unwrap(),
        "--",
        "true",
    ]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "{stderr}");
    assert!(stderr.contains("symlink"), "{stderr}");
}

#[test]
fn max_comes_from_flag_env_config_or_defaults_to_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".config")).unwrap();
    std::fs::write(
        dir.path().join(".config/capped.toml"),
        "[groups.gpu]\nmax = 3\n",
    )
    .unwrap();
    let args = |max: Option<u32>, group: &str| GateArgs {
        group: group.into(),
        max,
        timeout: None,
        lock_dir: None,
        quiet: true,
        threads: ThreadArgs::default(),
        command: vec!["true".into()],
    };
    let no_env = |_: &str| None;
    let sub = dir.path().join("crate/src");
    std::fs::create_dir_all(&sub).unwrap();
    assert_eq!(
        resolve_max(&args(Some(5), "gpu"), &no_env, &sub),
        Ok((5, MaxSource::Flag))
    );
    assert_eq!(
        resolve_max(&args(None, "gpu"), &no_env, &sub),
        Ok((3, MaxSource::Config))
    );
    assert_eq!(
        resolve_max(&args(None, "net"), &no_env, &sub),
        Ok((1, MaxSource::Default))
    );
    let with_env = |var: &str| (var == env::GROUPS).then(|| "gpu=2@host,net=4".to_string());
    assert_eq!(
        resolve_max(&args(None, "gpu"), &with_env, &sub),
        Ok((2, MaxSource::Env))
    );
    let bad_env = |var: &str| (var == env::GROUPS).then(|| "gpu=lots".to_string());
    let error = resolve_max(&args(None, "gpu"), &bad_env, &sub).unwrap_err();
    assert!(error.contains("CAPPED_GROUPS"), "{error}");
    std::fs::write(
        dir.path().join(".config/capped.toml"),
        "[groups.gpu]\nmax = 0\n",
    )
    .unwrap();
    let error = resolve_max(&args(None, "gpu"), &no_env, &sub).unwrap_err();
    assert!(error.contains("capped.toml:2:"), "{error}");
}

#[test]
fn cmd_sees_the_group_workspace_scoped() {
    assert_eq!(child_groups(None, "gpu"), "gpu=1@workspace");
    assert_eq!(
        child_groups(Some("gpu=2@host,net=4@host"), "gpu"),
        "gpu=1@workspace,net=4@host"
    );
    assert_eq!(child_groups(Some("garbage"), "gpu"), "gpu=1@workspace");
}

#[test]
fn help_documents_the_exit_statuses() {
    let help = GateCli::try_parse_from(["gate", "--help"])
        .unwrap_err()
        .to_string();
    assert!(help.contains("124 when --timeout passed"), "{help}");
    assert!(help.contains("--group <NAME>"), "{help}");
}

#[test]
fn thread_caps_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let vars = |threads: ThreadArgs| -> std::collections::BTreeMap<String, String> {
        thread_env(&threads, dir.path())
            .unwrap()
            .into_iter()
            .collect()
    };
    assert!(vars(ThreadArgs::default()).is_empty());
    let t2 = vars(ThreadArgs {
        profile: Some("t2".into()),
        ..ThreadArgs::default()
    });
    assert_eq!(t2["RAYON_NUM_THREADS"], "2");
    assert_eq!(t2["CAPPED_RAYON_THREADS"], "2");
    assert_eq!(t2["OMP_NUM_THREADS"], "1");
    assert_eq!(t2["MKL_NUM_THREADS"], "1");
    assert_eq!(t2["CAPPED_BLAS_THREADS"], "1");
    assert_eq!(t2["TOKIO_WORKER_THREADS"], "2");
    let rayon_only = vars(ThreadArgs {
        rayon_threads: Some(3),
        ..ThreadArgs::default()
    });
    assert_eq!(
        rayon_only.keys().collect::<Vec<_>>(),
        ["CAPPED_RAYON_THREADS", "RAYON_NUM_THREADS"]
    );
    let over = vars(ThreadArgs {
        profile: Some("t1".into()),
        blas_threads: Some(4),
        ..ThreadArgs::default()
    });
    assert_eq!(
        (
            over["RAYON_NUM_THREADS"].as_str(),
            over["OMP_NUM_THREADS"].as_str()
        ),
        ("1", "4")
    );
    let error = thread_env(
        &ThreadArgs {
            profile: Some("nope".into()),
            ..ThreadArgs::default()
        },
        dir.path(),
    )
    .unwrap_err();
    assert!(error.contains("unknown capped profile `nope`"), "{error}");
    assert!(error.contains("t1, t2"), "{error}");
}
