//! Where lock files live: the host lock dir (checked to be safe, private or shared), the
//! workspace's dir under the target dir, and the run's dir.
//!
//! A lock dir is either private (owned by this user) or shared by an administrator:
//! sticky and world-writable (`1777`) or writable by a group this user is in with the
//! setgid bit (`2770`, `3770`). An existing dir's mode is never changed. Everything under
//! it is opened without following symlinks, and a lock file another user created is
//! opened read-only: `flock` works on a read-only descriptor, so slots pass between users
//! while nobody writes into anybody else's file.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;

/// The mode of a lock file this process creates: readable by everyone who can reach the
/// dir, so another user's process can open it to wait on its lock. The content is a pid
/// and an executable name, which `ps` shows anyway.
const LOCK_FILE_MODE: u32 = 0o644;

/// The host lock dir as the environment names it: `$CAPPED_LOCK_DIR`, else
/// `$XDG_RUNTIME_DIR/capped`, else `/tmp/capped-<uid>`. Not created or checked here.
pub fn default_host_lock_dir(get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env_lock_dir(get) {
        return dir;
    }
    if let Some(runtime) = get("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&runtime).join("capped");
    }
    PathBuf::from(format!(
        "/tmp/capped-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// `$CAPPED_LOCK_DIR` when it is set and not empty.
pub fn env_lock_dir(get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    get(crate::protocol::env::LOCK_DIR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// How to share a lock dir between users, for error messages.
const SHARE_HINT: &str = "for a lock dir shared between users, an administrator runs `install -d -m 1777 DIR` (or `install -d -m 3770 -g capped DIR` for the members of a `capped` group); see README \"Sharing a GPU between users\"";

/// Creates `dir` with mode `0700` if it is missing, and checks that an existing one is
/// safe to keep lock files in, without ever changing its mode. Safe: a real directory
/// (not a symlink) that is either owned by this user, or shared (sticky and
/// world-writable and owned by root, or group-writable with the setgid bit by a group
/// this user is in). World-writable without the sticky bit is refused whoever owns it:
/// anyone could replace the lock files.
pub fn ensure_lock_dir(dir: &Path) -> Result<(), Error> {
    let problem = |message: String| Error::LockDir {
        path: dir.to_path_buf(),
        message,
    };
    match DirBuilder::new().recursive(false).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| problem(format!("cannot create its parent: {e}")))?;
            }
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
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
    let mode = meta.mode();
    let world_writable = mode & 0o002 != 0;
    let sticky = mode & 0o1000 != 0;
    if world_writable && !sticky {
        return Err(problem(format!(
            "it is world-writable without the sticky bit (mode {:04o}), so anyone could replace its lock files; its owner should run `chmod +t {}`, or set CAPPED_LOCK_DIR to a directory of your own",
            mode & 0o7777,
            dir.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() == me {
        return Ok(());
    }
    let group_shared = mode & 0o020 != 0 && in_group(meta.gid());
    if group_shared && mode & 0o2000 == 0 {
        return Err(problem(format!(
            "it is shared through group {} without the setgid bit (mode {:04o}), so the lock files of its members would not stay in that group; its owner should run `chmod g+s {}`",
            meta.gid(),
            mode & 0o7777,
            dir.display()
        )));
    }
    if group_shared || (meta.uid() == 0 && world_writable && sticky) {
        return Ok(());
    }
    Err(problem(format!(
        "it is owned by uid {}, not by you (uid {me}), and not shared with you (mode {:04o}); set CAPPED_LOCK_DIR to a directory of your own, or {SHARE_HINT}",
        meta.uid(),
        mode & 0o7777
    )))
}

/// Whether this process is in group `gid` (effective or supplementary).
fn in_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// Opens the subdirectory `name` of the checked lock dir `dir` (a group's or `.width`'s),
/// creating it if missing. Never follows a symlink; a dir created here gets `dir`'s mode
/// (a shared dir's subdirs must be as shared as it is, whatever this process's umask).
pub(crate) fn open_subdir(dir: &Path, name: &str) -> io::Result<OwnedFd> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let parent = rustix::fs::openat(CWD, dir, dir_flags, Mode::empty())
        .map_err(|e| at_path(e.into(), "open the lock dir", dir))?;
    let path = dir.join(name);
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {
            let sub = rustix::fs::openat(&parent, name, dir_flags, Mode::empty())
                .map_err(|e| at_path(e.into(), "open", &path))?;
            let mode = rustix::fs::fstat(&parent)
                .map_err(|e| at_path(e.into(), "inspect", dir))?
                .st_mode
                & 0o7777;
            rustix::fs::fchmod(&sub, Mode::from_raw_mode(mode))
                .map_err(|e| at_path(e.into(), "set the mode of the new dir", &path))?;
            Ok(sub)
        }
        Err(Errno::EXIST) => {
            rustix::fs::openat(&parent, name, dir_flags, Mode::empty()).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is not a directory (a symlink is never followed); remove it",
                        path.display()
                    ),
                ),
                e => at_path(e.into(), "open", &path),
            })
        }
        Err(e) => Err(at_path(e.into(), "create", &path)),
    }
}

/// A lock file opened by [`open_lock_file`].
#[derive(Debug)]
pub(crate) struct LockFile {
    /// The open file, to `flock`.
    pub file: File,
    /// Whether it is this user's, so the holder's record may be written into it.
    pub ours: bool,
}

/// Opens (creating it if missing) the lock file `name` in the lock dir `dir`, opened as
/// `dirfd`. Never follows a symlink, never opens anything but a regular file, never
/// truncates; a file another user owns is opened read-only.
pub(crate) fn open_lock_file(dirfd: &OwnedFd, dir: &Path, name: &str) -> io::Result<LockFile> {
    let path = dir.join(name);
    let me = rustix::process::geteuid().as_raw();
    let base = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    for _ in 0..8 {
        // Without O_CREAT: a sticky dir's `protected_regular` refuses O_CREAT on another
        // user's file even when its mode allows the open.
        let opened = match rustix::fs::openat(dirfd, name, base | OFlags::RDWR, Mode::empty()) {
            Err(Errno::ACCESS) => {
                rustix::fs::openat(dirfd, name, base | OFlags::RDONLY, Mode::empty())
            }
            other => other,
        };
        match opened {
            Ok(fd) => {
                let stat =
                    rustix::fs::fstat(&fd).map_err(|e| at_path(e.into(), "inspect", &path))?;
                if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    != rustix::fs::FileType::RegularFile
                {
                    return Err(not_a_file(&path));
                }
                return Ok(LockFile {
                    file: File::from(fd),
                    ours: stat.st_uid == me,
                });
            }
            Err(Errno::NOENT) => {}
            Err(Errno::LOOP) => return Err(not_a_file(&path)),
            Err(Errno::ACCESS) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "cannot open the lock file {}: it is not readable by you; its owner should run `chmod 644` on it, or remove it",
                        path.display()
                    ),
                ));
            }
            Err(e) => return Err(at_path(e.into(), "open the lock file", &path)),
        }
        // Create it under a private name with its final mode, then link it into place:
        // it appears complete and readable, and an existing file is never replaced.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let temp = format!(
            ".{name}.{}.{}.new",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            dirfd,
            &*temp,
            base | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(LOCK_FILE_MODE),
        )
        .map_err(|e| at_path(e.into(), "create a lock file in", dir))?;
        let linked = rustix::fs::fchmod(&fd, Mode::from_raw_mode(LOCK_FILE_MODE))
            .and_then(|()| rustix::fs::linkat(dirfd, &*temp, dirfd, name, AtFlags::empty()));
        let _ = rustix::fs::unlinkat(dirfd, &*temp, AtFlags::empty());
        match linked {
            Ok(()) => {
                return Ok(LockFile {
                    file: File::from(fd),
                    ours: true,
                });
            }
            // Another process created it meanwhile: open theirs.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(at_path(e.into(), "create the lock file", &path)),
        }
    }
    Err(io::Error::other(format!(
        "cannot open the lock file {}: it keeps appearing and disappearing",
        path.display()
    )))
}

/// Opens an existing lock file read-only to look at its lock and record; `None` when it
/// is missing or not a regular file.
pub(crate) fn open_existing_read_only(path: &Path) -> Option<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(CWD, path, flags, Mode::empty()).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile)
        .then(|| File::from(fd))
}

/// The pid that holds an exclusive `flock` on `file`, as the kernel lists it in
/// `/proc/locks`: right whoever wrote the file's record last.
pub(crate) fn flock_holder(file: &File) -> Option<u32> {
    let stat = rustix::fs::fstat(file).ok()?;
    let (major, minor) = (
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev),
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; waiters have a `->` field.
        if fields.len() < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" {
            return None;
        }
        let mut id = fields[5].split(':');
        let file_major = u32::from_str_radix(id.next()?, 16).ok()?;
        let file_minor = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (file_major == major && file_minor == minor && inode == stat.st_ino as u64)
            .then(|| fields[4].parse().ok())
            .flatten()
    })
}

fn not_a_file(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "the lock file {} is not a regular file (a symlink is never followed, so nothing it points to is written); remove it",
            path.display()
        ),
    )
}

fn at_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
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
        ensure_lock_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        ensure_lock_dir(&dir).unwrap();
    }

    #[test]
    fn never_changes_an_existing_dirs_mode() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mode_of = |dir: &Path| std::fs::metadata(dir).unwrap().mode() & 0o7777;
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_lock_dir(&shared).unwrap();
        assert_eq!(mode_of(&shared), 0o1777);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_lock_dir(&open).unwrap();
        assert_eq!(mode_of(&open), 0o755);
    }

    #[test]
    fn refuses_world_writable_without_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("loose");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let message = ensure_lock_dir(&dir).unwrap_err().to_string();
        assert!(message.contains("without the sticky bit"), "{message}");
        assert!(message.contains("chmod +t"), "{message}");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o777);
    }

    #[test]
    fn lock_files_are_never_followed_through_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("locks");
        ensure_lock_dir(&dir).unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let sub = open_subdir(&dir, "gpu").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("gpu/0.lock")).unwrap();
        let message = open_lock_file(&sub, &dir.join("gpu"), "0.lock")
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a regular file"), "{message}");
        assert!(open_existing_read_only(&dir.join("gpu/0.lock")).is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A symlinked group dir is refused too.
        std::os::unix::fs::symlink(root.path(), dir.join("cpu")).unwrap();
        let message = open_subdir(&dir, "cpu").unwrap_err().to_string();
        assert!(message.contains("not a directory"), "{message}");
    }

    #[test]
    fn new_lock_files_are_readable_and_the_kernel_names_their_holder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("locks");
        ensure_lock_dir(&dir).unwrap();
        let sub = open_subdir(&dir, "gpu").unwrap();
        let lock = open_lock_file(&sub, &dir.join("gpu"), "0.lock").unwrap();
        assert!(lock.ours);
        let path = dir.join("gpu/0.lock");
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            LOCK_FILE_MODE
        );
        assert_eq!(flock_holder(&lock.file), None);
        lock.file.lock().unwrap();
        let other = open_existing_read_only(&path).unwrap();
        assert_eq!(flock_holder(&other), Some(std::process::id()));
        // Opened again, the same file (never a second one, never truncated).
        let again = open_lock_file(&sub, &dir.join("gpu"), "0.lock").unwrap();
        assert_eq!(
            rustix::fs::fstat(&again.file).unwrap().st_ino,
            rustix::fs::fstat(&lock.file).unwrap().st_ino
        );
    }

    #[test]
    fn refuses_symlinks_and_files() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let message = ensure_lock_dir(&link).unwrap_err().to_string();
        assert!(message.contains("symlink"), "{message}");
        assert!(message.contains(&link.display().to_string()), "{message}");
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(
            ensure_lock_dir(&file)
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
        let message = ensure_lock_dir(&dir).unwrap_err().to_string();
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
