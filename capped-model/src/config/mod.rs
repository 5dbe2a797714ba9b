//! `.config/capped.toml`: profiles, groups and the preflight table.
//!
//! One parser serves the test binaries (which read the groups when no `CAPPED_*` environment
//! is given, so a group's `max` and `scope` are the same under plain `cargo test`) and the
//! `cargo capped` runner (which reads everything). Unknown keys and bad values are errors
//! naming `file:line:column` and what is accepted.
//!
//! ```
//! use capped_model::config::Config;
//!
//! let config = Config::parse(None, r#"
//!     [profile.t2]
//!     rayon-threads = 4
//!
//!     [groups.gpu]
//!     max = 1
//!     scope = "host"
//! "#).unwrap();
//! let t2 = config.profile("t2").unwrap();
//! assert_eq!(t2.test_threads, Some(2)); // built in
//! assert_eq!(t2.rayon_threads, Some(4)); // from the file
//! assert_eq!(config.group("gpu").max, 1);
//! ```

mod error;
mod group;
mod isolation;
mod profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

pub use error::ConfigError;
pub use group::GroupConfig;
pub use isolation::{FlakyResult, Isolation, MAX_RETRIES};
pub use profile::Profile;

use crate::units;

/// Where the config lives relative to the workspace root.
pub const CONFIG_RELATIVE_PATH: &str = ".config/capped.toml";

/// The parsed config: built-in profiles merged with the file's, and the file's groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// Profiles by name; `t1` and `t2` are always present.
    pub profiles: BTreeMap<String, Profile>,
    /// Groups named in the file, by name.
    pub groups: BTreeMap<String, GroupConfig>,
    /// The `[preflight]` table as written (its keys are checked by `cargo capped`).
    pub preflight: Option<toml::Table>,
    /// `lock-dir`: the host lock dir, for a dir an administrator shares between users. A
    /// relative path is taken from the workspace root (the dir holding `.config/`).
    pub lock_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document<P> {
    #[serde(default)]
    profile: BTreeMap<Spanned<String>, profile::ProfileDoc>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, group::GroupDoc>,
    preflight: Option<P>,
    #[serde(rename = "lock-dir")]
    lock_dir: Option<Spanned<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            profiles: profile::builtin_profiles(),
            groups: BTreeMap::new(),
            preflight: None,
            lock_dir: None,
        }
    }
}

impl Config {
    /// Parses config text; `path` is used in error messages.
    pub fn parse(path: Option<&Path>, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_preflight::<toml::Table>(path, text).map(|(config, preflight)| Config {
            preflight,
            ..config
        })
    }

    /// Parses config text, deserializing `[preflight]` as `P` (so its unknown keys and bad
    /// values are located like every other error). Returns the config and that section.
    pub fn parse_with_preflight<P: DeserializeOwned>(
        path: Option<&Path>,
        text: &str,
    ) -> Result<(Config, Option<P>), ConfigError> {
        let document: Document<P> = toml::from_str(text).map_err(|e| {
            ConfigError::at(path, text, e.span(), e.message().trim_end().to_string())
        })?;
        let mut profiles = profile::builtin_profiles();
        for (name, doc) in document.profile {
            check_profile_name(path, text, &name)?;
            let parsed = doc.into_profile(path, text)?;
            profiles.entry(name.into_inner()).or_default().merge(parsed);
        }
        let mut groups = BTreeMap::new();
        let mut seen: Vec<&str> = Vec::new();
        for name in document.groups.keys() {
            seen.push(name.get_ref());
            crate::protocol::check_slot_vars(seen.iter().copied())
                .map_err(|message| ConfigError::at(path, text, Some(name.span()), message))?;
        }
        for (name, doc) in document.groups {
            units::check_group_name(name.get_ref())
                .map_err(|message| ConfigError::at(path, text, Some(name.span()), message))?;
            let group = doc.into_group(path, text)?;
            groups.insert(name.into_inner(), group);
        }
        let lock_dir = match document.lock_dir {
            None => None,
            Some(dir) if dir.get_ref().is_empty() => {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(dir.span()),
                    "`lock-dir` cannot be empty; name a directory or leave the key out",
                ));
            }
            Some(dir) if dir.get_ref().contains('\0') => {
                return Err(ConfigError::at(
                    path,
                    text,
                    Some(dir.span()),
                    format!(
                        "`lock-dir` `{}` contains a NUL character, which no path can",
                        units::shown(dir.get_ref())
                    ),
                ));
            }
            Some(dir) => {
                let dir = PathBuf::from(dir.into_inner());
                let root = path.and_then(Path::parent).and_then(Path::parent);
                Some(match root {
                    Some(root) if dir.is_relative() => root.join(dir),
                    _ => dir,
                })
            }
        };
        let config = Config {
            path: path.map(Path::to_path_buf),
            profiles,
            groups,
            preflight: None,
            lock_dir,
        };
        Ok((config, document.preflight))
    }

    /// Reads `path`. A missing file is an error here; see [`Config::discover`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole(path, format!("cannot read the config file: {e}")))?;
        Config::parse(Some(path), &text)
    }

    /// Finds `.config/capped.toml` in `start` or its nearest ancestor that has one, and
    /// reads it; the built-in defaults when there is none.
    pub fn discover(start: &Path) -> Result<Config, ConfigError> {
        match find_config_file(start) {
            Some(path) => Config::load(&path),
            None => Ok(Config::default()),
        }
    }

    /// The profile `name`, if the file or the built-ins define it.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Every configured group's capacity and scope, as `CAPPED_GROUPS` carries them.
    pub fn group_limits(&self) -> BTreeMap<String, crate::protocol::GroupLimit> {
        self.groups
            .iter()
            .map(|(name, group)| {
                let limit = crate::protocol::GroupLimit {
                    max: group.max,
                    scope: group.scope,
                };
                (name.clone(), limit)
            })
            .collect()
    }

    /// The group `name` as configured, or the default for groups the config does not name
    /// (`max = 1`, `scope = "host"`: an unknown group serializes host-wide).
    pub fn group(&self, name: &str) -> GroupConfig {
        self.groups.get(name).cloned().unwrap_or_default()
    }
}

/// The nearest `.config/capped.toml` at or above `start`.
pub fn find_config_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(CONFIG_RELATIVE_PATH))
        .find(|candidate| candidate.is_file())
}

fn check_profile_name(
    path: Option<&Path>,
    text: &str,
    name: &Spanned<String>,
) -> Result<(), ConfigError> {
    let ok = !name.get_ref().is_empty()
        && name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            text,
            Some(name.span()),
            format!(
                "profile name `{}` may only contain letters, digits, `-` and `_`",
                units::shown(name.get_ref())
            ),
        ))
    }
}

/// Checks a spanned string with `parse`, turning its message into a located error.
pub(crate) fn parse_spanned<T>(
    path: Option<&Path>,
    text: &str,
    value: Option<Spanned<String>>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    value
        .map(|value| {
            parse(value.get_ref()).map_err(|message| {
                ConfigError::at(
                    path,
                    text,
                    Some(value.span()),
                    format!("`{key}`: {message}"),
                )
            })
        })
        .transpose()
}

/// Checks that a spanned count is in `1..=`[`units::MAX_COUNT`].
pub(crate) fn count(
    path: Option<&Path>,
    text: &str,
    value: Option<Spanned<i64>>,
    key: &str,
) -> Result<Option<u32>, ConfigError> {
    value
        .map(|value| {
            units::check_count(i128::from(*value.get_ref())).map_err(|message| {
                ConfigError::at(
                    path,
                    text,
                    Some(value.span()),
                    format!("`{key}`: {message}"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Scope;
    use std::time::Duration;

    fn err(text: &str) -> String {
        Config::parse(Some(Path::new("ws/.config/capped.toml")), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn groups_sharing_a_slot_variable_are_refused() {
        let message = err("[groups.a-b]\nmax = 1\n[groups.a_b]\nmax = 2\n");
        assert!(message.contains("ws/.config/capped.toml:"), "{message}");
        assert!(
            message.contains("`a-b` and `a_b` would share the slot variable CAPPED_SLOT_A_B"),
            "{message}"
        );
    }

    #[test]
    fn lock_dir_is_taken_from_the_workspace_root() {
        let path = Path::new("/ws/.config/capped.toml");
        let config = Config::parse(Some(path), "lock-dir = \"locks\"").unwrap();
        assert_eq!(config.lock_dir, Some(PathBuf::from("/ws/locks")));
        let config = Config::parse(Some(path), "lock-dir = \"/var/lib/capped\"").unwrap();
        assert_eq!(config.lock_dir, Some(PathBuf::from("/var/lib/capped")));
        assert!(err("lock-dir = \"\"").contains("`lock-dir` cannot be empty"));
        // No path can hold a NUL: refused where it is written, not when the dir is made.
        let message = err("lock-dir = \"/tmp/a\\u0000b\"");
        assert!(
            message.contains("ws/.config/capped.toml:1:12:"),
            "{message}"
        );
        assert!(message.contains("NUL"), "{message}");
        assert!(!message.contains('\0'), "{message:?}");
    }

    #[test]
    fn builtins_without_a_file() {
        let config = Config::default();
        let t2 = config.profile("t2").unwrap();
        assert_eq!(
            (t2.test_threads, t2.rayon_threads, t2.blas_threads),
            (Some(2), Some(2), Some(1))
        );
        let t1 = config.profile("t1").unwrap();
        assert_eq!((t1.test_threads, t1.rayon_threads), (Some(1), Some(1)));
        let unknown = config.group("gpu");
        assert_eq!((unknown.max, unknown.scope), (1, Scope::Host));
    }

    #[test]
    fn the_design_example_parses() {
        let config = Config::parse(
            None,
            r#"
            [profile.t2]
            test-threads = 2
            rayon-threads = 2
            blas-threads = 1

            [profile.t1]
            test-threads = 1
            rayon-threads = 1
            deterministic = true
            seed = 42

            [profile.t1.env]
            MYAPP_DETERMINISTIC = "1"

            [profile.ci]
            test-threads = 4
            timeout = "5m"
            mem-limit = "2GiB"

            [groups.gpu]
            max = 1
            scope = "host"

            [groups.crossval]
            max = 2
            binaries = ["crossval*"]
            "#,
        )
        .unwrap();
        let t1 = config.profile("t1").unwrap();
        assert_eq!(t1.deterministic, Some(true));
        assert_eq!(t1.seed, Some(42));
        assert_eq!(
            t1.env.get("MYAPP_DETERMINISTIC").map(String::as_str),
            Some("1")
        );
        let ci = config.profile("ci").unwrap();
        assert_eq!(ci.timeout, Some(Duration::from_secs(300)));
        assert_eq!(ci.mem_limit, Some(2 << 30));
        assert_eq!(config.group("crossval").max, 2);
        assert_eq!(
            config.group("crossval").binaries,
            vec!["crossval*".to_string()]
        );
    }

    #[test]
    fn isolation_retries_and_flaky_result() {
        let config = Config::parse(
            None,
            "[profile.ci]\nisolation = \"test\"\nretries = 2\nflaky-result = \"fail\"\n[groups.gpu]\nisolation = \"test\"\n",
        )
        .unwrap();
        let ci = config.profile("ci").unwrap();
        assert_eq!(ci.isolation, Some(Isolation::Test));
        assert_eq!(ci.retries, Some(2));
        assert_eq!(ci.flaky_result, Some(FlakyResult::Fail));
        assert_eq!(config.group("gpu").isolation, Some(Isolation::Test));
        let message = err("[profile.ci]\nretries = 1000\n");
        assert!(
            message.contains("capped.toml:2:") && message.contains("at most 100"),
            "{message}"
        );
        let message = err("[profile.ci]\nisolation = \"process\"\n");
        assert!(
            message.contains("capped.toml:2:") && message.contains("process"),
            "{message}"
        );
        let message = err("[groups.g]\nisolation = 3\n");
        assert!(message.contains("capped.toml:2:"), "{message}");
    }

    #[test]
    fn device_backed_groups() {
        let config = Config::parse(
            None,
            "[groups.gpu]\ndevices = \"nvidia\"\n[groups.tpu]\ndevices = { command = \"list-tpus\" }\npin-env = \"TPU_VISIBLE\"\nmax = 1\n[groups.amd]\ndevices = \"amd\"\npin-env = false\n[profile.ci]\nrequire = [\"gpu\"]\n",
        )
        .unwrap();
        let gpu = config.group("gpu");
        assert_eq!(gpu.devices, Some(crate::devices::DeviceSource::Nvidia));
        assert_eq!(gpu.pin_var().as_deref(), Some("CUDA_VISIBLE_DEVICES"));
        assert!(!gpu.max_given);
        let tpu = config.group("tpu");
        assert_eq!(tpu.pin_var().as_deref(), Some("TPU_VISIBLE"));
        assert!(tpu.max_given);
        assert_eq!(config.group("amd").pin_var(), None);
        assert_eq!(config.profile("ci").unwrap().require, ["gpu"]);
        let message = err("[groups.gpu]\ndevices = \"intel\"\n");
        assert!(
            message.contains("capped.toml:2:") && message.contains("`intel`"),
            "{message}"
        );
        let message = err("[groups.gpu]\ndevices = \"nvidia\"\npin-env = \"A=B\"\n");
        assert!(message.contains("capped.toml:3:"), "{message}");
        let message = err("[groups.gpu]\npin-env = \"X\"\n");
        assert!(
            message.contains("applies to a group with `devices`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_are_located() {
        let message = err("[profile.t2]\ntest-threads = 2\nrayon-thread = 2\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:3:1: "),
            "{message}"
        );
        assert!(message.contains("rayon-thread"), "{message}");
        let message = err("[groups.gpu]\nmax = 1\nscop = \"host\"\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:3:1: "),
            "{message}"
        );
        let message = err("[profiles.t2]\n");
        assert!(message.contains("profiles"), "{message}");
    }

    #[test]
    fn bad_values_are_located_and_say_what_is_accepted() {
        let message = err("[groups.GPU]\nmax = 1\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:1:9: "),
            "{message}"
        );
        assert!(message.contains("[a-z0-9]"), "{message}");
        let message = err("[groups.gpu]\nmax = 0\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:2:7: "),
            "{message}"
        );
        let message = err("[groups.gpu]\nscope = \"planet\"\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:2:9: "),
            "{message}"
        );
        assert!(message.contains("host"), "{message}");
        let message = err("[profile.t2]\ntimeout = \"soon\"\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:2:11: "),
            "{message}"
        );
        assert!(message.contains("30s"), "{message}");
        let message = err("[profile.t2]\nmem-limit = \"lots\"\n");
        assert!(message.contains("2GiB"), "{message}");
        // Zero would end every test before it starts, as `--timeout 0`, `--mem-limit 0`
        // and the attribute's `timeout = "0s"` are refused.
        for (key, zero, expected) in [
            ("timeout", "0s", "timeout of zero"),
            ("test-timeout", "0", "timeout of zero"),
            ("mem-limit", "0MiB", "more than 0 bytes"),
        ] {
            let message = err(&format!("[profile.t2]\n{key} = \"{zero}\"\n"));
            assert!(
                message.starts_with("ws/.config/capped.toml:2:"),
                "{message}"
            );
            assert!(message.contains(expected), "{key}: {message}");
        }
        let message = err("[profile.t2]\ntest-threads = 0\n");
        assert!(message.contains("from 1 to 4096"), "{message}");
        let message = err("[profile.t2]\ntest-threads = \"two\"\n");
        assert!(
            message.starts_with("ws/.config/capped.toml:2:16: "),
            "{message}"
        );
        let message = err("[groups.gpu]\nbinaries = [\"[\"]\n");
        assert!(message.contains("glob"), "{message}");
        let message = err("[profile.\"a b\"]\n");
        assert!(message.contains("profile name"), "{message}");
        let message = err("not toml at all");
        assert!(
            message.starts_with("ws/.config/capped.toml:1:"),
            "{message}"
        );
    }

    #[test]
    fn counts_are_bounded_everywhere() {
        for (text, position) in [
            ("[groups.gpu]\nmax = 4294967295\n", "2:7"),
            ("[groups.gpu]\nmax = -1\n", "2:7"),
            ("[profile.t2]\ntest-threads = 4097\n", "2:16"),
            ("[profile.t2]\nrayon-threads = 100000\n", "2:17"),
            ("[profile.t2]\nblas-threads = 9223372036854775807\n", "2:16"),
            ("[profile.t2]\nasync-threads = 0\n", "2:17"),
        ] {
            let message = err(text);
            assert!(
                message.starts_with(&format!("ws/.config/capped.toml:{position}: ")),
                "{message}"
            );
            assert!(message.contains("from 1 to 4096"), "{message}");
        }
        let config = Config::parse(None, "[groups.gpu]\nmax = 4096\n").unwrap();
        assert_eq!(config.group("gpu").max, 4096);
    }

    #[test]
    fn env_entries_are_checked_at_load() {
        for (text, position, what) in [
            ("[profile.t2.env]\n\"A=B\" = \"1\"\n", "2:1", "contains `=`"),
            ("[profile.t2.env]\n\"\" = \"1\"\n", "2:1", "cannot be empty"),
            ("[profile.t2.env]\n\"A\\u0000\" = \"1\"\n", "2:1", "NUL"),
            ("[profile.t2.env]\nA = \"x\\u0000y\"\n", "2:5", "NUL"),
        ] {
            let message = err(text);
            assert!(
                message.starts_with(&format!("ws/.config/capped.toml:{position}: ")),
                "{text}: {message}"
            );
            assert!(message.contains(what), "{message}");
            assert!(
                !message.contains('\n') && !message.contains('\0'),
                "{message:?}"
            );
        }
        let config = Config::parse(None, "[profile.t2.env]\nA_B = \"x=y\"\n").unwrap();
        assert_eq!(config.profile("t2").unwrap().env["A_B"], "x=y");
    }

    #[test]
    fn discover_walks_upward() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".config")).unwrap();
        std::fs::create_dir_all(dir.path().join("crates/a/src")).unwrap();
        std::fs::write(
            dir.path().join(CONFIG_RELATIVE_PATH),
            "[groups.gpu]\nmax = 3\n",
        )
        .unwrap();
        let config = Config::discover(&dir.path().join("crates/a/src")).unwrap();
        assert_eq!(config.group("gpu").max, 3);
        assert_eq!(
            config.path.as_deref(),
            Some(dir.path().join(CONFIG_RELATIVE_PATH).as_path())
        );
    }
}
