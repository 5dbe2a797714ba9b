//! *Plan*: profile + config + command line → the caps of this run.
//!
//! The profile comes from the subcommand (`t2`, `t1`, `run --profile NAME`) and is looked
//! up in `.config/capped.toml` at the workspace root merged over the built-in `t1`/`t2`
//! ([`capped_model::config`]). Command-line options override the profile, through
//! [`capped_model::Caps::resolve`] (where every rule of the caps lives), into the run's caps
//! ([`Plan::caps`]). [`Plan::env_for_run`] writes them into every test process's environment,
//! from which the test process reads the same caps back, so both sides agree.
//!
//! Host safety is planned here too: the `[preflight]` thresholds that decide
//! whether a busy host degrades the run ([`Plan::thresholds`], [`Plan::degrade`]), the memory
//! cap per test binary ([`Plan::mem_limit`]), the memory budget every test process shares
//! ([`capped_model::Caps::mem_budget`] of [`Plan::caps`], by default three quarters of the
//! memory available at start, computed once so every process of the run agrees), and
//! `--partition`. The run itself ([`crate::run`]) applies them.
//!
//! `CAPPED_HOST_ROOT` (test-only, undocumented for users) points the host readings behind
//! degrade decisions at a directory of fixture files laid out as `/proc` and `/sys` (see
//! [`crate::host::HostRoot`]), so end-to-end tests can play a busy host. It never affects the
//! memory watchdog, which must see the real processes.

pub mod partition;
pub mod reproduce;
pub mod workspace;

use std::collections::BTreeMap;
use std::time::Duration;

use capped_model::config::{Config, FlakyResult, GroupConfig, Isolation};
use capped_model::protocol::ListedTest;
use capped_model::{Caps, CapsOverrides};

use crate::cli::{CargoArgs, OutputArgs, RunOptions};
use crate::errors::{Error, Result};
use crate::host::HostRoot;
use crate::preflight::Thresholds;
pub use partition::Partition;
pub use workspace::{PackageInfo, Workspace};

/// The test-only variable that points host readings at fixture files (see the module docs).
pub const HOST_ROOT_VAR: &str = "CAPPED_HOST_ROOT";

/// Everything decided before the build: the caps of the run and how to report it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workspace.
    pub workspace: Workspace,
    /// The config (built-ins merged with the file).
    pub config: Config,
    /// The capped profile's name.
    pub profile: String,
    /// The caps of the run, as every test process gets them: the width (the ceiling of the
    /// run's width; a busy host may run narrower), thread counts, deterministic mode, seed,
    /// shuffle, test timeout, groups and the host lock dir. The memory budget is the
    /// profile's `mem-budget`, else computed once at start ([`default_mem_budget`]).
    pub caps: Caps,
    /// Per test binary.
    pub timeout: Option<Duration>,
    /// Per test binary: the cap on its process tree's summed RSS (`--mem-limit`, `mem-limit`).
    pub mem_limit: Option<u64>,
    /// Whether a busy host may lower the width (`--no-degrade` turns it off).
    pub degrade: bool,
    /// The `[preflight]` levels: statuses of readings, and when a run degrades.
    pub thresholds: Thresholds,
    /// Where host readings come from (the live system; fixture files under `CAPPED_HOST_ROOT`).
    pub host: HostRoot,
    /// `--partition hash:K/N` or `slice:K/N`.
    pub partition: Option<Partition>,
    /// The profile's `[env]`.
    pub profile_env: BTreeMap<String, String>,
    /// Stop starting binaries after the first failure.
    pub fail_fast: bool,
    /// What a run that runs no test ends with (`--no-tests`).
    pub no_tests: crate::cli::NoTests,
    /// Whether a libtest binary that starts narrower than it could run may run as more than
    /// one process (`split-binaries`; never in deterministic mode).
    pub split_binaries: bool,
    /// Whether every test runs as a process of its own (`--isolation test`); groups may ask
    /// for it for their own tests ([`Plan::isolates`]).
    pub isolation: Isolation,
    /// How many more times a failed test runs (`--retries`, `retries`; none in
    /// deterministic runs unless given on the command line).
    pub retries: u32,
    /// Whether a test that passed only on a retry fails the run (`flaky-result = "fail"`).
    pub flaky_fails: bool,
    /// Whether the run reads and writes the test history (`--no-history` turns it off).
    pub history: bool,
    /// The devices of each device-backed group (found before the caps were resolved, so a
    /// group's `max` can be its device count).
    pub devices: BTreeMap<String, capped_model::devices::Devices>,
    /// The profile's `require`: device-backed groups that must have devices.
    pub require: Vec<String>,
    /// Cargo's flags for the build.
    pub cargo: CargoArgs,
    /// The run options as given on the command line (what reproduce lines repeat, and
    /// whether the width was asked for explicitly).
    pub options: RunOptions,
    /// The test-name filter.
    pub filter: Option<String>,
    /// Arguments after `--` for every test binary.
    pub test_args: Vec<String>,
    /// Output options.
    pub output: OutputArgs,
}

/// The arguments for every test binary, with libtest's `--nocapture` added for
/// `--no-capture` (unless already there). It goes first: after a `--` among the arguments
/// it would be a filter.
fn with_no_capture(mut test_args: Vec<String>, no_capture: bool) -> Vec<String> {
    if no_capture
        && !capped_model::libtest_args::has(&test_args, &capped_model::libtest_args::NOCAPTURE)
    {
        test_args.insert(0, "--nocapture".to_string());
    }
    test_args
}

/// What a planned run needs from the command line.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    /// The capped profile.
    pub profile: String,
    /// Cargo's flags.
    pub cargo: CargoArgs,
    /// Run options.
    pub options: RunOptions,
    /// Output options.
    pub output: OutputArgs,
    /// Filter.
    pub filter: Option<String>,
    /// Args after `--`.
    pub test_args: Vec<String>,
}

impl Plan {
    /// The width the run asks for whatever the host it runs on: `--test-threads`, the
    /// profile's `test-threads`, or 1 in deterministic runs; `None` when it comes from the
    /// host's CPU count (what time shards are dealt for, which every job must agree on).
    pub fn fixed_width(&self) -> Option<u32> {
        if self.caps.deterministic() {
            return Some(1);
        }
        self.options
            .test_threads
            .or_else(|| self.config.profile(&self.profile)?.test_threads)
    }

    /// Discovers the workspace, reads its config and resolves the profile.
    pub fn new(input: PlanInput) -> Result<Plan> {
        Plan::check_input(&input)?;
        let workspace = Workspace::discover(&input.cargo)?;
        let config_path = workspace
            .root
            .join(capped_model::config::CONFIG_RELATIVE_PATH);
        let (mut config, thresholds) = if config_path.is_file() {
            load_config(&config_path)?
        } else {
            (Config::default(), Thresholds::default())
        };
        let host = HostRoot::from_env(&|var| std::env::var(var).ok());
        let devices = resolve_devices(&mut config, &host)?;
        let require = input.options.require.clone();
        let mut plan = Plan::resolve(workspace, config, input)?;
        plan.thresholds = thresholds;
        plan.host = host;
        plan.devices = devices;
        plan.check_required(&require)?;
        if plan.caps.mem_budget().is_none() {
            // Always from the live system: the budget is about real memory.
            plan.caps = plan
                .caps
                .with_mem_budget(default_mem_budget(&HostRoot::system()));
        }
        Ok(plan)
    }

    /// The checks of the command line that clap cannot make (the arguments after `--`,
    /// `--doc`), before anything is discovered or built.
    pub fn check_input(input: &PlanInput) -> Result<()> {
        crate::cli::check_test_args(&input.test_args).map_err(Error::Usage)?;
        if input.cargo.doc && input.cargo.selects_targets() {
            return Err(Error::Usage(
                "--doc selects the libraries' doc tests only and cannot be combined with \
                 --lib, --bin(s), --test(s), --example(s), --bench(es) or --all-targets; \
                 drop --doc, or run the doc tests in a run of their own"
                    .into(),
            ));
        }
        if input.cargo.doc && input.options.no_run {
            return Err(Error::Usage(
                "--no-run cannot be combined with --doc: rustdoc compiles doc tests only when \
                 it runs them; drop one of the two"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Resolves the profile against a config (separate from discovery for tests).
    pub fn resolve(workspace: Workspace, config: Config, input: PlanInput) -> Result<Plan> {
        let Some(profile) = config.profile(&input.profile).cloned() else {
            let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
            let source = match &config.path {
                Some(path) => format!("the built-in t1/t2 and {}", path.display()),
                None => format!(
                    "the built-in t1/t2 (no {} in {})",
                    capped_model::config::CONFIG_RELATIVE_PATH,
                    workspace.root.display()
                ),
            };
            return Err(Error::Config(format!(
                "unknown profile `{}`; known profiles: {} (from {source})",
                input.profile,
                known.join(", ")
            )));
        };
        let options = &input.options;
        // The host lock dir, made absolute here once: test processes run in their own
        // package's dir, so a relative dir would name a different dir for each package
        // and a host group would no longer be shared. `--lock-dir`, else
        // `CAPPED_LOCK_DIR` (the one `CAPPED_*` variable the runner reads), else the
        // config's `lock-dir`, else the per-user default.
        let get = |var: &str| std::env::var(var).ok();
        let lock_dir = options
            .lock_dir
            .clone()
            .or_else(|| capped_model::resource::lock_dir::env_lock_dir(&get))
            .or_else(|| config.lock_dir.clone())
            .unwrap_or_else(|| capped_model::resource::lock_dir::default_host_lock_dir(&get));
        let lock_dir = if lock_dir.is_absolute() {
            lock_dir
        } else {
            std::env::current_dir()
                .map_err(|e| Error::internal("cannot read the current directory", e))?
                .join(lock_dir)
        };
        let lock_dir = Some(lock_dir);
        // Only the command line overrides the profile: the `CAPPED_*` variables in our own
        // environment are for test processes (and stripped from theirs), never read here.
        let overrides = CapsOverrides {
            under_runner: true,
            profile: Some(input.profile.clone()),
            test_threads: options.test_threads,
            rayon_threads: options.rayon_threads,
            deterministic: options.deterministic.then_some(true),
            seed: options.seed,
            shuffle: options.shuffle.then_some(true),
            lock_dir,
            target_dir: Some(workspace.target_dir.clone()),
            ..CapsOverrides::default()
        };
        let caps = Caps::resolve(&profile, &overrides, &config.group_limits());
        capped_model::resource::lock_dir::ensure_lock_dir(caps.host_lock_dir())?;
        Ok(Plan {
            workspace,
            profile: input.profile,
            timeout: options.timeout.or(profile.timeout),
            mem_limit: options.mem_limit.or(profile.mem_limit),
            degrade: !options.no_degrade,
            thresholds: Thresholds::default(),
            host: HostRoot::system(),
            partition: options.partition,
            profile_env: profile.env.clone(),
            fail_fast: options.fail_fast,
            no_tests: options.no_tests,
            split_binaries: !caps.deterministic() && profile.split_binaries.unwrap_or(true),
            isolation: options.isolation.or(profile.isolation).unwrap_or_default(),
            retries: match options.retries {
                Some(retries) => retries,
                None if caps.deterministic() => 0,
                None => profile.retries.unwrap_or(0),
            },
            flaky_fails: profile.flaky_result == Some(FlakyResult::Fail),
            history: !options.no_history,
            devices: BTreeMap::new(),
            require: profile.require.clone(),
            caps,
            cargo: input.cargo,
            options: input.options.clone(),
            filter: input.filter,
            test_args: with_no_capture(input.test_args, input.output.no_capture),
            output: input.output,
            config,
        })
    }

    /// Fails when a group the run requires (`--require`, the profile's `require`,
    /// `CAPPED_REQUIRE`) has no devices, naming what is missing, before any test starts.
    fn check_required(&self, from_command_line: &[String]) -> Result<()> {
        let from_env = std::env::var(capped_model::protocol::env::REQUIRE).unwrap_or_default();
        let mut required: Vec<String> = from_command_line.to_vec();
        required.extend(self.require.iter().cloned());
        required.extend(
            from_env
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string),
        );
        required.sort();
        required.dedup();
        for group in required {
            let Some(devices) = self.devices.get(&group) else {
                return Err(Error::Usage(format!(
                    "required group `{group}` is not a device-backed group; give it `devices = \"nvidia\"` (or \"amd\", or {{ command = \"..\" }}) under [groups.{group}] in {}",
                    capped_model::config::CONFIG_RELATIVE_PATH
                )));
            };
            if devices.ids.is_empty() {
                return Err(Error::Unmet(format!(
                    "required group `{group}` has no devices ({}); no test ran",
                    devices.how
                )));
            }
        }
        Ok(())
    }

    /// Whether a device-backed group pins its tests to their slot's device, so that its
    /// tests must each run alone in a process the runner starts holding the slot.
    pub fn pins(&self, group: &str) -> bool {
        self.devices.contains_key(group)
            && self
                .config
                .groups
                .get(group)
                .and_then(GroupConfig::pin_var)
                .is_some()
    }

    /// Whether `test` of a binary claimed by `claimed` runs as a process of its own: under
    /// `--isolation test`, or when one of its groups (declared, or claiming its binary) has
    /// `isolation = "test"`.
    pub fn isolates(&self, test: &ListedTest, claimed: &[String]) -> bool {
        self.isolation == Isolation::Test
            || test.groups.iter().any(|group| self.pins(group))
            || test.groups.iter().chain(claimed).any(|group| {
                self.config
                    .groups
                    .get(group)
                    .is_some_and(|g| g.isolation == Some(Isolation::Test))
            })
    }

    /// The groups whose `binaries` patterns claim a test binary named `target`.
    pub fn groups_claiming(&self, target: &str) -> Vec<String> {
        self.config
            .groups
            .iter()
            .filter(|(_, group): &(&String, &GroupConfig)| group.claims_binary(target))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The environment every test process of the run gets (`run`, the run's id and dir, is
    /// `None` for listing outside a run): the profile's `[env]` with the caps on top, and
    /// the runner's own caps for that run.
    pub fn env_for_run(
        &self,
        run: Option<(&str, &std::path::Path)>,
    ) -> (BTreeMap<String, String>, Caps) {
        let caps = match run {
            Some((run_id, run_dir)) => self
                .caps
                .clone()
                .with_run_id(Some(run_id.to_string()))
                .with_run_dir(Some(run_dir.to_path_buf())),
            None => self.caps.clone(),
        };
        let mut env: BTreeMap<String, String> = self.profile_env.clone();
        // The caps win over `[env]`: a profile cannot set a cap by the back door.
        env.extend(caps.to_env());
        for (group, devices) in &self.devices {
            env.insert(
                capped_model::protocol::env::devices_var(group),
                capped_model::devices::format_ids(&devices.ids),
            );
        }
        (env, caps)
    }
}

/// The devices of every device-backed group of `config` (the override in the runner's own
/// `CAPPED_DEVICES_<GROUP>`, else detection under `host`'s `/dev` and on `PATH`); a group
/// whose `max` is not written gets one slot per device.
pub fn resolve_devices(
    config: &mut Config,
    host: &HostRoot,
) -> Result<BTreeMap<String, capped_model::devices::Devices>> {
    let get = |var: &str| std::env::var(var).ok();
    let path = std::env::var_os("PATH");
    let dev = host.path("/dev");
    let mut found = BTreeMap::new();
    for (name, group) in config.groups.iter_mut() {
        let Some(source) = &group.devices else {
            continue;
        };
        capped_model::devices::env_override(name).map_err(Error::Config)?;
        let devices = capped_model::devices::resolve(name, source, &get, &dev, path.as_deref())
            .map_err(Error::Config)?;
        if !group.max_given && !devices.ids.is_empty() {
            group.max = u32::try_from(devices.ids.len()).unwrap_or(u32::MAX);
        }
        found.insert(name.clone(), devices);
    }
    Ok(found)
}

/// Reads the config file with its `[preflight]` table checked as [`Thresholds`] (unknown
/// keys and bad values are errors naming `file:line:column`).
pub fn load_config(path: &std::path::Path) -> Result<(Config, Thresholds)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read the config file: {e}",
            path.display()
        ))
    })?;
    let (config, thresholds) = Config::parse_with_preflight::<Thresholds>(Some(path), &text)?;
    Ok((config, thresholds.unwrap_or_default()))
}

/// The share of available memory that `mem = ".."` reservations may take when the profile
/// sets no `mem-budget`.
pub const DEFAULT_MEM_BUDGET_FRACTION: f64 = 0.75;

/// The default memory budget: [`DEFAULT_MEM_BUDGET_FRACTION`] of the memory available now
/// (`MemAvailable`, or the cgroup's headroom when that is less); `None` when unreadable.
pub fn default_mem_budget(host: &HostRoot) -> Option<u64> {
    let cgroup = host.cgroup().ok().flatten();
    let available = crate::preflight::available_memory(host, cgroup.as_ref())?;
    Some((available as f64 * DEFAULT_MEM_BUDGET_FRACTION) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn workspace() -> Workspace {
        Workspace {
            root: PathBuf::from("/ws"),
            target_dir: PathBuf::from("/ws/target"),
            packages: HashMap::new(),
            ..Workspace::default()
        }
    }

    #[test]
    fn no_capture_adds_nocapture_once_before_a_separator() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_no_capture(args(&["--exact", "--", "x"]), true),
            args(&["--nocapture", "--exact", "--", "x"])
        );
        assert_eq!(
            with_no_capture(args(&["--nocapture"]), true),
            args(&["--nocapture"])
        );
        assert_eq!(
            with_no_capture(args(&["--exact"]), false),
            args(&["--exact"])
        );
    }

    fn plan(config: &str, profile: &str, options: RunOptions) -> Result<Plan> {
        let lock_dir = tempfile::tempdir().unwrap().keep();
        let config = Config::parse(
            Some(std::path::Path::new("/ws/.config/capped.toml")),
            config,
        )?;
        Plan::resolve(
            workspace(),
            config,
            PlanInput {
                profile: profile.into(),
                options: RunOptions {
                    lock_dir: Some(lock_dir),
                    ..options
                },
                ..PlanInput::default()
            },
        )
    }

    #[test]
    fn builtin_profiles_and_cli_overrides() {
        let t2 = plan("", "t2", RunOptions::default()).unwrap();
        assert_eq!(
            (
                t2.caps.test_threads(),
                t2.caps.rayon_threads(),
                t2.caps.blas_threads()
            ),
            (2, 2, 1)
        );
        assert!(!t2.caps.deterministic());
        let t2 = plan(
            "[profile.t2]\nrayon-threads = 3\n",
            "t2",
            RunOptions {
                test_threads: Some(4),
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!((t2.caps.test_threads(), t2.caps.rayon_threads()), (4, 3));
    }

    #[test]
    fn the_fixed_width_never_comes_from_the_host() {
        // Every job of a matrix deals time shards for it: the command line and the config
        // decide it, never the CPU count.
        let width = |config: &str, profile: &str, options: RunOptions| {
            plan(config, profile, options).unwrap().fixed_width()
        };
        let given = |n: u32| RunOptions {
            test_threads: Some(n),
            ..RunOptions::default()
        };
        let deterministic = RunOptions {
            deterministic: true,
            ..RunOptions::default()
        };
        assert_eq!(width("", "t2", RunOptions::default()), Some(2));
        assert_eq!(width("", "t1", RunOptions::default()), Some(1));
        assert_eq!(width("", "t2", given(5)), Some(5));
        assert_eq!(width("", "t2", deterministic), Some(1));
        // A file's t2 without a width keeps the built-in one.
        let file = "[profile.t2]\nrayon-threads = 3\n[profile.wide]\nrayon-threads = 3\n\
                    [profile.six]\ntest-threads = 6\n\
                    [profile.det]\ndeterministic = true\ntest-threads = 8\n";
        assert_eq!(width(file, "t2", RunOptions::default()), Some(2));
        // The host's CPU count: none (the deal takes 1).
        assert_eq!(width(file, "wide", RunOptions::default()), None);
        assert_eq!(width(file, "wide", given(3)), Some(3));
        assert_eq!(width(file, "six", RunOptions::default()), Some(6));
        assert_eq!(width(file, "det", RunOptions::default()), Some(1));
    }

    #[test]
    fn deterministic_pins_everything_and_fixes_the_seed() {
        let t1 = plan(
            "",
            "t1",
            RunOptions {
                deterministic: true,
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            (
                t1.caps.test_threads(),
                t1.caps.rayon_threads(),
                t1.caps.blas_threads(),
                t1.caps.async_threads()
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(t1.caps.seed(), 42);
        let t1 = plan(
            "",
            "t1",
            RunOptions {
                deterministic: true,
                seed: Some(7),
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(t1.caps.seed(), 7);
        let det = plan(
            "[profile.det]\ndeterministic = true\ntest-threads = 8\n",
            "det",
            RunOptions::default(),
        )
        .unwrap();
        assert_eq!((det.caps.test_threads(), det.caps.seed()), (1, 42));
        assert!(
            !det.split_binaries,
            "deterministic runs never split a binary"
        );
        let t2 = plan("", "t2", RunOptions::default()).unwrap();
        assert!(t2.split_binaries, "on by default");
        let whole = plan(
            "[profile.t2]\nsplit-binaries = false\n",
            "t2",
            RunOptions::default(),
        )
        .unwrap();
        assert!(!whole.split_binaries);
    }

    #[test]
    fn host_safety_from_the_profile_and_the_command_line() {
        let config = "[profile.ci]\nmem-limit = \"2GiB\"\nmem-budget = \"8GiB\"\n";
        let ci = plan(config, "ci", RunOptions::default()).unwrap();
        assert_eq!(
            (ci.mem_limit, ci.caps.mem_budget()),
            (Some(2 << 30), Some(8 << 30))
        );
        assert!(ci.degrade && ci.partition.is_none());
        let (env, _) = ci.env_for_run(None);
        assert_eq!(env["CAPPED_MEM_BUDGET"], (8u64 << 30).to_string());
        let ci = plan(
            config,
            "ci",
            RunOptions {
                mem_limit: Some(300 << 20),
                no_degrade: true,
                partition: Some(Partition {
                    scheme: partition::Scheme::Hash,
                    index: 1,
                    count: 2,
                }),
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ci.mem_limit, Some(300 << 20), "the flag wins");
        assert!(!ci.degrade);
        assert_eq!(
            ci.partition.map(|p| p.to_string()).as_deref(),
            Some("hash:1/2")
        );
        assert_eq!(
            plan("", "t2", RunOptions::default()).unwrap().mem_limit,
            None
        );
    }

    #[test]
    fn the_preflight_table_is_checked_where_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capped.toml");
        std::fs::write(
            &path,
            "[groups.gpu]\nmax = 1\n[preflight]\ndegrade-load-per-cpu = 3\n",
        )
        .unwrap();
        let (config, thresholds) = load_config(&path).unwrap();
        assert_eq!(config.groups["gpu"].max, 1);
        assert_eq!(thresholds.degrade_load_per_cpu, 3.0);
        std::fs::write(&path, "[preflight]\ndegrade-load-per-cpu = 3\nbogus = 1\n").unwrap();
        let message = load_config(&path).unwrap_err().to_string();
        assert!(message.contains("capped.toml:3:1"), "{message}");
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn the_default_memory_budget_is_three_quarters_of_what_is_available() {
        let host = crate::host::tests::fixture("idle");
        let available = host.meminfo().unwrap().available;
        assert_eq!(default_mem_budget(&host), Some(available / 4 * 3));
        // A cgroup limit tighter than MemAvailable is what counts.
        let limited = crate::host::tests::fixture("cgroup-v2-limited");
        let budget = default_mem_budget(&limited).unwrap();
        assert!(
            budget < limited.meminfo().unwrap().available / 4 * 3,
            "{budget}"
        );
        assert!(default_mem_budget(&HostRoot::at("/nonexistent")).is_none());
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let message = plan("[profile.ci]\n", "nope", RunOptions::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("unknown profile `nope`"), "{message}");
        assert!(message.contains("ci, t1, t2"), "{message}");
    }

    #[test]
    fn the_env_and_the_runner_caps_agree() {
        let plan = plan(
            "[profile.ci]\ntest-threads = 3\nrayon-threads = 2\nseed = 5\ntest-timeout = \"9s\"\n[profile.ci.env]\nMYAPP = \"1\"\nRAYON_NUM_THREADS = \"64\"\n[groups.gpu]\nmax = 1\nbinaries = [\"gpu*\"]\n",
            "ci",
            RunOptions::default(),
        )
        .unwrap();
        let run_dir = PathBuf::from("/ws/target/capped/runs/r1");
        let (env, caps) = plan.env_for_run(Some(("r1", &run_dir)));
        assert_eq!(env["MYAPP"], "1");
        assert_eq!(env["RAYON_NUM_THREADS"], "2", "the caps win over [env]");
        assert_eq!(env["CAPPED_TEST_THREADS"], "3");
        assert_eq!(env["CAPPED_SEED"], "5");
        assert_eq!(env["CAPPED_RUN_DIR"], "/ws/target/capped/runs/r1");
        assert_eq!(env["CAPPED_GROUPS"], "gpu=1@host");
        assert_eq!(env["CAPPED_TEST_TIMEOUT"], "9000ms");
        assert_eq!(env["OMP_NUM_THREADS"], "1");
        assert_eq!(caps.test_threads(), 3);
        assert_eq!(caps.seed(), 5);
        assert_eq!(caps.run_dir(), Some(run_dir.as_path()));
        assert_eq!(plan.groups_claiming("gpu_suite"), ["gpu"]);
        assert!(plan.groups_claiming("light").is_empty());
    }
}
