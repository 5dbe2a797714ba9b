//! `[profile.NAME]`: the caps of one kind of run, and the built-in `t1` and `t2`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, FlakyResult, Isolation, MAX_RETRIES, count, parse_spanned};
use crate::units;

/// One profile. Every field is optional: what a profile leaves out comes from the
/// built-ins, the command line or the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `test-threads`: the run's width.
    pub test_threads: Option<u32>,
    /// `rayon-threads`: the global rayon pool's size in each test process.
    pub rayon_threads: Option<u32>,
    /// `blas-threads`: `OMP_NUM_THREADS` and the other BLAS/OpenMP variables.
    pub blas_threads: Option<u32>,
    /// `async-threads`: worker threads of the capped tokio runtime.
    pub async_threads: Option<u32>,
    /// `deterministic`: width 1, one thread everywhere, fixed seed, stable order.
    pub deterministic: Option<bool>,
    /// `seed`: the run seed.
    pub seed: Option<u64>,
    /// `shuffle`: shuffle the test order with the run seed.
    pub shuffle: Option<bool>,
    /// `timeout`: per test binary.
    pub timeout: Option<Duration>,
    /// `test-timeout`: default per test (`CAPPED_TEST_TIMEOUT`).
    pub test_timeout: Option<Duration>,
    /// `mem-limit`: per test process tree, in bytes.
    pub mem_limit: Option<u64>,
    /// `mem-budget`: bytes that `mem = ".."` reservations share host-wide.
    pub mem_budget: Option<u64>,
    /// `split-binaries`: whether `cargo capped` may run a libtest binary that starts
    /// narrower than it could run as more than one process (default true).
    pub split_binaries: Option<bool>,
    /// `isolation`: a process per test, or per test binary (the default).
    pub isolation: Option<Isolation>,
    /// `retries`: how many more times a failed test runs, each in a fresh process.
    pub retries: Option<u32>,
    /// `flaky-result`: whether a test that passed on a retry passes the run.
    pub flaky_result: Option<FlakyResult>,
    /// `require = ["gpu"]`: device-backed groups that must have devices, or the run fails
    /// before any test starts.
    pub require: Vec<String>,
    /// `[profile.NAME.env]`: extra environment for the tests.
    pub env: BTreeMap<String, String>,
}

impl Profile {
    /// Overrides this profile's fields with those `other` sets; `env` entries are merged.
    pub fn merge(&mut self, other: Profile) {
        macro_rules! take {
            ($($field:ident),*) => { $( if other.$field.is_some() { self.$field = other.$field; } )* };
        }
        take!(
            test_threads,
            rayon_threads,
            blas_threads,
            async_threads,
            deterministic,
            seed,
            shuffle,
            timeout,
            test_timeout,
            mem_limit,
            mem_budget,
            split_binaries,
            isolation,
            retries,
            flaky_result
        );
        if !other.require.is_empty() {
            self.require = other.require;
        }
        self.env.extend(other.env);
    }
}

/// `t2`: light tests two-wide, rayon 2, BLAS 1. `t1`: one thread everywhere.
pub(super) fn builtin_profiles() -> BTreeMap<String, Profile> {
    let t2 = Profile {
        test_threads: Some(2),
        rayon_threads: Some(2),
        blas_threads: Some(1),
        ..Profile::default()
    };
    let t1 = Profile {
        test_threads: Some(1),
        rayon_threads: Some(1),
        blas_threads: Some(1),
        async_threads: Some(1),
        ..Profile::default()
    };
    BTreeMap::from([("t1".to_string(), t1), ("t2".to_string(), t2)])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct ProfileDoc {
    test_threads: Option<Spanned<i64>>,
    rayon_threads: Option<Spanned<i64>>,
    blas_threads: Option<Spanned<i64>>,
    async_threads: Option<Spanned<i64>>,
    deterministic: Option<bool>,
    seed: Option<u64>,
    shuffle: Option<bool>,
    timeout: Option<Spanned<String>>,
    test_timeout: Option<Spanned<String>>,
    mem_limit: Option<Spanned<String>>,
    mem_budget: Option<Spanned<String>>,
    split_binaries: Option<bool>,
    isolation: Option<Isolation>,
    retries: Option<Spanned<u32>>,
    flaky_result: Option<FlakyResult>,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// Checks an `[env]` entry as the OS will take it: `execve` cannot carry an empty name, a
/// name with `=` (the name would end there) or a NUL anywhere, so each is refused here, at
/// load, rather than failing every test process's spawn later.
fn check_env_entry(
    path: Option<&Path>,
    text: &str,
    name: &Spanned<String>,
    value: &Spanned<String>,
) -> Result<(), ConfigError> {
    let at = |span, message: String| Err(ConfigError::at(path, text, Some(span), message));
    let key = name.get_ref();
    if key.is_empty() {
        return at(
            name.span(),
            "`env`: a variable name cannot be empty".to_string(),
        );
    }
    if key.contains('=') {
        return at(
            name.span(),
            format!(
                "`env`: variable name `{}` contains `=`, which no environment variable name can; \
                 write the name before `=` and the value as the string",
                crate::units::shown(key)
            ),
        );
    }
    if key.contains('\0') {
        return at(
            name.span(),
            format!(
                "`env`: variable name `{}` contains a NUL character, which no environment can carry",
                crate::units::shown(key)
            ),
        );
    }
    if value.get_ref().contains('\0') {
        return at(
            value.span(),
            format!(
                "`env`: the value of `{}` contains a NUL character, which no environment can carry",
                crate::units::shown(key)
            ),
        );
    }
    Ok(())
}

impl ProfileDoc {
    pub(super) fn into_profile(
        self,
        path: Option<&Path>,
        text: &str,
    ) -> Result<Profile, ConfigError> {
        let mut env = BTreeMap::new();
        for (name, value) in self.env {
            check_env_entry(path, text, &name, &value)?;
            env.insert(name.into_inner(), value.into_inner());
        }
        Ok(Profile {
            test_threads: count(path, text, self.test_threads, "test-threads")?,
            rayon_threads: count(path, text, self.rayon_threads, "rayon-threads")?,
            blas_threads: count(path, text, self.blas_threads, "blas-threads")?,
            async_threads: count(path, text, self.async_threads, "async-threads")?,
            deterministic: self.deterministic,
            seed: self.seed,
            shuffle: self.shuffle,
            timeout: parse_spanned(path, text, self.timeout, "timeout", units::parse_timeout)?,
            test_timeout: parse_spanned(
                path,
                text,
                self.test_timeout,
                "test-timeout",
                units::parse_timeout,
            )?,
            mem_limit: parse_spanned(
                path,
                text,
                self.mem_limit,
                "mem-limit",
                units::parse_mem_limit,
            )?,
            mem_budget: parse_spanned(
                path,
                text,
                self.mem_budget,
                "mem-budget",
                units::parse_size,
            )?,
            split_binaries: self.split_binaries,
            isolation: self.isolation,
            retries: match self.retries {
                Some(retries) if *retries.get_ref() > MAX_RETRIES => {
                    return Err(ConfigError::at(
                        path,
                        text,
                        Some(retries.span()),
                        format!(
                            "`retries` is {}; at most {MAX_RETRIES} are allowed",
                            retries.get_ref()
                        ),
                    ));
                }
                retries => retries.map(Spanned::into_inner),
            },
            flaky_result: self.flaky_result,
            require: self.require,
            env,
        })
    }
}
