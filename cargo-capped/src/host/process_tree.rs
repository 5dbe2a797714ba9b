//! Process trees: the descendants of a pid and their summed resident memory (signalling
//! them is [`crate::process`]'s).
//!
//! The memory watchdog calls [`TreeSampler::sample_many`] every ≤ 50 ms for the running test
//! binaries, so one sample is one `readdir` of `/proc`, one read of each `/proc/<pid>/stat`
//! (for the parent map) and one read of `/proc/<pid>/status` per member of a tree (for
//! `VmRSS`), with buffers reused between samples. The scan costs about 9 µs per process on
//! the host (release build, 2-core VM), so ~1 ms per sample on a host with 100 processes.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use super::{HostError, HostRoot, is_absent, read_into, status_field};

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: u32,
    /// The command name (`comm`), which may contain spaces and parentheses.
    pub comm: String,
    /// The state letter (`R`, `S`, `D`, `Z`…).
    pub state: char,
    /// The parent's pid (0 for the kernel's own).
    pub ppid: u32,
    /// The process group id.
    pub pgrp: u32,
    /// The session id.
    pub session: u32,
    /// User-mode CPU time, in clock ticks.
    pub utime_ticks: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime_ticks: u64,
    /// Number of threads.
    pub num_threads: u64,
    /// Start time after boot, in clock ticks (with the pid, identifies a process).
    pub start_ticks: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
///
/// `comm` is everything between the first `(` and the **last** `)`, since a command name
/// may itself contain `)` and spaces; the numeric fields follow that last `)`.
pub fn parse_stat(bytes: &[u8]) -> Result<ProcStat, String> {
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or("no `(` before the command name")?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no `)` after the command name")?;
    if close < open {
        return Err("`)` before `(`".to_string());
    }
    let pid = std::str::from_utf8(&bytes[..open])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or("no pid before the command name")?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&bytes[close + 1..]).map_err(|_| "fields are not text")?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(22).collect();
    // fields[i] is field number i + 3 of proc(5).
    let number = |i: usize, name: &str| -> Result<u64, String> {
        let field = fields
            .get(i)
            .ok_or_else(|| format!("missing field {name}"))?;
        field
            .parse::<i64>()
            .map(|v| v.max(0) as u64)
            .map_err(|_| format!("{name} `{field}` is not a number"))
    };
    let id = |i: usize, name: &str| -> Result<u32, String> {
        number(i, name).map(|v| u32::try_from(v).unwrap_or(0))
    };
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or("missing state")?;
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid: id(1, "ppid")?,
        pgrp: id(2, "pgrp")?,
        session: id(3, "session")?,
        utime_ticks: number(11, "utime")?,
        stime_ticks: number(12, "stime")?,
        num_threads: number(17, "num_threads")?,
        start_ticks: number(19, "starttime")?,
        rss_pages: number(21, "rss")?,
    })
}

/// A snapshot of every process's `stat`, sorted by pid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessTable {
    processes: Vec<ProcStat>,
}

impl ProcessTable {
    /// A table of the given processes (sorted here).
    pub fn from_processes(mut processes: Vec<ProcStat>) -> Self {
        processes.sort_by_key(|p| p.pid);
        ProcessTable { processes }
    }

    /// Every process, sorted by pid.
    pub fn processes(&self) -> &[ProcStat] {
        &self.processes
    }

    /// The process `pid`, if it was present.
    pub fn get(&self, pid: u32) -> Option<&ProcStat> {
        self.processes
            .binary_search_by_key(&pid, |p| p.pid)
            .ok()
            .map(|i| &self.processes[i])
    }

    /// The descendants of `pid` (children, their children…), sorted; `pid` itself is not
    /// included. Cycles in odd input do not loop.
    pub fn descendants(&self, pid: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in &self.processes {
            if p.pid != p.ppid {
                children.entry(p.ppid).or_default().push(p.pid);
            }
        }
        let mut found = Vec::new();
        let mut queue = vec![pid];
        while let Some(parent) = queue.pop() {
            for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
                if child != pid && !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// `pid` (when present), its descendants, and, when `pgid` is given, every member of
    /// that process group (which catches orphans re-parented away from the tree), sorted.
    pub fn tree(&self, pid: u32, pgid: Option<u32>) -> Vec<u32> {
        let mut members = self.descendants(pid);
        if self.get(pid).is_some() {
            members.push(pid);
        }
        if let Some(pgid) = pgid {
            members.extend(
                self.processes
                    .iter()
                    .filter(|p| p.pgrp == pgid)
                    .map(|p| p.pid),
            );
        }
        members.sort_unstable();
        members.dedup();
        members
    }
}

impl HostRoot {
    /// Reads `/proc/<pid>/stat` of every process. Processes that exit during the scan, and
    /// `stat` files that cannot be parsed, are skipped.
    pub fn process_table(&self) -> Result<ProcessTable, HostError> {
        let mut processes = Vec::new();
        scan(self, &mut Vec::new(), &mut processes)?;
        Ok(ProcessTable::from_processes(processes))
    }

    /// `/proc/<pid>/stat`; `None` if the process does not exist.
    pub fn proc_stat(&self, pid: u32) -> Result<Option<ProcStat>, HostError> {
        let path = self.path(format!("/proc/{pid}/stat"));
        let mut buf = Vec::new();
        match read_into(&path, &mut buf) {
            Ok(()) => parse_stat(&buf)
                .map(Some)
                .map_err(|d| HostError::parse(&path, d)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(HostError::read(&path, e)),
        }
    }

    /// `VmRSS` of `/proc/<pid>/status` in bytes; `None` if the process does not exist, and
    /// 0 for processes without memory (zombies, kernel threads).
    pub fn vm_rss(&self, pid: u32) -> Result<Option<u64>, HostError> {
        vm_rss(self, pid, &mut Vec::new())
    }
}

fn vm_rss(host: &HostRoot, pid: u32, buf: &mut Vec<u8>) -> Result<Option<u64>, HostError> {
    let path = host.path(format!("/proc/{pid}/status"));
    buf.clear();
    match read_into(&path, buf) {
        Ok(()) => {}
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(HostError::read(&path, e)),
    }
    let text = String::from_utf8_lossy(buf);
    let Some(field) = status_field(&text, "VmRSS") else {
        return Ok(Some(0));
    };
    let kib: u64 = field
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HostError::parse(&path, format!("`VmRSS: {field}` is not a size in kB")))?;
    Ok(Some(kib.saturating_mul(1024)))
}

/// Reads every `/proc/<pid>/stat` into `out` (cleared first), reusing `buf`.
fn scan(host: &HostRoot, buf: &mut Vec<u8>, out: &mut Vec<ProcStat>) -> Result<(), HostError> {
    out.clear();
    let proc_dir = host.path("/proc");
    let entries = fs::read_dir(&proc_dir).map_err(|e| HostError::read(&proc_dir, e))?;
    let mut path = PathBuf::new();
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        path.clear();
        path.push(&proc_dir);
        path.push(name);
        path.push("stat");
        buf.clear();
        if read_into(&path, buf).is_err() {
            continue; // exited since the readdir
        }
        if let Ok(stat) = parse_stat(buf) {
            out.push(stat);
        }
    }
    Ok(())
}

/// One sample of a process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSample {
    /// The pid the tree hangs from.
    pub root: u32,
    /// Whether the root process still existed.
    pub root_alive: bool,
    /// Every member whose memory was counted, sorted.
    pub pids: Vec<u32>,
    /// Summed `VmRSS` of the members, in bytes.
    pub rss_bytes: u64,
}

/// Samples process trees cheaply and repeatedly (buffers are reused between calls).
#[derive(Debug)]
pub struct TreeSampler {
    host: HostRoot,
    buf: Vec<u8>,
    processes: Vec<ProcStat>,
}

impl TreeSampler {
    /// A sampler over `host`'s `/proc`.
    pub fn new(host: HostRoot) -> Self {
        TreeSampler {
            host,
            buf: Vec::with_capacity(1024),
            processes: Vec::with_capacity(512),
        }
    }

    /// The members of `root`'s tree (itself and its descendants, plus the members of
    /// process group `pgid` when given) and their summed `VmRSS`.
    pub fn sample(&mut self, root: u32, pgid: Option<u32>) -> Result<TreeSample, HostError> {
        let mut samples = self.sample_many(&[(root, pgid)])?;
        Ok(samples.pop().unwrap_or(TreeSample {
            root,
            root_alive: false,
            pids: Vec::new(),
            rss_bytes: 0,
        }))
    }

    /// [`sample`](Self::sample) for several trees at once (one per running test binary),
    /// with a single scan of `/proc`: the cost of a scan grows with the processes on the
    /// host, so a watchdog should take all its trees from one.
    pub fn sample_many(
        &mut self,
        trees: &[(u32, Option<u32>)],
    ) -> Result<Vec<TreeSample>, HostError> {
        scan(&self.host, &mut self.buf, &mut self.processes)?;
        let table = ProcessTable::from_processes(std::mem::take(&mut self.processes));
        let mut samples = Vec::with_capacity(trees.len());
        for &(root, pgid) in trees {
            let members = table.tree(root, pgid);
            let root_alive = table.get(root).is_some();
            let mut pids = Vec::with_capacity(members.len());
            let mut rss_bytes = 0u64;
            for pid in members {
                if let Some(rss) = vm_rss(&self.host, pid, &mut self.buf)? {
                    rss_bytes = rss_bytes.saturating_add(rss);
                    pids.push(pid);
                }
            }
            samples.push(TreeSample {
                root,
                root_alive,
                pids,
                rss_bytes,
            });
        }
        self.processes = table.processes;
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::{fake_root, fixture};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn comm_with_spaces_and_parens() {
        let stat = parse_stat(
            b"4242 (my (weird) prog) ) S 17 4242 4242 0 -1 4194304 102 0 0 0 7 3 0 0 20 0 5 0 28653 3133440 421 18446744073709551615",
        )
        .unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "my (weird) prog) ");
        assert_eq!(
            (stat.state, stat.ppid, stat.pgrp, stat.session),
            ('S', 17, 4242, 4242)
        );
        assert_eq!((stat.utime_ticks, stat.stime_ticks), (7, 3));
        assert_eq!(
            (stat.num_threads, stat.start_ticks, stat.rss_pages),
            (5, 28653, 421)
        );
    }

    #[test]
    fn odd_stat_content_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"12",
            b"12 (x",
            b"x) (y",
            b"12 (x) S",
            b"12 (x) S a b c",
            b"(x) S 1 1 1",
            b"\xff\xfe",
        ] {
            assert!(
                parse_stat(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Non-UTF-8 in comm is fine.
        let stat = parse_stat(b"7 (\xffx) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0").unwrap();
        assert_eq!(stat.ppid, 1);
    }

    #[test]
    fn descendants_from_fixture() {
        let host = fixture("busy");
        let table = host.process_table().unwrap();
        // busy: 1 → 100 → {101, 102 → 103}; 200 (pgrp 100, re-parented to 1); 300 unrelated.
        assert_eq!(table.descendants(100), [101, 102, 103]);
        assert_eq!(table.tree(100, None), [100, 101, 102, 103]);
        assert_eq!(table.tree(100, Some(100)), [100, 101, 102, 103, 200]);
        assert_eq!(table.get(102).unwrap().comm, "worker (2) )");
        let mut sampler = TreeSampler::new(host.clone());
        let sample = sampler.sample(100, Some(100)).unwrap();
        assert!(sample.root_alive);
        assert_eq!(sample.pids, [100, 101, 102, 103, 200]);
        // VmRSS: 100 → 1000 kB, 101 → 2000 kB, 102 → 3000 kB, 103 zombie (none), 200 → 500 kB.
        assert_eq!(sample.rss_bytes, (1000 + 2000 + 3000 + 500) * 1024);
        let gone = sampler.sample(999, None).unwrap();
        assert!(!gone.root_alive && gone.pids.is_empty() && gone.rss_bytes == 0);
        let both = sampler.sample_many(&[(102, None), (300, None)]).unwrap();
        assert_eq!(both[0].pids, [102, 103]);
        assert_eq!(both[0].rss_bytes, 3000 * 1024);
        assert_eq!(
            (both[1].pids.as_slice(), both[1].rss_bytes),
            (&[300][..], 7000 * 1024)
        );
        assert_eq!(host.vm_rss(103).unwrap(), Some(0));
        assert_eq!(host.vm_rss(999).unwrap(), None);
    }

    #[test]
    fn cycles_do_not_loop() {
        let stat = |pid, ppid| ProcStat {
            pid,
            comm: String::new(),
            state: 'S',
            ppid,
            pgrp: pid,
            session: pid,
            utime_ticks: 0,
            stime_ticks: 0,
            num_threads: 1,
            start_ticks: 0,
            rss_pages: 0,
        };
        let table = ProcessTable::from_processes(vec![stat(2, 3), stat(3, 2), stat(4, 4)]);
        assert_eq!(table.descendants(2), [3]);
        assert_eq!(table.descendants(4), Vec::<u32>::new());
    }

    #[test]
    fn unparsable_stat_files_are_skipped() {
        let (_dir, host) = fake_root(&[
            ("/proc/5/stat", "garbage"),
            (
                "/proc/6/stat",
                "6 (ok) S 1 6 6 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
            ),
            (
                "/proc/self/stat",
                "6 (ok) S 1 6 6 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
            ),
        ]);
        let table = host.process_table().unwrap();
        assert_eq!(table.processes().len(), 1);
        let err = host.proc_stat(5).unwrap_err().to_string();
        assert!(err.contains("/proc/5/stat"), "{err}");
        assert_eq!(host.proc_stat(9).unwrap(), None);
    }

    #[test]
    fn live_tree_of_real_children_and_group_kill() {
        // A shell in its own process group with two sleeping children.
        let mut child = crate::process::spawn(
            Command::new("sh")
                .args(["-c", "sleep 30 & sleep 30 & wait"])
                .stdin(Stdio::null()),
        )
        .expect("spawn sh");
        let pid = child.id();
        let mut sampler = TreeSampler::new(HostRoot::system());
        let deadline = Instant::now() + Duration::from_secs(5);
        let sample = loop {
            let sample = sampler.sample(pid, Some(pid)).unwrap();
            if sample.pids.len() >= 3 || Instant::now() > deadline {
                break sample;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(sample.root_alive);
        assert_eq!(sample.pids.len(), 3, "{sample:?}");
        assert!(sample.rss_bytes > 0);
        assert!(crate::process::signal_group(pid, crate::process::Signal::KILL).unwrap());
        child.wait().unwrap();
        // The sleeps were in the group too; give the kernel a moment to reap them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while sampler
            .sample(pid, Some(pid))
            .unwrap()
            .pids
            .iter()
            .any(|&p| {
                HostRoot::system()
                    .proc_stat(p)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.state != 'Z')
            })
        {
            assert!(Instant::now() < deadline, "group members survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
