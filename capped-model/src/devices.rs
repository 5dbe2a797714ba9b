//! Device-backed groups: a group whose slots are the machine's GPUs (or any devices a
//! command lists), so that the test holding slot *i* uses device *i* and never the device a
//! concurrent test holds.
//!
//! A group says where its devices come from (`devices = "nvidia"`, `"amd"` or
//! `{ command = "..." }`); `CAPPED_DEVICES_<GROUP>=3,5` overrides detection (empty: none),
//! for CI and tests. Detection reads device nodes under a `/dev` the caller names (so tests
//! can feed fake ones) and falls back to the vendor's tool on `PATH`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::protocol::env;

/// Where a group's devices come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSource {
    /// NVIDIA GPUs: `/dev/nvidia0`, `/dev/nvidia1`…, else `nvidia-smi -L`.
    Nvidia,
    /// AMD GPUs: `/dev/kfd` and `/dev/dri/renderD*`, else `rocm-smi`.
    Amd,
    /// A command printing one device id per line.
    Command(String),
}

impl DeviceSource {
    /// The variable a device is pinned through by default: `CUDA_VISIBLE_DEVICES` for
    /// NVIDIA, `HIP_VISIBLE_DEVICES` for AMD, none for a command (its `pin-env` names one).
    pub fn default_pin_var(&self) -> Option<&'static str> {
        match self {
            DeviceSource::Nvidia => Some("CUDA_VISIBLE_DEVICES"),
            DeviceSource::Amd => Some("HIP_VISIBLE_DEVICES"),
            DeviceSource::Command(_) => None,
        }
    }

    /// `nvidia`, `amd`, or the command.
    pub fn describe(&self) -> String {
        match self {
            DeviceSource::Nvidia => "nvidia".to_string(),
            DeviceSource::Amd => "amd".to_string(),
            DeviceSource::Command(command) => format!("`{command}`"),
        }
    }
}

/// What detection found: the device ids (in slot order), and how, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// Device ids; slot *i* is pinned to `ids[i]`.
    pub ids: Vec<String>,
    /// How they were found (`/dev/nvidia*`, `nvidia-smi -L`, `CAPPED_DEVICES_GPU`), or why
    /// none were (`no nvidia device: /dev/nvidia* absent, nvidia-smi not found`).
    pub how: String,
}

/// The ids of `CAPPED_DEVICES_<GROUP>`: comma-separated, empty for none.
pub fn parse_ids(text: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for id in text.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        {
            return Err(format!(
                "device id `{id}` may hold only letters, digits, `-`, `_`, `:` and `.`"
            ));
        }
        if ids.iter().any(|known| known == id) {
            return Err(format!("device id `{id}` is given twice"));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// This process's `CAPPED_DEVICES_<GROUP>`: `Ok(None)` when unset; an error naming the
/// variable when it is not UTF-8 or its ids are malformed, never a silent fallback.
pub fn env_override(group: &str) -> Result<Option<Vec<String>>, String> {
    let var = env::devices_var(group);
    match std::env::var(&var) {
        Ok(text) => parse_ids(&text)
            .map(Some)
            .map_err(|e| format!("environment variable {var}={text:?} is malformed: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(format!(
            "environment variable {var}={raw:?} is malformed: it is not UTF-8; expected comma-separated device ids"
        )),
    }
}

/// Writes ids as `CAPPED_DEVICES_<GROUP>` holds them.
pub fn format_ids(ids: &[String]) -> String {
    ids.join(",")
}

/// The devices of `group` from `source`: the override in `CAPPED_DEVICES_<GROUP>` when
/// `get` has it, else detection under `dev` (a `/dev`) and on `path` (a `PATH`).
pub fn resolve(
    group: &str,
    source: &DeviceSource,
    get: &dyn Fn(&str) -> Option<String>,
    dev: &Path,
    path: Option<&OsStr>,
) -> Result<Devices, String> {
    let var = env::devices_var(group);
    if let Some(text) = get(&var) {
        let ids = parse_ids(&text).map_err(|e| format!("{var}={text:?}: {e}"))?;
        let how = if ids.is_empty() {
            format!("{var} is empty")
        } else {
            format!("from {var}")
        };
        return Ok(Devices { ids, how });
    }
    Ok(detect(source, dev, path))
}

/// Detects the devices of `source` (see [`resolve`]).
pub fn detect(source: &DeviceSource, dev: &Path, path: Option<&OsStr>) -> Devices {
    match source {
        DeviceSource::Nvidia => {
            let mut ids: Vec<u32> = numbered_entries(dev, "nvidia");
            ids.sort_unstable();
            if !ids.is_empty() {
                return Devices {
                    ids: ids.iter().map(u32::to_string).collect(),
                    how: format!("{}/nvidia*", dev.display()),
                };
            }
            match run_tool("nvidia-smi", &["-L"], path) {
                Some(out) => {
                    let ids: Vec<String> = out
                        .lines()
                        .filter_map(|line| line.strip_prefix("GPU "))
                        .filter_map(|rest| rest.split_once(':').map(|(id, _)| id.trim()))
                        .map(str::to_string)
                        .collect();
                    let how = if ids.is_empty() {
                        "no nvidia device: nvidia-smi -L lists none".to_string()
                    } else {
                        "nvidia-smi -L".to_string()
                    };
                    Devices { ids, how }
                }
                None => Devices {
                    ids: Vec::new(),
                    how: format!(
                        "no nvidia device: {}/nvidia* absent, nvidia-smi not found",
                        dev.display()
                    ),
                },
            }
        }
        DeviceSource::Amd => {
            let kfd = dev.join("kfd").exists();
            let render = numbered_entries(&dev.join("dri"), "renderD");
            if kfd && !render.is_empty() {
                return Devices {
                    ids: (0..render.len()).map(|i| i.to_string()).collect(),
                    how: format!("{0}/kfd and {0}/dri/renderD*", dev.display()),
                };
            }
            match run_tool("rocm-smi", &["--showid"], path) {
                Some(out) => {
                    let mut ids: Vec<String> = out
                        .lines()
                        .filter_map(|line| line.strip_prefix("GPU["))
                        .filter_map(|rest| rest.split_once(']').map(|(id, _)| id.to_string()))
                        .collect();
                    ids.dedup();
                    let how = if ids.is_empty() {
                        "no amd device: rocm-smi lists none".to_string()
                    } else {
                        "rocm-smi --showid".to_string()
                    };
                    Devices { ids, how }
                }
                None => Devices {
                    ids: Vec::new(),
                    how: format!(
                        "no amd device: {0}/kfd or {0}/dri/renderD* absent, rocm-smi not found",
                        dev.display()
                    ),
                },
            }
        }
        DeviceSource::Command(command) => {
            let output = Command::new("sh")
                .args(["-c", command])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output();
            match output {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let listed: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    match parse_ids(&listed.join(",")) {
                        Ok(ids) if ids.is_empty() => Devices {
                            ids,
                            how: format!("no device: `{command}` printed none"),
                        },
                        Ok(ids) => Devices {
                            ids,
                            how: format!("`{command}`"),
                        },
                        Err(e) => Devices {
                            ids: Vec::new(),
                            how: format!("no device: `{command}` printed a bad id: {e}"),
                        },
                    }
                }
                Ok(out) => Devices {
                    ids: Vec::new(),
                    how: format!("no device: `{command}` failed ({})", out.status),
                },
                Err(e) => Devices {
                    ids: Vec::new(),
                    how: format!("no device: cannot run `{command}`: {e}"),
                },
            }
        }
    }
}

/// The numbers of `dir`'s entries named `PREFIX<digits>`.
fn numbered_entries(dir: &Path, prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let digits = name.to_str()?.strip_prefix(prefix)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())?
        })
        .collect()
}

/// Runs `tool ARGS` found on `path`; its stdout when it succeeded, `None` when it is not
/// there or failed.
fn run_tool(tool: &str, args: &[&str], path: Option<&OsStr>) -> Option<String> {
    let found = std::env::split_paths(path?)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())?;
    let out = Command::new(found)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_are_named() {
        let ids = parse_ids("3, 5").unwrap();
        assert_eq!(ids, ["3", "5"]);
        assert_eq!(parse_ids(&format_ids(&ids)).unwrap(), ids);
        assert!(parse_ids("").unwrap().is_empty());
        assert!(parse_ids("3,3").unwrap_err().contains("twice"));
        assert!(parse_ids("a b").unwrap_err().contains("`a b`"));
        assert_eq!(
            parse_ids("GPU-8f2c,0000:3b:00.0").unwrap(),
            ["GPU-8f2c", "0000:3b:00.0"]
        );
    }

    #[test]
    fn nvidia_from_dev_nodes_then_from_nvidia_smi() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let none = detect(&DeviceSource::Nvidia, &dev, Some(OsStr::new("")));
        assert!(none.ids.is_empty());
        assert!(none.how.contains("nvidia-smi not found"), "{}", none.how);
        for name in ["nvidia1", "nvidia0", "nvidiactl", "nvidia-uvm"] {
            std::fs::write(dev.join(name), "").unwrap();
        }
        let found = detect(&DeviceSource::Nvidia, &dev, None);
        assert_eq!(found.ids, ["0", "1"]);
        // No nodes: the tool on PATH answers.
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let smi = bin.join("nvidia-smi");
        std::fs::write(
            &smi,
            "#!/bin/sh\necho 'GPU 0: Fake A100 (UUID: GPU-1)'\necho 'GPU 1: Fake A100 (UUID: GPU-2)'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        let empty_dev = root.path().join("empty");
        std::fs::create_dir_all(&empty_dev).unwrap();
        let found = detect(&DeviceSource::Nvidia, &empty_dev, Some(bin.as_os_str()));
        assert_eq!(found.ids, ["0", "1"]);
        assert_eq!(found.how, "nvidia-smi -L");
    }

    #[test]
    fn the_override_wins_and_a_command_lists_ids() {
        let dev = Path::new("/nonexistent");
        let get = |var: &str| (var == "CAPPED_DEVICES_GPU").then(|| "3,5".to_string());
        let found = resolve("gpu", &DeviceSource::Nvidia, &get, dev, None).unwrap();
        assert_eq!(found.ids, ["3", "5"]);
        let none = |var: &str| (var == "CAPPED_DEVICES_GPU").then(String::new);
        let found = resolve("gpu", &DeviceSource::Nvidia, &none, dev, None).unwrap();
        assert!(found.ids.is_empty() && found.how.contains("empty"));
        let bad = |_: &str| Some("a b".to_string());
        assert!(resolve("gpu", &DeviceSource::Nvidia, &bad, dev, None).is_err());
        let listed = detect(
            &DeviceSource::Command("printf 'x0\\nx1\\n'".into()),
            dev,
            None,
        );
        assert_eq!(listed.ids, ["x0", "x1"]);
        let failed = detect(&DeviceSource::Command("exit 3".into()), dev, None);
        assert!(failed.ids.is_empty() && failed.how.contains("failed"));
    }
}
