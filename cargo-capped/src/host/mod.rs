//! One reader over the host: `/proc`, `/sys` and the few syscalls that describe it.
//!
//! Everything `cargo capped` learns about the machine goes through a [`HostRoot`]. On the live
//! system the root is `/`; tests point it at a directory that mimics `/proc` and `/sys`
//! (see `cargo-capped/tests/fixtures/host/`), so that every reading can be fed from fixture
//! files.
//!
//! A few readings are not files. They go through the same struct, which uses the syscall when
//! the root is `/` and a file under the root otherwise:
//!
//! | reading | live system (`/`) | other roots |
//! | --- | --- | --- |
//! | resource limits | `getrlimit` | `<root>/proc/self/limits` |
//! | our user id | `getuid` | the `Uid:` line of `<root>/proc/self/status` |
//! | owner of a process | owner of `/proc/<pid>` | `Uid:` line of `<root>/proc/<pid>/status` |
//! | free disk space | `statvfs` | `<root>/.fixture/statvfs` (`AVAILABLE TOTAL` in bytes), else `statvfs` |
//!
//! CPU affinity is read from `Cpus_allowed_list` in `/proc/self/status` everywhere (it is
//! what `sched_getaffinity` returns).
//!
//! Required files (`/proc/loadavg`, `/proc/meminfo`…) that cannot be read are errors naming
//! the file and the reason; optional ones (PSI, cgroup files) that are absent are `None`.

pub mod cgroup;
pub mod process_tree;
pub mod rlimits;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rlimits::{Limit, Resource};

/// What went wrong reading the host: which file (or syscall) and why.
#[derive(Debug)]
pub struct HostError {
    subject: String,
    kind: HostErrorKind,
}

/// The kind of a [`HostError`].
#[derive(Debug)]
pub enum HostErrorKind {
    /// The file could not be read.
    Read(io::Error),
    /// The file was read but its content is not what the kernel writes there.
    Parse(String),
    /// A syscall failed.
    Syscall(io::Error),
}

impl HostError {
    /// A file that could not be read.
    pub fn read(path: &Path, error: io::Error) -> Self {
        HostError {
            subject: path.display().to_string(),
            kind: HostErrorKind::Read(error),
        }
    }

    /// A file whose content could not be understood; `detail` says what was expected.
    pub fn parse(path: &Path, detail: impl Into<String>) -> Self {
        HostError {
            subject: path.display().to_string(),
            kind: HostErrorKind::Parse(detail.into()),
        }
    }

    /// A syscall (`what`, e.g. `statvfs(/work/target)`) that failed.
    pub fn syscall(what: impl Into<String>, error: io::Error) -> Self {
        HostError {
            subject: what.into(),
            kind: HostErrorKind::Syscall(error),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HostErrorKind::Read(e) => write!(f, "cannot read {}: {e}", self.subject),
            HostErrorKind::Parse(detail) => write!(f, "cannot parse {}: {detail}", self.subject),
            HostErrorKind::Syscall(e) => write!(f, "{} failed: {e}", self.subject),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            HostErrorKind::Read(e) | HostErrorKind::Syscall(e) => Some(e),
            HostErrorKind::Parse(_) => None,
        }
    }
}

/// The directory that plays `/` for every reading: `/` on the live system, a fixture
/// directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
    system: bool,
}

impl Default for HostRoot {
    fn default() -> Self {
        HostRoot::system()
    }
}

/// `/proc/loadavg`: load averages and the kernel's count of scheduling entities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Load average over 1 minute.
    pub one: f64,
    /// Load average over 5 minutes.
    pub five: f64,
    /// Load average over 15 minutes.
    pub fifteen: f64,
    /// Runnable scheduling entities (threads) right now.
    pub running: u64,
    /// Scheduling entities (threads) that exist right now; each holds a pid.
    pub tasks: u64,
}

/// Which `/proc/pressure/*` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiResource {
    /// `/proc/pressure/cpu`.
    Cpu,
    /// `/proc/pressure/memory`.
    Memory,
    /// `/proc/pressure/io`.
    Io,
}

impl PsiResource {
    /// `cpu`, `memory` or `io`.
    pub fn name(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu",
            PsiResource::Memory => "memory",
            PsiResource::Io => "io",
        }
    }
}

/// One line of a PSI file: the share of time (in percent) some or all tasks were stalled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiLine {
    /// Percent over the last 10 seconds.
    pub avg10: f64,
    /// Percent over the last 60 seconds.
    pub avg60: f64,
    /// Percent over the last 300 seconds.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

/// A `/proc/pressure/*` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// Some tasks were stalled.
    pub some: PsiLine,
    /// All non-idle tasks were stalled (absent on old kernels for `cpu`).
    pub full: Option<PsiLine>,
}

/// The parts of `/proc/meminfo` we use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels without it.
    pub available: u64,
    /// Whether `available` is the kernel's `MemAvailable` (false: our estimate).
    pub available_from_kernel: bool,
}

/// `/proc/sys/fs/file-nr`: system-wide file handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileNr {
    /// Allocated file handles.
    pub allocated: u64,
    /// Allocated but unused (always 0 on current kernels).
    pub unused: u64,
    /// The maximum (`file-max`).
    pub max: u64,
}

/// Free space of a file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

/// Processes counted by a scan of `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCounts {
    /// Numeric directories in `/proc` (processes, not threads).
    pub processes: u64,
    /// Threads of the processes owned by the user asked about, when one was.
    pub user_tasks: Option<u64>,
}

impl HostRoot {
    /// The live system: root `/`, syscalls for what is not a file.
    pub fn system() -> Self {
        HostRoot {
            root: PathBuf::from("/"),
            system: true,
        }
    }

    /// A host rooted at `root` (a fixture directory in tests). `/` is the live system.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let system = root == Path::new("/");
        HostRoot { root, system }
    }

    /// Where readings come from for this process: the fixture directory named by
    /// `CAPPED_HOST_ROOT` (test-only, see [`crate::plan::HOST_ROOT_VAR`]) when `get` has
    /// it, else the live system.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Self {
        match get(crate::plan::HOST_ROOT_VAR).filter(|root| !root.is_empty()) {
            Some(root) => HostRoot::at(root),
            None => HostRoot::system(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the live system (root `/`), where syscalls replace fixture files.
    pub fn is_system(&self) -> bool {
        self.system
    }

    /// The real path of `absolute` (e.g. `/proc/loadavg`) under this root.
    pub fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        self.root
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }

    /// Reads a required file (`absolute` is its path on a live system).
    pub fn read(&self, absolute: impl AsRef<Path>) -> Result<String, HostError> {
        let path = self.path(absolute);
        read_text(&path).map_err(|e| HostError::read(&path, e))
    }

    /// `/proc/loadavg`.
    pub fn loadavg(&self) -> Result<LoadAvg, HostError> {
        let path = self.path("/proc/loadavg");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        parse_loadavg(&text).map_err(|detail| HostError::parse(&path, detail))
    }

    /// `/proc/pressure/<resource>`; `None` when PSI is not available.
    pub fn pressure(&self, resource: PsiResource) -> Result<Option<Pressure>, HostError> {
        let path = self.path(format!("/proc/pressure/{}", resource.name()));
        match read_optional_path(&path)? {
            None => Ok(None),
            Some(text) => parse_pressure(&text)
                .map(Some)
                .map_err(|d| HostError::parse(&path, d)),
        }
    }

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Result<MemInfo, HostError> {
        let path = self.path("/proc/meminfo");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        parse_meminfo(&text).map_err(|detail| HostError::parse(&path, detail))
    }

    /// `/proc/sys/kernel/pid_max`.
    pub fn pid_max(&self) -> Result<u64, HostError> {
        self.read_number("/proc/sys/kernel/pid_max")
    }

    /// `/proc/sys/fs/file-nr`.
    pub fn file_nr(&self) -> Result<FileNr, HostError> {
        let path = self.path("/proc/sys/fs/file-nr");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        let numbers = parse_numbers(&text, 3).map_err(|d| HostError::parse(&path, d))?;
        Ok(FileNr {
            allocated: numbers[0],
            unused: numbers[1],
            max: numbers[2],
        })
    }

    /// `/proc/sys/fs/file-max`.
    #[cfg(test)]
    pub fn file_max(&self) -> Result<u64, HostError> {
        self.read_number("/proc/sys/fs/file-max")
    }

    /// The number of processes: numeric directories in `/proc`.
    #[cfg(test)]
    pub fn process_count(&self) -> Result<u64, HostError> {
        self.process_counts(None).map(|counts| counts.processes)
    }

    /// Counts processes, and, when `uid` is given, the threads of the processes that user
    /// owns (what `RLIMIT_NPROC` limits). Processes that exit during the scan are skipped.
    ///
    /// On the live system the owner is the owner of `/proc/<pid>` (the effective uid); on
    /// other roots it is the real uid from the `Uid:` line of `/proc/<pid>/status`.
    pub fn process_counts(&self, uid: Option<u32>) -> Result<ProcessCounts, HostError> {
        let proc_dir = self.path("/proc");
        let entries = fs::read_dir(&proc_dir).map_err(|e| HostError::read(&proc_dir, e))?;
        let mut processes = 0;
        let mut user_tasks = 0;
        let mut buf = Vec::with_capacity(512);
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            processes += 1;
            let Some(uid) = uid else { continue };
            if self.process_uid(pid).ok().flatten() != Some(uid) {
                continue;
            }
            let stat_path = entry.path().join("stat");
            buf.clear();
            if read_into(&stat_path, &mut buf).is_err() {
                continue; // exited meanwhile
            }
            if let Ok(stat) = process_tree::parse_stat(&buf) {
                user_tasks += stat.num_threads.max(1);
            }
        }
        Ok(ProcessCounts {
            processes,
            user_tasks: uid.map(|_| user_tasks),
        })
    }

    /// The uid that owns process `pid`; `None` if it no longer exists.
    pub fn process_uid(&self, pid: u32) -> Result<Option<u32>, HostError> {
        if self.system {
            let path = self.path(format!("/proc/{pid}"));
            return match fs::metadata(&path) {
                Ok(meta) => Ok(Some(meta.uid())),
                Err(e) if is_absent(&e) => Ok(None),
                Err(e) => Err(HostError::read(&path, e)),
            };
        }
        let path = self.path(format!("/proc/{pid}/status"));
        match read_optional_path(&path)? {
            None => Ok(None),
            Some(text) => parse_status_uid(&text)
                .map(Some)
                .map_err(|d| HostError::parse(&path, d)),
        }
    }

    /// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`).
    pub fn cpus_allowed(&self) -> Result<u64, HostError> {
        let path = self.path("/proc/self/status");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        let list = status_field(&text, "Cpus_allowed_list")
            .ok_or_else(|| HostError::parse(&path, "no `Cpus_allowed_list:` line"))?;
        parse_cpu_list(list).map_err(|d| HostError::parse(&path, d))
    }

    /// Our real user id: `getuid` on the live system, else the `Uid:` line of
    /// `/proc/self/status`.
    pub fn uid(&self) -> Result<u32, HostError> {
        if self.system {
            return Ok(rustix::process::getuid().as_raw());
        }
        let path = self.path("/proc/self/status");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        parse_status_uid(&text).map_err(|d| HostError::parse(&path, d))
    }

    /// A resource limit of this process: `getrlimit` on the live system, else
    /// `/proc/self/limits`.
    pub fn rlimit(&self, resource: Resource) -> Result<Limit, HostError> {
        if self.system {
            return Ok(rlimits::get(resource));
        }
        let path = self.path("/proc/self/limits");
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        rlimits::parse_proc_limits(&text, resource).map_err(|d| HostError::parse(&path, d))
    }

    /// Free space of the file system holding `dir` (or its nearest existing ancestor, since
    /// a target dir may not exist yet). On fixture roots, `<root>/.fixture/statvfs` (two
    /// numbers: available and total bytes) is used when present.
    pub fn disk_space(&self, dir: &Path) -> Result<DiskSpace, HostError> {
        if !self.system {
            let path = self.path("/.fixture/statvfs");
            if let Some(text) = read_optional_path(&path)? {
                let numbers = parse_numbers(&text, 2).map_err(|d| HostError::parse(&path, d))?;
                return Ok(DiskSpace {
                    available: numbers[0],
                    total: numbers[1],
                });
            }
        }
        let existing = dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let stat = rustix::fs::statvfs(existing).map_err(|e| {
            HostError::syscall(format!("statvfs({})", existing.display()), e.into())
        })?;
        let block = stat.f_frsize.max(1);
        Ok(DiskSpace {
            available: stat.f_bavail.saturating_mul(block),
            total: stat.f_blocks.saturating_mul(block),
        })
    }

    /// Reads a file holding one unsigned number.
    fn read_number(&self, absolute: &str) -> Result<u64, HostError> {
        let path = self.path(absolute);
        let text = read_text(&path).map_err(|e| HostError::read(&path, e))?;
        parse_numbers(&text, 1)
            .map(|n| n[0])
            .map_err(|d| HostError::parse(&path, d))
    }
}

/// Reads a whole file as text; bytes that are not UTF-8 are replaced.
pub(crate) fn read_text(path: &Path) -> io::Result<String> {
    let bytes = fs::read(path)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Reads a whole file into `buf` (appending), reusing its allocation.
pub(crate) fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    fs::File::open(path)?.read_to_end(buf).map(|_| ())
}

/// Whether an error means "this file is not there" (including a process that exited, and
/// kernel features that are switched off).
pub(crate) fn is_absent(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
        || error.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
        || error.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error())
        || error.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// [`read_text`], with absence as `Ok(None)`.
pub(crate) fn read_optional_path(path: &Path) -> Result<Option<String>, HostError> {
    match read_text(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(HostError::read(path, e)),
    }
}

/// Parses the first `count` whitespace-separated unsigned numbers of `text`.
pub(crate) fn parse_numbers(text: &str, count: usize) -> Result<Vec<u64>, String> {
    let numbers: Vec<u64> = text
        .split_whitespace()
        .take(count)
        .map(|word| {
            word.parse::<u64>()
                .map_err(|_| format!("`{word}` is not a number"))
        })
        .collect::<Result<_, _>>()?;
    if numbers.len() < count {
        return Err(format!(
            "expected {count} number(s), found {}",
            numbers.len()
        ));
    }
    Ok(numbers)
}

/// Parses `/proc/loadavg`: `0.20 0.20 0.09 1/85 4995`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, String> {
    let mut words = text.split_whitespace();
    let mut load = || -> Result<f64, String> {
        let word = words
            .next()
            .ok_or("expected 3 load averages and running/total")?;
        match word.parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
            _ => Err(format!("`{word}` is not a load average")),
        }
    };
    let (one, five, fifteen) = (load()?, load()?, load()?);
    let entities = words
        .next()
        .ok_or("expected running/total after the load averages")?;
    let (running, tasks) = entities
        .split_once('/')
        .and_then(|(r, t)| Some((r.parse().ok()?, t.parse().ok()?)))
        .ok_or_else(|| format!("`{entities}` is not running/total"))?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        running,
        tasks,
    })
}

/// Parses a PSI file (`some avg10=1.04 avg60=1.31 avg300=1.49 total=8661543`, and a `full`
/// line).
pub fn parse_pressure(text: &str) -> Result<Pressure, String> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut psi = PsiLine {
            avg10: f64::NAN,
            avg60: f64::NAN,
            avg300: f64::NAN,
            total_us: 0,
        };
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                continue;
            };
            let bad = || format!("`{word}` is not name=number");
            match name {
                "avg10" => psi.avg10 = value.parse().map_err(|_| bad())?,
                "avg60" => psi.avg60 = value.parse().map_err(|_| bad())?,
                "avg300" => psi.avg300 = value.parse().map_err(|_| bad())?,
                "total" => psi.total_us = value.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        if ![psi.avg10, psi.avg60, psi.avg300]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
        {
            return Err(format!("`{line}` lacks avg10=, avg60= or avg300="));
        }
        *slot = Some(psi);
    }
    let some = some.ok_or("no `some` line")?;
    Ok(Pressure { some, full })
}

/// Parses `/proc/meminfo`; values are converted from kB to bytes.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let mut total = None;
    let mut available = None;
    let (mut free, mut buffers, mut cached) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(number)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => number.saturating_mul(1024),
            _ => number,
        };
        match name {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = bytes,
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            _ => {}
        }
    }
    let total = total.ok_or("no `MemTotal:` line")?;
    Ok(match available {
        Some(available) => MemInfo {
            total,
            available,
            available_from_kernel: true,
        },
        None => MemInfo {
            total,
            available: free
                .saturating_add(buffers)
                .saturating_add(cached)
                .min(total),
            available_from_kernel: false,
        },
    })
}

/// The value of `Name:` in a `/proc/<pid>/status` text.
pub(crate) fn status_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// The real uid (first number of the `Uid:` line) of a status text.
pub(crate) fn parse_status_uid(text: &str) -> Result<u32, String> {
    let field = status_field(text, "Uid").ok_or("no `Uid:` line")?;
    let first = field.split_whitespace().next().unwrap_or("");
    first
        .parse()
        .map_err(|_| format!("`Uid: {field}` does not start with a uid"))
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Result<u64, String> {
    let mut count = 0u64;
    for part in list.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let bad = || format!("`{list}` is not a CPU list (such as 0-3,8)");
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u64>().map_err(|_| bad())?,
                b.parse::<u64>().map_err(|_| bad())?,
            ),
            None => {
                let cpu = part.parse::<u64>().map_err(|_| bad())?;
                (cpu, cpu)
            }
        };
        if last < first {
            return Err(bad());
        }
        count += last - first + 1;
    }
    if count == 0 {
        return Err(format!("`{list}` names no CPU"));
    }
    Ok(count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::rlimits::{Limit, Resource};

    /// The fixture directory of a named case.
    pub(crate) fn fixture(case: &str) -> HostRoot {
        HostRoot::at(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/host")
                .join(case),
        )
    }

    /// A temporary fake root with the given files (paths as on a live system).
    pub(crate) fn fake_root(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let full = dir.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            fs::write(&full, content).expect("write");
        }
        let root = HostRoot::at(dir.path());
        (dir, root)
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        let load = parse_loadavg("0.20 0.25 0.09 1/85 4995\n").unwrap();
        assert_eq!(
            load,
            LoadAvg {
                one: 0.20,
                five: 0.25,
                fifteen: 0.09,
                running: 1,
                tasks: 85
            }
        );
        assert!(parse_loadavg("").is_err());
        assert!(parse_loadavg("a b c 1/2 3").is_err());
        assert!(parse_loadavg("1 2 3 12 3").is_err());
        assert!(parse_loadavg("NaN 2 3 1/2 3").is_err());
        assert!(parse_loadavg("-1 2 3 1/2 3").is_err());
    }

    #[test]
    fn pressure_parses_some_and_full() {
        let p = parse_pressure(
            "some avg10=1.04 avg60=1.31 avg300=1.49 total=8661543\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.04);
        assert_eq!(p.some.total_us, 8661543);
        assert_eq!(p.full.unwrap().avg300, 0.0);
        let only_some = parse_pressure("some avg10=5.00 avg60=1.00 avg300=0.50 total=1\n").unwrap();
        assert!(only_some.full.is_none());
        assert!(parse_pressure("").is_err());
        assert!(parse_pressure("some avg10=x avg60=1 avg300=1 total=1").is_err());
        assert!(parse_pressure("some total=1").is_err());
    }

    #[test]
    fn meminfo_in_bytes_with_fallback() {
        let m =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 500 kB\n").unwrap();
        assert_eq!(
            m,
            MemInfo {
                total: 1_024_000,
                available: 512_000,
                available_from_kernel: true
            }
        );
        let old =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 90 kB\n")
                .unwrap();
        assert_eq!(old.available, 200 * 1024);
        assert!(!old.available_from_kernel);
        assert!(parse_meminfo("garbage\n").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Ok(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Ok(7));
        assert_eq!(parse_cpu_list("5"), Ok(1));
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }

    #[test]
    fn fixture_idle_reads() {
        let host = fixture("idle");
        assert!(!host.is_system());
        let load = host.loadavg().unwrap();
        assert_eq!(load.tasks, 120);
        assert_eq!(host.cpus_allowed().unwrap(), 4);
        assert_eq!(host.pid_max().unwrap(), 4_194_304);
        assert_eq!(host.file_nr().unwrap().allocated, 2048);
        assert_eq!(host.file_max().unwrap(), 9_223_372_036_854_775_807);
        assert_eq!(host.meminfo().unwrap().total, 16 * 1024 * 1024 * 1024);
        assert!(host.pressure(PsiResource::Cpu).unwrap().is_some());
        assert_eq!(host.uid().unwrap(), 1000);
        let nofile = host.rlimit(Resource::NoFile).unwrap();
        assert_eq!(
            nofile,
            Limit {
                soft: Some(1024),
                hard: Some(524_288)
            }
        );
        assert_eq!(host.rlimit(Resource::NProc).unwrap().soft, Some(63_000));
        let disk = host.disk_space(Path::new("/nonexistent/target")).unwrap();
        assert_eq!(disk.available, 100 * 1024 * 1024 * 1024);
        let counts = host.process_counts(Some(1000)).unwrap();
        assert_eq!(counts.processes, 3);
        // pid 1 is root's; 100 (1 thread) and 200 (4 threads) are uid 1000's.
        assert_eq!(counts.user_tasks, Some(5));
        assert_eq!(host.process_count().unwrap(), 3);
    }

    #[test]
    fn missing_psi_is_absent_not_an_error() {
        let host = fixture("no-psi");
        assert!(host.pressure(PsiResource::Cpu).unwrap().is_none());
        assert!(host.pressure(PsiResource::Memory).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let (_dir, host) = fake_root(&[("/proc/loadavg", "not a loadavg")]);
        let err = host.loadavg().unwrap_err().to_string();
        assert!(err.starts_with("cannot parse "), "{err}");
        assert!(err.contains("/proc/loadavg"), "{err}");
        let err = host.meminfo().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("/proc/meminfo"),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn path_stays_under_root() {
        let host = HostRoot::at("/tmp/fake");
        assert_eq!(
            host.path("/proc/loadavg"),
            Path::new("/tmp/fake/proc/loadavg")
        );
        assert_eq!(
            HostRoot::system().path("/proc/loadavg"),
            Path::new("/proc/loadavg")
        );
        assert!(HostRoot::at("/").is_system());
    }

    #[test]
    fn live_system_reads() {
        // Whatever this machine is, these must be readable on Linux.
        let host = HostRoot::system();
        assert!(host.loadavg().is_ok());
        assert!(host.meminfo().unwrap().total > 0);
        assert!(host.cpus_allowed().unwrap() >= 1);
        assert!(host.process_count().unwrap() >= 1);
        assert!(
            host.disk_space(Path::new("/definitely/not/here"))
                .unwrap()
                .total
                > 0
        );
        assert!(host.pid_max().unwrap() > 0);
        let _ = host.cgroup().unwrap();
    }
}
