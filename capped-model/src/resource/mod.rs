//! The resource model: named counting resources of slots, shared over a [`Scope`].
//!
//! A [`Request`] names what a test needs (width slots, groups, memory); acquiring it takes
//! **all of them or none**, in one global order (width, then groups by name, then memory),
//! and returns a [`Guard`] that releases them when dropped. Cross-process slots are lock
//! files taken with `flock`: the kernel frees them when the holder dies, even by SIGKILL, so
//! no slot is ever stale.
//!
//! ```
//! use std::time::Duration;
//!
//! let guard = capped_model::Request::new()
//!     .group("doc-example")
//!     .timeout(Duration::from_secs(30))
//!     .acquire()
//!     .expect("the group is free");
//! assert_eq!(guard.slot("doc-example"), Some(0));
//! ```

pub mod lock_dir;
pub(crate) mod memory;
mod scope;
pub(crate) mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use memory::{mem_available, reserved_bytes};
pub use scope::Scope;

use crate::caps::{Caps, caps};
use crate::error::Error;
use crate::metrics;
use crate::protocol::env;
use crate::units::{self, format_duration};
use table::{MemWant, ResourceKey, Taken, Want, table};

/// The name of the width resource in metrics, events and slot maps.
pub const WIDTH: &str = "width";
/// The name of the memory resource in metrics and events.
pub const MEM: &str = "mem";
/// The directory name of the width's lock files (a group name cannot start with `.`).
const WIDTH_DIR: &str = ".width";

/// How often a waiter says what it is waiting for.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What to acquire: width slots, groups, memory; built with a small builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    width: u32,
    all_width: bool,
    groups: Vec<String>,
    mem: Option<u64>,
    timeout: Option<Duration>,
    label: Option<String>,
}

impl Request {
    /// An empty request: add width, groups or memory.
    pub fn new() -> Request {
        Request::default()
    }

    /// Takes `n` width slots (clamped to the width).
    pub fn width(mut self, n: u32) -> Request {
        self.width = n;
        self
    }

    /// Takes the whole width: nothing else of the run executes meanwhile (`serial`).
    pub fn serial(mut self) -> Request {
        self.all_width = true;
        self
    }

    /// Takes one slot of group `name`.
    pub fn group(mut self, name: impl Into<String>) -> Request {
        self.groups.push(name.into());
        self
    }

    /// Takes one slot of each group.
    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Request {
        self.groups.extend(names.into_iter().map(Into::into));
        self
    }

    /// Reserves `bytes` of the memory budget.
    pub fn mem(mut self, bytes: u64) -> Request {
        self.mem = Some(bytes);
        self
    }

    /// Gives up after `timeout` with [`Error::Timeout`] naming the holders.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Names the waiter in "still waiting" messages (the test's name).
    pub fn label(mut self, label: impl Into<String>) -> Request {
        self.label = Some(label.into());
        self
    }

    /// Acquires everything under this process's [`caps()`], waiting as long as needed
    /// (or until the request's timeout).
    pub fn acquire(&self) -> Result<Guard, Error> {
        self.acquire_with(caps())
    }

    /// Acquires everything under `caps`.
    pub fn acquire_with(&self, caps: &Caps) -> Result<Guard, Error> {
        let resolved = self.resolve(caps)?;
        resolved.acquire(
            self.timeout.map(|t| Instant::now() + t),
            self.label.as_deref(),
        )
    }

    /// Takes everything now if it is all free, else returns `Ok(None)` at once.
    pub fn try_acquire_with(&self, caps: &Caps) -> Result<Option<Guard>, Error> {
        let resolved = self.resolve(caps)?;
        resolved.try_take(Instant::now())
    }

    /// Resolves names to scopes, dirs and capacities, in the global order.
    pub fn resolve(&self, caps: &Caps) -> Result<Resolved, Error> {
        let mut wants = Vec::new();
        let mut names = Vec::new();
        // Under `cargo capped`, a libtest binary runs while the runner holds `width_held`
        // of the run's slots for the whole process: its tests share those, so `serial` and
        // `threads = N` still keep the binary's own tests apart.
        let (width_scope, capacity) = match caps.width_held() {
            0 => (Scope::Run, caps.test_threads()),
            held => (Scope::Process, held),
        };
        let width = if self.all_width {
            capacity
        } else {
            self.width.min(capacity)
        };
        if width > 0 {
            let dir = scope_dir(caps, width_scope)?;
            wants.push(Want {
                key: ResourceKey {
                    dir,
                    name: WIDTH_DIR.to_string(),
                },
                capacity,
                count: width,
            });
            names.push(WIDTH.to_string());
        }
        let mut groups = self.groups.clone();
        groups.sort();
        groups.dedup();
        crate::protocol::check_slot_vars(groups.iter().map(String::as_str))
            .map_err(Error::GroupName)?;
        for group in groups {
            units::check_group_name(&group).map_err(Error::GroupName)?;
            let limit = caps.group(&group);
            let dir = scope_dir(caps, limit.scope)?;
            wants.push(Want {
                key: ResourceKey {
                    dir,
                    name: group.clone(),
                },
                capacity: limit.max,
                count: 1,
            });
            names.push(group);
        }
        let mem = match self.mem {
            None | Some(0) => None,
            Some(amount) => {
                let budget = match caps.mem_budget() {
                    Some(budget) => budget,
                    None => default_mem_budget(),
                };
                if amount > budget {
                    return Err(Error::Impossible(format!(
                        "a reservation of {} can never fit the memory budget of {} (set mem-budget in the profile or CAPPED_MEM_BUDGET)",
                        units::format_size(amount),
                        units::format_size(budget)
                    )));
                }
                let dir = scope_dir(caps, Scope::Host)?.expect("host scope has a dir");
                Some(MemWant {
                    dir,
                    budget,
                    amount,
                })
            }
        };
        // The slot table holds one entry per slot of each resource it touches: a capacity
        // past the bound every parser enforces (a `Caps` built by hand, say) is refused
        // here rather than allocated.
        if let Some(want) = wants.iter().find(|want| want.capacity > units::MAX_COUNT) {
            return Err(Error::Impossible(format!(
                "`{}` has a capacity of {}; at most {} slots are supported",
                want.key.name,
                want.capacity,
                units::MAX_COUNT
            )));
        }
        Ok(Resolved {
            wants,
            mem,
            names: names.into(),
        })
    }
}

/// The default memory budget: three quarters of `MemAvailable` when first asked.
fn default_mem_budget() -> u64 {
    static BUDGET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| mem_available().map_or(u64::MAX, |bytes| bytes / 4 * 3))
}

/// The lock dir of `scope` (`None` for process scope), created and checked once.
fn scope_dir(caps: &Caps, scope: Scope) -> Result<Option<PathBuf>, Error> {
    let dir = match caps.effective_scope(scope) {
        Scope::Process => return Ok(None),
        Scope::Run => {
            lock_dir::run_lock_dir(caps.run_dir().expect("effective run scope has a run dir"))
        }
        Scope::Workspace => lock_dir::workspace_lock_dir(
            caps.target_dir()
                .expect("effective workspace scope has a target dir"),
        ),
        Scope::Host => caps.host_lock_dir().to_path_buf(),
    };
    ensure_dir_once(&dir)?;
    Ok(Some(dir))
}

/// Checks each lock dir once per process (the host dir must be private to this user).
fn ensure_dir_once(dir: &std::path::Path) -> Result<(), Error> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static CHECKED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    let checked = checked.get_or_insert_with(HashSet::new);
    if checked.contains(dir) {
        return Ok(());
    }
    lock_dir::ensure_lock_dir(dir)?;
    checked.insert(dir.to_path_buf());
    Ok(())
}

/// A request resolved against the caps: ready to try again and again cheaply.
#[derive(Debug, Clone)]
pub struct Resolved {
    wants: Vec<Want>,
    mem: Option<MemWant>,
    names: Arc<[String]>,
}

impl Resolved {
    fn cross_process(&self) -> bool {
        self.mem.is_some() || self.wants.iter().any(|w| w.key.dir.is_some())
    }

    /// Takes everything now, or nothing.
    pub fn try_take(&self, asked_at: Instant) -> Result<Option<Guard>, Error> {
        let taken = table().try_take(&self.wants, self.mem.as_ref())?;
        Ok(taken.map(|taken| Guard::new(taken, self.names.clone(), asked_at)))
    }

    /// Waits until everything can be taken at once, or the deadline passes.
    ///
    /// Nothing is held while waiting, so no cycle of waiters can form. Within the process a
    /// release wakes waiters at once; across processes waiters poll with jittered backoff
    /// of at most 8 ms, so a freed slot is noticed within ~10 ms.
    pub fn acquire(&self, deadline: Option<Instant>, label: Option<&str>) -> Result<Guard, Error> {
        let asked_at = Instant::now();
        let mut backoff = Duration::from_micros(500);
        let mut next_report = asked_at + REPORT_EVERY;
        loop {
            let generation = table().generation();
            if let Some(guard) = self.try_take(asked_at)? {
                return Ok(guard);
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Err(Error::Timeout {
                    request: self.to_string(),
                    waited: now - asked_at,
                    holders: self.holders(),
                });
            }
            if now >= next_report {
                eprintln!(
                    "capped: {} has waited {} for {}; held by {}",
                    label.unwrap_or("a request"),
                    format_duration(now - asked_at),
                    self,
                    self.holders().join(", ")
                );
                next_report = now + REPORT_EVERY;
            }
            let mut sleep = if self.cross_process() {
                let jittered = backoff.mul_f64(0.5 + fastrand::f64());
                backoff = (backoff * 2).min(Duration::from_millis(8));
                jittered
            } else {
                Duration::from_millis(250)
            };
            if let Some(deadline) = deadline {
                sleep = sleep.min(deadline.saturating_duration_since(now));
            }
            table().wait_for_release(generation, sleep);
        }
    }

    /// Who holds the resources of this request, for messages: `gpu slot 0: 1234 crossval-1a2b`.
    pub fn holders(&self) -> Vec<String> {
        let mut holders = Vec::new();
        for (want, name) in self.wants.iter().zip(self.names.iter()) {
            for (slot, who) in table().foreign_holders(&want.key, want.capacity) {
                holders.push(format!("{name} slot {slot}: pid {who}"));
            }
        }
        holders
    }
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (want, name) in self.wants.iter().zip(self.names.iter()) {
            let scope = match &want.key.dir {
                None => "process".to_string(),
                Some(dir) => dir.display().to_string(),
            };
            parts.push(format!(
                "{name}×{} of {} ({scope})",
                want.count, want.capacity
            ));
        }
        if let Some(mem) = &self.mem {
            parts.push(format!(
                "{} of the {} memory budget",
                units::format_size(mem.amount),
                units::format_size(mem.budget)
            ));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Resources held; dropping the guard releases them and records how long they were held.
#[must_use = "the resources are released when the guard is dropped"]
pub struct Guard {
    taken: Taken,
    names: Arc<[String]>,
    waited: Duration,
    acquired_at: Instant,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("slots", &self.slots())
            .field("waited", &self.waited)
            .finish()
    }
}

impl Guard {
    /// `names` are the names of the slot resources taken, in order (memory is apart).
    fn new(taken: Taken, names: Arc<[String]>, asked_at: Instant) -> Guard {
        let now = Instant::now();
        let waited = now - asked_at;
        let guard = Guard {
            taken,
            names,
            waited,
            acquired_at: now,
        };
        guard.each_metric_name(|name| metrics::record_wait(name, waited));
        guard
    }

    fn each_metric_name(&self, mut record: impl FnMut(&str)) {
        self.names.iter().for_each(|name| record(name));
        if self.taken.reservation.is_some() {
            record(MEM);
        }
    }

    /// The first slot held of `resource` (`"width"` or a group name).
    pub fn slot(&self, resource: &str) -> Option<u32> {
        self.slots()
            .get(resource)
            .and_then(|ids| ids.first().copied())
    }

    /// Every slot held, by resource name (`width` → `[0, 1]`, `gpu` → `[0]`).
    pub fn slots(&self) -> BTreeMap<String, Vec<u32>> {
        self.names
            .iter()
            .zip(&self.taken.slots)
            .map(|(name, (_, ids))| (name.clone(), ids.clone()))
            .collect()
    }

    /// Bytes of the memory budget held.
    pub fn mem(&self) -> Option<u64> {
        self.taken.reservation.as_ref().map(|r| r.amount)
    }

    /// How long the acquisition waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The environment that tells a child process its slots: `CAPPED_SLOT_GPU=0`, …
    pub fn envs(&self) -> Vec<(String, String)> {
        self.slots()
            .into_iter()
            .filter(|(name, ids)| name != WIDTH && !ids.is_empty())
            .map(|(name, ids)| (env::slot_var(&name), ids[0].to_string()))
            .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let held = self.acquired_at.elapsed();
        self.each_metric_name(|name| metrics::record_hold(name, held));
        drop(self.taken.reservation.take());
        table().release(&self.taken.slots);
    }
}

/// Holds one slot of group `name` until the guard drops, for code that is not a
/// `#[capped]` test (a benchmark, a build script step, a helper spawning a GPU job).
/// Waits as long as needed; panics if the group name is invalid or the lock dir unusable.
/// Use [`Request`] for a deadline or for several resources.
pub fn group(name: &str) -> Guard {
    match Request::new()
        .group(name)
        .label(format!("group(\"{name}\")"))
        .acquire()
    {
        Ok(guard) => guard,
        Err(e) => panic!("capped-test: cannot take group `{name}`: {e}"),
    }
}
