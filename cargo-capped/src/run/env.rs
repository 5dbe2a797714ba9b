//! A test process's environment and command line, as `cargo test` would give them, plus
//! the run's caps.
//!
//! From cargo (`Compilation::fill_env`): working directory = the package root, `CARGO`,
//! `CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_PATH`, `CARGO_PKG_*`, the build script's
//! `cargo:rustc-env` pairs, and the dylib search path (`LD_LIBRARY_PATH`: build-script
//! native dirs inside the target dir, the binary's `deps` dir and its parent, the
//! toolchain's target libdir, then whatever was set). Like nextest, `CARGO_TARGET_TMPDIR`
//! is also set at run time for integration tests and benches. Not replicated: the `[env]`
//! table of `.cargo/config.toml`.
//!
//! Every inherited `CAPPED_*` variable is dropped first, so a `cargo capped` started from
//! inside a test of another run (this repo's own end-to-end tests do that) does not leak
//! the outer run's dir, events file or held width into the inner run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use capped_model::protocol::env;

use crate::build::{TestBinary, cargo_program};

/// The variable that names the dylib search path on this platform.
pub const DYLIB_PATH_VAR: &str = if cfg!(target_os = "macos") {
    "DYLD_FALLBACK_LIBRARY_PATH"
} else {
    "LD_LIBRARY_PATH"
};

/// `CAPPED_*` variables inherited from our own environment, to remove from children.
pub fn inherited_capped_vars() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            k.to_str()
                .is_some_and(|k| k.starts_with("CAPPED_") || k == env::CAPPED)
        })
        .collect()
}

/// Asks for the toolchain's target libdir on a thread of its own, so that the ~25 ms of
/// `rustc --print target-libdir` overlap the build instead of delaying the first listing
/// (which then finds the answer ready, or waits for this same query to finish).
pub fn prefetch_toolchain_libdir() {
    let _ = std::thread::Builder::new()
        .name("capped-libdir".to_string())
        .spawn(|| {
            toolchain_libdir();
        });
}

/// The toolchain's target libdir (`rustc --print target-libdir`), asked once.
fn toolchain_libdir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let output = Command::new(rustc)
            .args(["--print", "target-libdir"])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string()))
    })
    .as_deref()
}

/// The dylib search path for `binary`, as cargo builds it.
pub fn dylib_path(binary: &TestBinary) -> OsString {
    let mut dirs: Vec<PathBuf> = binary.native_dirs.clone();
    if let Some(deps) = binary.path.parent() {
        dirs.push(deps.to_path_buf());
        if let Some(root) = deps.parent() {
            dirs.push(root.to_path_buf());
        }
    }
    if let Some(libdir) = toolchain_libdir() {
        dirs.push(libdir.to_path_buf());
    }
    if let Some(existing) = std::env::var_os(DYLIB_PATH_VAR) {
        dirs.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// The `CARGO_*` variables `cargo test` sets for `binary`'s process.
pub fn cargo_vars(binary: &TestBinary, target_dir: &Path) -> Vec<(String, String)> {
    let package = &binary.package;
    let manifest_dir = package
        .manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let version = &package.version;
    let (core, pre) = version.split_once('-').unwrap_or((version, ""));
    let pre = pre.split('+').next().unwrap_or("");
    let core = core.split('+').next().unwrap_or(core);
    let mut parts = core.split('.');
    let mut part = || parts.next().unwrap_or("0").to_string();
    let (major, minor, patch) = (part(), part(), part());
    let mut vars = vec![
        ("CARGO".to_string(), cargo_program().display().to_string()),
        ("CARGO_MANIFEST_DIR".to_string(), manifest_dir),
        (
            "CARGO_MANIFEST_PATH".to_string(),
            package.manifest_path.display().to_string(),
        ),
        ("CARGO_PKG_NAME".to_string(), package.name.clone()),
        ("CARGO_PKG_VERSION".to_string(), version.clone()),
        ("CARGO_PKG_VERSION_MAJOR".to_string(), major),
        ("CARGO_PKG_VERSION_MINOR".to_string(), minor),
        ("CARGO_PKG_VERSION_PATCH".to_string(), patch),
        ("CARGO_PKG_VERSION_PRE".to_string(), pre.to_string()),
        ("CARGO_PKG_AUTHORS".to_string(), package.authors.join(":")),
        (
            "CARGO_PKG_DESCRIPTION".to_string(),
            package.description.clone(),
        ),
        ("CARGO_PKG_HOMEPAGE".to_string(), package.homepage.clone()),
        (
            "CARGO_PKG_REPOSITORY".to_string(),
            package.repository.clone(),
        ),
        ("CARGO_PKG_LICENSE".to_string(), package.license.clone()),
        (
            "CARGO_PKG_LICENSE_FILE".to_string(),
            package.license_file.clone(),
        ),
        (
            "CARGO_PKG_RUST_VERSION".to_string(),
            package.rust_version.clone(),
        ),
        ("CARGO_PKG_README".to_string(), package.readme.clone()),
    ];
    if matches!(binary.id.kind.as_str(), "test" | "bench") {
        vars.push((
            "CARGO_TARGET_TMPDIR".to_string(),
            target_dir.join("tmp").display().to_string(),
        ));
    }
    vars.extend(binary.build_env.iter().cloned());
    vars
}

/// A command for `binary` with cargo's environment, the run's environment `run_env` and
/// the per-binary `extra` variables, in the package root. Arguments beyond the binary's
/// own ([`TestBinary::args`]) are left to the caller.
pub fn command_for(
    binary: &TestBinary,
    target_dir: &Path,
    run_env: &BTreeMap<String, String>,
    extra: &[(String, String)],
) -> Command {
    let mut command = Command::new(&binary.path);
    command.args(&binary.args);
    for var in inherited_capped_vars() {
        command.env_remove(var);
    }
    // Doc tests run under `cargo test --doc`, which gives rustdoc and the tests cargo's
    // variables, the dylib path and the package root itself; cargo stays in our directory,
    // where a relative `--manifest-path` or `--target-dir` means what it meant to us.
    if !binary.is_doc() {
        command.envs(cargo_vars(binary, target_dir));
        command.env(DYLIB_PATH_VAR, dylib_path(binary));
    }
    command.envs(run_env);
    command.envs(extra.iter().map(|(k, v)| (k, v)));
    if !binary.is_doc()
        && let Some(dir) = binary.package.manifest_path.parent()
    {
        command.current_dir(dir);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::BinaryId;
    use crate::plan::PackageInfo;

    fn binary() -> TestBinary {
        TestBinary {
            id: BinaryId {
                package: "foo".into(),
                target: "it".into(),
                kind: "test".into(),
            },
            path: PathBuf::from("/w/target/debug/deps/it-123"),
            args: Vec::new(),
            package: PackageInfo {
                name: "foo".into(),
                version: "1.22.3-beta.1+meta".into(),
                authors: vec!["a".into(), "b".into()],
                manifest_path: PathBuf::from("/w/foo/Cargo.toml"),
                ..PackageInfo::default()
            },
            build_env: vec![("FROM_SCRIPT".into(), "yes".into())],
            native_dirs: vec![PathBuf::from("/w/target/debug/build/x/out")],
        }
    }

    #[test]
    fn cargo_variables() {
        let vars: BTreeMap<String, String> = cargo_vars(&binary(), Path::new("/w/target"))
            .into_iter()
            .collect();
        assert_eq!(vars["CARGO_MANIFEST_DIR"], "/w/foo");
        assert_eq!(vars["CARGO_PKG_VERSION_MAJOR"], "1");
        assert_eq!(vars["CARGO_PKG_VERSION_MINOR"], "22");
        assert_eq!(vars["CARGO_PKG_VERSION_PATCH"], "3");
        assert_eq!(vars["CARGO_PKG_VERSION_PRE"], "beta.1");
        assert_eq!(vars["CARGO_PKG_AUTHORS"], "a:b");
        assert_eq!(vars["CARGO_TARGET_TMPDIR"], "/w/target/tmp");
        assert_eq!(vars["FROM_SCRIPT"], "yes");
    }

    #[test]
    fn dylib_path_starts_with_native_dirs_then_deps() {
        let path = dylib_path(&binary());
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(dirs[0], PathBuf::from("/w/target/debug/build/x/out"));
        assert_eq!(dirs[1], PathBuf::from("/w/target/debug/deps"));
        assert_eq!(dirs[2], PathBuf::from("/w/target/debug"));
    }
}
