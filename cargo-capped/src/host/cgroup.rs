//! Our cgroup's limits: CPU quota, memory limit and usage, pids limit and usage.
//!
//! `/proc/self/cgroup` names our cgroup; its files live under `/sys/fs/cgroup`:
//!
//! * **v2** (`/sys/fs/cgroup/cgroup.controllers` exists): `cpu.max`, `memory.max`,
//!   `memory.current`, `memory.stat`, `pids.max`, `pids.current` in `/sys/fs/cgroup/<path>`;
//! * **v1** (one hierarchy per controller): `cpu/cpu.cfs_quota_us` and `cpu.cfs_period_us`,
//!   `memory/memory.limit_in_bytes`, `memory.usage_in_bytes`, `memory.stat`, `pids/pids.max`,
//!   `pids.current`.
//!
//! A limit set on an ancestor binds as much as one on our own cgroup, so every level from
//! our cgroup up to the hierarchy's root is read and the tightest one wins. When our cgroup's
//! path does not exist under the mount (a container with its own cgroup namespace shows its
//! cgroup as the mount's root), the mount's root is used.

use std::path::{Component, Path, PathBuf};

use super::{HostError, HostRoot, read_optional_path};

/// Values at or above this are "no limit" (v1 writes `PAGE_COUNTER_MAX` pages as bytes).
const UNLIMITED_BYTES: u64 = 1 << 62;

/// Which cgroup hierarchy the limits were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`/sys/fs/cgroup/<controller>/`).
    V1,
    /// The unified hierarchy.
    V2,
}

/// A CPU bandwidth limit.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuQuota {
    /// Quota per period, in microseconds.
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
    /// The cgroup directory that sets it.
    pub dir: PathBuf,
}

impl CpuQuota {
    /// The quota in CPUs (`quota / period`, e.g. 1.5).
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us.max(1) as f64
    }
}

/// Memory use of our cgroup and the tightest memory limit above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The limit in bytes; `None` when no level sets one.
    pub limit: Option<u64>,
    /// Bytes in use at the level of `dir` (`memory.current` / `memory.usage_in_bytes`),
    /// page cache included.
    pub usage: u64,
    /// Inactive file cache at that level (reclaimable), when `memory.stat` has it.
    pub inactive_file: Option<u64>,
    /// The cgroup directory these numbers come from: the limiting level, or our own cgroup
    /// when nothing limits.
    pub dir: PathBuf,
}

impl MemoryUsage {
    /// Usage minus reclaimable cache: what counts against the limit before reclaim fails.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file.unwrap_or(0))
    }

    /// What can still be allocated before the limit: `limit − working set`.
    pub fn headroom(&self) -> Option<u64> {
        self.limit
            .map(|limit| limit.saturating_sub(self.working_set()))
    }
}

/// The tightest pids limit of our cgroup and its ancestors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsUsage {
    /// `pids.max`; `None` when no level sets one.
    pub limit: Option<u64>,
    /// `pids.current` at the level of `dir`.
    pub current: u64,
    /// The cgroup directory these numbers come from.
    pub dir: PathBuf,
}

/// What the cgroup files say about this process's cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupInfo {
    /// The hierarchy the memory numbers (or, lacking those, the others) came from.
    pub version: CgroupVersion,
    /// The tightest CPU quota; `None` when unlimited.
    pub cpu: Option<CpuQuota>,
    /// Memory use and limit; `None` when the memory controller is not visible.
    pub memory: Option<MemoryUsage>,
    /// Pids use and limit; `None` when the pids controller is not visible.
    pub pids: Option<PidsUsage>,
    /// Our own cgroup directory in the memory hierarchy (where a delegated `memory.max` would
    /// be written).
    pub memory_dir: Option<PathBuf>,
}

/// The kernel's counts of OOM kills at one instant: the host's (`oom_kill` of
/// `/proc/vmstat`, Linux ≥ 4.13) and our cgroup v2's (`oom_kill` of its `memory.events`,
/// which counts its descendants too). A rise between a process's start and end is the
/// kernel's word that its OOM killer struck meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomKills {
    /// `/proc/vmstat`'s count; `None` when unreadable.
    pub host: Option<u64>,
    /// Our cgroup's count; `None` without cgroup v2 (or its memory controller).
    pub cgroup: Option<u64>,
}

impl OomKills {
    /// Whether either count rose since `earlier` (a count unreadable at either end is no
    /// evidence).
    pub fn rose_since(&self, earlier: &OomKills) -> bool {
        let rose = |now: Option<u64>, then: Option<u64>| matches!((now, then), (Some(n), Some(t)) if n > t);
        rose(self.host, earlier.host) || rose(self.cgroup, earlier.cgroup)
    }
}

/// The `oom_kill` count of a `memory.events` (cgroup v2) or `/proc/vmstat` text.
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

impl HostRoot {
    /// Where our cgroup v2 counts OOM kills (its `memory.events`), if it has one.
    pub fn oom_events_path(&self) -> Option<PathBuf> {
        let info = self.cgroup().ok()??;
        let path = info
            .memory_dir
            .filter(|_| info.version == CgroupVersion::V2)?
            .join("memory.events");
        path.exists().then_some(path)
    }

    /// The OOM-kill counts now, our cgroup's read from `memory_events` (see
    /// [`HostRoot::oom_events_path`]).
    pub fn oom_kills(&self, memory_events: Option<&Path>) -> OomKills {
        let count = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| oom_kill_count(&text))
        };
        OomKills {
            host: count(&self.path("/proc/vmstat")),
            cgroup: memory_events.and_then(count),
        }
    }

    /// Our cgroup's limits; `None` when there is no `/proc/self/cgroup` or no cgroup file
    /// system under `/sys/fs/cgroup`.
    pub fn cgroup(&self) -> Result<Option<CgroupInfo>, HostError> {
        let self_cgroup = self.path("/proc/self/cgroup");
        let Some(text) = read_optional_path(&self_cgroup)? else {
            return Ok(None);
        };
        let memberships = parse_self_cgroup(&text);
        let base = self.path("/sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            let relative = memberships
                .iter()
                .find(|m| m.hierarchy_id == 0)
                .map(|m| m.path.as_path());
            let leaf = leaf_dir(&base, relative.unwrap_or(Path::new("")));
            let levels = levels(&base, &leaf);
            return Ok(Some(CgroupInfo {
                version: CgroupVersion::V2,
                cpu: cpu_quota(&levels, Version2)?,
                memory: memory_usage(&levels, Version2)?,
                pids: pids_usage(&levels)?,
                memory_dir: Some(leaf),
            }));
        }
        let mut found_any = false;
        let mut hierarchy = |controller: &str| -> Option<(PathBuf, Vec<PathBuf>)> {
            let membership = memberships
                .iter()
                .find(|m| m.controllers.iter().any(|c| c == controller))?;
            let mount = [
                controller.to_string(),
                format!("{controller},cpuacct"),
                format!("cpuacct,{controller}"),
            ]
            .iter()
            .map(|name| base.join(name))
            .find(|dir| dir.is_dir())?;
            found_any = true;
            let leaf = leaf_dir(&mount, &membership.path);
            let levels = levels(&mount, &leaf);
            Some((leaf, levels))
        };
        let cpu_levels = hierarchy("cpu");
        let memory_levels = hierarchy("memory");
        let pids_levels = hierarchy("pids");
        if !found_any {
            return Ok(None);
        }
        Ok(Some(CgroupInfo {
            version: CgroupVersion::V1,
            cpu: match &cpu_levels {
                Some((_, levels)) => cpu_quota(levels, Version1)?,
                None => None,
            },
            memory: match &memory_levels {
                Some((_, levels)) => memory_usage(levels, Version1)?,
                None => None,
            },
            pids: match &pids_levels {
                Some((_, levels)) => pids_usage(levels)?,
                None => None,
            },
            memory_dir: memory_levels.map(|(leaf, _)| leaf),
        }))
    }
}

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    hierarchy_id: u32,
    controllers: Vec<String>,
    /// The path, made relative and stripped of `..` and the like.
    path: PathBuf,
}

/// Parses `/proc/self/cgroup`, skipping lines it does not understand.
fn parse_self_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.trim().parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.strip_prefix("name=").unwrap_or(c).to_string())
                .collect();
            let raw = Path::new(parts.next()?.trim());
            // Only plain components: a path from the kernel must never lead out of the mount.
            let path = raw
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect();
            Some(Membership {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect()
}

/// Our cgroup's directory under `mount`, or `mount` itself when it is not there.
fn leaf_dir(mount: &Path, relative: &Path) -> PathBuf {
    let leaf = mount.join(relative);
    if leaf.is_dir() {
        leaf
    } else {
        mount.to_path_buf()
    }
}

/// `leaf` and each of its ancestors up to and including `mount`.
fn levels(mount: &Path, leaf: &Path) -> Vec<PathBuf> {
    let mut levels = Vec::new();
    let mut dir = Some(leaf);
    while let Some(current) = dir {
        levels.push(current.to_path_buf());
        if current == mount || !current.starts_with(mount) {
            break;
        }
        dir = current.parent();
    }
    levels
}

#[derive(Clone, Copy)]
struct Version1;
#[derive(Clone, Copy)]
struct Version2;

/// The per-version file names and formats.
trait Layout: Copy {
    fn cpu(dir: &Path) -> Result<Option<(u64, u64)>, HostError>;
    fn memory_limit(dir: &Path) -> Result<Option<u64>, HostError>;
    fn memory_usage(dir: &Path) -> Result<Option<u64>, HostError>;
    fn inactive_file(stat: &str) -> Option<u64>;
}

impl Layout for Version2 {
    fn cpu(dir: &Path) -> Result<Option<(u64, u64)>, HostError> {
        let path = dir.join("cpu.max");
        let Some(text) = read_optional_path(&path)? else {
            return Ok(None);
        };
        let mut words = text.split_whitespace();
        let quota = words.next().unwrap_or("");
        let period = words.next().unwrap_or("100000");
        if quota == "max" {
            return Ok(None);
        }
        let bad = || {
            HostError::parse(
                &path,
                format!("`{}` is not `max PERIOD` or `QUOTA PERIOD`", text.trim()),
            )
        };
        let quota: u64 = quota.parse().map_err(|_| bad())?;
        let period: u64 = period.parse().map_err(|_| bad())?;
        if period == 0 {
            return Err(bad());
        }
        Ok(Some((quota, period)))
    }

    fn memory_limit(dir: &Path) -> Result<Option<u64>, HostError> {
        read_limit(&dir.join("memory.max"))
    }

    fn memory_usage(dir: &Path) -> Result<Option<u64>, HostError> {
        read_value(&dir.join("memory.current"))
    }

    fn inactive_file(stat: &str) -> Option<u64> {
        stat_value(stat, "inactive_file")
    }
}

impl Layout for Version1 {
    fn cpu(dir: &Path) -> Result<Option<(u64, u64)>, HostError> {
        let quota_path = dir.join("cpu.cfs_quota_us");
        let Some(text) = read_optional_path(&quota_path)? else {
            return Ok(None);
        };
        let quota: i64 = text.trim().parse().map_err(|_| {
            HostError::parse(&quota_path, format!("`{}` is not a number", text.trim()))
        })?;
        if quota < 0 {
            return Ok(None);
        }
        let period = read_value(&dir.join("cpu.cfs_period_us"))?.unwrap_or(100_000);
        if period == 0 {
            return Err(HostError::parse(
                &dir.join("cpu.cfs_period_us"),
                "the period is 0",
            ));
        }
        Ok(Some((quota as u64, period)))
    }

    fn memory_limit(dir: &Path) -> Result<Option<u64>, HostError> {
        read_limit(&dir.join("memory.limit_in_bytes"))
    }

    fn memory_usage(dir: &Path) -> Result<Option<u64>, HostError> {
        read_value(&dir.join("memory.usage_in_bytes"))
    }

    fn inactive_file(stat: &str) -> Option<u64> {
        stat_value(stat, "total_inactive_file").or_else(|| stat_value(stat, "inactive_file"))
    }
}

/// Reads a file holding one number; absent → `None`.
fn read_value(path: &Path) -> Result<Option<u64>, HostError> {
    let Some(text) = read_optional_path(path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| HostError::parse(path, format!("`{}` is not a number", text.trim())))
}

/// Reads a limit file: a number, `max`, or a huge number meaning no limit.
fn read_limit(path: &Path) -> Result<Option<u64>, HostError> {
    let Some(text) = read_optional_path(path)? else {
        return Ok(None);
    };
    let text = text.trim();
    if text == "max" || text == "-1" {
        return Ok(None);
    }
    let value: u64 = text
        .parse()
        .map_err(|_| HostError::parse(path, format!("`{text}` is not a number or `max`")))?;
    Ok((value < UNLIMITED_BYTES).then_some(value))
}

/// `name value` from a `memory.stat` text.
fn stat_value(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

fn cpu_quota<L: Layout>(levels: &[PathBuf], _: L) -> Result<Option<CpuQuota>, HostError> {
    let mut best: Option<CpuQuota> = None;
    for dir in levels {
        if let Some((quota_us, period_us)) = L::cpu(dir)? {
            let candidate = CpuQuota {
                quota_us,
                period_us,
                dir: dir.clone(),
            };
            if best.as_ref().is_none_or(|b| candidate.cpus() < b.cpus()) {
                best = Some(candidate);
            }
        }
    }
    Ok(best)
}

fn memory_usage<L: Layout>(levels: &[PathBuf], _: L) -> Result<Option<MemoryUsage>, HostError> {
    let mut own: Option<MemoryUsage> = None;
    let mut tightest: Option<MemoryUsage> = None;
    for dir in levels {
        let Some(usage) = L::memory_usage(dir)? else {
            continue;
        };
        let limit = L::memory_limit(dir)?;
        let level = MemoryUsage {
            limit,
            usage,
            inactive_file: None,
            dir: dir.clone(),
        };
        if own.is_none() {
            own = Some(level.clone());
        }
        if let Some(headroom) = level.headroom()
            && tightest
                .as_ref()
                .and_then(MemoryUsage::headroom)
                .is_none_or(|best| headroom < best)
        {
            tightest = Some(level);
        }
    }
    let Some(mut chosen) = tightest.or(own) else {
        return Ok(None);
    };
    if let Some(stat) = read_optional_path(&chosen.dir.join("memory.stat"))? {
        chosen.inactive_file = L::inactive_file(&stat);
    }
    Ok(Some(chosen))
}

fn pids_usage(levels: &[PathBuf]) -> Result<Option<PidsUsage>, HostError> {
    let mut own: Option<PidsUsage> = None;
    let mut tightest: Option<(u64, PidsUsage)> = None;
    for dir in levels {
        let Some(current) = read_value(&dir.join("pids.current"))? else {
            continue;
        };
        let limit = read_limit(&dir.join("pids.max"))?;
        let level = PidsUsage {
            limit,
            current,
            dir: dir.clone(),
        };
        if own.is_none() {
            own = Some(level.clone());
        }
        if let Some(limit) = limit {
            let room = limit.saturating_sub(current);
            if tightest.as_ref().is_none_or(|(best, _)| room < *best) {
                tightest = Some((room, level));
            }
        }
    }
    Ok(tightest.map(|(_, level)| level).or(own))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::{fake_root, fixture};

    #[test]
    fn self_cgroup_lines() {
        let parsed =
            parse_self_cgroup("12:cpu,cpuacct:/a/b\n0::/../x\n1:name=systemd:/\ngarbage\n");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(parsed[0].path, Path::new("a/b"));
        assert_eq!(parsed[1].hierarchy_id, 0);
        assert_eq!(
            parsed[1].path,
            Path::new("x"),
            "`..` must not escape the mount"
        );
        assert_eq!(parsed[2].controllers, ["systemd"]);
    }

    #[test]
    fn v2_limited_takes_the_tightest_level() {
        let info = fixture("cgroup-v2-limited").cgroup().unwrap().unwrap();
        assert_eq!(info.version, CgroupVersion::V2);
        let cpu = info.cpu.unwrap();
        assert_eq!(cpu.cpus(), 1.5);
        assert!(cpu.dir.ends_with("ci.slice/job.scope"));
        let memory = info.memory.unwrap();
        // The parent slice's 4 GiB is tighter in headroom than the scope's 6 GiB.
        assert_eq!(memory.limit, Some(4 << 30));
        assert_eq!(memory.usage, 3 << 30);
        assert_eq!(memory.inactive_file, Some(512 << 20));
        assert_eq!(memory.headroom(), Some((4 << 30) - (3 << 30) + (512 << 20)));
        assert!(memory.dir.ends_with("ci.slice"));
        let pids = info.pids.unwrap();
        assert_eq!((pids.limit, pids.current), (Some(512), 300));
        assert!(info.memory_dir.unwrap().ends_with("ci.slice/job.scope"));
    }

    #[test]
    fn v1_reads_each_controller() {
        let info = fixture("cgroup-v1").cgroup().unwrap().unwrap();
        assert_eq!(info.version, CgroupVersion::V1);
        assert_eq!(info.cpu.unwrap().cpus(), 2.0);
        let memory = info.memory.unwrap();
        assert_eq!(memory.limit, Some(2 << 30));
        assert_eq!(memory.usage, 1 << 30);
        assert_eq!(memory.inactive_file, Some(256 << 20));
        assert!(info.pids.is_none());
    }

    #[test]
    fn unlimited_and_namespaced() {
        // A container with its own namespace: /proc/self/cgroup says `/`, files at the mount.
        let (_dir, host) = fake_root(&[
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n"),
            ("/sys/fs/cgroup/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/memory.max", "max\n"),
            ("/sys/fs/cgroup/memory.current", "1000\n"),
            ("/sys/fs/cgroup/pids.max", "max\n"),
            ("/sys/fs/cgroup/pids.current", "7\n"),
        ]);
        let info = host.cgroup().unwrap().unwrap();
        assert!(info.cpu.is_none());
        let memory = info.memory.unwrap();
        assert_eq!(
            (memory.limit, memory.usage, memory.headroom()),
            (None, 1000, None)
        );
        assert_eq!(info.pids.unwrap().current, 7);
    }

    #[test]
    fn path_missing_under_mount_falls_back_to_mount() {
        let (_dir, host) = fake_root(&[
            ("/proc/self/cgroup", "4:memory:/docker/abc\n"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "4096\n"),
        ]);
        let info = host.cgroup().unwrap().unwrap();
        let memory = info.memory.unwrap();
        assert_eq!(memory.limit, None, "PAGE_COUNTER_MAX is no limit");
        assert_eq!(memory.usage, 4096);
    }

    #[test]
    fn no_cgroup_is_none_and_garbage_is_an_error() {
        let (_dir, host) = fake_root(&[("/proc/loadavg", "0 0 0 1/1 1")]);
        assert!(host.cgroup().unwrap().is_none());
        let (_dir, host) = fake_root(&[
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/cgroup.controllers", "cpu\n"),
            ("/sys/fs/cgroup/cpu.max", "lots\n"),
        ]);
        let err = host.cgroup().unwrap_err().to_string();
        assert!(err.contains("cpu.max") && err.contains("lots"), "{err}");
    }
}
