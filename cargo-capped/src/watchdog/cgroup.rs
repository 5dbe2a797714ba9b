//! Optional hard memory limits through a delegated cgroup v2: each test binary in a child
//! cgroup with `memory.max`, so the kernel enforces the cap between two watchdog samples.
//!
//! Only used when it works without privileges or side effects on others:
//!
//! * the host has the unified hierarchy (cgroup v2) and our cgroup directory is writable
//!   by us (systemd `Delegate=yes`, e.g. `systemd-run --user --scope -p Delegate=yes …`,
//!   or a container given its own cgroup namespace);
//! * the memory controller is available there (`cgroup.controllers` lists `memory`);
//! * either it is already enabled for children (`cgroup.subtree_control` has `memory`), or
//!   we can enable it: cgroup v2 forbids processes in a cgroup that hands controllers to
//!   children, so this process first moves itself into a leaf `capped-runner-<pid>`; when
//!   other processes share our cgroup (the shell that started us), that fails and
//!   everything is rolled back.
//!
//! Without a memory cap, a delegated cgroup v2 still gives each test binary a child cgroup
//! of its own ([`CgroupLimiter::detect_for_kill`], no controller needed), for one thing:
//! at the binary's end `cgroup.kill` ([`ChildCgroup::kill`]) ends every process it started,
//! also those that left its process group and its process tree.
//!
//! Anything else (cgroup v1, a read-only or non-delegated cgroup) is a [`Skip`] with a
//! reason; the watchdog keeps working alone. Every path is under a [`HostRoot`], so the
//! logic is tested against a fake cgroupfs.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::host::HostRoot;
use crate::host::cgroup::{CgroupVersion, oom_kill_count};

/// Why cgroup limits are not used on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no cgroup memory.max limits: {}", self.0)
    }
}

/// A delegated cgroup v2 directory under which per-binary child cgroups can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimiter {
    parent: PathBuf,
    /// The leaf this process moved into to enable the controller, if it did.
    runner_leaf: Option<PathBuf>,
}

/// One binary's child cgroup; removed (if empty) when dropped.
#[derive(Debug)]
pub struct ChildCgroup {
    dir: PathBuf,
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing `{text}` to {}: {e}", path.display()),
        )
    })
}

impl CgroupLimiter {
    /// Detects a delegated cgroup v2 whose memory controller is already enabled for
    /// children. Reads only; see [`CgroupLimiter::detect_and_enable`] for the rest.
    #[cfg(test)]
    pub fn detect(host: &HostRoot) -> Result<CgroupLimiter, Skip> {
        Self::detect_inner(host, false)
    }

    /// Like `CgroupLimiter::detect` (which only reads), and when the memory controller is available but not
    /// yet enabled for children, enables it by moving this process into a leaf
    /// `capped-runner-<pid>` first (rolled back on failure). This changes this process's
    /// cgroup: call it once, from the runner, only when a memory cap is asked for.
    pub fn detect_and_enable(host: &HostRoot) -> Result<CgroupLimiter, Skip> {
        Self::detect_inner(host, true)
    }

    /// Detects a delegated cgroup v2 under which child cgroups can be made only to be
    /// killed at once (`cgroup.kill`, Linux ≥ 5.14): no controller is needed, so this only
    /// reads and never moves this process.
    pub fn detect_for_kill(host: &HostRoot) -> Result<CgroupLimiter, Skip> {
        let dir = Self::delegated_dir(host)?;
        if !dir.join("cgroup.kill").exists() {
            return Err(Skip(format!(
                "{} has no cgroup.kill (Linux 5.14 or later)",
                dir.display()
            )));
        }
        Ok(CgroupLimiter {
            parent: dir,
            runner_leaf: None,
        })
    }

    /// Our cgroup v2 directory, when it is delegated to us (writable).
    fn delegated_dir(host: &HostRoot) -> Result<PathBuf, Skip> {
        let info = host
            .cgroup()
            .map_err(|e| Skip(format!("cannot read our cgroup: {e}")))?
            .ok_or_else(|| Skip("no cgroup file system".into()))?;
        if info.version != CgroupVersion::V2 {
            return Err(Skip(
                "the host uses cgroup v1; only v2 (unified) is supported".into(),
            ));
        }
        let dir = info
            .memory_dir
            .ok_or_else(|| Skip("our cgroup directory is unknown".into()))?;
        if !writable(&dir) {
            return Err(Skip(format!(
                "{} is not writable by us (not delegated; run under `systemd-run --user --scope -p Delegate=yes` to get a delegated cgroup)",
                dir.display()
            )));
        }
        Ok(dir)
    }

    fn detect_inner(host: &HostRoot, enable: bool) -> Result<CgroupLimiter, Skip> {
        let dir = Self::delegated_dir(host)?;
        if !words(&dir.join("cgroup.controllers"))
            .iter()
            .any(|c| c == "memory")
        {
            return Err(Skip(format!(
                "the memory controller is not available in {}",
                dir.display()
            )));
        }
        let subtree = dir.join("cgroup.subtree_control");
        if words(&subtree).iter().any(|c| c == "memory") {
            return Ok(CgroupLimiter {
                parent: dir,
                runner_leaf: None,
            });
        }
        if !enable {
            return Err(Skip(format!(
                "the memory controller is not enabled for children of {} (cgroup.subtree_control)",
                dir.display()
            )));
        }
        // Move ourselves into a leaf, then hand the memory controller to children.
        let leaf = dir.join(format!("capped-runner-{}", std::process::id()));
        let setup = || -> io::Result<()> {
            fs::create_dir(&leaf)?;
            write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            write_file(&subtree, "+memory")
        };
        match setup() {
            Ok(()) => Ok(CgroupLimiter {
                parent: dir,
                runner_leaf: Some(leaf),
            }),
            Err(e) => {
                // Roll back: back into our cgroup, remove the leaf.
                let _ = write_file(&dir.join("cgroup.procs"), &std::process::id().to_string());
                let _ = fs::remove_dir(&leaf);
                Err(Skip(format!(
                    "cannot enable the memory controller for children of {} ({e}); other processes probably share that cgroup",
                    dir.display()
                )))
            }
        }
    }

    /// The leaf this process moved into to enable the controller (it stays there: moving
    /// back is impossible while children have controllers), if it did.
    pub fn runner_leaf(&self) -> Option<&Path> {
        self.runner_leaf.as_deref()
    }

    /// The cgroup under which children are created.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// Creates `<parent>/capped-<name>`, with a `limit`: `memory.max = limit` (and
    /// `memory.swap.max = 0` where swap accounting exists, so the cap is not dodged by
    /// swapping). `name` must be a plain file name (a binary's name and a counter).
    pub fn create(&self, name: &str, limit: Option<u64>) -> io::Result<ChildCgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a cgroup name"),
            ));
        }
        let dir = self.parent.join(format!("capped-{name}"));
        fs::create_dir(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display()))
        })?;
        let child = ChildCgroup { dir };
        let Some(limit) = limit else {
            return Ok(child);
        };
        write_file(&child.dir.join("memory.max"), &limit.to_string())?;
        let swap = child.dir.join("memory.swap.max");
        if swap.exists() {
            let _ = write_file(&swap, "0");
        }
        Ok(child)
    }
}

impl ChildCgroup {
    /// The cgroup's directory.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` (a just-spawned test binary) into the cgroup; its children
    /// follow it.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// `oom_kill` of `memory.events`: how many processes the kernel killed for the limit.
    pub fn oom_kills(&self) -> Option<u64> {
        oom_kill_count(&fs::read_to_string(self.dir.join("memory.events")).ok()?)
    }

    /// SIGKILLs every process in the cgroup (`cgroup.kill`, Linux ≥ 5.14): what the binary
    /// started, wherever it moved in the process tree. The kernel holds the pids until they
    /// are reaped, so nothing else can be hit.
    pub fn kill(&self) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.kill"), "1")
    }

    /// Removes the cgroup; `false` while processes remain in it (they are still dying).
    pub fn remove(&self) -> bool {
        match fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// `memory.peak` (kernel ≥ 5.19): the cgroup's peak memory, page cache included.
    pub fn peak(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join("memory.peak"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        // Fails (EBUSY) while processes remain; the kernel keeps it then, harmlessly.
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::fake_root;

    fn v2_root(subtree: &str) -> (tempfile::TempDir, HostRoot) {
        fake_root(&[
            ("/proc/self/cgroup", "0::/user.slice/job.scope\n"),
            ("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n"),
            (
                "/sys/fs/cgroup/user.slice/job.scope/cgroup.controllers",
                "memory pids\n",
            ),
            (
                "/sys/fs/cgroup/user.slice/job.scope/cgroup.subtree_control",
                subtree,
            ),
            ("/sys/fs/cgroup/user.slice/job.scope/cgroup.procs", "1\n"),
            ("/sys/fs/cgroup/user.slice/job.scope/memory.max", "max\n"),
            (
                "/sys/fs/cgroup/user.slice/job.scope/memory.current",
                "1000\n",
            ),
        ])
    }

    #[test]
    fn delegated_v2_with_memory_enabled_creates_limited_children() {
        let (_dir, host) = v2_root("memory pids\n");
        let limiter = CgroupLimiter::detect(&host).unwrap();
        assert!(limiter.parent().ends_with("user.slice/job.scope"));
        let child = limiter.create("mem_hog-1", Some(300 << 20)).unwrap();
        assert_eq!(
            fs::read_to_string(child.dir().join("memory.max")).unwrap(),
            (300u64 << 20).to_string()
        );
        child.add(4242).unwrap();
        assert_eq!(
            fs::read_to_string(child.dir().join("cgroup.procs")).unwrap(),
            "4242"
        );
        fs::write(
            child.dir().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(child.oom_kills(), Some(1));
        assert_eq!(child.peak(), None);
        assert!(limiter.create("../escape", Some(1)).is_err());
        assert!(limiter.create("", Some(1)).is_err());
    }

    #[test]
    fn a_delegated_v2_without_a_cap_gives_kill_only_children() {
        let (_dir, host) = v2_root("");
        let skip = CgroupLimiter::detect_for_kill(&host).unwrap_err();
        assert!(skip.0.contains("no cgroup.kill"), "{skip}");
        let parent = host.path("/sys/fs/cgroup/user.slice/job.scope");
        fs::write(parent.join("cgroup.kill"), "").unwrap();
        let limiter = CgroupLimiter::detect_for_kill(&host).unwrap();
        assert_eq!(limiter.runner_leaf(), None, "nothing moved");
        let child = limiter.create("it-7", None).unwrap();
        assert!(!child.dir().join("memory.max").exists(), "no limit set");
        child.add(4242).unwrap();
        child.kill().unwrap();
        assert_eq!(
            fs::read_to_string(child.dir().join("cgroup.kill")).unwrap(),
            "1"
        );
        // A fake cgroup keeps its files: not removable, as a cgroup still populated.
        assert!(!child.remove());
        for file in ["cgroup.kill", "cgroup.procs"] {
            fs::remove_file(child.dir().join(file)).unwrap();
        }
        assert!(child.remove());
        assert!(child.remove(), "gone already is removed");
    }

    #[test]
    fn enabling_the_controller_moves_us_into_a_leaf() {
        let (_dir, host) = v2_root("pids\n");
        let skip = CgroupLimiter::detect(&host).unwrap_err();
        assert!(skip.0.contains("not enabled for children"), "{skip}");
        let limiter = CgroupLimiter::detect_and_enable(&host).unwrap();
        let leaf = limiter.runner_leaf.clone().unwrap();
        assert_eq!(
            fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
            std::process::id().to_string()
        );
        assert_eq!(
            fs::read_to_string(limiter.parent().join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
    }

    #[test]
    fn v1_and_missing_controllers_are_skipped_with_a_reason() {
        let (_dir, host) = fake_root(&[
            ("/proc/self/cgroup", "4:memory:/job\n"),
            (
                "/sys/fs/cgroup/memory/job/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/memory/job/memory.usage_in_bytes", "1000\n"),
        ]);
        let skip = CgroupLimiter::detect(&host).unwrap_err();
        assert!(skip.to_string().contains("cgroup v1"), "{skip}");

        let (_dir, host) = fake_root(&[
            ("/proc/self/cgroup", "0::/a\n"),
            ("/sys/fs/cgroup/cgroup.controllers", "cpu\n"),
            ("/sys/fs/cgroup/a/cgroup.controllers", "cpu\n"),
        ]);
        let skip = CgroupLimiter::detect(&host).unwrap_err();
        assert!(
            skip.0.contains("memory controller is not available"),
            "{skip}"
        );
    }

    #[test]
    fn this_host_is_detected_or_skipped_cleanly() {
        // Read-only detection: a unit test must not move itself between cgroups.
        match CgroupLimiter::detect(&HostRoot::system()) {
            Ok(limiter) => eprintln!("delegated cgroup v2 at {}", limiter.parent().display()),
            Err(skip) => eprintln!("{skip}"),
        }
    }
}
