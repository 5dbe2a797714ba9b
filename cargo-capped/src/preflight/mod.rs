//! Preflight: readings of the host, each with a status and one line of advice.
//!
//! [`collect`] reads CPUs (affinity and cgroup quota), load, PSI, processes against their
//! limits, open files, memory and free disk through a [`HostRoot`], and judges each reading
//! against [`Thresholds`] (the `[preflight]` table of `.config/capped.toml`). The
//! [`Report`] renders as an aligned table for people or as JSON, and says whether the exit
//! status must be non-zero ([`Report::exit_code`]). [`degrade`] turns reports into width
//! decisions ([`degrade::Degrader`]).
//!
//! A reading that cannot be taken (an unreadable file) is still in the report, with the
//! error as its advice and status `warn`; an optional one that does not exist on this host
//! (PSI, a cgroup limit) has value `null` and status `ok`. So the set of keys (see [`keys`])
//! is the same on every host.

pub mod command;
pub mod degrade;
mod thresholds;

use std::fmt::Write as _;
use std::path::Path;

use capped_model::units::format_size;
use serde::{Serialize, Serializer};

use crate::host::cgroup::{CgroupInfo, CgroupVersion};
use crate::host::rlimits::Resource;
use crate::host::{HostError, HostRoot, LoadAvg, PsiResource};

pub use thresholds::Thresholds;

/// The keys of the readings, in report order.
pub mod keys {
    /// CPUs this process may run on (affinity).
    pub const CPU_AFFINITY: &str = "cpu.affinity";
    /// The cgroup CPU quota, in CPUs.
    pub const CPU_QUOTA: &str = "cpu.quota";
    /// Effective CPUs: `min(affinity, ceil(quota))`.
    pub const CPU_COUNT: &str = "cpu.count";
    /// Load average over 1 minute.
    pub const LOAD_1M: &str = "load.1m";
    /// Load average over 5 minutes.
    pub const LOAD_5M: &str = "load.5m";
    /// Load average over 15 minutes.
    pub const LOAD_15M: &str = "load.15m";
    /// Percent of the last 10 s some task waited for a CPU.
    pub const PSI_CPU: &str = "psi.cpu.some.avg10";
    /// Percent of the last 10 s some task stalled on memory.
    pub const PSI_MEMORY: &str = "psi.memory.some.avg10";
    /// Percent of the last 10 s some task stalled on I/O.
    pub const PSI_IO: &str = "psi.io.some.avg10";
    /// Processes (not threads) on the host.
    pub const PROCS: &str = "procs";
    /// Tasks (threads, each holding a pid) against `kernel.pid_max`.
    pub const PIDS: &str = "pids";
    /// Our cgroup's `pids.current` against `pids.max`.
    pub const PIDS_CGROUP: &str = "pids.cgroup";
    /// Our user's tasks against `RLIMIT_NPROC`.
    pub const NPROC: &str = "nproc";
    /// System-wide file handles against `fs.file-max`.
    pub const FILES_SYSTEM: &str = "files.system";
    /// Our soft `RLIMIT_NOFILE`.
    pub const NOFILE_SOFT: &str = "nofile.soft";
    /// Our hard `RLIMIT_NOFILE`.
    pub const NOFILE_HARD: &str = "nofile.hard";
    /// `MemTotal`.
    pub const MEM_TOTAL: &str = "mem.total";
    /// Memory available to us: `MemAvailable`, or less when a cgroup limit binds.
    pub const MEM_AVAILABLE: &str = "mem.available";
    /// The tightest cgroup memory limit.
    pub const MEM_CGROUP_LIMIT: &str = "mem.cgroup.limit";
    /// Memory in use in that cgroup.
    pub const MEM_CGROUP_USAGE: &str = "mem.cgroup.usage";
    /// Free disk under the target dir.
    pub const DISK_FREE: &str = "disk.free";

    /// Every key, in report order.
    pub const ALL: [&str; 21] = [
        CPU_AFFINITY,
        CPU_QUOTA,
        CPU_COUNT,
        LOAD_1M,
        LOAD_5M,
        LOAD_15M,
        PSI_CPU,
        PSI_MEMORY,
        PSI_IO,
        PROCS,
        PIDS,
        PIDS_CGROUP,
        NPROC,
        FILES_SYSTEM,
        NOFILE_SOFT,
        NOFILE_HARD,
        MEM_TOTAL,
        MEM_AVAILABLE,
        MEM_CGROUP_LIMIT,
        MEM_CGROUP_USAGE,
        DISK_FREE,
    ];
}

/// How a reading is judged; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Worth knowing; the run goes on (and may degrade).
    Warn,
    /// The run is likely to fail; `cargo capped preflight` exits non-zero.
    Critical,
}

impl Status {
    /// `ok`, `warn` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Critical => "critical",
        }
    }

    /// `Critical` above `critical`, `Warn` above `warn`, else `Ok`.
    pub fn above(value: f64, warn: f64, critical: f64) -> Status {
        if value > critical {
            Status::Critical
        } else if value > warn {
            Status::Warn
        } else {
            Status::Ok
        }
    }

    /// `Critical` below `critical`, `Warn` below `warn`, else `Ok`.
    pub fn below(value: f64, warn: f64, critical: f64) -> Status {
        if value < critical {
            Status::Critical
        } else if value < warn {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

/// The value of a reading. In JSON a number (or `null` when absent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count (CPUs, processes, files).
    Count(u64),
    /// A size in bytes.
    Bytes(u64),
    /// A plain number (a load average, CPUs of a quota).
    Number(f64),
    /// A percentage (PSI).
    Percent(f64),
    /// Not available on this host, or not readable.
    Absent,
}

impl Value {
    /// The value as a number, when there is one.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Value::Count(v) | Value::Bytes(v) => Some(v as f64),
            Value::Number(v) | Value::Percent(v) => Some(v),
            Value::Absent => None,
        }
    }

    /// The value as an integer, for counts and sizes.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            Value::Count(v) | Value::Bytes(v) => Some(v),
            _ => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Value::Count(v) | Value::Bytes(v) => serializer.serialize_u64(v),
            Value::Number(v) | Value::Percent(v) if v.is_finite() => serializer.serialize_f64(v),
            _ => serializer.serialize_none(),
        }
    }
}

/// One reading of the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// What was read, e.g. `load.1m` (see [`keys`]).
    pub key: &'static str,
    /// The value, for programs.
    pub value: Value,
    /// The value for people, with its unit and context (`7.90 (3.95 per CPU)`).
    pub display: String,
    /// How it is judged.
    pub status: Status,
    /// One actionable line; empty when there is nothing to say.
    pub advice: String,
}

impl Reading {
    fn new(key: &'static str, value: Value, display: impl Into<String>) -> Self {
        Reading {
            key,
            value,
            display: display.into(),
            status: Status::Ok,
            advice: String::new(),
        }
    }

    fn judged(mut self, status: Status, advice: impl FnOnce(Status) -> String) -> Self {
        self.status = status;
        if status != Status::Ok {
            self.advice = advice(status);
        }
        self
    }

    fn note(mut self, advice: impl Into<String>) -> Self {
        self.advice = advice.into();
        self
    }

    /// A reading that could not be taken: `warn`, with the error as advice.
    fn unreadable(key: &'static str, error: &HostError) -> Self {
        Reading {
            key,
            value: Value::Absent,
            display: "unreadable".into(),
            status: Status::Warn,
            advice: error.to_string(),
        }
    }
}

/// Every reading and the worst status among them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The readings, in the order of [`keys::ALL`].
    pub readings: Vec<Reading>,
    /// The worst status of any reading.
    pub status: Status,
}

impl Report {
    /// A report of `readings`; the status is the worst of theirs.
    pub fn new(readings: Vec<Reading>) -> Self {
        let status = readings
            .iter()
            .map(|r| r.status)
            .max()
            .unwrap_or(Status::Ok);
        Report { readings, status }
    }

    /// The reading with `key`.
    pub fn get(&self, key: &str) -> Option<&Reading> {
        self.readings.iter().find(|r| r.key == key)
    }

    /// Whether any reading is critical.
    pub fn is_critical(&self) -> bool {
        self.status == Status::Critical
    }

    /// The process exit code: `critical_code` when a reading is critical, else 0 (warnings
    /// do not fail).
    pub fn exit_code(&self, critical_code: i32) -> i32 {
        if self.is_critical() { critical_code } else { 0 }
    }

    /// The readings that are not ok, worst first.
    pub fn problems(&self) -> Vec<&Reading> {
        let mut problems: Vec<&Reading> = self
            .readings
            .iter()
            .filter(|r| r.status != Status::Ok)
            .collect();
        problems.sort_by_key(|r| std::cmp::Reverse(r.status));
        problems
    }

    /// The report as JSON:
    /// `{"readings":[{"key":…,"value":…,"display":…,"status":"ok","advice":…}],"status":"warn"}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as an aligned table (status, reading, value, advice) followed by a
    /// summary line; with `color`, statuses are coloured with ANSI escapes.
    pub fn render_human(&self, color: bool) -> String {
        let width = |f: fn(&Reading) -> usize, header: &str| {
            self.readings
                .iter()
                .map(f)
                .max()
                .unwrap_or(0)
                .max(header.chars().count())
        };
        let status_width = width(|r| r.status.as_str().len(), "STATUS");
        let key_width = width(|r| r.key.chars().count(), "READING");
        let value_width = width(|r| r.display.chars().count(), "VALUE");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:status_width$}  {:key_width$}  {:value_width$}  ADVICE",
            "STATUS", "READING", "VALUE"
        );
        for reading in &self.readings {
            let status = reading.status.as_str();
            let padded = format!("{status:status_width$}");
            let shown = if color {
                paint(reading.status, &padded)
            } else {
                padded
            };
            let line = format!(
                "{shown}  {:key_width$}  {:value_width$}  {}",
                reading.key, reading.display, reading.advice
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let count = |s| self.readings.iter().filter(|r| r.status == s).count();
        let (warnings, criticals) = (count(Status::Warn), count(Status::Critical));
        let summary = match (criticals, warnings) {
            (0, 0) => "preflight: ok".to_string(),
            (0, w) => format!("preflight: warn ({w} warning{})", plural(w)),
            (c, w) => format!(
                "preflight: critical ({c} critical, {w} warning{})",
                plural(w)
            ),
        };
        let _ = writeln!(
            out,
            "{}",
            if color {
                paint(self.status, &summary)
            } else {
                summary
            }
        );
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn paint(status: Status, text: &str) -> String {
    let code = match status {
        Status::Ok => "32",
        Status::Warn => "33",
        Status::Critical => "1;31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Memory available to the tests: `MemAvailable`, or the cgroup's headroom (limit − working
/// set) when that is less, as the `mem.available` reading computes it; `None` when
/// `/proc/meminfo` is unreadable.
pub fn available_memory(host: &HostRoot, cgroup: Option<&CgroupInfo>) -> Option<u64> {
    let mem = host.meminfo().ok()?;
    let headroom = cgroup
        .and_then(|c| c.memory.as_ref())
        .and_then(|m| m.headroom());
    Some(headroom.map_or(mem.available, |room| room.min(mem.available)))
}

/// Effective CPUs of `host`: affinity (else `available_parallelism`) and the cgroup quota.
pub fn host_cpus(host: &HostRoot, cgroup: Option<&CgroupInfo>) -> u64 {
    let affinity = host
        .cpus_allowed()
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    effective_cpus(
        affinity,
        cgroup.and_then(|c| c.cpu.as_ref()).map(|q| q.cpus()),
    )
}

/// Effective CPUs: `min(affinity, ceil(quota))`, at least 1.
pub fn effective_cpus(affinity: u64, quota_cpus: Option<f64>) -> u64 {
    let quota = quota_cpus
        .filter(|q| q.is_finite() && *q > 0.0)
        .map(|q| q.ceil() as u64);
    affinity.min(quota.unwrap_or(u64::MAX)).max(1)
}

/// Shows a path under `host` as it would be on a live system (`/sys/fs/cgroup/…`).
fn shown(host: &HostRoot, path: &Path) -> String {
    match path.strip_prefix(host.root()) {
        Ok(rest) if !host.is_system() => format!("/{}", rest.display()),
        _ => path.display().to_string(),
    }
}

fn percent(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        100.0
    } else {
        used as f64 * 100.0 / limit as f64
    }
}

/// `300 of 512 <what>(58.6%)`.
fn usage_display(used: u64, limit: u64, what: &str) -> String {
    format!("{used} of {limit} {what}({:.1}%)", percent(used, limit))
}

/// Reads the host and judges every reading; see the module docs. `target_dir` is where the
/// build writes (its free disk is checked; it need not exist yet).
pub fn collect(host: &HostRoot, target_dir: &Path, thresholds: &Thresholds) -> Report {
    let src = Sources {
        host,
        t: thresholds,
        cgroup: host.cgroup(),
        loadavg: host.loadavg(),
    };
    let mut out = Vec::with_capacity(keys::ALL.len());
    let cpus = cpu_readings(&src, &mut out);
    load_readings(&src, cpus, &mut out);
    psi_readings(&src, &mut out);
    process_readings(&src, &mut out);
    file_readings(&src, &mut out);
    memory_readings(&src, &mut out);
    disk_reading(&src, target_dir, &mut out);
    Report::new(out)
}

/// What several sections of [`collect`] share.
struct Sources<'a> {
    host: &'a HostRoot,
    t: &'a Thresholds,
    cgroup: Result<Option<CgroupInfo>, HostError>,
    loadavg: Result<LoadAvg, HostError>,
}

impl Sources<'_> {
    fn cgroup_info(&self) -> Option<&CgroupInfo> {
        self.cgroup.as_ref().ok().and_then(Option::as_ref)
    }
}

/// `cpu.affinity`, `cpu.quota`, `cpu.count`; returns the effective CPU count.
fn cpu_readings(src: &Sources<'_>, out: &mut Vec<Reading>) -> u64 {
    let Sources { host, cgroup, .. } = src;
    let cgroup_info = src.cgroup_info();
    let affinity = host.cpus_allowed();
    out.push(match &affinity {
        Ok(n) => Reading::new(keys::CPU_AFFINITY, Value::Count(*n), n.to_string()),
        Err(e) => Reading::unreadable(keys::CPU_AFFINITY, e),
    });
    let quota = cgroup_info.and_then(|c| c.cpu.as_ref());
    out.push(match (&cgroup, quota) {
        (Err(e), _) => Reading::unreadable(keys::CPU_QUOTA, e),
        (Ok(_), Some(q)) => Reading::new(
            keys::CPU_QUOTA,
            Value::Number(q.cpus()),
            format!("{:.2} CPUs ({})", q.cpus(), shown(host, &q.dir)),
        ),
        (Ok(_), None) => Reading::new(keys::CPU_QUOTA, Value::Absent, "none"),
    });
    let fallback_cpus = || std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let cpus = effective_cpus(
        *affinity.as_ref().unwrap_or(&fallback_cpus()),
        quota.map(|q| q.cpus()),
    );
    let cpus_display = match (&affinity, quota) {
        (Ok(a), Some(q)) if cpus < *a => format!("{cpus} (affinity {a}, quota {:.2})", q.cpus()),
        _ => cpus.to_string(),
    };
    out.push(Reading::new(
        keys::CPU_COUNT,
        Value::Count(cpus),
        cpus_display,
    ));
    cpus
}

/// `load.1m`, `load.5m`, `load.15m`, judged per effective CPU.
fn load_readings(src: &Sources<'_>, cpus: u64, out: &mut Vec<Reading>) {
    let Sources { t, loadavg, .. } = src;
    match loadavg {
        Ok(load) => {
            let per_cpu = |l: f64| l / cpus as f64;
            let one = Reading::new(
                keys::LOAD_1M,
                Value::Number(load.one),
                format!("{:.2} ({:.2} per CPU)", load.one, per_cpu(load.one)),
            );
            let status = Status::above(
                per_cpu(load.one),
                t.load_per_cpu_warn,
                t.load_per_cpu_critical,
            );
            out.push(one.judged(status, |status| {
                let degrade = if per_cpu(load.one) > t.degrade_load_per_cpu {
                    format!(
                        "runs wider than 1 degrade to width 1 (above {:.2} per CPU, [preflight] degrade-load-per-cpu; --no-degrade keeps the width)",
                        t.degrade_load_per_cpu
                    )
                } else {
                    "tests will be slower and timeouts likelier".to_string()
                };
                let what = if status == Status::Critical { "the host is oversubscribed" } else { "other jobs are running" };
                format!("load {:.1} on {cpus} CPU{}: {what}; {degrade}", load.one, plural(cpus as usize))
            }));
            for (key, value) in [(keys::LOAD_5M, load.five), (keys::LOAD_15M, load.fifteen)] {
                out.push(Reading::new(
                    key,
                    Value::Number(value),
                    format!("{value:.2} ({:.2} per CPU)", per_cpu(value)),
                ));
            }
        }
        Err(e) => {
            for key in [keys::LOAD_1M, keys::LOAD_5M, keys::LOAD_15M] {
                out.push(Reading::unreadable(key, e));
            }
        }
    }
}

/// `psi.*.some.avg10`.
fn psi_readings(src: &Sources<'_>, out: &mut Vec<Reading>) {
    let Sources { host, t, .. } = src;
    let psi = [
        (
            keys::PSI_CPU,
            PsiResource::Cpu,
            t.psi_cpu_warn,
            t.psi_cpu_critical,
            "waited for a CPU",
        ),
        (
            keys::PSI_MEMORY,
            PsiResource::Memory,
            t.psi_memory_warn,
            t.psi_memory_critical,
            "stalled on memory",
        ),
        (
            keys::PSI_IO,
            PsiResource::Io,
            t.psi_io_warn,
            t.psi_io_critical,
            "stalled on I/O",
        ),
    ];
    for (key, resource, warn, critical, what) in psi {
        out.push(match host.pressure(resource) {
            Ok(Some(p)) => Reading::new(
                key,
                Value::Percent(p.some.avg10),
                format!("{:.2}% (avg60 {:.2}%)", p.some.avg10, p.some.avg60),
            )
            .judged(Status::above(p.some.avg10, warn, critical), |_| {
                let effect = match resource {
                    PsiResource::Cpu => "the CPUs are oversubscribed; expect slow tests and timeouts",
                    PsiResource::Memory => "the host is reclaiming or swapping; lower the width or stop memory-hungry jobs",
                    PsiResource::Io => "disk-bound builds and tests will be slow",
                };
                format!("tasks {what} {:.0}% of the last 10 s: {effect}", p.some.avg10)
            }),
            Ok(None) => Reading::new(key, Value::Absent, "n/a").note(format!(
                "no /proc/pressure/{} (kernel without PSI, or booted with psi=0)",
                resource.name()
            )),
            Err(e) => Reading::unreadable(key, &e),
        });
    }
}

/// `procs`, `pids`, `pids.cgroup`, `nproc`.
fn process_readings(src: &Sources<'_>, out: &mut Vec<Reading>) {
    let Sources {
        host,
        t,
        cgroup,
        loadavg,
    } = src;
    let cgroup_info = src.cgroup_info();
    let uid = host.uid();
    let nproc = host.rlimit(Resource::NProc);
    let nproc_counted = match (&uid, &nproc) {
        (Ok(uid), Ok(limit)) => *uid != 0 && limit.soft.is_some(),
        _ => false,
    };
    let counts = host.process_counts(if nproc_counted {
        uid.as_ref().ok().copied()
    } else {
        None
    });
    out.push(match (&counts, &loadavg) {
        (Ok(c), Ok(load)) => Reading::new(
            keys::PROCS,
            Value::Count(c.processes),
            format!("{} ({} threads)", c.processes, load.tasks),
        ),
        (Ok(c), Err(_)) => Reading::new(
            keys::PROCS,
            Value::Count(c.processes),
            c.processes.to_string(),
        ),
        (Err(e), _) => Reading::unreadable(keys::PROCS, e),
    });
    let pids_status = |used: u64, limit: u64| {
        Status::above(
            percent(used, limit),
            t.pids_warn_percent,
            t.pids_critical_percent,
        )
    };
    out.push(match (&loadavg, &host.pid_max()) {
        (Ok(load), &Ok(pid_max)) => Reading::new(keys::PIDS, Value::Count(load.tasks), usage_display(load.tasks, pid_max, ""))
            .judged(pids_status(load.tasks, pid_max), |_| {
                format!(
                    "{:.0}% of kernel.pid_max in use: fork and thread creation will fail with EAGAIN; stop runaway processes (`ps -eLf | wc -l`) or raise kernel.pid_max",
                    percent(load.tasks, pid_max)
                )
            }),
        (Err(e), _) | (_, Err(e)) => Reading::unreadable(keys::PIDS, e),
    });
    out.push(match (&cgroup, cgroup_info.and_then(|c| c.pids.as_ref())) {
        (Err(e), _) => Reading::unreadable(keys::PIDS_CGROUP, e),
        (Ok(_), Some(pids)) => match pids.limit {
            Some(limit) => Reading::new(
                keys::PIDS_CGROUP,
                Value::Count(pids.current),
                usage_display(pids.current, limit, &format!("in {} ", shown(host, &pids.dir))),
            )
            .judged(pids_status(pids.current, limit), |_| {
                format!(
                    "{:.0}% of the cgroup's pids.max in use: new processes and threads will fail; lower the width or raise pids.max (docker --pids-limit)",
                    percent(pids.current, limit)
                )
            }),
            None => Reading::new(keys::PIDS_CGROUP, Value::Count(pids.current), format!("{} (no limit)", pids.current)),
        },
        (Ok(_), None) => Reading::new(keys::PIDS_CGROUP, Value::Absent, "no pids controller"),
    });
    out.push(match (&uid, &nproc, &counts) {
        (Err(e), _, _) | (_, Err(e), _) => Reading::unreadable(keys::NPROC, e),
        (Ok(_), Ok(limit), _) if limit.soft.is_none() => Reading::new(keys::NPROC, Value::Absent, "unlimited"),
        (Ok(0), Ok(limit), _) => Reading::new(
            keys::NPROC,
            Value::Absent,
            format!("not enforced for root (limit {})", limit.soft.unwrap_or(0)),
        ),
        (Ok(_), Ok(_), Err(e)) => Reading::unreadable(keys::NPROC, e),
        (Ok(uid), Ok(limit), Ok(counts)) => {
            let used = counts.user_tasks.unwrap_or(0);
            let soft = limit.soft.unwrap_or(u64::MAX);
            Reading::new(keys::NPROC, Value::Count(used), usage_display(used, soft, &format!("for uid {uid} ")))
                .judged(pids_status(used, soft), |_| {
                    format!(
                        "{:.0}% of RLIMIT_NPROC used by uid {uid}: new processes and threads will fail with EAGAIN; raise `ulimit -u` or stop other jobs of this user",
                        percent(used, soft)
                    )
                })
        }
    });
}

/// `files.system`, `nofile.soft`, `nofile.hard`.
fn file_readings(src: &Sources<'_>, out: &mut Vec<Reading>) {
    let Sources { host, t, .. } = src;
    out.push(match host.file_nr() {
        Ok(nr) => Reading::new(keys::FILES_SYSTEM, Value::Count(nr.allocated), usage_display(nr.allocated, nr.max, ""))
            .judged(
                Status::above(percent(nr.allocated, nr.max), t.files_warn_percent, t.files_critical_percent),
                |_| {
                    format!(
                        "{:.0}% of fs.file-max allocated: opening files will fail with ENFILE; find the holder (`lsof | wc -l`) or raise fs.file-max",
                        percent(nr.allocated, nr.max)
                    )
                },
            ),
        Err(e) => Reading::unreadable(keys::FILES_SYSTEM, &e),
    });
    match host.rlimit(Resource::NoFile) {
        Ok(limit) => {
            let hard_text = limit
                .hard
                .map_or("unlimited".to_string(), |h| h.to_string());
            out.push(match limit.soft {
                Some(soft) => {
                    Reading::new(keys::NOFILE_SOFT, Value::Count(soft), format!("{soft} (hard {hard_text})"))
                        .judged(Status::below(soft as f64, t.nofile_soft_warn as f64, 0.0), |_| {
                            if limit.hard.is_some_and(|h| h > soft) {
                                format!(
                                    "soft limit {soft} < {}: cargo capped raises it to the hard limit {hard_text} for its tests; for plain cargo test run `ulimit -n {hard_text}`",
                                    t.nofile_soft_warn
                                )
                            } else {
                                format!(
                                    "soft limit {soft} < {} and the hard limit is no higher: tests opening many files may fail with EMFILE; raise the hard limit",
                                    t.nofile_soft_warn
                                )
                            }
                        })
                }
                None => Reading::new(keys::NOFILE_SOFT, Value::Absent, "unlimited"),
            });
            out.push(match limit.hard {
                Some(hard) => Reading::new(keys::NOFILE_HARD, Value::Count(hard), hard.to_string()).judged(
                    Status::below(hard as f64, t.nofile_hard_warn as f64, 0.0),
                    |_| {
                        format!(
                            "hard limit {hard} < {}: tests opening many files may fail with EMFILE (\"Too many open files\"); raise it (limits.conf nofile, systemd LimitNOFILE=, docker --ulimit nofile=65536)",
                            t.nofile_hard_warn
                        )
                    },
                ),
                None => Reading::new(keys::NOFILE_HARD, Value::Absent, "unlimited"),
            });
        }
        Err(e) => {
            out.push(Reading::unreadable(keys::NOFILE_SOFT, &e));
            out.push(Reading::unreadable(keys::NOFILE_HARD, &e));
        }
    }
}

/// `mem.total`, `mem.available`, `mem.cgroup.limit`, `mem.cgroup.usage`.
fn memory_readings(src: &Sources<'_>, out: &mut Vec<Reading>) {
    let Sources {
        host, t, cgroup, ..
    } = src;
    let cgroup_info = src.cgroup_info();
    let memory = cgroup_info.and_then(|c| c.memory.as_ref());
    match host.meminfo() {
        Ok(mem) => {
            out.push(Reading::new(
                keys::MEM_TOTAL,
                Value::Bytes(mem.total),
                format_size(mem.total),
            ));
            let headroom = memory.and_then(|m| m.headroom());
            let (available, display) = match (headroom, memory) {
                (Some(room), Some(m)) if room < mem.available => (
                    room,
                    format!(
                        "{} (cgroup limit {}, {} in use)",
                        format_size(room),
                        format_size(m.limit.unwrap_or(0)),
                        format_size(m.working_set())
                    ),
                ),
                _ if !mem.available_from_kernel => (
                    mem.available,
                    format!(
                        "{} (estimated: no MemAvailable)",
                        format_size(mem.available)
                    ),
                ),
                _ => (mem.available, format_size(mem.available)),
            };
            let status = Status::below(
                available as f64,
                t.mem_available_warn as f64,
                t.mem_available_critical as f64,
            );
            out.push(Reading::new(keys::MEM_AVAILABLE, Value::Bytes(available), display).judged(status, |status| {
                let degrade = if available < t.degrade_mem_available {
                    format!(
                        "; runs wider than 1 degrade to width 1 (below {}, [preflight] degrade-mem-available)",
                        format_size(t.degrade_mem_available)
                    )
                } else {
                    String::new()
                };
                let risk = if status == Status::Critical {
                    "the OOM killer is likely: stop other jobs or run `cargo capped t1`"
                } else {
                    "memory-heavy tests may be OOM-killed: cap them with --mem-limit or `#[capped(mem = \"…\")]`"
                };
                let limit = match status {
                    Status::Critical => t.mem_available_critical,
                    _ => t.mem_available_warn,
                };
                format!("only {} available (< {}): {risk}{degrade}", format_size(available), format_size(limit))
            }));
        }
        Err(e) => {
            out.push(Reading::unreadable(keys::MEM_TOTAL, &e));
            out.push(Reading::unreadable(keys::MEM_AVAILABLE, &e));
        }
    }
    match (&cgroup, memory) {
        (Err(e), _) => {
            out.push(Reading::unreadable(keys::MEM_CGROUP_LIMIT, e));
            out.push(Reading::unreadable(keys::MEM_CGROUP_USAGE, e));
        }
        (Ok(_), Some(m)) => {
            let version = match cgroup_info.map(|c| c.version) {
                Some(CgroupVersion::V1) => "v1",
                Some(CgroupVersion::V2) => "v2",
                None => "",
            };
            out.push(match m.limit {
                Some(limit) => Reading::new(
                    keys::MEM_CGROUP_LIMIT,
                    Value::Bytes(limit),
                    format!(
                        "{} (cgroup {version} {})",
                        format_size(limit),
                        shown(host, &m.dir)
                    ),
                ),
                None => Reading::new(
                    keys::MEM_CGROUP_LIMIT,
                    Value::Absent,
                    format!("no limit (cgroup {version})"),
                ),
            });
            let cache = m
                .inactive_file
                .map(|c| format!(" ({} reclaimable cache)", format_size(c)))
                .unwrap_or_default();
            out.push(Reading::new(
                keys::MEM_CGROUP_USAGE,
                Value::Bytes(m.usage),
                format!("{}{cache}", format_size(m.usage)),
            ));
        }
        (Ok(_), None) => {
            out.push(Reading::new(
                keys::MEM_CGROUP_LIMIT,
                Value::Absent,
                "no memory cgroup",
            ));
            out.push(Reading::new(
                keys::MEM_CGROUP_USAGE,
                Value::Absent,
                "no memory cgroup",
            ));
        }
    }
}

/// `disk.free` under the target dir.
fn disk_reading(src: &Sources<'_>, target_dir: &Path, out: &mut Vec<Reading>) {
    let Sources { host, t, .. } = src;
    out.push(match host.disk_space(target_dir) {
        Ok(disk) => Reading::new(
            keys::DISK_FREE,
            Value::Bytes(disk.available),
            format!("{} of {} ({})", format_size(disk.available), format_size(disk.total), target_dir.display()),
        )
        .judged(
            Status::below(disk.available as f64, t.disk_free_warn as f64, t.disk_free_critical as f64),
            |status| {
                let limit = if status == Status::Critical { t.disk_free_critical } else { t.disk_free_warn };
                format!(
                    "only {} free under {} (< {}): the build may fail with ENOSPC; run `cargo clean` or free space",
                    format_size(disk.available),
                    target_dir.display(),
                    format_size(limit)
                )
            },
        ),
        Err(e) => Reading::unreadable(keys::DISK_FREE, &e),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::{fake_root, fixture};

    fn report(case: &str) -> Report {
        collect(
            &fixture(case),
            Path::new("/work/target"),
            &Thresholds::default(),
        )
    }

    fn status_of(report: &Report, key: &str) -> Status {
        report
            .get(key)
            .unwrap_or_else(|| panic!("no reading {key}"))
            .status
    }

    #[test]
    fn every_key_in_order_on_every_fixture() {
        let expected = keys::ALL.to_vec();
        for case in ["idle", "busy", "cgroup-v2-limited", "cgroup-v1", "no-psi"] {
            let report = report(case);
            let got: Vec<&str> = report.readings.iter().map(|r| r.key).collect();
            assert_eq!(got, expected, "{case}");
            for reading in &report.readings {
                assert!(!reading.display.is_empty(), "{case}: {reading:?}");
                assert!(!reading.advice.contains('\n'), "{case}: {reading:?}");
                if reading.status != Status::Ok {
                    assert!(!reading.advice.is_empty(), "{case}: {reading:?}");
                }
            }
        }
    }

    #[test]
    fn idle_host_is_ok() {
        let report = report("idle");
        assert_eq!(report.status, Status::Ok, "{}", report.render_human(false));
        assert_eq!(report.exit_code(3), 0);
        assert_eq!(report.get(keys::CPU_COUNT).unwrap().value, Value::Count(4));
        assert_eq!(report.get(keys::NPROC).unwrap().value, Value::Count(5));
        assert_eq!(
            report.get(keys::PSI_CPU).unwrap().value,
            Value::Percent(1.5)
        );
    }

    #[test]
    fn busy_host_warns_and_goes_critical() {
        let report = report("busy");
        // busy: 2 CPUs, load 7.9 → 3.95 per CPU: critical.
        assert_eq!(status_of(&report, keys::LOAD_1M), Status::Critical);
        let advice = &report.get(keys::LOAD_1M).unwrap().advice;
        assert!(
            advice.starts_with("load 7.9 on 2 CPUs: the host is oversubscribed"),
            "{advice}"
        );
        assert!(advice.contains("degrade-load-per-cpu"), "{advice}");
        assert_eq!(status_of(&report, keys::PSI_CPU), Status::Warn);
        assert_eq!(status_of(&report, keys::MEM_AVAILABLE), Status::Warn);
        assert_eq!(status_of(&report, keys::NOFILE_SOFT), Status::Warn);
        assert_eq!(status_of(&report, keys::NOFILE_HARD), Status::Warn);
        assert_eq!(status_of(&report, keys::PIDS), Status::Warn);
        assert_eq!(status_of(&report, keys::FILES_SYSTEM), Status::Critical);
        assert_eq!(status_of(&report, keys::DISK_FREE), Status::Critical);
        assert_eq!(report.status, Status::Critical);
        assert_eq!(report.exit_code(3), 3);
        assert_eq!(report.problems()[0].status, Status::Critical);
    }

    #[test]
    fn cgroup_v2_limits_cpus_and_memory() {
        let report = report("cgroup-v2-limited");
        // affinity 8, quota 1.5 → 2 effective CPUs; load 3.0 → 1.5 per CPU: warn.
        assert_eq!(report.get(keys::CPU_COUNT).unwrap().value, Value::Count(2));
        assert_eq!(
            report.get(keys::CPU_COUNT).unwrap().display,
            "2 (affinity 8, quota 1.50)"
        );
        assert_eq!(
            report.get(keys::CPU_QUOTA).unwrap().value,
            Value::Number(1.5)
        );
        assert_eq!(status_of(&report, keys::LOAD_1M), Status::Warn);
        // 4 GiB limit, 3 GiB used of which 512 MiB cache → 1.5 GiB available: warn.
        let available = report.get(keys::MEM_AVAILABLE).unwrap();
        assert_eq!(available.value, Value::Bytes(3 << 29));
        assert!(
            available.display.contains("cgroup limit 4 GiB"),
            "{}",
            available.display
        );
        assert_eq!(available.status, Status::Warn);
        // pids.max 512, 300 in use: ok; 500 would be critical.
        assert_eq!(status_of(&report, keys::PIDS_CGROUP), Status::Ok);
        let limit = report.get(keys::MEM_CGROUP_LIMIT).unwrap();
        assert_eq!(limit.value, Value::Bytes(4 << 30));
        assert!(
            limit.display.contains("/sys/fs/cgroup/ci.slice"),
            "{}",
            limit.display
        );
    }

    #[test]
    fn cgroup_v1_and_no_psi() {
        let report = report("cgroup-v1");
        assert_eq!(
            report.get(keys::CPU_QUOTA).unwrap().value,
            Value::Number(2.0)
        );
        assert_eq!(
            report.get(keys::MEM_CGROUP_LIMIT).unwrap().value,
            Value::Bytes(2 << 30)
        );
        assert_eq!(report.get(keys::PIDS_CGROUP).unwrap().value, Value::Absent);
        let report = report_no_psi();
        let psi = report.get(keys::PSI_CPU).unwrap();
        assert_eq!((psi.value, psi.status), (Value::Absent, Status::Ok));
        assert!(psi.advice.contains("/proc/pressure/cpu"), "{}", psi.advice);
    }

    fn report_no_psi() -> Report {
        report("no-psi")
    }

    #[test]
    fn unreadable_files_warn_with_the_error() {
        let (_dir, host) = fake_root(&[("/proc/loadavg", "garbage"), ("/.fixture/statvfs", "1 2")]);
        let report = collect(&host, Path::new("/t"), &Thresholds::default());
        let load = report.get(keys::LOAD_1M).unwrap();
        assert_eq!(load.status, Status::Warn);
        assert!(
            load.advice.starts_with("cannot parse ") && load.advice.contains("loadavg"),
            "{}",
            load.advice
        );
        let mem = report.get(keys::MEM_TOTAL).unwrap();
        assert!(mem.advice.contains("meminfo"), "{}", mem.advice);
        assert_eq!(report.status, Status::Critical, "1 byte free is critical");
        assert_eq!(report.readings.len(), keys::ALL.len());
    }

    #[test]
    fn json_has_every_reading() {
        let report = report("busy");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["status"], "critical");
        let readings = json["readings"].as_array().unwrap();
        assert_eq!(readings.len(), report.readings.len());
        let load = readings.iter().find(|r| r["key"] == "load.1m").unwrap();
        assert_eq!(load["value"], 7.9);
        assert_eq!(load["status"], "critical");
        assert!(load["display"].as_str().unwrap().contains("3.95 per CPU"));
        let mem = readings.iter().find(|r| r["key"] == "mem.total").unwrap();
        assert_eq!(mem["value"], 8u64 << 30);
        let quota = readings.iter().find(|r| r["key"] == "cpu.quota").unwrap();
        assert!(quota["value"].is_null());
        for r in readings {
            let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["advice", "display", "key", "status", "value"]);
        }
    }

    #[test]
    fn human_table_is_aligned() {
        let text = report("busy").render_human(false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STATUS    READING"), "{text}");
        let value_column = lines[0].find("VALUE").unwrap();
        for line in &lines[1..lines.len() - 1] {
            let before: String = line.chars().take(value_column).collect();
            assert!(before.ends_with("  "), "misaligned: {line}");
        }
        assert!(
            lines.last().unwrap().starts_with("preflight: critical ("),
            "{text}"
        );
        let colored = report("busy").render_human(true);
        assert!(colored.contains("\x1b[1;31mcritical"), "{colored}");
    }

    #[test]
    fn effective_cpu_count() {
        assert_eq!(effective_cpus(8, Some(1.5)), 2);
        assert_eq!(effective_cpus(2, Some(4.0)), 2);
        assert_eq!(effective_cpus(4, None), 4);
        assert_eq!(effective_cpus(4, Some(0.1)), 1);
        assert_eq!(effective_cpus(0, None), 1);
        assert_eq!(effective_cpus(4, Some(f64::NAN)), 4);
    }

    #[test]
    fn live_system_collect() {
        let report = collect(
            &HostRoot::system(),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &Thresholds::default(),
        );
        assert!(report.get(keys::CPU_COUNT).unwrap().value.as_u64().unwrap() >= 1);
        assert!(report.get(keys::MEM_TOTAL).unwrap().value.as_u64().unwrap() > 0);
    }
}
