//! The command line: `cargo capped t2|t1|run|list|preflight|gate …`, parsed with clap.
//!
//! cargo runs an external subcommand `cargo capped ARGS` as `cargo-capped capped ARGS`;
//! [`normalize_args`] drops that `capped` so `cargo-capped t2` works as well.
//!
//! Cargo's own selection and build flags pass through to `cargo test --no-run` (see
//! [`CargoArgs`]). One spelling differs: cargo's `--profile` (the *build* profile) is
//! `--cargo-profile` here, because `--profile` names the *capped* profile in
//! `cargo capped run --profile NAME`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use capped_model::libtest_args::{self, Kind};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// `cargo capped`: run a workspace's tests within run-wide caps.
#[derive(Debug, Parser)]
#[command(
    name = "cargo-capped",
    bin_name = "cargo capped",
    version,
    about = "Run a workspace's tests with a capped width, serialized heavy groups and capped thread pools",
    long_about = "Run a workspace's tests with a capped width, serialized heavy groups and capped thread pools.\n\n\
        `cargo capped t2` runs every test binary of the workspace so that at most two tests execute at \
        once across all binaries, each binary's rayon/BLAS/tokio pools are capped, and groups named in \
        .config/capped.toml (a GPU, a cross-validation suite) never exceed their `max`.\n\
        `cargo capped t1 --deterministic` runs one test at a time in a stable order with fixed seeds.\n\n\
        `cargo capped preflight` checks the host (load, memory, processes, open files, disk) and \
        `cargo capped gate --group NAME -- CMD` runs a command while holding a host-wide slot.\n\n\
        Exit status of t1/t2/run/list: 0 all passed; 100 a test failed, timed out, was killed for \
        memory or was not run; 101 the build failed; 2 bad usage or config; 4 no test ran \
        (--no-tests=fail, the default); 130 interrupted; 1 the runner itself failed (including a \
        --junit or JSON report it could not write). `preflight` and `gate` document their own (see their --help).",
    after_help = "Config: .config/capped.toml at the workspace root (profiles, [profile.NAME.env], [groups.NAME], [preflight]).",
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tests with the `t2` profile: two tests at once run-wide, rayon 2, BLAS 1.
    #[command(
        long_about = "Run the tests with the `t2` profile (`run --profile t2`): at most two tests execute at \
            once across every test binary, rayon pools of 2, BLAS/OpenMP 1; heavy groups serialized."
    )]
    T2(ProfileRunArgs),
    /// Run the tests with the `t1` profile: one test at a time, one thread everywhere.
    #[command(
        long_about = "Run the tests with the `t1` profile (`run --profile t1`): one test at a time, every pool \
            one thread. With --deterministic: binaries and tests in a stable order, seed 42 unless --seed."
    )]
    T1(ProfileRunArgs),
    /// Run the tests with a named profile from .config/capped.toml (or the built-in t1/t2).
    Run(NamedRunArgs),
    /// Build the test binaries and list their tests (with the groups harness tests declare).
    List(ListArgs),
    /// Write the nextest config (`[test-groups]`, overrides) that keeps these groups under `cargo nextest run`.
    #[command(
        long_about = "Write the `[test-groups]` and `[[profile.default.overrides]]` that make `cargo nextest run` \
            keep the groups of .config/capped.toml: a group's `max` becomes its `max-threads`, a binary a group \
            claims (`binaries = [..]`) is filtered by its binary id, and a harness-mode test that declares a group \
            by its binary id and exact name. Binary ids and test names come from `cargo nextest list`, so \
            cargo-nextest must be installed. Writes to stdout, or to --output PATH (e.g. .config/nextest.toml)."
    )]
    NextestConfig(crate::nextest_config::NextestConfigArgs),
    /// Check the host (CPUs, load, PSI, processes, open files, memory, disk) before a run.
    #[command(
        long_about = "Check the host before a run: CPUs (affinity, cgroup quota), load 1/5/15, PSI, \
            processes against pid_max/RLIMIT_NPROC/cgroup pids.max, open files (file-nr, RLIMIT_NOFILE), \
            memory (MemAvailable, cgroup limit and usage) and free disk under the target dir. Each reading \
            gets a status (ok, warn, critical) and one line of advice; levels come from [preflight] in \
            .config/capped.toml. The same readings decide whether a run degrades to width 1."
    )]
    Preflight(crate::preflight::command::PreflightArgs),
    /// Run a command while holding a host-wide slot of a group (like flock(1), shared with tests).
    #[command(
        long_about = "Run CMD while holding one host-wide slot of group NAME: the same lock files that \
            `#[capped(group = \"NAME\")]` tests and `cargo capped` runs take, so gated scripts and test suites \
            share a GPU (or any scarce resource) fairly. While waiting, says who holds the slots (pid and \
            command). CMD runs in its own process group with CAPPED_SLOT_<NAME> set; SIGINT, SIGTERM and \
            SIGHUP are forwarded; the slot is freed when CMD exits or the gate dies, even by SIGKILL."
    )]
    Gate(crate::gate::GateArgs),
    /// Show what earlier runs measured: each test's runs, pass rate and durations.
    #[command(
        long_about = "Show the workspace's test history (target/capped/history.json): for each test \
            its last runs, how many passed, and its median and p95 duration, which `cargo capped` uses \
            to start the longest work first and to cut `--partition time:K/N` shards of equal time."
    )]
    History(HistoryArgs),
}

/// `cargo capped history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only tests whose `binary name` contains FILTER.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// `human` (a table) or `json` (the history file's entries, one per line).
    #[arg(long, value_enum, default_value_t = MessageFormat::Human, value_name = "FMT")]
    pub message_format: MessageFormat,
    /// Path to Cargo.toml (finds the workspace and its target dir).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// The target dir (default: the workspace's).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
}

/// `t1`/`t2`: the run options; the profile is implied.
#[derive(Debug, Args)]
pub struct ProfileRunArgs {
    /// The run.
    #[command(flatten)]
    pub run: RunArgs,
    /// Not accepted here: reported with a hint (use `--cargo-profile` or `run --profile`).
    #[arg(long = "profile", value_name = "NAME", hide = true)]
    pub misplaced_profile: Option<String>,
}

/// `run --profile NAME`.
#[derive(Debug, Args)]
pub struct NamedRunArgs {
    /// The capped profile: `t1`, `t2` or a `[profile.NAME]` of .config/capped.toml.
    /// (Cargo's build profile is --cargo-profile.)
    #[arg(long, value_name = "NAME")]
    pub profile: String,
    /// The run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Everything a run takes besides the profile.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Cargo's flags.
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// How to run.
    #[command(flatten)]
    pub options: RunOptions,
    /// The output.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Run only tests whose name contains FILTER (given to every test binary, as `cargo test FILTER`).
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// Arguments for every test binary, after `--` (`--exact`, `--skip PAT`, `--ignored`,
    /// `--include-ignored`, `--nocapture`, `--show-output`, …).
    #[arg(last = true, value_name = "ARGS")]
    pub test_args: Vec<String>,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Cargo's flags.
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// `human` (one line per test under its binary) or `json` (one JSON object per test).
    #[arg(long, value_enum, default_value_t = MessageFormat::Human, value_name = "FMT")]
    pub message_format: MessageFormat,
    /// Colors in cargo's output.
    #[arg(long, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,
    /// Less output from the build.
    #[arg(short, long)]
    pub quiet: bool,
    /// List only tests whose name contains FILTER.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// Arguments for every test binary's `--list`, after `--` (`--exact`, `--skip PAT`, `--ignored`).
    #[arg(last = true, value_name = "ARGS")]
    pub test_args: Vec<String>,
}

/// Cargo's package selection and build flags, passed to `cargo test --no-run`.
#[derive(Debug, Args, Default, Clone)]
pub struct CargoArgs {
    /// Package(s) to test (cargo's -p).
    #[arg(short, long, value_name = "SPEC", help_heading = "Package selection")]
    pub package: Vec<String>,
    /// Test every package of the workspace.
    #[arg(long, help_heading = "Package selection")]
    pub workspace: bool,
    /// Exclude packages (with --workspace).
    #[arg(long, value_name = "SPEC", help_heading = "Package selection")]
    pub exclude: Vec<String>,
    /// Deprecated alias of --workspace.
    #[arg(long, hide = true)]
    pub all: bool,

    /// Test only this package's library.
    #[arg(long, help_heading = "Target selection")]
    pub lib: bool,
    /// Test only the named binary.
    #[arg(long, value_name = "NAME", help_heading = "Target selection")]
    pub bin: Vec<String>,
    /// Test all binaries.
    #[arg(long, help_heading = "Target selection")]
    pub bins: bool,
    /// Test only the named integration test target.
    #[arg(long, value_name = "NAME", help_heading = "Target selection")]
    pub test: Vec<String>,
    /// Test all integration test targets.
    #[arg(long, help_heading = "Target selection")]
    pub tests: bool,
    /// Test only the named example.
    #[arg(long, value_name = "NAME", help_heading = "Target selection")]
    pub example: Vec<String>,
    /// Test all examples.
    #[arg(long, help_heading = "Target selection")]
    pub examples: bool,
    /// Test only the named bench target (run as a test).
    #[arg(long, value_name = "NAME", help_heading = "Target selection")]
    pub bench: Vec<String>,
    /// Test all bench targets.
    #[arg(long, help_heading = "Target selection")]
    pub benches: bool,
    /// Test all targets (doc tests excepted: see --doc).
    #[arg(long, help_heading = "Target selection")]
    pub all_targets: bool,
    /// Test only the libraries' doc tests (run by `cargo test --doc`, one package at a time,
    /// under the run's width and caps).
    #[arg(long, help_heading = "Target selection")]
    pub doc: bool,

    /// Features to activate (space or comma separated).
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature selection"
    )]
    pub features: Vec<String>,
    /// Activate all features.
    #[arg(long, help_heading = "Feature selection")]
    pub all_features: bool,
    /// Do not activate the `default` feature.
    #[arg(long, help_heading = "Feature selection")]
    pub no_default_features: bool,

    /// Build in release mode.
    #[arg(short, long, help_heading = "Compilation options")]
    pub release: bool,
    /// Cargo's build profile (cargo's own `--profile`; here `--profile` names the capped profile).
    #[arg(long, value_name = "NAME", help_heading = "Compilation options")]
    pub cargo_profile: Option<String>,
    /// Parallel build jobs (cargo's -j; the test width is --test-threads).
    #[arg(short, long, value_name = "N", value_parser = parse_jobs, allow_negative_numbers = true, help_heading = "Compilation options")]
    pub jobs: Option<String>,
    /// Build for the target triple.
    #[arg(long, value_name = "TRIPLE", help_heading = "Compilation options")]
    pub target: Vec<String>,
    /// Directory for all generated artifacts.
    #[arg(long, value_name = "DIRECTORY", help_heading = "Compilation options")]
    pub target_dir: Option<PathBuf>,

    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH", help_heading = "Manifest options")]
    pub manifest_path: Option<PathBuf>,
    /// Assert that Cargo.lock will remain unchanged.
    #[arg(long, help_heading = "Manifest options")]
    pub locked: bool,
    /// Run without accessing the network.
    #[arg(long, help_heading = "Manifest options")]
    pub offline: bool,
    /// Both --locked and --offline.
    #[arg(long, help_heading = "Manifest options")]
    pub frozen: bool,
    /// Override a cargo configuration value (KEY=VALUE or a file), as cargo's --config.
    #[arg(
        long = "config",
        value_name = "KEY=VALUE",
        help_heading = "Manifest options"
    )]
    pub cargo_config: Vec<String>,
}

impl CargoArgs {
    /// The flags for `cargo test --no-run` (and, for the manifest options, `cargo metadata`).
    pub fn to_cargo_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut many = |flag: &str, values: &[String]| {
            for value in values {
                args.push(flag.to_string());
                args.push(value.clone());
            }
        };
        many("--package", &self.package);
        many("--exclude", &self.exclude);
        many("--bin", &self.bin);
        many("--test", &self.test);
        many("--example", &self.example);
        many("--bench", &self.bench);
        many("--features", &self.features);
        many("--target", &self.target);
        many("--config", &self.cargo_config);
        let flags = [
            (self.workspace || self.all, "--workspace"),
            (self.lib, "--lib"),
            (self.bins, "--bins"),
            (self.tests, "--tests"),
            (self.examples, "--examples"),
            (self.benches, "--benches"),
            (self.all_targets, "--all-targets"),
            (self.all_features, "--all-features"),
            (self.no_default_features, "--no-default-features"),
            (self.release, "--release"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        if let Some(profile) = &self.cargo_profile {
            args.extend(["--profile".to_string(), profile.clone()]);
        }
        if let Some(jobs) = &self.jobs {
            args.extend(["--jobs".to_string(), jobs.clone()]);
        }
        if let Some(dir) = &self.target_dir {
            args.extend(["--target-dir".to_string(), dir.display().to_string()]);
        }
        args.extend(self.manifest_args());
        args
    }

    /// Whether a target selection flag is given (`--lib`, `--bin`, `--tests`, `--all-targets`,
    /// …; not `--doc`): `cargo test` then runs no doc tests.
    pub fn selects_targets(&self) -> bool {
        self.lib
            || self.bins
            || self.tests
            || self.examples
            || self.benches
            || self.all_targets
            || !self.bin.is_empty()
            || !self.test.is_empty()
            || !self.example.is_empty()
            || !self.bench.is_empty()
    }

    /// The flags that decide what is built, without any package or target selection
    /// (features, build profile, target, jobs, target dir, manifest options): what a
    /// package's `cargo test --doc` needs to find the build of the run fresh.
    pub fn build_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for features in &self.features {
            args.extend(["--features".to_string(), features.clone()]);
        }
        for target in &self.target {
            args.extend(["--target".to_string(), target.clone()]);
        }
        for config in &self.cargo_config {
            args.extend(["--config".to_string(), config.clone()]);
        }
        for (on, flag) in [
            (self.all_features, "--all-features"),
            (self.no_default_features, "--no-default-features"),
            (self.release, "--release"),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        if let Some(profile) = &self.cargo_profile {
            args.extend(["--profile".to_string(), profile.clone()]);
        }
        if let Some(jobs) = &self.jobs {
            args.extend(["--jobs".to_string(), jobs.clone()]);
        }
        if let Some(dir) = &self.target_dir {
            args.extend(["--target-dir".to_string(), dir.display().to_string()]);
        }
        args.extend(self.manifest_args());
        args
    }

    /// `--manifest-path`, `--locked`, `--offline`, `--frozen`, `--config`: what `cargo
    /// metadata` needs too.
    pub fn manifest_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.manifest_path {
            args.extend(["--manifest-path".to_string(), path.display().to_string()]);
        }
        for (on, flag) in [
            (self.locked, "--locked"),
            (self.offline, "--offline"),
            (self.frozen, "--frozen"),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        args
    }
}

/// How the run goes.
#[derive(Debug, Args, Default, Clone)]
pub struct RunOptions {
    /// The run's width: how many tests execute at once across all binaries (overrides the
    /// profile's `test-threads`).
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count, help_heading = "Run options")]
    pub test_threads: Option<u32>,
    /// The global rayon pool's size in each test process (overrides `rayon-threads`).
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count, help_heading = "Run options")]
    pub rayon_threads: Option<u32>,
    /// One thread everywhere, seed 42 unless --seed, binaries and tests in a stable order.
    #[arg(long, conflicts_with_all = ["test_threads", "rayon_threads"], help_heading = "Run options")]
    pub deterministic: bool,
    /// The run seed (every test's `capped_test::seed()` derives from it).
    #[arg(long, value_name = "N", help_heading = "Run options")]
    pub seed: Option<u64>,
    /// Shuffle the order of binaries (and of harness-mode tests) with the run seed, printed
    /// in the header.
    #[arg(long, help_heading = "Run options")]
    pub shuffle: bool,
    /// Per test binary: SIGTERM to its process group after DUR (e.g. 30s, 5m), SIGKILL 2 s
    /// later; the tests still running are reported as timed out.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout, help_heading = "Run options")]
    pub timeout: Option<Duration>,
    /// Host lock dir for host-scope groups (default $CAPPED_LOCK_DIR, the config's
    /// `lock-dir`, $XDG_RUNTIME_DIR/capped, /tmp/capped-UID: per user unless an
    /// administrator shares a dir, see README "Sharing a GPU between users").
    #[arg(long, value_name = "DIR", help_heading = "Run options")]
    pub lock_dir: Option<PathBuf>,
    /// Stop starting test binaries after the first failure (binaries already running finish;
    /// the others are reported as not run). The default runs everything.
    #[arg(long, help_heading = "Run options")]
    pub fail_fast: bool,
    /// Run every binary whatever fails (the default; accepted for cargo compatibility).
    #[arg(long, conflicts_with = "fail_fast", help_heading = "Run options")]
    pub no_fail_fast: bool,
    /// Per test binary: kill its whole process tree when its summed RSS exceeds SIZE (300M,
    /// 2GiB; overrides the profile's `mem-limit`). A watchdog samples every 50 ms; the report
    /// names the binary and the tests that were running. Peak RSS per binary is always shown.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Run options")]
    pub mem_limit: Option<u64>,
    /// Keep the width on a busy host. By default, before the run and between binaries, a
    /// host past a degrade level of `[preflight]` (load per CPU, available memory, CPU
    /// pressure) runs one test at a time until it calms down.
    #[arg(long, help_heading = "Run options")]
    pub no_degrade: bool,
    /// Run only the tests of partition K of N, so N jobs with K = 1..N run every test once.
    /// hash:K/N places each test by a stable hash of its binary and name (adding a test
    /// moves no other); slice:K/N takes every Nth of the run's tests sorted by binary and
    /// name, from the Kth (even slices).
    #[arg(long, value_name = "hash:K/N|slice:K/N|time:K/N", value_parser = crate::plan::partition::Partition::parse, help_heading = "Run options")]
    pub partition: Option<crate::plan::partition::Partition>,
    /// `test`: run each test as a process of its own, so --timeout and --mem-limit act on
    /// that test alone and a crash fails only it; `binary` (the default): a test binary's
    /// tests share one process, as under `cargo test`. Also `isolation` in a profile, or in
    /// a `[groups.NAME]` table for that group's tests only.
    #[arg(long, value_name = "test|binary", value_parser = capped_model::config::Isolation::parse, help_heading = "Run options")]
    pub isolation: Option<capped_model::config::Isolation>,
    /// Run a failed test up to N more times, each in a fresh process; a test that fails and
    /// then passes is reported FLAKY (0 to 100; not in --deterministic runs unless given
    /// here).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=capped_model::config::MAX_RETRIES as i64), help_heading = "Run options")]
    pub retries: Option<u32>,
    /// Neither read nor write the test history (target/capped/history.json); deterministic
    /// runs never read it for their order anyway.
    #[arg(long, help_heading = "Run options")]
    pub no_history: bool,
    /// Build the test binaries and stop: nothing runs, exit 0 after a good build (as
    /// `cargo test --no-run`). The binaries are named on stderr; with `--message-format
    /// json`, one `test-binary` event per binary on stdout.
    #[arg(long, help_heading = "Run options")]
    pub no_run: bool,
    /// Fail before any test runs unless device-backed group NAME has devices (repeatable;
    /// also `require = [..]` in a profile and `CAPPED_REQUIRE=gpu,..`). Without it, a group
    /// with no devices has its tests skipped, with the reason.
    #[arg(long, value_name = "NAME", help_heading = "Run options")]
    pub require: Vec<String>,
    /// What a run that runs no test ends with (a filter or partition that selects nothing,
    /// only ignored tests): `fail` (exit 4, the default, as nextest), `warn` (a notice, exit
    /// 0) or `pass` (exit 0 silently, as `cargo test`).
    #[arg(long, value_enum, default_value_t = NoTests::Fail, value_name = "WHAT", help_heading = "Run options")]
    pub no_tests: NoTests,
}

/// `--no-tests`: what a run that runs no test ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum NoTests {
    /// Exit 0 silently.
    Pass,
    /// Say so in a notice, exit 0.
    Warn,
    /// Say so and exit 4: a selection that matches nothing is most often a mistyped filter,
    /// and a green CI job that ran nothing hides it.
    #[default]
    Fail,
}

/// What the run prints.
#[derive(Debug, Args, Default, Clone)]
pub struct OutputArgs {
    /// `human`: lines on stderr (and a progress bar on a terminal); `json`: also one JSON
    /// event per line on stdout.
    #[arg(long, value_enum, default_value_t = MessageFormat::Human, value_name = "FMT", help_heading = "Output")]
    pub message_format: MessageFormat,
    /// Also write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub junit: Option<PathBuf>,
    /// Show the tests' output live, each line under the test (or binary) that printed it:
    /// the same as `-- --nocapture` (nextest's spelling).
    #[arg(long, help_heading = "Output")]
    pub no_capture: bool,
    /// More output: binaries starting and finishing, and their output no test claimed.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet", help_heading = "Output")]
    pub verbose: u8,
    /// Less output: failures (with their output), notices and the summary only.
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
    /// Colors.
    #[arg(long, value_enum, default_value_t = Color::Auto, value_name = "WHEN", help_heading = "Output")]
    pub color: Color,
}

/// `--message-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MessageFormat {
    /// Lines for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Color {
    /// Colors on a terminal.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Color {
    /// The word cargo takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Auto => "auto",
            Color::Always => "always",
            Color::Never => "never",
        }
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    capped_model::units::parse_timeout(text)
}

fn parse_size(text: &str) -> Result<u64, String> {
    capped_model::units::parse_mem_limit(text)
}

/// Checks cargo's `-j N` here, so a bad value is a usage error (exit 2) rather than a build
/// failure: cargo takes a non-zero whole number (negative: that many fewer than the CPUs)
/// or `default`.
fn parse_jobs(text: &str) -> Result<String, String> {
    if text == "default" {
        return Ok(text.to_string());
    }
    match text.parse::<i32>() {
        Ok(0) => Err("`0` jobs cannot build anything; expected a non-zero whole number (negative: that many fewer than the CPUs) or `default`".to_string()),
        Ok(_) => Ok(text.to_string()),
        Err(_) => Err(format!(
            "`{}` is not a number of jobs; expected a non-zero whole number (negative: that many fewer than the CPUs) or `default`",
            text.escape_debug()
        )),
    }
}

/// Drops the `capped` that cargo inserts (`cargo capped t2` runs `cargo-capped capped t2`).
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|arg| arg == "capped") {
        args.remove(1);
    }
    args
}

/// libtest flags that `cargo capped` sets itself or that would break parsing the binaries'
/// output, with what to do instead.
const UNSUPPORTED_TEST_FLAGS: [(&libtest_args::Flag, &str); 10] = [
    (
        &libtest_args::HELP,
        "it prints libtest's help instead of running tests; for cargo capped's, put --help before `--`",
    ),
    (
        &libtest_args::TEST_THREADS,
        "the width is cargo capped's own: put `--test-threads N` before `--`",
    ),
    (
        &libtest_args::QUIET,
        "cargo capped reads each test's output to show it with the test: use `cargo capped -q` (before `--`)",
    ),
    (
        &libtest_args::FORMAT,
        "cargo capped reads libtest's default (pretty) output; use --message-format json or --junit",
    ),
    (
        &libtest_args::UNSTABLE,
        "cargo capped reads libtest's default (pretty) output; use --message-format json or --junit",
    ),
    (&libtest_args::LIST, "use `cargo capped list`"),
    (
        &libtest_args::LOGFILE,
        "cargo capped gives libtest a logfile of its own to read verdicts from; for a record of the run use --junit PATH or --message-format json",
    ),
    (
        &libtest_args::SHUFFLE,
        "use `cargo capped --shuffle` (and --seed N) before `--`",
    ),
    (
        &libtest_args::SHUFFLE_SEED,
        "use `cargo capped --shuffle` (and --seed N) before `--`",
    ),
    (
        &libtest_args::COLOR,
        "use `cargo capped --color` before `--`",
    ),
];

/// Refuses libtest arguments that `cargo capped` sets itself or that would break parsing
/// the binaries' output, saying what to do instead; and arguments libtest itself rejects
/// (an unknown option, a missing or unexpected value, a repeated option), which would
/// otherwise fail every binary's listing.
pub fn check_test_args(args: &[String]) -> Result<(), String> {
    let mut seen: Vec<&libtest_args::Flag> = Vec::new();
    for item in libtest_args::parse(args) {
        let arg = item.raw[0].as_str();
        let shown = arg.escape_debug();
        let (flag, value) = match item.kind {
            Kind::Flag { flag, value } => (flag, value),
            Kind::Unknown => {
                return Err(format!(
                    "`{shown}` after `--` is not an option of libtest; see a test binary's --help \
                     (a filter that starts with `-` goes after a second `--`)"
                ));
            }
            Kind::EndOfFlags | Kind::Filter(_) => continue,
        };
        if let Some((_, hint)) = UNSUPPORTED_TEST_FLAGS.iter().find(|(f, _)| *f == flag) {
            return Err(format!("`{shown}` after `--` is not supported: {hint}"));
        }
        match (flag.value, value) {
            (Some(form), None) => {
                return Err(format!(
                    "`{shown}` after `--` needs a value: `{} {form}`",
                    flag.name()
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "`{shown}` after `--`: `{}` does not take a value",
                    flag.name()
                ));
            }
            _ => {}
        }
        // libtest takes every option once, `--skip` as often as wanted.
        if flag != &libtest_args::SKIP {
            if seen.contains(&flag) {
                return Err(format!(
                    "`{}` is given more than once after `--`; libtest takes it once",
                    flag.name()
                ));
            }
            seen.push(flag);
        }
    }
    libtest_args::run_ignored(args).map_err(|message| format!("after `--`: {message}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = normalize_args(args.iter().map(OsString::from));
        Cli::try_parse_from(args)
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The repository's CI workflow runs `cargo capped`: every such line of it must parse, so
    /// a renamed flag cannot leave the documented example broken.
    #[test]
    fn the_ci_workflows_command_lines_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.github/workflows/ci.yml");
        let workflow = std::fs::read_to_string(path).unwrap();
        let lines: Vec<String> = workflow
            .lines()
            .filter_map(|line| line.trim().strip_prefix("run: "))
            .filter(|run| run.starts_with("cargo capped "))
            .map(|run| run.replace("${{ matrix.k }}", "2"))
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("--partition") && l.contains("--junit")),
            "{lines:?}"
        );
        for line in lines {
            let args: Vec<&str> = std::iter::once("cargo-capped")
                .chain(line.split_whitespace().skip(1))
                .collect();
            let cli = parse(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            let Command::T2(args) = cli.command else {
                panic!("{line}: not t2")
            };
            assert_eq!(
                args.run.options.partition.map(|p| p.to_string()).as_deref(),
                Some("hash:2/3"),
                "{line}"
            );
        }
    }

    #[test]
    fn cargo_inserts_capped() {
        let cli = parse(&[
            "cargo-capped",
            "capped",
            "t2",
            "-p",
            "foo",
            "needle",
            "--",
            "--exact",
        ])
        .unwrap();
        let Command::T2(args) = cli.command else {
            panic!("not t2")
        };
        assert_eq!(args.run.cargo.package, ["foo"]);
        assert_eq!(args.run.filter.as_deref(), Some("needle"));
        assert_eq!(args.run.test_args, ["--exact"]);
        let cli = parse(&["cargo-capped", "t1", "--deterministic", "--seed", "7"]).unwrap();
        let Command::T1(args) = cli.command else {
            panic!("not t1")
        };
        assert!(args.run.options.deterministic);
        assert_eq!(args.run.options.seed, Some(7));
    }

    #[test]
    fn run_takes_our_profile_and_cargo_profile_is_spelled_out() {
        let cli = parse(&[
            "cargo-capped",
            "run",
            "--profile",
            "ci",
            "--cargo-profile",
            "dev",
            "--timeout",
            "30s",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.profile, "ci");
        assert_eq!(args.run.options.timeout, Some(Duration::from_secs(30)));
        let cargo = args.run.cargo.to_cargo_args();
        assert!(
            cargo.windows(2).any(|w| w == ["--profile", "dev"]),
            "{cargo:?}"
        );
        assert!(parse(&["cargo-capped", "run"]).is_err());
    }

    #[test]
    fn bad_usage_is_rejected() {
        assert!(parse(&["cargo-capped", "t2", "--test-threads", "0"]).is_err());
        assert!(parse(&["cargo-capped", "t2", "--timeout", "soon"]).is_err());
        assert!(parse(&["cargo-capped", "t2", "--timeout", "0s"]).is_err());
        assert!(parse(&["cargo-capped", "t2", "--mem-limit", "0"]).is_err());
        assert!(
            parse(&[
                "cargo-capped",
                "t2",
                "--deterministic",
                "--test-threads",
                "2"
            ])
            .is_err()
        );
        assert!(parse(&["cargo-capped", "t2", "-v", "-q"]).is_err());
        assert!(parse(&["cargo-capped", "t2", "--fail-fast", "--no-fail-fast"]).is_err());
        assert!(parse(&["cargo-capped", "nope"]).is_err());
    }

    #[test]
    fn cargo_flags_pass_through() {
        let cli = parse(&[
            "cargo-capped",
            "t2",
            "--workspace",
            "--exclude",
            "x",
            "--features",
            "a b",
            "--release",
            "--locked",
            "--test",
            "it",
            "-j",
            "3",
            "--target-dir",
            "/tmp/t",
        ])
        .unwrap();
        let Command::T2(args) = cli.command else {
            panic!("not t2")
        };
        let cargo = args.run.cargo.to_cargo_args().join(" ");
        for expected in [
            "--workspace",
            "--exclude x",
            "--features a b",
            "--release",
            "--locked",
            "--test it",
            "--jobs 3",
            "--target-dir /tmp/t",
        ] {
            assert!(cargo.contains(expected), "{expected} in {cargo}");
        }
    }

    #[test]
    fn host_safety_options_parse() {
        let cli = parse(&[
            "cargo-capped",
            "t2",
            "--mem-limit",
            "300M",
            "--no-degrade",
            "--partition",
            "hash:2/3",
        ])
        .unwrap();
        let Command::T2(args) = cli.command else {
            panic!("not t2")
        };
        let options = args.run.options;
        assert_eq!(options.mem_limit, Some(300 << 20));
        assert!(options.no_degrade);
        assert_eq!(
            options.partition,
            Some(crate::plan::Partition {
                scheme: crate::plan::partition::Scheme::Hash,
                index: 2,
                count: 3
            })
        );
        for bad in [
            &["--mem-limit", "0"][..],
            &["--mem-limit", "lots"],
            &["--partition", "hash:3/2"],
            &["--partition", "count:1/2"],
        ] {
            let mut args = vec!["cargo-capped", "t2"];
            args.extend_from_slice(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gate_preflight_and_the_hidden_bench_are_subcommands() {
        let cli = parse(&[
            "cargo-capped",
            "capped",
            "gate",
            "--group",
            "gpu",
            "--max",
            "2",
            "--",
            "make",
            "-j2",
        ])
        .unwrap();
        let Command::Gate(gate) = cli.command else {
            panic!("not gate")
        };
        assert_eq!((gate.group.as_str(), gate.max), ("gpu", Some(2)));
        assert_eq!(gate.command, ["make", "-j2"]);
        assert!(parse(&["cargo-capped", "gate", "--group", "GPU", "--", "true"]).is_err());
        let cli = parse(&["cargo-capped", "preflight", "--message-format", "json"]).unwrap();
        assert!(matches!(cli.command, Command::Preflight(_)));
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("preflight") && help.contains("gate"),
            "{help}"
        );
        assert!(!help.contains("__bench"), "hidden: {help}");
        let mut gate_help = Cli::command();
        let gate_help = gate_help
            .find_subcommand_mut("gate")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            gate_help.contains("124 when --timeout passed"),
            "{gate_help}"
        );
    }

    #[test]
    fn test_args_that_would_break_the_run_are_explained() {
        assert!(check_test_args(&["--exact".into(), "--nocapture".into()]).is_ok());
        let message = check_test_args(&["--test-threads=4".into()]).unwrap_err();
        assert!(message.contains("before `--`"), "{message}");
        assert!(check_test_args(&["-q".into()]).is_err());
        assert!(check_test_args(&["--format".into(), "json".into()]).is_err());
    }

    #[test]
    fn counts_are_bounded_and_jobs_checked() {
        for bad in [
            &["t2", "--test-threads", "4294967295"][..],
            &["t2", "--test-threads", "4097"],
            &["t2", "--rayon-threads", "-1"],
            &["t2", "-j", "abc"],
            &["t2", "-j", "0"],
            &["t2", "--no-tests", "maybe"],
            &["gate", "--group", "g", "--max", "4294967295", "--", "true"],
            &[
                "gate",
                "--group",
                "g",
                "--blas-threads",
                "5000",
                "--",
                "true",
            ],
        ] {
            let mut args = vec!["cargo-capped"];
            args.extend_from_slice(bad);
            let error = parse(&args).unwrap_err();
            assert!(error.use_stderr(), "{bad:?}");
        }
        let cli = parse(&["cargo-capped", "t2", "--test-threads", "4096", "-j", "-1"]).unwrap();
        let Command::T2(args) = cli.command else {
            panic!("not t2")
        };
        assert_eq!(args.run.options.test_threads, Some(4096));
        assert_eq!(args.run.options.no_tests, NoTests::Fail);
        assert!(parse(&["cargo-capped", "t2", "-j", "default"]).is_ok());
    }

    #[test]
    fn test_args_libtest_would_reject_are_usage_errors() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        for (bad, says) in [
            (&["--bogus"][..], "not an option of libtest"),
            (&["-x"], "not an option of libtest"),
            (&["--skip"], "needs a value"),
            (&["--exact=1"], "does not take a value"),
            (&["--exact", "--exact"], "more than once"),
            (&["--ignored", "--include-ignored"], "mutually exclusive"),
            (&["--help"], "--help before `--`"),
        ] {
            let message = check_test_args(&args(bad)).unwrap_err();
            assert!(message.contains(says), "{bad:?}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
        assert!(check_test_args(&args(&["--skip", "a", "--skip", "b", "--exact"])).is_ok());
        assert!(check_test_args(&args(&["--", "--bogus"])).is_ok());
    }

    #[test]
    fn test_args_are_read_as_libtest_reads_them() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        // A flag's value and what follows `--` are filters, whatever they look like.
        assert!(check_test_args(&args(&["--skip", "--list"])).is_ok());
        assert!(check_test_args(&args(&["--", "--format"])).is_ok());
        let message = check_test_args(&args(&["-Zunstable-options"])).unwrap_err();
        assert!(message.contains("`-Zunstable-options`"), "{message}");
        assert!(check_test_args(&args(&["--quiet"])).is_err());
        assert!(check_test_args(&args(&["--shuffle-seed=3"])).is_err());
    }
}
