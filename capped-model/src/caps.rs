//! [`Caps`]: the one source of truth for a process's caps, read once.
//!
//! The rules live in one place: [`Caps::resolve`] turns a profile, [`CapsOverrides`] and
//! the config's groups into caps, and [`Caps::to_env`] writes them into a child's
//! environment. The runner resolves its caps from its command line; a test process from
//! the environment the runner wrote ([`Caps::from_sources`]).
//!
//! Under `cargo capped` every value comes from the `CAPPED_*` environment the runner sets.
//! Under plain `cargo test` or `cargo nextest run` the same variables may be set by hand;
//! whatever is unset comes from the workspace's `.config/capped.toml` (found upward from
//! `CARGO_MANIFEST_DIR`; its `CAPPED_PROFILE` profile, if named, and its groups) and then
//! from defaults that fit there. So a group's `max` and `scope` are the same whichever
//! runner starts the binary. A malformed value is an error naming the variable and the
//! accepted form, never a silent default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::{Config, Profile};
use crate::error::Error;
use crate::protocol::{self, GroupLimit, env};
use crate::resource::{Scope, lock_dir};
use crate::units;

/// The seed a deterministic run uses when none is given.
pub const DETERMINISTIC_SEED: u64 = 42;

/// Where the run seed came from, so a failure can say how to reproduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOrigin {
    /// `CAPPED_SEED` or the profile's `seed`.
    Given,
    /// Deterministic mode's fixed seed.
    Deterministic,
    /// Drawn at random for this process.
    Random,
}

impl SeedOrigin {
    /// `given`, `deterministic` or `drawn`: how a reproduce line labels the seed.
    pub fn label(self) -> &'static str {
        match self {
            SeedOrigin::Given => "given",
            SeedOrigin::Deterministic => "deterministic",
            SeedOrigin::Random => "drawn",
        }
    }

    /// The origin a [`SeedOrigin::label`] names.
    pub fn from_label(label: &str) -> Option<SeedOrigin> {
        [
            SeedOrigin::Given,
            SeedOrigin::Deterministic,
            SeedOrigin::Random,
        ]
        .into_iter()
        .find(|origin| origin.label() == label)
    }
}

/// The caps of this process: widths, pool sizes, mode, seed, groups and lock dirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    under_runner: bool,
    profile: Option<String>,
    run_id: Option<String>,
    test_threads: u32,
    rayon_threads: u32,
    blas_threads: u32,
    async_threads: u32,
    deterministic: bool,
    seed: u64,
    seed_origin: SeedOrigin,
    shuffle: bool,
    test_timeout: Option<Duration>,
    mem_budget: Option<u64>,
    groups: BTreeMap<String, GroupLimit>,
    host_lock_dir: PathBuf,
    run_dir: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    events: Option<PathBuf>,
    width_held: u32,
}

fn env_error(var: &str, value: &str, expected: impl Into<String>) -> Error {
    Error::Env {
        var: var.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Reads an optional count in `1..=`[`units::MAX_COUNT`] from `var`.
fn count(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<u32>, Error> {
    match get(var) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => units::parse_count(&value)
            .map(Some)
            .map_err(|_| env_error(var, &value, units::COUNT_FORM)),
    }
}

fn flag(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<bool>, Error> {
    match get(var) {
        None => Ok(None),
        Some(value) => match value.trim() {
            "" => Ok(None),
            "1" | "true" | "yes" => Ok(Some(true)),
            "0" | "false" | "no" => Ok(Some(false)),
            _ => Err(env_error(var, &value, "0 or 1")),
        },
    }
}

fn parsed<T>(
    get: &dyn Fn(&str) -> Option<String>,
    var: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    match get(var) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => parse(&value)
            .map(Some)
            .map_err(|message| env_error(var, &value, message)),
    }
}

/// libtest's `--test-threads N` in `args`, bounded like every other count. A value libtest
/// itself rejects (not a number, 0) is left to libtest, which says so; a number past
/// [`units::MAX_COUNT`] libtest would take, so it is refused here.
fn libtest_test_threads(args: &[String]) -> Result<Option<u32>, Error> {
    let Some(value) = crate::libtest_args::value(args, &crate::libtest_args::TEST_THREADS) else {
        return Ok(None);
    };
    match value.trim().parse::<u128>() {
        Ok(0) | Err(_) => Ok(None),
        Ok(_) => units::parse_count(value)
            .map(Some)
            .map_err(|message| Error::Arg {
                arg: crate::libtest_args::TEST_THREADS.name().to_string(),
                message,
            }),
    }
}

/// This process's arguments. Read from `/proc/self/cmdline`, which is complete even in a
/// load-time constructor that may run before std has captured `argv`.
fn process_args() -> Vec<String> {
    match std::fs::read("/proc/self/cmdline") {
        Ok(bytes) => bytes
            .split(|&b| b == 0)
            .skip(1)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
        Err(_) => std::env::args().skip(1).collect(),
    }
}

/// The bound below which random run seeds are drawn: short enough to type back in a
/// reproduction line.
pub const RANDOM_SEED_BOUND: u64 = 1_000_000_000;

/// What overrides a profile when caps are resolved, plus what a process is told about its
/// run. Every field is optional: `None` (or `false`) leaves the decision to the profile,
/// then to the defaults of [`Caps::resolve`].
///
/// The runner fills it from its command line; a test process from its environment and
/// libtest arguments ([`CapsOverrides::from_env`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsOverrides {
    /// Whether the process runs under `cargo capped`.
    pub under_runner: bool,
    /// The profile's name, for reporting and for children.
    pub profile: Option<String>,
    /// The `cargo capped` invocation's id.
    pub run_id: Option<String>,
    /// The run's width.
    pub test_threads: Option<u32>,
    /// The global rayon pool's size.
    pub rayon_threads: Option<u32>,
    /// BLAS/OpenMP threads.
    pub blas_threads: Option<u32>,
    /// Worker threads of the capped async runtime.
    pub async_threads: Option<u32>,
    /// Deterministic mode.
    pub deterministic: Option<bool>,
    /// The run seed.
    pub seed: Option<u64>,
    /// Shuffle the order of tests with the run seed.
    pub shuffle: Option<bool>,
    /// The default per-test timeout.
    pub test_timeout: Option<Duration>,
    /// The memory budget for `mem = ".."` reservations, in bytes.
    pub mem_budget: Option<u64>,
    /// Group limits laid over the config's groups (a group named here wins).
    pub groups: Option<BTreeMap<String, GroupLimit>>,
    /// The host lock dir; `None` takes [`lock_dir::default_host_lock_dir`] of this
    /// process's environment.
    pub lock_dir: Option<PathBuf>,
    /// The run's own dir.
    pub run_dir: Option<PathBuf>,
    /// The target dir of the workspace.
    pub target_dir: Option<PathBuf>,
    /// The events file.
    pub events: Option<PathBuf>,
    /// Width slots the runner holds for the whole process.
    pub width_held: Option<u32>,
}

impl CapsOverrides {
    /// Reads the overrides a test process gets: the `CAPPED_*` variables, then the
    /// variables of the tools themselves (`RUST_TEST_THREADS`, `RAYON_NUM_THREADS`,
    /// `OMP_NUM_THREADS`, `TOKIO_WORKER_THREADS`) and libtest's `--test-threads` in `args`.
    /// A malformed value is an error naming the variable and the accepted form.
    pub fn from_env(
        get: &dyn Fn(&str) -> Option<String>,
        args: &[String],
    ) -> Result<CapsOverrides, Error> {
        let deterministic = flag(get, env::DETERMINISTIC)?;
        let test_threads = match count(get, env::TEST_THREADS)? {
            Some(n) => Some(n),
            None => {
                let rust_test_threads = count(get, "RUST_TEST_THREADS")?;
                libtest_test_threads(args)?.or(rust_test_threads)
            }
        };
        let rayon_threads = count(get, env::RAYON_THREADS)?.or(count(get, "RAYON_NUM_THREADS")?);
        let blas_threads = count(get, env::BLAS_THREADS)?.or(count(get, "OMP_NUM_THREADS")?);
        let async_threads = count(get, env::ASYNC_THREADS)?.or(count(get, "TOKIO_WORKER_THREADS")?);
        let seed = parsed(get, env::SEED, |text| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| "a whole number from 0 to 18446744073709551615".to_string())
        })?;
        let groups = match get(env::GROUPS) {
            None => None,
            Some(text) => Some(protocol::parse_groups(&text).map_err(|message| {
                env_error(
                    env::GROUPS,
                    &text,
                    format!("{}; {message}", protocol::GROUPS_FORM),
                )
            })?),
        };
        let path = |var: &str| get(var).filter(|d| !d.is_empty()).map(PathBuf::from);
        Ok(CapsOverrides {
            under_runner: get(env::CAPPED).as_deref() == Some("1"),
            profile: get(env::PROFILE).filter(|p| !p.is_empty()),
            run_id: get(env::RUN_ID).filter(|id| !id.is_empty()),
            test_threads,
            rayon_threads,
            blas_threads,
            async_threads,
            deterministic,
            seed,
            shuffle: flag(get, env::SHUFFLE)?,
            test_timeout: parsed(get, env::TEST_TIMEOUT, units::parse_timeout)?,
            mem_budget: parsed(get, env::MEM_BUDGET, units::parse_size)?,
            groups,
            lock_dir: Some(lock_dir::default_host_lock_dir(get)),
            run_dir: path(env::RUN_DIR),
            target_dir: lock_dir::target_dir_of_current_exe(get),
            events: path(env::EVENTS),
            width_held: match get(env::WIDTH_HELD) {
                None => None,
                // 0 means "none held"; anything else sizes a slot table like a width.
                Some(value) if value.trim() == "0" => Some(0),
                Some(value) => Some(units::parse_count(&value).map_err(|_| {
                    env_error(
                        env::WIDTH_HELD,
                        &value,
                        "0 or a whole number from 1 to 4096",
                    )
                })?),
            },
        })
    }
}

impl Caps {
    /// Resolves caps, the one place where their rules live: each value comes from
    /// `overrides`, else from `profile`, else from its default. The defaults: the width is
    /// the number of CPUs, the rayon pool as wide as the width, one BLAS thread, the async
    /// runtime as wide as the rayon pool. Deterministic mode pins every thread count to 1
    /// and the seed to [`DETERMINISTIC_SEED`] unless one is given; otherwise a seed not
    /// given is drawn at random below [`RANDOM_SEED_BOUND`]. Groups are `config_groups`
    /// with the overrides' groups laid over them.
    pub fn resolve(
        profile: &Profile,
        overrides: &CapsOverrides,
        config_groups: &BTreeMap<String, GroupLimit>,
    ) -> Caps {
        let deterministic = overrides
            .deterministic
            .or(profile.deterministic)
            .unwrap_or(false);
        // Bounded like a given width: a machine with more CPUs still runs at most that wide.
        let available = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(units::MAX_COUNT as usize) as u32);
        let test_threads = overrides
            .test_threads
            .or(profile.test_threads)
            .unwrap_or(available);
        let rayon_threads = overrides
            .rayon_threads
            .or(profile.rayon_threads)
            .unwrap_or(test_threads);
        let blas_threads = overrides.blas_threads.or(profile.blas_threads).unwrap_or(1);
        let async_threads = overrides
            .async_threads
            .or(profile.async_threads)
            .unwrap_or(rayon_threads);
        let (test_threads, rayon_threads, blas_threads, async_threads) = if deterministic {
            (1, 1, 1, 1)
        } else {
            (test_threads, rayon_threads, blas_threads, async_threads)
        };
        let (seed, seed_origin) = match overrides.seed.or(profile.seed) {
            Some(seed) => (seed, SeedOrigin::Given),
            None if deterministic => (DETERMINISTIC_SEED, SeedOrigin::Deterministic),
            None => (fastrand::u64(..RANDOM_SEED_BOUND), SeedOrigin::Random),
        };
        let mut groups = config_groups.clone();
        if let Some(given) = &overrides.groups {
            groups.extend(given.iter().map(|(name, limit)| (name.clone(), *limit)));
        }
        Caps {
            under_runner: overrides.under_runner,
            profile: overrides.profile.clone(),
            run_id: overrides.run_id.clone(),
            test_threads,
            rayon_threads,
            blas_threads,
            async_threads,
            deterministic,
            seed,
            seed_origin,
            shuffle: overrides.shuffle.or(profile.shuffle).unwrap_or(false),
            test_timeout: overrides.test_timeout.or(profile.test_timeout),
            mem_budget: overrides.mem_budget.or(profile.mem_budget),
            groups,
            host_lock_dir: overrides
                .lock_dir
                .clone()
                .unwrap_or_else(|| lock_dir::default_host_lock_dir(&|var| std::env::var(var).ok())),
            run_dir: overrides.run_dir.clone(),
            target_dir: overrides.target_dir.clone(),
            events: overrides.events.clone(),
            width_held: overrides.width_held.unwrap_or(0),
        }
    }

    /// Reads the caps from this process's environment, arguments and config, once.
    pub fn from_process() -> Result<Caps, Error> {
        let get = |var: &str| std::env::var(var).ok();
        let args = process_args();
        let config = if get(env::CAPPED).as_deref() == Some("1") {
            None
        } else {
            match get("CARGO_MANIFEST_DIR") {
                Some(dir) => Some(Config::discover(Path::new(&dir))?),
                None => None,
            }
        };
        Caps::from_sources(&get, &args, config.as_ref())
    }

    /// Builds caps from an environment lookup, libtest arguments and an optional config:
    /// [`CapsOverrides::from_env`] over the config's `CAPPED_PROFILE` profile and groups,
    /// through [`Caps::resolve`]. A test process reads its caps so from what
    /// [`Caps::to_env`] wrote.
    pub fn from_sources(
        get: &dyn Fn(&str) -> Option<String>,
        args: &[String],
        config: Option<&Config>,
    ) -> Result<Caps, Error> {
        let mut overrides = CapsOverrides::from_env(get, args)?;
        // `CAPPED_LOCK_DIR` wins over the config's `lock-dir`, which wins over the
        // per-user default.
        if lock_dir::env_lock_dir(get).is_none()
            && let Some(dir) = config.and_then(|config| config.lock_dir.clone())
        {
            overrides.lock_dir = Some(dir);
        }
        let empty = Profile::default();
        let profile = match (&overrides.profile, config) {
            (Some(name), Some(config)) => config.profile(name).unwrap_or(&empty),
            _ => &empty,
        };
        let groups = config.map(Config::group_limits).unwrap_or_default();
        Ok(Caps::resolve(profile, &overrides, &groups))
    }

    /// Whether this process runs under `cargo capped` (`CAPPED=1`).
    pub fn under_runner(&self) -> bool {
        self.under_runner
    }
    /// The profile's name, when one is given (`CAPPED_PROFILE`).
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }
    /// The `cargo capped` invocation's id.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }
    /// The run's width: how many tests may execute at once.
    pub fn test_threads(&self) -> u32 {
        self.test_threads
    }
    /// The global rayon pool's size.
    pub fn rayon_threads(&self) -> u32 {
        self.rayon_threads
    }
    /// BLAS/OpenMP threads.
    pub fn blas_threads(&self) -> u32 {
        self.blas_threads
    }
    /// Worker threads of `capped_test::runtime()`.
    pub fn async_threads(&self) -> u32 {
        self.async_threads
    }
    /// Deterministic mode: one thread everywhere, fixed seed, stable order.
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }
    /// The run seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Where the run seed came from.
    pub fn seed_origin(&self) -> SeedOrigin {
        self.seed_origin
    }
    /// Whether tests run in an order shuffled with the run seed.
    pub fn shuffle(&self) -> bool {
        self.shuffle
    }
    /// The default per-test timeout.
    pub fn test_timeout(&self) -> Option<Duration> {
        self.test_timeout
    }
    /// The memory budget for `mem = ".."` reservations, when set.
    pub fn mem_budget(&self) -> Option<u64> {
        self.mem_budget
    }
    /// The limit of group `name`: as configured, else `max = 1` host-wide.
    pub fn group(&self, name: &str) -> GroupLimit {
        self.groups.get(name).copied().unwrap_or(GroupLimit {
            max: 1,
            scope: Scope::Host,
        })
    }
    /// The configured groups.
    pub fn groups(&self) -> &BTreeMap<String, GroupLimit> {
        &self.groups
    }
    /// The host lock dir (created and checked when first used).
    pub fn host_lock_dir(&self) -> &Path {
        &self.host_lock_dir
    }
    /// The run's own dir, under `cargo capped`.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref()
    }
    /// The target dir of this test binary, when it could be found.
    pub fn target_dir(&self) -> Option<&Path> {
        self.target_dir.as_deref()
    }
    /// The events file, when `CAPPED_EVENTS` is set.
    pub fn events_path(&self) -> Option<&Path> {
        self.events.as_deref()
    }
    /// Width slots the runner holds for this whole process, which its tests share (0: tests
    /// take their own from the run).
    pub fn width_held(&self) -> u32 {
        self.width_held
    }

    /// The scope that `scope` stands for here: `run` falls back to `workspace` outside
    /// `cargo capped`, and `workspace` to `host` when no target dir is known.
    pub fn effective_scope(&self, scope: Scope) -> Scope {
        match scope {
            Scope::Run if self.run_dir.is_some() => Scope::Run,
            Scope::Run | Scope::Workspace if self.target_dir.is_some() => Scope::Workspace,
            Scope::Run | Scope::Workspace => Scope::Host,
            other => other,
        }
    }

    /// Sets the run dir (for the runner, which creates it).
    pub fn with_run_dir(mut self, run_dir: Option<PathBuf>) -> Caps {
        self.run_dir = run_dir;
        self
    }

    /// Sets the run id (for the runner, which makes one per run).
    pub fn with_run_id(mut self, run_id: Option<String>) -> Caps {
        self.run_id = run_id;
        self
    }

    /// Sets the memory budget (for the runner, which measures the host when the profile
    /// sets none, once, so every process of the run agrees).
    pub fn with_mem_budget(mut self, mem_budget: Option<u64>) -> Caps {
        self.mem_budget = mem_budget;
        self
    }

    /// Sets the target dir (for the runner, which knows it from cargo).
    pub fn with_target_dir(mut self, target_dir: Option<PathBuf>) -> Caps {
        self.target_dir = target_dir;
        self
    }

    /// The environment that tells a child process these caps (docs/design.md, "The contract"),
    /// the one serializer of caps: the `CAPPED_*` variables, `RUST_TEST_THREADS`,
    /// `RAYON_NUM_THREADS`, `TOKIO_WORKER_THREADS` and the BLAS variables.
    /// [`Caps::from_sources`] reads the same caps back from it (the events file, the width
    /// held and the target dir are the runner's per launch, and not written here).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            (
                env::CAPPED.to_string(),
                if self.under_runner { "1" } else { "0" }.to_string(),
            ),
            (env::TEST_THREADS.to_string(), self.test_threads.to_string()),
            (
                env::RAYON_THREADS.to_string(),
                self.rayon_threads.to_string(),
            ),
            (env::BLAS_THREADS.to_string(), self.blas_threads.to_string()),
            (
                env::ASYNC_THREADS.to_string(),
                self.async_threads.to_string(),
            ),
            (
                env::DETERMINISTIC.to_string(),
                u8::from(self.deterministic).to_string(),
            ),
            (env::SEED.to_string(), self.seed.to_string()),
            (
                env::GROUPS.to_string(),
                protocol::format_groups(self.groups.iter().map(|(k, v)| (k.as_str(), *v))),
            ),
            (
                env::LOCK_DIR.to_string(),
                self.host_lock_dir.display().to_string(),
            ),
            (
                "RUST_TEST_THREADS".to_string(),
                self.test_threads.to_string(),
            ),
            (
                "RAYON_NUM_THREADS".to_string(),
                self.rayon_threads.to_string(),
            ),
            (
                "TOKIO_WORKER_THREADS".to_string(),
                self.async_threads.to_string(),
            ),
        ];
        for var in env::BLAS_VARS {
            vars.push((var.to_string(), self.blas_threads.to_string()));
        }
        let optional = [
            (env::PROFILE, self.profile.clone()),
            (env::RUN_ID, self.run_id.clone()),
            (
                env::RUN_DIR,
                self.run_dir.as_ref().map(|d| d.display().to_string()),
            ),
            (
                env::TEST_TIMEOUT,
                self.test_timeout.map(|t| format!("{}ms", t.as_millis())),
            ),
            (env::MEM_BUDGET, self.mem_budget.map(|b| b.to_string())),
            (env::SHUFFLE, self.shuffle.then(|| "1".to_string())),
        ];
        vars.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        vars
    }
}

static CAPS: OnceLock<Result<Caps, Error>> = OnceLock::new();

/// This process's caps, read once (see [`Caps`]); the error if the environment or config
/// is malformed.
pub fn try_caps() -> Result<&'static Caps, &'static Error> {
    CAPS.get_or_init(Caps::from_process).as_ref()
}

/// This process's caps. Panics with the error (naming the variable or `file:line`) if the
/// environment or config is malformed: a test must not run under silently wrong caps.
pub fn caps() -> &'static Caps {
    match try_caps() {
        Ok(caps) => caps,
        Err(e) => panic!("capped-test: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps_from(
        pairs: &[(&str, &str)],
        args: &[&str],
        config: Option<&Config>,
    ) -> Result<Caps, Error> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Caps::from_sources(&|var| map.get(var).cloned(), &args, config)
    }

    #[test]
    fn runner_environment_is_taken_as_is() {
        let caps = caps_from(
            &[
                ("CAPPED", "1"),
                ("CAPPED_PROFILE", "t2"),
                ("CAPPED_TEST_THREADS", "2"),
                ("CAPPED_RAYON_THREADS", "3"),
                ("CAPPED_SEED", "7"),
                ("CAPPED_GROUPS", "gpu=1@host,crossval=2@run"),
                ("CAPPED_RUN_DIR", "/tmp/run"),
                ("RAYON_NUM_THREADS", "16"),
            ],
            &[],
            None,
        )
        .unwrap();
        assert!(caps.under_runner());
        assert_eq!(
            (
                caps.test_threads(),
                caps.rayon_threads(),
                caps.blas_threads()
            ),
            (2, 3, 1)
        );
        assert_eq!((caps.seed(), caps.seed_origin()), (7, SeedOrigin::Given));
        assert_eq!(
            caps.group("crossval"),
            GroupLimit {
                max: 2,
                scope: Scope::Run
            }
        );
        assert_eq!(
            caps.group("unknown"),
            GroupLimit {
                max: 1,
                scope: Scope::Host
            }
        );
        assert_eq!(caps.effective_scope(Scope::Run), Scope::Run);
    }

    #[test]
    fn plain_cargo_test_defaults() {
        let caps = caps_from(&[], &["--test-threads", "4"], None).unwrap();
        assert_eq!(caps.test_threads(), 4);
        assert_eq!(caps.rayon_threads(), 4);
        assert_eq!(caps.seed_origin(), SeedOrigin::Random);
        let caps = caps_from(
            &[("RUST_TEST_THREADS", "3"), ("RAYON_NUM_THREADS", "5")],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(
            (
                caps.test_threads(),
                caps.rayon_threads(),
                caps.async_threads()
            ),
            (3, 5, 5)
        );
        let caps = caps_from(&[], &["--test-threads=6"], None).unwrap();
        assert_eq!(caps.test_threads(), 6);
        let caps = caps_from(&[], &[], None).unwrap();
        assert_eq!(
            caps.test_threads(),
            std::thread::available_parallelism().unwrap().get() as u32
        );
    }

    #[test]
    fn config_groups_and_profile_apply_outside_the_runner() {
        let config = Config::parse(
            None,
            "[groups.gpu]\nmax = 2\nscope = \"workspace\"\n[profile.ci]\nrayon-threads = 3\nseed = 9\n",
        )
        .unwrap();
        let caps = caps_from(&[("CAPPED_PROFILE", "ci")], &[], Some(&config)).unwrap();
        assert_eq!(
            caps.group("gpu"),
            GroupLimit {
                max: 2,
                scope: Scope::Workspace
            }
        );
        assert_eq!((caps.rayon_threads(), caps.seed()), (3, 9));
        // The environment wins over the file.
        let caps = caps_from(&[("CAPPED_GROUPS", "gpu=1")], &[], Some(&config)).unwrap();
        assert_eq!(
            caps.group("gpu"),
            GroupLimit {
                max: 1,
                scope: Scope::Host
            }
        );
    }

    #[test]
    fn deterministic_mode_pins_everything() {
        let caps = caps_from(
            &[("CAPPED_DETERMINISTIC", "1"), ("RAYON_NUM_THREADS", "8")],
            &["--test-threads", "4"],
            None,
        )
        .unwrap();
        assert_eq!(
            (
                caps.test_threads(),
                caps.rayon_threads(),
                caps.blas_threads(),
                caps.async_threads()
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (caps.seed(), caps.seed_origin()),
            (DETERMINISTIC_SEED, SeedOrigin::Deterministic)
        );
        let caps = caps_from(
            &[("CAPPED_DETERMINISTIC", "1"), ("CAPPED_SEED", "5")],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(caps.seed(), 5);
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_form() {
        for (var, value, expected) in [
            ("CAPPED_TEST_THREADS", "two", "whole number"),
            ("CAPPED_TEST_THREADS", "0", "from 1 to 4096"),
            ("CAPPED_TEST_THREADS", "4294967295", "from 1 to 4096"),
            ("RUST_TEST_THREADS", "4097", "from 1 to 4096"),
            ("CAPPED_BLAS_THREADS", "-3", "from 1 to 4096"),
            ("CAPPED_GROUPS", "gpu=4294967295", "from 1 to 4096"),
            ("CAPPED_WIDTH_HELD", "4294967295", "4096"),
            ("CAPPED_GROUPS", "gpu=x", "name=max"),
            ("CAPPED_SEED", "-1", "whole number"),
            ("CAPPED_DETERMINISTIC", "maybe", "0 or 1"),
            ("CAPPED_TEST_TIMEOUT", "soon", "30s"),
            ("CAPPED_TEST_TIMEOUT", "0s", "timeout of zero"),
            ("CAPPED_MEM_BUDGET", "lots", "2GiB"),
            ("RAYON_NUM_THREADS", "many", "whole number"),
        ] {
            let message = caps_from(&[(var, value)], &[], None)
                .unwrap_err()
                .to_string();
            assert!(message.contains(var), "{message}");
            assert!(message.contains(value), "{message}");
            assert!(message.contains(expected), "{var}: {message}");
        }
        // libtest's own `--test-threads`, as a test binary reads it from its arguments.
        let message = caps_from(&[], &["--test-threads", "4294967295"], None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("--test-threads") && message.contains("from 1 to 4096"),
            "{message}"
        );
        assert_eq!(
            caps_from(&[], &["--test-threads=4096"], None)
                .unwrap()
                .test_threads(),
            4096
        );
    }

    #[test]
    fn to_env_round_trips() {
        let caps = caps_from(
            &[
                ("CAPPED", "1"),
                ("CAPPED_PROFILE", "t2"),
                ("CAPPED_TEST_THREADS", "2"),
                ("CAPPED_SEED", "11"),
                ("CAPPED_GROUPS", "gpu=1@host"),
                ("CAPPED_TEST_TIMEOUT", "2s"),
            ],
            &[],
            None,
        )
        .unwrap();
        let env: BTreeMap<String, String> = caps.to_env().into_iter().collect();
        assert_eq!(env["OMP_NUM_THREADS"], "1");
        assert_eq!(env["RUST_TEST_THREADS"], "2");
        let again = Caps::from_sources(&|var| env.get(var).cloned(), &[], None).unwrap();
        assert_eq!(again.test_threads(), 2);
        assert_eq!(again.seed(), 11);
        assert_eq!(again.group("gpu"), caps.group("gpu"));
        assert_eq!(again.test_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(again.profile(), Some("t2"));
    }

    #[test]
    fn every_cap_survives_the_trip_through_a_child_environment() {
        let overrides = CapsOverrides {
            under_runner: true,
            profile: Some("ci".into()),
            run_id: Some("r1".into()),
            test_threads: Some(3),
            rayon_threads: Some(2),
            blas_threads: Some(4),
            async_threads: Some(5),
            deterministic: Some(false),
            seed: Some(123),
            shuffle: Some(true),
            test_timeout: Some(Duration::from_millis(2500)),
            mem_budget: Some(8 << 30),
            groups: Some(BTreeMap::from([(
                "db".to_string(),
                GroupLimit {
                    max: 2,
                    scope: Scope::Run,
                },
            )])),
            lock_dir: Some(PathBuf::from("/tmp/capped-locks")),
            run_dir: Some(PathBuf::from("/ws/target/capped/runs/r1")),
            // What a test process finds on its own: the target dir of its executable.
            target_dir: lock_dir::target_dir_of_current_exe(&|_| None),
            events: None,
            width_held: None,
        };
        let config_groups = BTreeMap::from([(
            "gpu".to_string(),
            GroupLimit {
                max: 1,
                scope: Scope::Workspace,
            },
        )]);
        let caps = Caps::resolve(&Profile::default(), &overrides, &config_groups);
        let env: BTreeMap<String, String> = caps.to_env().into_iter().collect();
        let again = Caps::from_sources(&|var| env.get(var).cloned(), &[], None).unwrap();
        assert_eq!(again, caps);
        // A deterministic run's children get its thread counts and seed as given.
        let caps = Caps::resolve(
            &Profile::default(),
            &CapsOverrides {
                deterministic: Some(true),
                ..overrides
            },
            &BTreeMap::new(),
        );
        let env: BTreeMap<String, String> = caps.to_env().into_iter().collect();
        let again = Caps::from_sources(&|var| env.get(var).cloned(), &[], None).unwrap();
        assert_eq!((again.test_threads(), again.seed()), (1, 123));
        assert!(again.deterministic());
    }

    #[test]
    fn random_seeds_are_short_enough_to_type_back() {
        for _ in 0..200 {
            let caps = Caps::resolve(
                &Profile::default(),
                &CapsOverrides::default(),
                &BTreeMap::new(),
            );
            assert_eq!(caps.seed_origin(), SeedOrigin::Random);
            assert!(caps.seed() < RANDOM_SEED_BOUND, "{}", caps.seed());
            let caps = caps_from(&[], &[], None).unwrap();
            assert!(caps.seed() < RANDOM_SEED_BOUND, "{}", caps.seed());
        }
    }

    #[test]
    fn overrides_beat_the_profile_which_beats_the_defaults() {
        let profile = Profile {
            test_threads: Some(4),
            rayon_threads: Some(3),
            async_threads: Some(2),
            shuffle: Some(true),
            ..Profile::default()
        };
        let overrides = CapsOverrides {
            test_threads: Some(6),
            ..CapsOverrides::default()
        };
        let caps = Caps::resolve(&profile, &overrides, &BTreeMap::new());
        assert_eq!(
            (
                caps.test_threads(),
                caps.rayon_threads(),
                caps.blas_threads(),
                caps.async_threads()
            ),
            (6, 3, 1, 2)
        );
        assert!(caps.shuffle());
        let caps = Caps::resolve(
            &profile,
            &CapsOverrides {
                shuffle: Some(false),
                ..CapsOverrides::default()
            },
            &BTreeMap::new(),
        );
        assert!(
            !caps.shuffle(),
            "an override may also turn a profile's flag off"
        );
    }
}
