//! `cargo capped gate --group NAME [--max N] [--timeout DUR] -- CMD [ARGS]`: run a command
//! while holding a host-wide slot of a group (what ad-hoc `flock` wrapper scripts do, made
//! safe: the slot is freed when the gate dies, and waiting says who holds it).
//!
//! The gate takes one slot of group `NAME` in the **host** lock dir (the same lock files
//! `#[capped(group = "NAME")]` tests and `cargo capped` runs use, so a gated script and a
//! test suite share one GPU fairly), then runs CMD in a process group of its own with
//! `CAPPED_SLOT_<NAME>=<slot>` in its environment, forwards SIGINT, SIGTERM and SIGHUP to
//! that group (and once CMD exits after one, ends what CMD left in the group: SIGTERM, then
//! SIGKILL after a grace, so a stopped job leaves nothing running ungated), and exits with
//! CMD's status. The slot is a `flock`ed file: the kernel frees
//! it when the gate dies, even by SIGKILL (CMD itself then gets a SIGKILL through
//! `PR_SET_PDEATHSIG`).
//!
//! While it waits, the gate says on stderr who holds the slots — pid and command line —
//! at once and then every [`REPORT_EVERY`]; `-q` silences that. Waits poll with jittered
//! backoff of at most 8 ms, so a freed slot is taken within ~10 ms.
//!
//! # Exit status
//!
//! | status | meaning |
//! | --- | --- |
//! | CMD's | CMD ran and exited |
//! | 128 + N | CMD was killed by signal N (or the gate got signal N while waiting) |
//! | [`EXIT_TIMEOUT`] (124) | `--timeout` passed before a slot was free (as `timeout(1)`) |
//! | [`EXIT_USAGE`] (2) | bad group name or flags, unusable lock dir, bad config |
//! | 126 / 127 | CMD could not be executed / was not found (as a shell) |
//!
//! # Inside CMD
//!
//! CMD inherits the gate's environment with only these added or replaced, so that what it
//! runs gets the caps its caller chose and no others:
//!
//! * `CAPPED_SLOT_<NAME>` is the slot held; `CAPPED_LOCK_DIR` the host lock dir used, so
//!   that nested gates, runs and tests take their slots from the same lock files.
//! * `CAPPED_GROUPS` gets `NAME=1@workspace`: tests inside CMD that take the same group
//!   again (`#[capped(group = "NAME")]`) must not wait for the slot the gate itself holds
//!   (that would never end), so inside the gated job the group serializes per workspace
//!   instead, one holder at a time. Their `capped_test::slot("NAME")` is then 0, whatever
//!   slot the gate holds; read `CAPPED_SLOT_<NAME>` for the gate's.
//! * Thread caps only when asked ([`ThreadArgs`]): `--profile NAME` gives the rayon, BLAS
//!   and async thread counts that capped profile resolves to, `--rayon-threads`,
//!   `--blas-threads` and `--async-threads` set one each (over the profile's). Each is set
//!   both as the pool's own variable (`RAYON_NUM_THREADS`; `OMP_NUM_THREADS`,
//!   `OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `NUMEXPR_NUM_THREADS`;
//!   `TOKIO_WORKER_THREADS`) and as the `CAPPED_*` one, which `capped-test` reads first, so
//!   an inherited `CAPPED_RAYON_THREADS` cannot override the cap. A gate is a lock, not a
//!   profile: without these flags CMD's thread pools are whatever its caller set.
//! * A gate whose slot is already held by one of its **ancestors** (a gate inside a gate,
//!   or inside a test or run holding that group) runs CMD at once under that slot instead
//!   of waiting for itself.
//! * CMD is not in the terminal's foreground process group: a CMD that reads from the
//!   terminal is stopped (SIGTTIN). Gate batch jobs, not interactive programs.
//!
//! # Entry
//!
//! `cargo capped gate` (`cli::Command::Gate`) calls [`run`] before the runner installs its
//! own signal handlers: the gate installs its own (signal-hook's iterator), to forward them.

mod child;
mod holders;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capped_model::protocol::{self, env};
use capped_model::units::{check_group_name, format_duration, parse_duration};
use capped_model::{Caps, Request};
use clap::Args;
use signal_hook::iterator::Signals;

/// Exit status when `--timeout` passed before a slot was free (as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status for bad usage: a bad group name, an unusable lock dir, a config error.
pub const EXIT_USAGE: i32 = 2;
/// Exit status when CMD exists but cannot be executed (as a shell).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when CMD is not found (as a shell).
pub const EXIT_NOT_FOUND: i32 = 127;

/// How often a waiting gate repeats who holds the slots.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The signals the gate forwards to CMD's process group.
pub const FORWARDED_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// `cargo capped gate`: run CMD while holding a host-wide slot of a group.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "CMD runs in its own process group with CAPPED_SLOT_<NAME>=<slot>; SIGINT, SIGTERM and SIGHUP are forwarded to it, \
        and once CMD exits after one, what it left in its group gets SIGTERM, then SIGKILL after 2s. \
        The slot is freed when CMD exits or the gate dies (even by SIGKILL).\n\n\
        CMD's environment is the gate's plus exactly: CAPPED_SLOT_<NAME> (the slot held), CAPPED_LOCK_DIR (the host lock dir, \
        so nested gates, runs and tests share it) and CAPPED_GROUPS (the inherited groups with NAME=1@workspace, so tests \
        inside CMD that take NAME again do not wait for the gate's own slot). Thread caps only when asked: --profile, \
        --rayon-threads, --blas-threads and --async-threads set RAYON_NUM_THREADS, OMP_NUM_THREADS/OPENBLAS_NUM_THREADS/\
        MKL_NUM_THREADS/NUMEXPR_NUM_THREADS and TOKIO_WORKER_THREADS, each with its CAPPED_RAYON_THREADS, \
        CAPPED_BLAS_THREADS or CAPPED_ASYNC_THREADS twin.\n\n\
        Exit status: CMD's own; 128+N when CMD was killed by signal N; 124 when --timeout passed before a slot was free; \
        2 bad usage (group name, lock dir, config); 126 CMD cannot be executed; 127 CMD not found."
)]
pub struct GateArgs {
    /// The group whose slot to take: `[a-z0-9][a-z0-9_-]{0,63}` (e.g. gpu, crossval, e2e).
    #[arg(long, value_name = "NAME", value_parser = group_name)]
    pub group: String,
    /// How many holders the group allows at once [default: the group's `max` in
    /// $CAPPED_GROUPS, else in .config/capped.toml found from the current dir, else 1].
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count)]
    pub max: Option<u32>,
    /// Give up waiting for a slot after DUR (30s, 5m, 1h30m) and exit with status 124.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The host lock dir [default: $CAPPED_LOCK_DIR, else the config's `lock-dir`, else
    /// $XDG_RUNTIME_DIR/capped, else /tmp/capped-UID].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Do not say who holds the slot while waiting (errors and timeouts are still shown).
    #[arg(short, long)]
    pub quiet: bool,
    /// Thread caps for CMD; none unless asked.
    #[command(flatten)]
    pub threads: ThreadArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The thread caps `cargo capped gate` hands CMD: none unless one of these is given.
#[derive(Debug, Clone, Default, Args)]
pub struct ThreadArgs {
    /// Give CMD the rayon, BLAS and async thread caps of capped profile NAME (from
    /// .config/capped.toml found from the current dir, or the built-in t1/t2), as its tests
    /// would get them under `cargo capped run --profile NAME`.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Give CMD N rayon threads: RAYON_NUM_THREADS and CAPPED_RAYON_THREADS (over --profile's).
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count)]
    pub rayon_threads: Option<u32>,
    /// Give CMD N BLAS/OpenMP threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
    /// MKL_NUM_THREADS, NUMEXPR_NUM_THREADS and CAPPED_BLAS_THREADS (over --profile's).
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count)]
    pub blas_threads: Option<u32>,
    /// Give CMD N async worker threads: TOKIO_WORKER_THREADS and CAPPED_ASYNC_THREADS
    /// (over --profile's).
    #[arg(long, value_name = "N", value_parser = capped_model::units::parse_count)]
    pub async_threads: Option<u32>,
}

/// The thread-cap variables for CMD that `threads` asks for (none when it asks for none),
/// the profile found from `cwd`. Errors (an unknown profile, a bad config) name the place.
fn thread_env(threads: &ThreadArgs, cwd: &Path) -> Result<Vec<(String, String)>, String> {
    let (mut rayon, mut blas, mut asynchronous) = (None, None, None);
    if let Some(name) = &threads.profile {
        let config = capped_model::config::Config::discover(cwd).map_err(|e| e.to_string())?;
        if config.profile(name).is_none() {
            let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown capped profile `{name}` (known: {})",
                known.join(", ")
            ));
        }
        // The same resolution tests under that profile get (defaults, deterministic mode),
        // from nothing but the profile: the caller's own caps are not the profile's.
        let only_profile = |var: &str| (var == env::PROFILE).then(|| name.clone());
        let caps = Caps::from_sources(&only_profile, &[], Some(&config))
            .map_err(|e| format!("capped profile `{name}`: {e}"))?;
        rayon = Some(caps.rayon_threads());
        blas = Some(caps.blas_threads());
        asynchronous = Some(caps.async_threads());
    }
    let rayon = threads.rayon_threads.or(rayon);
    let blas = threads.blas_threads.or(blas);
    let asynchronous = threads.async_threads.or(asynchronous);
    let mut vars = Vec::new();
    let mut set = |names: &[&str], n: u32| {
        vars.extend(names.iter().map(|name| (name.to_string(), n.to_string())));
    };
    if let Some(n) = rayon {
        set(&[env::RAYON_THREADS, "RAYON_NUM_THREADS"], n);
    }
    if let Some(n) = blas {
        set(&[env::BLAS_THREADS], n);
        set(&env::BLAS_VARS, n);
    }
    if let Some(n) = asynchronous {
        set(&[env::ASYNC_THREADS, "TOKIO_WORKER_THREADS"], n);
    }
    Ok(vars)
}

fn group_name(text: &str) -> Result<String, String> {
    check_group_name(text).map(|()| text.to_string())
}

/// Where the group's `max` came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MaxSource {
    Flag,
    Env,
    Config,
    Default,
}

/// Resolves the group's capacity: `--max`, else `$CAPPED_GROUPS`, else the config found
/// from `cwd`, else 1. Errors (a malformed `CAPPED_GROUPS`, a bad config) name the place.
fn resolve_max(
    args: &GateArgs,
    get: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<(u32, MaxSource), String> {
    if let Some(max) = args.max {
        return Ok((max, MaxSource::Flag));
    }
    if let Some(text) = get(env::GROUPS).filter(|t| !t.trim().is_empty()) {
        let groups = protocol::parse_groups(&text).map_err(|e| {
            format!(
                "environment variable {}={text:?} is malformed: {e}",
                env::GROUPS
            )
        })?;
        if let Some(limit) = groups.get(&args.group) {
            return Ok((limit.max, MaxSource::Env));
        }
    }
    let config = capped_model::config::Config::discover(cwd).map_err(|e| e.to_string())?;
    match config.groups.get(&args.group) {
        Some(group) => Ok((group.max, MaxSource::Config)),
        None => Ok((1, MaxSource::Default)),
    }
}

/// The devices of `group` when the config found from `cwd` makes it device-backed, with the
/// variable CMD is pinned through and whether `max` is written; `None` otherwise.
fn group_devices(
    group: &str,
    get: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Option<(capped_model::devices::Devices, Option<String>, bool)>, String> {
    let config = capped_model::config::Config::discover(cwd).map_err(|e| e.to_string())?;
    let Some(config) = config.groups.get(group) else {
        return Ok(None);
    };
    let Some(source) = &config.devices else {
        return Ok(None);
    };
    capped_model::devices::env_override(group)?;
    let host = crate::host::HostRoot::from_env(get);
    let path = std::env::var_os("PATH");
    let devices =
        capped_model::devices::resolve(group, source, get, &host.path("/dev"), path.as_deref())?;
    Ok(Some((devices, config.pin_var(), config.max_given)))
}

/// `CAPPED_GROUPS` for CMD: the inherited entries, with `group` as `group=1@workspace`
/// (see the module docs). A malformed inherited value is replaced.
fn child_groups(inherited: Option<&str>, group: &str) -> String {
    let mut groups = inherited
        .and_then(|text| protocol::parse_groups(text).ok())
        .unwrap_or_default();
    groups.insert(
        group.to_string(),
        protocol::GroupLimit {
            max: 1,
            scope: capped_model::Scope::Workspace,
        },
    );
    protocol::format_groups(groups.iter().map(|(name, limit)| (name.as_str(), *limit)))
}

/// The signal number a status of 128 + N stands for.
fn signal_exit(signal: i32) -> i32 {
    128 + signal
}

/// Runs the gate; returns the process exit status (see the module docs).
pub fn run(args: &GateArgs) -> i32 {
    let say = |message: &str| say!("capped gate: {message}");
    if let Err(message) = check_group_name(&args.group) {
        say(&format!("error: {message}"));
        return EXIT_USAGE;
    }
    if args.command.is_empty() {
        say("error: no command given; usage: cargo capped gate --group NAME -- CMD [ARGS]");
        return EXIT_USAGE;
    }
    // Registered first, so that a signal at any point is seen (while waiting: give up).
    let mut signals = match Signals::new(FORWARDED_SIGNALS) {
        Ok(signals) => signals,
        Err(e) => {
            say(&format!("error: cannot install signal handlers: {e}"));
            return 1;
        }
    };
    let get_env = |var: &str| std::env::var(var).ok();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let (mut max, source) = match resolve_max(args, &get_env, &cwd) {
        Ok(found) => found,
        Err(message) => {
            say(&format!("error: {message}"));
            return EXIT_USAGE;
        }
    };
    // A device-backed group pins CMD to its slot's device; with no devices there is
    // nothing to gate on.
    let devices = match group_devices(&args.group, &get_env, &cwd) {
        Ok(found) => found,
        Err(message) => {
            say(&format!("error: {message}"));
            return EXIT_USAGE;
        }
    };
    if let Some((devices, _, max_given)) = &devices {
        if devices.ids.is_empty() {
            say(&format!(
                "error: group `{}` has no devices: {}",
                args.group, devices.how
            ));
            return EXIT_USAGE;
        }
        if !max_given && matches!(source, MaxSource::Config | MaxSource::Default) {
            max = u32::try_from(devices.ids.len()).unwrap_or(u32::MAX);
        }
    }
    let thread_vars = match thread_env(&args.threads, &cwd) {
        Ok(vars) => vars,
        Err(message) => {
            say(&format!("error: {message}"));
            return EXIT_USAGE;
        }
    };
    // `--lock-dir`, else `CAPPED_LOCK_DIR`, else the config's `lock-dir`; absolute, so
    // CMD (which gets it) can change dirs.
    let lock_dir = args
        .lock_dir
        .clone()
        .or_else(|| capped_model::resource::lock_dir::env_lock_dir(&get_env))
        .or_else(|| {
            capped_model::config::Config::discover(&cwd)
                .ok()
                .and_then(|config| config.lock_dir)
        })
        .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
        .map(|dir| dir.display().to_string());
    let groups = format!("{}={max}@host", args.group);
    let caps_env = |var: &str| match var {
        env::GROUPS => Some(groups.clone()),
        env::LOCK_DIR => lock_dir.clone(),
        "XDG_RUNTIME_DIR" => get_env(var),
        _ => None,
    };
    let caps = match Caps::from_sources(&caps_env, &[], None) {
        Ok(caps) => caps,
        Err(e) => {
            say(&format!("error: {e}"));
            return EXIT_USAGE;
        }
    };
    let resolved = match Request::new().group(&args.group).resolve(&caps) {
        Ok(resolved) => resolved,
        Err(e) => {
            say(&format!("error: {e}"));
            return EXIT_USAGE;
        }
    };
    let what = format!(
        "a `{}` slot (max {max}{}, lock dir {})",
        args.group,
        match source {
            MaxSource::Flag => "",
            MaxSource::Env => " from $CAPPED_GROUPS",
            MaxSource::Config => " from .config/capped.toml",
            MaxSource::Default => ", the default",
        },
        caps.host_lock_dir().display()
    );

    let asked = Instant::now();
    let deadline = args.timeout.map(|t| asked + t);
    let mut backoff = Duration::from_micros(500);
    let mut next_report = asked;
    let mut slot_env: Vec<(String, String)>;
    let guard = loop {
        match resolved.try_take(asked) {
            Ok(Some(guard)) => {
                slot_env = guard.envs();
                break Some(guard);
            }
            Ok(None) => {}
            Err(e) => {
                say(&format!("error: cannot take {what}: {e}"));
                return EXIT_USAGE;
            }
        }
        let now = Instant::now();
        if now >= next_report || deadline.is_some_and(|d| now >= d) {
            let holders = holders::describe(&resolved.holders());
            if let Some(slot) = holders::held_by_ancestor(&holders) {
                if !args.quiet {
                    say(&format!(
                        "`{}` slot {} is held by pid {}, an ancestor of this gate; running CMD under that slot",
                        args.group,
                        slot.slot,
                        slot.pid.unwrap_or(0)
                    ));
                }
                slot_env = vec![(env::slot_var(&args.group), slot.slot.to_string())];
                break None;
            }
            let shown = holders::render(&holders);
            if deadline.is_some_and(|d| now >= d) {
                say(&format!(
                    "gave up waiting for {what} after {} (--timeout); held by {shown}",
                    format_duration(now - asked)
                ));
                return EXIT_TIMEOUT;
            }
            if !args.quiet {
                if next_report == asked {
                    say(&format!("waiting for {what}; held by {shown}"));
                } else {
                    say(&format!(
                        "still waiting for {what} after {}; held by {shown}",
                        format_duration(now - asked)
                    ));
                }
            }
            next_report = now + REPORT_EVERY;
        }
        if let Some(signal) = signals.pending().next() {
            say(&format!(
                "interrupted by signal {signal} while waiting for {what}"
            ));
            return signal_exit(signal);
        }
        let mut sleep = backoff.mul_f64(0.5 + fastrand::f64());
        backoff = (backoff * 2).min(Duration::from_millis(8));
        if let Some(deadline) = deadline {
            sleep = sleep.min(deadline.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(sleep);
    };
    if let Some(guard) = &guard
        && !args.quiet
        && guard.waited() >= Duration::from_millis(100)
    {
        say(&format!(
            "got `{}` slot {} after {}",
            args.group,
            guard.slot(&args.group).unwrap_or(0),
            format_duration(guard.waited())
        ));
    }
    if let Some((devices, pin_var, _)) = &devices {
        let slot = slot_env
            .iter()
            .find(|(var, _)| *var == env::slot_var(&args.group))
            .and_then(|(_, slot)| slot.parse::<usize>().ok());
        if let Some(id) = slot.and_then(|slot| devices.ids.get(slot)) {
            slot_env.push((env::device_var(&args.group), id.clone()));
            if let Some(var) = pin_var {
                slot_env.push((var.clone(), id.clone()));
            }
        }
        slot_env.push((
            env::devices_var(&args.group),
            capped_model::devices::format_ids(&devices.ids),
        ));
    }
    slot_env.push((
        env::LOCK_DIR.to_string(),
        caps.host_lock_dir().display().to_string(),
    ));
    slot_env.push((
        env::GROUPS.to_string(),
        child_groups(get_env(env::GROUPS).as_deref(), &args.group),
    ));
    slot_env.extend(thread_vars);
    let code = child::run(&args.command, &slot_env, signals, args.quiet);
    // The slot is released only now, after CMD has exited.
    drop(guard);
    code
}

#[cfg(test)]
mod tests;
