//! The run's own directory, `<target>/capped/runs/<run-id>/`: run-scope lock files
//! (`locks/`, the width's slots among them) and the events files (`events/`).
//!
//! The runner holds an exclusive `flock` on `<run-id>/runner.lock` for the whole run, and
//! removes the directory when it ends. A directory whose lock is free belongs to a runner
//! that died (SIGKILL) and is removed by the next run, so nothing accumulates.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::errors::{Error, Result};

/// A created run dir; removed on drop.
#[derive(Debug)]
pub struct RunDir {
    id: String,
    path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Creates a fresh run dir under `target_dir`, cleaning up those of dead runners.
    pub fn create(target_dir: &Path) -> Result<RunDir> {
        let runs = target_dir.join("capped").join("runs");
        std::fs::create_dir_all(&runs)
            .map_err(|e| Error::internal(format!("cannot create {}", runs.display()), e))?;
        remove_stale(&runs);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = format!("{millis}-{}-{:04x}", std::process::id(), fastrand::u16(..));
        let path = runs.join(&id);
        capped_model::resource::lock_dir::ensure_lock_dir(&path)?;
        let lock_path = path.join("runner.lock");
        let lock = File::create(&lock_path)
            .map_err(|e| Error::internal(format!("cannot create {}", lock_path.display()), e))?;
        lock.try_lock()
            .map_err(|e| Error::internal(format!("cannot lock {}", lock_path.display()), e))?;
        let events = path.join("events");
        std::fs::create_dir_all(&events)
            .map_err(|e| Error::internal(format!("cannot create {}", events.display()), e))?;
        Ok(RunDir {
            id,
            path,
            _lock: lock,
        })
    }

    /// The run id (`CAPPED_RUN_ID`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The dir (`CAPPED_RUN_DIR`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The events file of the binary with this index and target name.
    pub fn events_file(&self, index: usize, target: &str) -> PathBuf {
        let safe: String = target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.path
            .join("events")
            .join(format!("{index:04}-{safe}.jsonl"))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes run dirs whose runner is gone (their `runner.lock` can be taken).
fn remove_stale(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let lock = dir.join("runner.lock");
        let stale = match File::open(&lock) {
            Ok(file) => file.try_lock().is_ok(),
            // No lock file: a runner between creating the dir and its lock, or debris.
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_locked_and_removed() {
        let target = tempfile::tempdir().unwrap();
        let run = RunDir::create(target.path()).unwrap();
        let path = run.path().to_path_buf();
        assert!(path.join("events").is_dir());
        // A second run does not take it for stale.
        let other = RunDir::create(target.path()).unwrap();
        assert!(path.is_dir());
        assert_ne!(other.id(), run.id());
        assert!(
            run.events_file(3, "my test")
                .ends_with("events/0003-my_test.jsonl")
        );
        drop(run);
        assert!(!path.exists());
    }

    #[test]
    fn stale_dirs_are_removed() {
        let target = tempfile::tempdir().unwrap();
        let runs = target.path().join("capped/runs");
        let stale = runs.join("1-2-3");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("runner.lock"), "").unwrap();
        let _run = RunDir::create(target.path()).unwrap();
        assert!(!stale.exists());
    }
}
