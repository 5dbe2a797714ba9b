//! `cargo capped preflight [--message-format human|json]`: read the host, judge every
//! reading against the `[preflight]` thresholds of `.config/capped.toml`, print the report,
//! and exit non-zero when a reading is critical.
//!
//! # Exit status
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | every reading ok, or only warnings |
//! | [`EXIT_CRITICAL`] (3) | at least one reading is critical |
//! | [`EXIT_USAGE`] (2) | bad flags, or a malformed config (`file:line:col: message`) |
//!
//! 3 rather than 1 so that a script tells "the host is in trouble" from "the tool failed"
//! (1) and from bad usage (2).
//!
//! `CAPPED_HOST_ROOT` (test-only) reads the host from fixture files instead.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use capped_model::config::{Config, find_config_file};
use clap::{Args, ValueEnum};

use super::{Thresholds, collect};
use crate::host::HostRoot;

/// Exit status when a reading is critical.
pub const EXIT_CRITICAL: i32 = 3;
/// Exit status for bad usage or a malformed config.
pub const EXIT_USAGE: i32 = 2;

/// How to print the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreflightFormat {
    /// An aligned table and a summary line.
    Human,
    /// One JSON object: `{"readings":[{"key","value","display","status","advice"}…],"status"}`.
    Json,
}

/// When to colour the human report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreflightColor {
    /// When stdout is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `cargo capped preflight`: check the host before a run.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Readings: CPUs (affinity, cgroup quota), load 1/5/15, PSI, processes vs pid_max/RLIMIT_NPROC/cgroup pids, \
        open files (file-nr vs file-max, RLIMIT_NOFILE), memory (MemAvailable, cgroup limit and usage), free disk under the target dir. \
        Thresholds: [preflight] in .config/capped.toml.\n\n\
        Exit status: 0 ok or warnings only; 3 a reading is critical; 2 bad usage or a malformed config."
)]
pub struct PreflightArgs {
    /// `human` (a table) or `json` (one object with every reading).
    #[arg(long, value_enum, default_value_t = PreflightFormat::Human, value_name = "FMT")]
    pub message_format: PreflightFormat,
    /// The target dir whose free disk is checked [default: $CARGO_TARGET_DIR, else cargo's
    /// target dir of the workspace, else ./target].
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// The workspace's Cargo.toml [default: found from the current dir].
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Colour the human report.
    #[arg(long, value_enum, default_value_t = PreflightColor::Auto, value_name = "WHEN")]
    pub color: PreflightColor,
}

/// Where preflight looks: the workspace root (for the config) and the target dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The workspace root, or the current dir outside a workspace.
    pub root: PathBuf,
    /// The target dir (need not exist).
    pub target_dir: PathBuf,
}

/// The workspace root at or above `start`: the nearest dir whose `Cargo.toml` has a
/// `[workspace]` table, else the nearest dir with a `Cargo.toml`, else `None`.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    let mut nearest = None;
    let mut workspace = None;
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        nearest.get_or_insert_with(|| dir.to_path_buf());
        let is_workspace = text
            .parse::<toml::Table>()
            .is_ok_and(|table| table.contains_key("workspace"));
        // The nearest workspace is the package's own: a workspace nested in another (a
        // fixture excluded from its parent) is a root of its own, as cargo sees it.
        if is_workspace {
            workspace = Some(dir.to_path_buf());
            break;
        }
    }
    workspace.or(nearest)
}

/// Cargo's target dir of the workspace at `manifest` (`cargo metadata --no-deps`), which
/// honours `build.target-dir` in `.cargo/config.toml`; `None` when cargo fails.
fn cargo_target_dir(manifest: Option<&Path>, cwd: &Path) -> Option<PathBuf> {
    let mut command = cargo_metadata::MetadataCommand::new();
    command.no_deps().current_dir(cwd);
    if let Some(manifest) = manifest {
        command.manifest_path(manifest);
    }
    command
        .exec()
        .ok()
        .map(|metadata| metadata.target_directory.into_std_path_buf())
}

/// Finds the workspace and its target dir for `args`, from `cwd`.
pub fn locate(args: &PreflightArgs, cwd: &Path, get: &dyn Fn(&str) -> Option<String>) -> Place {
    let manifest = args.manifest_path.as_ref().map(|p| cwd.join(p));
    let start = manifest
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(cwd)
        .to_path_buf();
    let root = workspace_root(&start).unwrap_or_else(|| start.clone());
    let target_dir = match (
        &args.target_dir,
        get("CARGO_TARGET_DIR").filter(|d| !d.is_empty()),
    ) {
        (Some(dir), _) => cwd.join(dir),
        (None, Some(dir)) => cwd.join(dir),
        (None, None) if root.join("Cargo.toml").is_file() => {
            cargo_target_dir(manifest.as_deref(), cwd).unwrap_or_else(|| root.join("target"))
        }
        (None, None) => cwd.join("target"),
    };
    Place { root, target_dir }
}

/// The `[preflight]` thresholds of the config found at or above `root`; defaults when
/// there is no config or no table. Errors are `file:line:col: message`.
pub fn load_thresholds(root: &Path) -> Result<(Thresholds, Option<PathBuf>), String> {
    let Some(path) = find_config_file(root) else {
        return Ok((Thresholds::default(), None));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?;
    let (_, thresholds) = Config::parse_with_preflight::<Thresholds>(Some(&path), &text)
        .map_err(|e| e.to_string())?;
    Ok((thresholds.unwrap_or_default(), Some(path)))
}

fn use_color(choice: PreflightColor, get: &dyn Fn(&str) -> Option<String>) -> bool {
    match choice {
        PreflightColor::Always => true,
        PreflightColor::Never => false,
        PreflightColor::Auto => {
            get("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
        }
    }
}

/// Runs `cargo capped preflight`; prints the report on stdout (errors on stderr) and
/// returns the exit status (see the module docs).
pub fn run(args: &PreflightArgs) -> i32 {
    let get = |var: &str| std::env::var(var).ok();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let place = locate(args, &cwd, &get);
    let (thresholds, _config) = match load_thresholds(&place.root) {
        Ok(found) => found,
        Err(message) => {
            say!("error: {message}");
            return EXIT_USAGE;
        }
    };
    // Test-only: fixture files instead of the live /proc and /sys (see `plan`).
    let host = HostRoot::from_env(&get);
    let report = collect(&host, &place.target_dir, &thresholds);
    let devices = device_groups(&place.root, &host, &get);
    match args.message_format {
        PreflightFormat::Json => {
            let mut json: serde_json::Value =
                serde_json::from_str(&report.to_json()).unwrap_or_default();
            if let Some(object) = json.as_object_mut() {
                object.insert(
                    "device_groups".to_string(),
                    serde_json::Value::Array(
                        devices
                            .iter()
                            .map(|g| {
                                serde_json::json!({
                                    "group": g.group,
                                    "devices": g.ids,
                                    "how": g.how,
                                    "busy": g.busy,
                                })
                            })
                            .collect(),
                    ),
                );
            }
            out!("{json}");
        }
        PreflightFormat::Human => {
            print!("{}", report.render_human(use_color(args.color, &get)));
            for group in &devices {
                let found = if group.ids.is_empty() {
                    "no devices".to_string()
                } else {
                    format!("devices {}", group.ids.join(", "))
                };
                let busy = if group.busy.is_empty() {
                    "none busy".to_string()
                } else {
                    format!("busy: {}", group.busy.join("; "))
                };
                out!(
                    "  devices  group `{}`: {found} ({}); {busy}",
                    group.group,
                    group.how
                );
            }
        }
    }
    report.exit_code(EXIT_CRITICAL)
}

/// A device-backed group as preflight shows it.
struct DeviceGroup {
    group: String,
    ids: Vec<String>,
    how: String,
    /// Its held slots, as `slot N: pid P`.
    busy: Vec<String>,
}

/// Every device-backed group of the config under `root`: its devices, how they were found,
/// and which of its slots other processes hold now.
fn device_groups(
    root: &Path,
    host: &HostRoot,
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<DeviceGroup> {
    let Ok(mut config) = Config::discover(root) else {
        return Vec::new();
    };
    let Ok(found) = crate::plan::resolve_devices(&mut config, host) else {
        return Vec::new();
    };
    let caps = capped_model::Caps::from_sources(get, &[], Some(&config)).ok();
    found
        .into_iter()
        .map(|(group, devices)| {
            let busy = caps
                .as_ref()
                .and_then(|caps| {
                    capped_model::Request::new()
                        .group(group.clone())
                        .resolve(caps)
                        .ok()
                })
                .map(|resolved| resolved.holders())
                .unwrap_or_default();
            DeviceGroup {
                group,
                ids: devices.ids,
                how: devices.how,
                busy,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PreflightArgs,
    }

    fn args(extra: &[&str]) -> PreflightArgs {
        Cli::try_parse_from(std::iter::once("preflight").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn flags_parse_and_help_names_the_exit_statuses() {
        let parsed = args(&[
            "--message-format",
            "json",
            "--target-dir",
            "t",
            "--color",
            "never",
        ]);
        assert_eq!(parsed.message_format, PreflightFormat::Json);
        assert_eq!(parsed.target_dir.as_deref(), Some(Path::new("t")));
        assert_eq!(parsed.color, PreflightColor::Never);
        assert!(Cli::try_parse_from(["preflight", "--message-format", "xml"]).is_err());
        let help = Cli::try_parse_from(["preflight", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("3 a reading is critical"), "{help}");
    }

    #[test]
    fn finds_the_outermost_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("Cargo.toml"), "[workspace]\nmembers = [\"a\"]\n");
        write(&root.join("a/Cargo.toml"), "[package]\nname = \"a\"\n");
        write(&root.join("a/src/lib.rs"), "");
        assert_eq!(
            workspace_root(&root.join("a/src")),
            Some(root.to_path_buf())
        );
        let lone = tempfile::tempdir().unwrap();
        write(
            &lone.path().join("p/Cargo.toml"),
            "[package]\nname = \"p\"\n",
        );
        assert_eq!(
            workspace_root(&lone.path().join("p")),
            Some(lone.path().join("p"))
        );
    }

    #[test]
    fn target_dir_from_flag_env_or_outside_a_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let place = locate(&args(&["--target-dir", "out"]), dir.path(), &none);
        assert_eq!(place.target_dir, dir.path().join("out"));
        let env = |var: &str| (var == "CARGO_TARGET_DIR").then(|| "/srv/target".to_string());
        assert_eq!(
            locate(&args(&[]), dir.path(), &env).target_dir,
            PathBuf::from("/srv/target")
        );
        // Outside any workspace (a temp dir has no Cargo.toml above it, normally).
        if workspace_root(dir.path()).is_none() {
            let place = locate(&args(&[]), dir.path(), &none);
            assert_eq!(place.root, dir.path());
            assert_eq!(place.target_dir, dir.path().join("target"));
        }
    }

    #[test]
    fn thresholds_come_from_the_config_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let (defaults, path) = load_thresholds(dir.path()).unwrap();
        assert_eq!(defaults, Thresholds::default());
        assert!(path.is_none());
        let config = dir.path().join(".config/capped.toml");
        write(
            &config,
            "[groups.gpu]\nmax = 1\n\n[preflight]\nload-per-cpu-warn = 0.5\nmem-available-critical = \"256MiB\"\n",
        );
        let (thresholds, path) = load_thresholds(dir.path()).unwrap();
        assert_eq!(path.as_deref(), Some(config.as_path()));
        assert_eq!(thresholds.load_per_cpu_warn, 0.5);
        assert_eq!(thresholds.mem_available_critical, 256 << 20);
        write(
            &config,
            "[preflight]\nload-per-cpu-warn = 0.5\nbogus-key = 1\n",
        );
        let error = load_thresholds(dir.path()).unwrap_err();
        assert!(error.contains("capped.toml:3:1"), "{error}");
        assert!(error.contains("bogus-key"), "{error}");
    }

    #[test]
    fn the_live_report_has_every_reading() {
        let dir = tempfile::tempdir().unwrap();
        let report = collect(&HostRoot::system(), dir.path(), &Thresholds::default());
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let keys: Vec<&str> = json["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, super::super::keys::ALL);
        assert!(matches!(report.exit_code(EXIT_CRITICAL), 0 | EXIT_CRITICAL));
    }
}
