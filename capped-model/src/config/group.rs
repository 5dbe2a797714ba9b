//! `[groups.NAME]`: a group's capacity, scope and the test binaries it claims.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Isolation, count};
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
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max: 1,
            scope: Scope::Host,
            binaries: Vec::new(),
            isolation: None,
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
        Ok(GroupConfig {
            max: count(path, text, self.max, "max")?.unwrap_or(1),
            scope: self.scope.unwrap_or(Scope::Host),
            binaries,
            isolation: self.isolation,
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
