//! `[groups.NAME]`: a group's capacity, scope and the test binaries it claims.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Isolation, count};
use crate::devices::DeviceSource;
use crate::resource::Scope;

/// A group as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// How many holders may run at once (`max`, default 1).
    pub max: u32,
    /// Who shares the slots (`scope`, default `host`).
    pub scope: Scope,
    /// Whole test binaries that belong to the group (`binaries`, wildcard patterns).
    pub binaries: Vec<String>,
    /// `isolation = "test"`: each of the group's tests runs as a process of its own.
    pub isolation: Option<Isolation>,
    /// Whether `max` was written (a device-backed group's `max` is otherwise its number of
    /// devices).
    pub max_given: bool,
    /// `devices = "nvidia" | "amd" | { command = ".." }`: the group's slots are devices.
    pub devices: Option<DeviceSource>,
    /// `pin-env`: the variable through which a test is pinned to its slot's device (`None`:
    /// the source's default; `Some(None)`: `pin-env = false`, no pinning).
    pub pin_env: Option<Option<String>>,
}

impl GroupConfig {
    /// The variable a device-backed group pins its tests through, if it pins.
    pub fn pin_var(&self) -> Option<String> {
        match &self.pin_env {
            Some(var) => var.clone(),
            None => self
                .devices
                .as_ref()
                .and_then(DeviceSource::default_pin_var)
                .map(str::to_string),
        }
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max: 1,
            scope: Scope::Host,
            binaries: Vec::new(),
            isolation: None,
            max_given: false,
            devices: None,
            pin_env: None,
        }
    }
}

impl GroupConfig {
    /// Whether this group claims the test binary named `binary` (a target name such as
    /// `crossval_matmul`), by one of its `binaries` patterns.
    pub fn claims_binary(&self, binary: &str) -> bool {
        self.binaries
            .iter()
            .any(|pattern| wildcard_match(pattern.as_bytes(), binary.as_bytes()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupDoc {
    max: Option<Spanned<i64>>,
    scope: Option<Scope>,
    #[serde(default)]
    binaries: Vec<Spanned<String>>,
    isolation: Option<Isolation>,
    devices: Option<Spanned<DevicesDoc>>,
    #[serde(rename = "pin-env")]
    pin_env: Option<Spanned<toml::Value>>,
}

/// `devices = "nvidia"`, `"amd"` or `{ command = "..." }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum DevicesDoc {
    Named(String),
    Command { command: String },
}

impl GroupDoc {
    pub(super) fn into_group(
        self,
        path: Option<&Path>,
        text: &str,
    ) -> Result<GroupConfig, ConfigError> {
        let mut binaries = Vec::with_capacity(self.binaries.len());
        for pattern in self.binaries {
            check_pattern(pattern.get_ref()).map_err(|message| {
                ConfigError::at(
                    path,
                    text,
                    Some(pattern.span()),
                    format!("`binaries`: {message}"),
                )
            })?;
            binaries.push(pattern.into_inner());
        }
        let devices = match self.devices {
            None => None,
            Some(doc) => {
                let span = doc.span();
                Some(match doc.into_inner() {
                    DevicesDoc::Named(name) if name == "nvidia" => DeviceSource::Nvidia,
                    DevicesDoc::Named(name) if name == "amd" => DeviceSource::Amd,
                    DevicesDoc::Named(name) => {
                        return Err(ConfigError::at(
                            path,
                            text,
                            Some(span),
                            format!(
                                "unknown `devices` source `{name}`; expected \"nvidia\", \"amd\" or {{ command = \"a command printing one device id per line\" }}"
                            ),
                        ));
                    }
                    DevicesDoc::Command { command } if command.trim().is_empty() => {
                        return Err(ConfigError::at(
                            path,
                            text,
                            Some(span),
                            "`devices`: the command is empty".to_string(),
                        ));
                    }
                    DevicesDoc::Command { command } => DeviceSource::Command(command),
                })
            }
        };
        let pin_env = match self.pin_env {
            None => None,
            Some(value) => {
                let span = value.span();
                match value.into_inner() {
                    toml::Value::Boolean(false) => Some(None),
                    toml::Value::String(var)
                        if !var.is_empty()
                            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !var.starts_with(|c: char| c.is_ascii_digit()) =>
                    {
                        Some(Some(var))
                    }
                    _ => {
                        return Err(ConfigError::at(
                            path,
                            text,
                            Some(span),
                            "`pin-env` is the name of an environment variable (letters, digits, `_`) or `false`".to_string(),
                        ));
                    }
                }
            }
        };
        if pin_env.is_some() && devices.is_none() {
            return Err(ConfigError::at(
                path,
                text,
                None,
                "`pin-env` applies to a group with `devices`".to_string(),
            ));
        }
        let max = count(path, text, self.max, "max")?;
        Ok(GroupConfig {
            max: max.unwrap_or(1),
            max_given: max.is_some(),
            scope: self.scope.unwrap_or(Scope::Host),
            binaries,
            isolation: self.isolation,
            devices,
            pin_env,
        })
    }
}

const PATTERN_FORM: &str = "a binary name glob with `*` (any run of characters) and `?` (one character), e.g. \"crossval*\"";

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(format!(
            "an empty pattern claims nothing; expected {PATTERN_FORM}"
        ));
    }
    if let Some(bad) = pattern
        .chars()
        .find(|c| matches!(c, '[' | ']' | '{' | '}' | '/' | '\\'))
    {
        return Err(format!(
            "glob `{}` uses `{bad}`, which is not supported; expected {PATTERN_FORM}",
            crate::units::shown(pattern)
        ));
    }
    Ok(())
}

/// `*` matches any run of bytes, `?` one byte, anything else itself.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    n = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let group = GroupConfig {
            binaries: vec!["crossval*".into(), "gpu_?".into()],
            ..Default::default()
        };
        assert!(group.claims_binary("crossval"));
        assert!(group.claims_binary("crossval_matmul"));
        assert!(group.claims_binary("gpu_a"));
        assert!(!group.claims_binary("gpu_ab"));
        assert!(!group.claims_binary("my_crossval"));
        assert!(wildcard_match(b"*mid*", b"a_mid_b"));
        assert!(wildcard_match(b"a*b*c", b"aXbYbZc"));
        assert!(!wildcard_match(b"a*b*c", b"aXbYbZ"));
        assert!(!GroupConfig::default().claims_binary("anything"));
    }
}
