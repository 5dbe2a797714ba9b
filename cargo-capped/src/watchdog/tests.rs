use super::*;
use crate::host::tests::fake_root;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

const MIB: u64 = 1 << 20;

fn stat_line(pid: u32, ppid: u32, pgrp: u32) -> String {
    format!("{pid} (proc {pid}) S {ppid} {pgrp} {pgrp} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0")
}

/// Writes a fake process atomically (a reader never sees half a file).
fn put_process(root: &Path, pid: u32, ppid: u32, pgrp: u32, rss_kib: u64) {
    let dir = root.join(format!("proc/{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("stat", stat_line(pid, ppid, pgrp)),
        ("status", format!("Name:\tproc\nVmRSS:\t{rss_kib} kB\n")),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Orders = Arc<Mutex<Vec<KillOrder>>>;

fn recording_watchdog(host: HostRoot) -> (Watchdog, Orders) {
    let orders: Orders = Arc::default();
    let recorded = Arc::clone(&orders);
    let watchdog = Watchdog::start_with(
        host,
        Duration::from_millis(2),
        DEFAULT_RESCAN_EVERY,
        Arc::new(move |order: &KillOrder| recorded.lock().unwrap().push(order.clone())),
    )
    .unwrap();
    (watchdog, orders)
}

#[test]
fn fixture_tree_peak_kill_and_end() {
    let (dir, host) = fake_root(&[]);
    let root = dir.path();
    put_process(root, 100, 1, 100, 1000);
    put_process(root, 101, 100, 100, 2000);
    put_process(root, 300, 1, 300, 50_000); // not ours
    let (watchdog, orders) = recording_watchdog(host);
    let handle = watchdog.watch(100, Some(100), Some(10 * MIB));
    wait_until("two samples", Duration::from_secs(10), || {
        handle.snapshot().samples >= 2
    });
    let report = handle.snapshot();
    assert_eq!(report.peak_rss, 3000 * 1024);
    assert!(report.killed.is_none());
    assert!(orders.lock().unwrap().is_empty());

    // A grandchild re-parented to init but still in the group counts too.
    put_process(root, 102, 1, 100, 20_000);
    wait_until("the kill", Duration::from_secs(10), || {
        handle.snapshot().killed.is_some()
    });
    let report = handle.snapshot();
    let kill = report.killed.clone().unwrap();
    assert_eq!(kill.limit, 10 * MIB);
    assert_eq!(kill.peak, 23_000 * 1024);
    assert_eq!(kill.pids, [100, 101, 102]);
    assert!(kill.latency_bound().is_some());
    assert_eq!(
        orders.lock().unwrap()[0],
        KillOrder {
            pgid: Some(100),
            pids: vec![100, 101, 102]
        }
    );

    // The tree disappears: the entry stops being sampled; the report stays.
    for pid in [100, 101, 102] {
        std::fs::remove_dir_all(root.join(format!("proc/{pid}"))).unwrap();
    }
    let samples = {
        std::thread::sleep(Duration::from_millis(30));
        handle.snapshot().samples
    };
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        handle.snapshot().samples,
        samples,
        "a gone tree is not sampled"
    );
    let report = handle.finish();
    assert_eq!(report.peak_rss, 23_000 * 1024);
    assert_eq!(
        classify_exit(Some(SIGKILL), &report, false)
            .message()
            .unwrap(),
        "killed: memory cap 10 MiB exceeded (peak 22.5 MiB)"
    );
    assert!(watchdog.stats().kills_sent >= 1);
}

#[test]
fn ticks_between_scans_drop_a_reused_pid_and_scans_find_new_members() {
    let (dir, host) = fake_root(&[]);
    let root = dir.path();
    put_process(root, 100, 1, 100, 1000);
    put_process(root, 101, 100, 100, 1000);
    let members = [100, 101];
    let sample = sample_members(&host, 100, Some(100), &members);
    assert_eq!(
        (sample.pids.as_slice(), sample.rss_bytes),
        (&members[..], 2000 * 1024)
    );
    // 101 exits and its pid is reused by an unrelated process: not counted.
    put_process(root, 101, 1, 555, 900_000);
    let sample = sample_members(&host, 100, Some(100), &members);
    assert_eq!(
        (sample.pids.as_slice(), sample.rss_bytes),
        (&[100][..], 1000 * 1024)
    );
    assert!(sample.root_alive);
    // The live loop: a scan every 4 ticks finds a member that appeared between scans.
    put_process(root, 101, 100, 100, 1000);
    let (watchdog, _orders) = recording_watchdog(host);
    let handle = watchdog.watch(100, Some(100), None);
    wait_until("a sample", Duration::from_secs(10), || {
        handle.snapshot().samples >= 1
    });
    put_process(root, 102, 101, 100, 5000);
    wait_until("the new member", Duration::from_secs(10), || {
        handle.snapshot().peak_rss == 7000 * 1024
    });
    let stats = watchdog.stats();
    assert!(
        stats.full_scans >= 2 && stats.full_scans < stats.ticks,
        "{stats:?}"
    );
}

#[test]
fn idle_watchdog_does_not_tick_and_unlimited_trees_are_never_killed() {
    let (dir, host) = fake_root(&[]);
    put_process(dir.path(), 200, 1, 200, 900_000);
    let (watchdog, orders) = recording_watchdog(host);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        watchdog.stats().ticks,
        0,
        "nothing watched, nothing sampled"
    );
    let handle = watchdog.watch(200, None, None);
    wait_until("samples", Duration::from_secs(10), || {
        handle.snapshot().samples >= 3
    });
    let report = handle.finish();
    assert_eq!(report.peak_rss, 900_000 * 1024);
    assert!(report.killed.is_none());
    assert!(orders.lock().unwrap().is_empty());
    assert_eq!(classify_exit(None, &report, false), MemoryVerdict::Normal);
    // Finished handles are not sampled any more (once a tick in flight has completed).
    std::thread::sleep(Duration::from_millis(30));
    let ticks = watchdog.stats().ticks;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(watchdog.stats().ticks, ticks);
}

#[test]
fn verdicts_and_their_lines() {
    let quiet = MemoryReport {
        peak_rss: 1536 * MIB,
        samples: 10,
        killed: None,
    };
    assert_eq!(classify_exit(None, &quiet, false), MemoryVerdict::Normal);
    assert_eq!(classify_exit(Some(15), &quiet, true), MemoryVerdict::Normal);
    // A SIGKILL is an OOM kill only on the kernel's word; without it, someone else sent it.
    assert_eq!(
        classify_exit(Some(SIGKILL), &quiet, false),
        MemoryVerdict::Normal
    );
    let oom = classify_exit(Some(SIGKILL), &quiet, true);
    assert_eq!(oom, MemoryVerdict::OomKill { peak: 1536 * MIB });
    assert_eq!(
        oom.describe("crossval", &[]).unwrap(),
        "crossval: killed by the kernel's OOM killer (peak RSS seen 1.5 GiB)"
    );
    let now = Instant::now();
    let capped = MemoryReport {
        peak_rss: 2048 * MIB + 100 * MIB,
        samples: 4,
        killed: Some(Kill {
            limit: 300 * MIB,
            peak: 310 * MIB,
            at: now,
            at_wall: SystemTime::now(),
            last_below: Some(now - Duration::from_millis(40)),
            pids: vec![7],
        }),
    };
    let verdict = classify_exit(Some(SIGKILL), &capped, false);
    assert_eq!(
        verdict.to_string(),
        "killed: memory cap 300 MiB exceeded (peak 2.1 GiB)"
    );
    assert_eq!(
        verdict
            .describe("big_alloc", &["tests::two_gib".to_string()])
            .unwrap(),
        "big_alloc: killed: memory cap 300 MiB exceeded (peak 2.1 GiB) while running tests::two_gib"
    );
    assert_eq!(
        capped.killed.as_ref().unwrap().latency_bound(),
        Some(Duration::from_millis(40))
    );
    assert_eq!(quiet.summary(), "peak RSS 1.5 GiB");
    assert_eq!(
        MemoryReport {
            peak_rss: 0,
            samples: 0,
            killed: None
        }
        .summary(),
        "peak RSS not sampled"
    );
    assert_eq!(MemoryVerdict::Normal.describe("x", &[]), None);
}

#[test]
fn interval_is_clamped() {
    let watchdog = Watchdog::start(Duration::from_secs(5)).unwrap();
    assert_eq!(watchdog.interval(), MAX_INTERVAL);
    let watchdog = Watchdog::start(Duration::ZERO).unwrap();
    assert_eq!(watchdog.interval(), MIN_INTERVAL);
}

/// Env var that turns this test binary into an allocating child.
const ALLOC_CHILD: &str = "CAPPED_TEST_WATCHDOG_ALLOC_MIB";

/// The child side: allocate (and touch) `CAPPED_TEST_WATCHDOG_ALLOC_MIB` MiB in 16 MiB
/// chunks, printing `rss <bytes> <unix ns>` after each, then sleep. Does nothing in a
/// normal run.
#[test]
fn allocating_child() {
    let Some(total) = std::env::var(ALLOC_CHILD)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let own_rss = || {
        crate::host::HostRoot::system()
            .vm_rss(std::process::id())
            .unwrap()
            .unwrap()
    };
    let unix_ns = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    println!("rss {} {}", own_rss(), unix_ns());
    let mut chunks = Vec::new();
    for _ in 0..total / 16 {
        chunks.push(vec![1u8; 16 << 20]);
        println!("rss {} {}", own_rss(), unix_ns());
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("allocated {total} MiB");
    std::hint::black_box(&chunks);
    std::thread::sleep(Duration::from_secs(30));
}

/// The watchdog's purpose: a test allocating 2 GiB under a 300 MiB cap is killed within a
/// second of crossing, and the verdict names the cap and the peak.
#[test]
fn allocating_2gib_under_a_300mib_cap_is_killed_soon_after_crossing() {
    if std::env::var_os(ALLOC_CHILD).is_some() {
        return; // the child runs only `allocating_child`
    }
    let available = capped_model::resource::mem_available().unwrap_or(u64::MAX);
    if available < 3 << 30 {
        eprintln!("skipping: only {} available", format_size(available));
        return;
    }
    let watchdog = Watchdog::start(DEFAULT_INTERVAL).unwrap();
    let mut child = process::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "watchdog::tests::allocating_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ALLOC_CHILD, "2048")
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let pid = child.id();
    let handle = watchdog.watch(pid, Some(pid), Some(300 * MIB));
    let stdout = child.stdout.take().unwrap();
    // The crossing time: the first report over the cap, or, when the kill came before
    // the child saw its own crossing, its last report (the crossing came after it, so
    // the latency measured is an upper bound).
    let reader = std::thread::spawn(move || {
        let mut crossed = None;
        let mut last = None;
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut fields = line.strip_prefix("rss ").unwrap_or_default().split(' ');
            let rss = fields.next().and_then(|f| f.parse::<u64>().ok());
            let ns = fields.next().and_then(|f| f.parse::<u128>().ok());
            if let (Some(rss), Some(ns)) = (rss, ns) {
                last = Some(ns);
                if rss > 300 * MIB && crossed.is_none() {
                    crossed = Some(ns);
                }
            }
            lines.push(line);
        }
        (crossed.or(last), lines)
    });
    // Never wait for the child's 30 s sleep if the watchdog failed.
    let done = Arc::new(AtomicBool::new(false));
    let guard_done = Arc::clone(&done);
    let guard = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !guard_done.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !guard_done.load(Ordering::Relaxed) {
            process::kill_group(pid);
        }
    });
    let status = child.wait().unwrap();
    let report = handle.finish();
    done.store(true, Ordering::Relaxed);
    guard.join().unwrap();
    let (crossed, lines) = reader.join().unwrap();
    let kill = report
        .killed
        .clone()
        .unwrap_or_else(|| panic!("not killed: {status:?} {report:?} {lines:?}"));
    assert_eq!(status.signal(), Some(SIGKILL), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("allocated")),
        "the child allocated everything: {lines:?}"
    );
    assert!(
        kill.peak > 300 * MIB && report.peak_rss < 2048 * MIB,
        "{report:?}"
    );
    let verdict = classify_exit(status.signal(), &report, false);
    let message = verdict.message().unwrap();
    assert!(
        message.starts_with("killed: memory cap 300 MiB exceeded (peak "),
        "{message}"
    );
    let crossed = crossed.expect("the child reported its RSS");
    let killed_ns = kill
        .at_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let latency_ms = (killed_ns - crossed as i128) as f64 / 1e6;
    eprintln!(
        "watchdog: crossing → kill {latency_ms:.1} ms (sample bound {:?}, interval {:?}); {message}",
        kill.latency_bound(),
        watchdog.interval()
    );
    // Generous: the aim is ≤ 1 s; a noisy 2-core host gets 3 s here.
    assert!(
        latency_ms <= 3000.0,
        "killed {latency_ms} ms after crossing"
    );
}

#[test]
fn run_watches_start_on_first_poll_and_report_on_finish() {
    let (dir, host) = fake_root(&[]);
    put_process(dir.path(), 400, 1, 400, 4096);
    let (watchdog, orders) = recording_watchdog(host);
    let mut watches = RunWatches::new(watchdog, Some(MIB));
    assert_eq!(watches.finish(400), None, "never polled");
    // The first poll starts watching (the thread may sample, and kill, at once).
    let _ = watches.poll(400);
    wait_until("the kill", Duration::from_secs(10), || {
        watches.poll(400).is_some()
    });
    assert_eq!(watches.poll(400).unwrap().limit, MIB);
    assert_eq!(orders.lock().unwrap()[0].pgid, Some(400));
    let report = watches.finish(400).unwrap();
    assert_eq!(report.peak_rss, 4096 * 1024);
    assert!(watches.watchdog().stats().ticks > 0);
}

#[test]
fn a_sigkill_we_did_not_send_is_an_oom_kill_only_on_the_kernels_word() {
    let watchdog = Watchdog::start(Duration::from_millis(10)).unwrap();
    let mut child = process::spawn(Command::new("sleep").arg("30")).unwrap();
    let pid = child.id();
    let handle = watchdog.watch(pid, Some(pid), Some(1 << 40));
    wait_until("a sample", Duration::from_secs(10), || {
        handle.snapshot().samples > 0
    });
    process::signal_group(pid, process::Signal::KILL).unwrap();
    let status = child.wait().unwrap();
    let report = handle.finish();
    assert!(report.peak_rss > 0);
    assert_eq!(
        classify_exit(status.signal(), &report, false),
        MemoryVerdict::Normal
    );
    assert!(matches!(
        classify_exit(status.signal(), &report, true),
        MemoryVerdict::OomKill { .. }
    ));
    assert!(watchdog.cpu_time().is_some());
}
