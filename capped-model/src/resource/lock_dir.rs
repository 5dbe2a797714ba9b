//! Where lock files live: the host lock dir (checked to be private), the workspace's dir
//! under the target dir, and the run's dir.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The host lock dir as the environment names it: `$CAPPED_LOCK_DIR`, else
/// `$XDG_RUNTIME_DIR/capped`, else `/tmp/capped-<uid>`. Not created or checked here.
pub fn default_host_lock_dir(get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = get(crate::protocol::env::LOCK_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = get("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&runtime).join("capped");
    }
    PathBuf::from(format!(
        "/tmp/capped-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// Creates `dir` with mode `0700` if it is missing, and checks that it is a real directory
/// (not a symlink) owned by this user. A group- or world-accessible dir of ours is
/// tightened to `0700`.
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    let problem = |message: String| Error::LockDir {
        path: dir.to_path_buf(),
        message,
    };
    match DirBuilder::new().recursive(false).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| problem(format!("cannot create its parent: {e}")))?;
            }
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(problem(format!("cannot create it: {e}"))),
            }
        }
        Err(e) => return Err(problem(format!("cannot create it: {e}"))),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| problem(format!("cannot inspect it: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(problem(
            "it is a symlink, which is never followed (another user could point it anywhere); remove it or set CAPPED_LOCK_DIR to a directory of your own".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(problem(
            "it exists and is not a directory; remove it or set CAPPED_LOCK_DIR".into(),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(problem(format!(
            "it is owned by uid {}, not by you (uid {me}); set CAPPED_LOCK_DIR to a directory of your own",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| problem(format!("cannot make it private (0700): {e}")))?;
    }
    Ok(())
}

/// The target dir of the running test binary: `$CARGO_TARGET_DIR` when set, else the
/// nearest ancestor of the executable that holds cargo's `CACHEDIR.TAG`.
pub fn target_dir_of_current_exe(get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = get("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return Some(dir);
        }
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The workspace-scope lock dir under a target dir.
pub fn workspace_lock_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("capped").join("locks")
}

/// The run-scope lock dir under a run dir.
pub fn run_lock_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("locks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dirs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/capped");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn tightens_a_loose_dir_of_ours() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("loose");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn refuses_symlinks_and_files() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let message = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(message.contains("symlink"), "{message}");
        assert!(message.contains(&link.display().to_string()), "{message}");
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(
            ensure_private_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn refuses_another_users_dir() {
        // Root owns "/": a non-root user sees it refused; as root, use a dir owned by nobody.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        if rustix::process::geteuid().is_root() {
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::fs::chown(&dir, Some(nobody), None).unwrap();
        } else {
            return;
        }
        let message = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(message.contains("owned by uid 65534"), "{message}");
    }

    #[test]
    fn host_lock_dir_resolution() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_host_lock_dir(&env(&[("CAPPED_LOCK_DIR", "/x")])),
            PathBuf::from("/x")
        );
        assert_eq!(
            default_host_lock_dir(&env(&[("XDG_RUNTIME_DIR", "/run/user/7")])),
            PathBuf::from("/run/user/7/capped")
        );
        let uid = rustix::process::geteuid().as_raw();
        assert_eq!(
            default_host_lock_dir(&env(&[])),
            PathBuf::from(format!("/tmp/capped-{uid}"))
        );
    }
}
