//! The workspace as `cargo metadata` describes it: its root (where `.config/capped.toml`
//! lives), its target dir, and what cargo tells test processes about each package.

use std::collections::HashMap;
use std::path::PathBuf;

use cargo_metadata::MetadataCommand;

use crate::cli::CargoArgs;
use crate::errors::{Error, Result};

/// What `cargo test` sets in a test process's environment about its package
/// (`CARGO_PKG_*`, `CARGO_MANIFEST_DIR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageInfo {
    /// `CARGO_PKG_NAME`.
    pub name: String,
    /// `CARGO_PKG_VERSION` (and its parts).
    pub version: String,
    /// `CARGO_PKG_AUTHORS` (joined with `:`).
    pub authors: Vec<String>,
    /// `CARGO_PKG_DESCRIPTION`.
    pub description: String,
    /// `CARGO_PKG_HOMEPAGE`.
    pub homepage: String,
    /// `CARGO_PKG_REPOSITORY`.
    pub repository: String,
    /// `CARGO_PKG_LICENSE`.
    pub license: String,
    /// `CARGO_PKG_LICENSE_FILE`.
    pub license_file: String,
    /// `CARGO_PKG_RUST_VERSION`.
    pub rust_version: String,
    /// `CARGO_PKG_README`.
    pub readme: String,
    /// `CARGO_MANIFEST_PATH`; its dir is `CARGO_MANIFEST_DIR` and the working directory.
    pub manifest_path: PathBuf,
    /// The name of its library target when `cargo test` runs that library's doc tests
    /// (a `lib`/`rlib`/`proc-macro` target with `doctest = true`).
    pub doc_lib: Option<String>,
}

/// The workspace being tested.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    /// The workspace root (`.config/capped.toml` is read from here).
    pub root: PathBuf,
    /// Cargo's target dir (the run dir lives under it).
    pub target_dir: PathBuf,
    /// Workspace members by package id.
    pub packages: HashMap<String, PackageInfo>,
    /// The members' package ids, in `cargo metadata`'s order.
    pub members: Vec<String>,
    /// The packages `cargo test` selects without `-p` or `--workspace` (the root package,
    /// else `default-members`, else every member); `None` when cargo is too old to say.
    pub default_members: Option<Vec<String>>,
}

impl Workspace {
    /// Asks `cargo metadata --no-deps` (honoring `--manifest-path`, `--locked`, `--offline`,
    /// `--frozen`, `--target-dir`).
    pub fn discover(cargo: &CargoArgs) -> Result<Workspace> {
        let mut command = MetadataCommand::new();
        command.no_deps();
        if let Some(path) = &cargo.manifest_path {
            command.manifest_path(path);
        }
        let mut other = Vec::new();
        for (on, flag) in [
            (cargo.locked, "--locked"),
            (cargo.offline, "--offline"),
            (cargo.frozen, "--frozen"),
        ] {
            if on {
                other.push(flag.to_string());
            }
        }
        for config in &cargo.cargo_config {
            other.extend(["--config".to_string(), config.clone()]);
        }
        command.other_options(other);
        let metadata = command.exec().map_err(|e| match e {
            cargo_metadata::Error::CargoMetadata { stderr } => {
                Error::Usage(format!("cargo metadata failed:\n{}", stderr.trim_end()))
            }
            e => Error::internal("cannot run cargo metadata", e),
        })?;
        let packages = metadata
            .packages
            .iter()
            .map(|p| {
                let opt = |s: &Option<String>| s.clone().unwrap_or_default();
                let opt_path = |p: &Option<cargo_metadata::camino::Utf8PathBuf>| {
                    p.as_ref().map(|p| p.to_string()).unwrap_or_default()
                };
                (
                    p.id.repr.clone(),
                    PackageInfo {
                        name: p.name.to_string(),
                        version: p.version.to_string(),
                        authors: p.authors.clone(),
                        description: opt(&p.description),
                        homepage: opt(&p.homepage),
                        repository: opt(&p.repository),
                        license: opt(&p.license),
                        license_file: opt_path(&p.license_file),
                        rust_version: p
                            .rust_version
                            .as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        readme: opt_path(&p.readme),
                        manifest_path: p.manifest_path.clone().into_std_path_buf(),
                        doc_lib: p
                            .targets
                            .iter()
                            .find(|t| {
                                t.doctest
                                    && t.kind.iter().any(|k| {
                                        matches!(
                                            k,
                                            cargo_metadata::TargetKind::Lib
                                                | cargo_metadata::TargetKind::RLib
                                                | cargo_metadata::TargetKind::ProcMacro
                                        )
                                    })
                            })
                            .map(|t| t.name.clone()),
                    },
                )
            })
            .collect();
        let target_dir = match &cargo.target_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => std::env::current_dir()
                .map_err(|e| Error::internal("cannot read the current directory", e))?
                .join(dir),
            None => metadata.target_directory.into_std_path_buf(),
        };
        let members = metadata
            .workspace_members
            .iter()
            .map(|id| id.repr.clone())
            .collect();
        let default_members = metadata.workspace_default_members.is_available().then(|| {
            metadata
                .workspace_default_members
                .iter()
                .map(|id| id.repr.clone())
                .collect()
        });
        Ok(Workspace {
            root: metadata.workspace_root.into_std_path_buf(),
            target_dir,
            packages,
            members,
            default_members,
        })
    }
}
