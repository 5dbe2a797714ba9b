//! Memory reservations: amounts of a byte budget shared across processes.
//!
//! Each reservation is a file `<dir>/.mem/<pid>-<n>.res` holding its amount, locked with
//! `flock` for as long as it is held. The amount in use is the sum over the files whose lock
//! is held; a file whose lock can be taken belongs to a holder that died, and is removed.
//! Checking and reserving happen under `<dir>/.mem/.lock`, so two processes cannot both
//! see room for the last bytes. Like slots, a reservation dies with its holder.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock_dir;

/// A held reservation; dropping it gives the bytes back.
#[derive(Debug)]
pub(crate) struct Reservation {
    path: PathBuf,
    file: Option<File>,
    /// Bytes reserved.
    pub amount: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
    }
}

fn mem_dir(dir: &Path) -> PathBuf {
    dir.join(".mem")
}

/// Reserves `amount` bytes of `budget` if they fit now; `Ok(None)` if not.
pub(crate) fn try_reserve(dir: &Path, budget: u64, amount: u64) -> io::Result<Option<Reservation>> {
    let sub = lock_dir::open_subdir(dir, ".mem")?;
    let dir = mem_dir(dir);
    let mutex = lock_dir::open_lock_file(&sub, &dir, ".lock")?.file;
    mutex.lock()?;
    let in_use = reserved_in(&dir)?;
    if in_use.saturating_add(amount) > budget {
        return Ok(None);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (path, mut file) = loop {
        let path = dir.join(format!(
            "{}-{}.res",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A new file only, never through a symlink: the name is predictable. A file of
        // that name left by another user's process (pids are reused) is skipped.
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
        {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", path.display()),
                ));
            }
        }
    };
    // Readable by the other users of a shared dir, whatever the umask.
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o644))?;
    file.lock()?;
    file.write_all(amount.to_string().as_bytes())?;
    Ok(Some(Reservation {
        path,
        file: Some(file),
        amount,
    }))
    // `mutex` unlocks when dropped here.
}

/// Bytes held by live reservations in `<dir>/.mem` (the caller holds the dir's mutex);
/// stale files of dead holders are removed on the way.
fn reserved_in(dir: &Path) -> io::Result<u64> {
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "res") {
            continue;
        }
        let Some(mut file) = lock_dir::open_existing_read_only(&path) else {
            continue;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                total = total.saturating_add(text.trim().parse::<u64>().unwrap_or(0));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Ok(total)
}

/// Bytes reserved now in `dir` (for reports and tests).
pub fn reserved_bytes(dir: &Path) -> io::Result<u64> {
    if !mem_dir(dir).is_dir() {
        return Ok(0);
    }
    let sub = lock_dir::open_subdir(dir, ".mem")?;
    let dir = mem_dir(dir);
    let mutex = lock_dir::open_lock_file(&sub, &dir, ".lock")?.file;
    mutex.lock()?;
    reserved_in(&dir)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_reserve(dir.path(), 100, 60)
            .unwrap()
            .expect("60 of 100 fits");
        assert!(try_reserve(dir.path(), 100, 50).unwrap().is_none());
        let b = try_reserve(dir.path(), 100, 40)
            .unwrap()
            .expect("40 more fits");
        assert_eq!(reserved_bytes(dir.path()).unwrap(), 100);
        drop(a);
        assert_eq!(reserved_bytes(dir.path()).unwrap(), 40);
        drop(b);
        assert_eq!(reserved_bytes(dir.path()).unwrap(), 0);
    }

    #[test]
    fn stale_reservations_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(mem_dir(dir.path())).unwrap();
        // A file nobody locks: its holder died.
        std::fs::write(mem_dir(dir.path()).join("999999-0.res"), "80").unwrap();
        assert!(try_reserve(dir.path(), 100, 90).unwrap().is_some());
        assert!(!mem_dir(dir.path()).join("999999-0.res").exists());
    }

    #[test]
    fn mem_available_reads_proc() {
        assert!(mem_available().is_some_and(|bytes| bytes > 0));
    }
}
