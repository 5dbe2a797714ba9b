//! Listing each test binary before it runs: `BIN --list --format terse [FILTER] [ARGS]` with
//! `CAPPED_LIST_RESOURCES=1`, so harness binaries print every test's resources as JSON and
//! plain libtest binaries their names. Plain binaries are listed a second time with
//! `--ignored` to learn which tests are ignored (unless the run's arguments already select
//! ignored tests). Binaries are listed in parallel. Each listing run is in a process group of
//! its own and dies with the runner ([`crate::process::spawn`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use capped_model::protocol::env;

use crate::build::TestBinary;
use crate::libtest::{LIST_ARGS, Listing, logfile, mark_ignored, parse_list};
use crate::process;
use crate::run::binary_schedule::runs_ignored;
use crate::run::env::command_for;
use crate::run::signals;

/// How long a binary may take to list its tests.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// The most a binary may print on stdout while it lists: far more than any real listing
/// (a line per test, a harness binary's JSON lines included), so one that prints without
/// end is stopped rather than read into the runner's memory.
const MAX_LIST_OUTPUT: u64 = 64 << 20;

/// How much of a listing's stderr is kept for its error message; the rest is read and
/// dropped.
const MAX_LIST_STDERR: u64 = 64 << 10;

/// Why a listing failed that the run's interruption cut short (or never started).
pub const INTERRUPTED: &str = "the run was interrupted";

/// Why a listing failed that the run's stop (`--fail-fast`) cut short (or never started).
pub const STOPPED: &str = "the run stopped before it was listed";

/// What to pass every binary.
#[derive(Debug, Clone, Copy)]
pub struct ListArgs<'a> {
    /// The target dir (for `CARGO_TARGET_TMPDIR`).
    pub target_dir: &'a Path,
    /// The run's environment.
    pub env: &'a BTreeMap<String, String>,
    /// The test-name filter.
    pub filter: Option<&'a str>,
    /// Arguments after `--`.
    pub test_args: &'a [String],
    /// Where to ask each binary for a `--logfile` while it lists, to learn whether it
    /// writes libtest's verdict records (`None`: listing only, nothing learned).
    pub probe_dir: Option<&'a Path>,
    /// Set when the run stops (`--fail-fast`): listings not done end at once.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl ListArgs<'_> {
    /// Why listing must end now, if it must: the run was interrupted, or it stopped.
    fn cut_short(&self) -> Option<&'static str> {
        if signals::INTERRUPTED.load(Ordering::SeqCst) {
            Some(INTERRUPTED)
        } else if self.stop.is_some_and(|stop| stop.load(Ordering::SeqCst)) {
            Some(STOPPED)
        } else {
            None
        }
    }
}

/// Lists every binary, in parallel; each entry is the listing or why it failed.
pub fn list_all(binaries: &[TestBinary], args: ListArgs<'_>) -> Vec<Result<Listing, String>> {
    let results: Vec<Mutex<Option<Result<Listing, String>>>> =
        binaries.iter().map(|_| Mutex::new(None)).collect();
    let order: Vec<usize> = (0..binaries.len()).collect();
    list_each(binaries, &order, args, &|index, listing| {
        *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(listing);
    });
    results
        .into_iter()
        .map(|cell| {
            cell.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err("not listed".to_string()))
        })
        .collect()
}

/// Lists the binaries at the indices of `order`, in that order, on a few threads, and
/// hands each listing (or why it failed) to `done` with its binary's index as soon as it
/// is known; returns once every one was handed over (a listing that panics is handed over
/// as a failure, so nobody waits for it forever). Listings that have not started when
/// the run is interrupted fail without running.
pub fn list_each(
    binaries: &[TestBinary],
    order: &[usize],
    args: ListArgs<'_>,
    done: &(dyn Fn(usize, Result<Listing, String>) + Sync),
) {
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        .min(order.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&index) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let Some(binary) = binaries.get(index) else {
                        continue;
                    };
                    let listing = if let Some(why) = args.cut_short() {
                        Err(why.to_string())
                    } else {
                        // Every binary gets its answer: the run waits for each one.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            list_binary(binary, args)
                        }))
                        .unwrap_or_else(|_| Err("listing it panicked in cargo capped".to_string()))
                    };
                    done(index, listing);
                }
            });
        }
    });
}

/// Lists one binary.
pub fn list_binary(binary: &TestBinary, args: ListArgs<'_>) -> Result<Listing, String> {
    if binary.is_doc() {
        // rustdoc's runner is libtest: it writes the logfile records, but only to a path
        // without whitespace (rustdoc splits its test arguments on whitespace).
        let mut listing = parse_list(&run_list(binary, args, false, None)?);
        listing.logfile = args
            .probe_dir
            .is_some_and(|dir| !dir.to_string_lossy().contains(char::is_whitespace));
        if !listing.tests.is_empty() && !runs_ignored(args.test_args) {
            let ignored = run_list(binary, args, true, None)?;
            mark_ignored(&mut listing.tests, &ignored);
        }
        return Ok(listing);
    }
    let probe = args.probe_dir.map(|dir| {
        let name = binary
            .path
            .file_name()
            .map_or_else(|| "binary".into(), |n| n.to_string_lossy().into_owned());
        dir.join(format!("list-{name}.log"))
    });
    let mut listing = parse_list(&run_list(binary, args, false, probe.as_deref())?);
    if let Some(probe) = &probe {
        let log = std::fs::read_to_string(probe).unwrap_or_default();
        let _ = std::fs::remove_file(probe);
        listing.logfile = !listing.harness && logfile::is_libtest_listing(&log);
        if listing.tests.is_empty() && !log.is_empty() && !listing.logfile {
            // A harness that is not libtest printed its listing into the file instead.
            listing = parse_list(&run_list(binary, args, false, None)?);
        }
    }
    if !listing.harness && !listing.tests.is_empty() && !runs_ignored(args.test_args) {
        let ignored = run_list(binary, args, true, None)?;
        mark_ignored(&mut listing.tests, &ignored);
    }
    Ok(listing)
}

fn run_list(
    binary: &TestBinary,
    args: ListArgs<'_>,
    ignored: bool,
    logfile: Option<&Path>,
) -> Result<String, String> {
    let extra = [(env::LIST_RESOURCES.to_string(), "1".to_string())];
    let mut command: Command = command_for(binary, args.target_dir, args.env, &extra);
    command.args(LIST_ARGS);
    if ignored {
        command.arg("--ignored");
    }
    if let Some(logfile) = logfile {
        command.arg("--logfile").arg(logfile);
    }
    command.args(args.filter);
    command.args(args.test_args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own group, dying with the runner; spawned from a listing worker, which waits for
    // it (or kills it) before it moves on or exits, so the worker thread outlives it.
    let child = process::spawn(&mut command)
        .map_err(|e| format!("cannot run {}: {e}", binary.path.display()))?;
    let pid = child.id();
    // Waiting on a thread lets us kill a binary that hangs while listing.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(collect_bounded(child));
    });
    let started = Instant::now();
    let output = loop {
        match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Some(output))) => break output,
            Ok(Ok(None)) => {
                return Err(format!(
                    "`--list` printed more than {} (no listing is that long); killed",
                    capped_model::units::format_size(MAX_LIST_OUTPUT)
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot list: {e}")),
            Err(_) if started.elapsed() > LIST_TIMEOUT => {
                process::kill_group(pid);
                return Err(format!(
                    "`--list` did not finish within {}s; killed",
                    LIST_TIMEOUT.as_secs()
                ));
            }
            Err(_) if let Some(why) = args.cut_short() => {
                process::kill_group(pid);
                return Err(why.to_string());
            }
            Err(_) => {}
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`{}{} --list` failed ({}):\n{}",
            binary.path.display(),
            binary
                .args
                .iter()
                .map(|a| format!(" {a}"))
                .collect::<String>(),
            output.status,
            stderr.trim_end()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What a listing printed, read with bounded memory: its exit status, its stdout, and the
/// head of its stderr (the rest is read and dropped, so it never waits on a full pipe).
/// `None` when stdout passed [`MAX_LIST_OUTPUT`]: the binary's group is killed.
fn collect_bounded(mut child: std::process::Child) -> std::io::Result<Option<Output>> {
    let pid = child.id();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut head = Vec::new();
        let _ = (&mut stderr).take(MAX_LIST_STDERR).read_to_end(&mut head);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        head
    });
    let mut stdout = Vec::new();
    let mut out = child.stdout.take().expect("stdout is piped");
    let read = (&mut out)
        .take(MAX_LIST_OUTPUT + 1)
        .read_to_end(&mut stdout);
    let overflowed = stdout.len() as u64 > MAX_LIST_OUTPUT;
    if overflowed {
        // Unreaped (waited for below), so its group id is still its own.
        process::kill_group(pid);
        drop(out);
    }
    let status = child.wait();
    let stderr = errors.join().unwrap_or_default();
    read?;
    let status = status?;
    Ok((!overflowed).then_some(Output {
        status,
        stdout,
        stderr,
    }))
}
