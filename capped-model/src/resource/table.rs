//! The process's slot table: every resource this process has touched, its slots, and for
//! cross-process scopes the open lock file of each slot.
//!
//! One mutex guards the whole table, so a request takes all its slots or none as one step
//! for the threads of this process; `flock` on the slot files makes that step exclusive
//! against other processes. Lock files stay open once opened (one fd per slot touched), so
//! an uncontended acquire is a `flock` and a `pwrite` of the holder's pid, no `open`.
//!
//! Invariant: a slot's `held` flag is true exactly while a [`Guard`](super::Guard) of this
//! process owns it; for file-backed slots the file's lock is held exactly then too. Two
//! threads of one process can never share a slot, because `flock` on the same open file
//! would succeed twice: the flag is checked first.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::lock_dir;
use super::memory::{self, Reservation};

/// Which resource: its name and, for cross-process scopes, the dir holding its lock files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResourceKey {
    /// `None` for process scope; else the scope's lock dir (the resource's files are in
    /// `<dir>/<name>/`).
    pub dir: Option<PathBuf>,
    /// `.width` for the width, else the group's name.
    pub name: String,
}

impl ResourceKey {
    fn slot_path(&self, dir: &Path, slot: u32) -> PathBuf {
        dir.join(&self.name).join(format!("{slot}.lock"))
    }
}

/// One item of a resolved request: `count` slots of `key`, whose capacity is `capacity`.
#[derive(Debug, Clone)]
pub(crate) struct Want {
    pub key: ResourceKey,
    pub capacity: u32,
    pub count: u32,
}

/// A memory reservation wanted: `amount` bytes of `budget`, in `dir`.
#[derive(Debug, Clone)]
pub(crate) struct MemWant {
    pub dir: PathBuf,
    pub budget: u64,
    pub amount: u64,
}

#[derive(Default)]
struct Slot {
    held: bool,
    file: Option<File>,
    /// Whether `file` is this user's: only then is the holder's record written into it.
    ours: bool,
}

#[derive(Default)]
struct State {
    resources: HashMap<ResourceKey, Vec<Slot>>,
    /// Bumped on every release, so a waiter can sleep until something changes.
    generation: u64,
}

pub(crate) struct SlotTable {
    state: Mutex<State>,
    released: Condvar,
}

/// What a successful [`SlotTable::try_take`] took.
pub(crate) struct Taken {
    pub slots: Vec<(ResourceKey, Vec<u32>)>,
    pub reservation: Option<Reservation>,
}

static TABLE: OnceLock<SlotTable> = OnceLock::new();

pub(crate) fn table() -> &'static SlotTable {
    TABLE.get_or_init(|| SlotTable {
        state: Mutex::new(State::default()),
        released: Condvar::new(),
    })
}

/// The record written into a slot file while it is held: who holds it.
fn holder_record() -> &'static [u8] {
    static RECORD: OnceLock<Vec<u8>> = OnceLock::new();
    RECORD.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let mut record = format!("{} {exe}", std::process::id()).into_bytes();
        record.truncate(HOLDER_RECORD_LEN - 1);
        record.resize(HOLDER_RECORD_LEN - 1, b' ');
        record.push(b'\n');
        record
    })
}

const HOLDER_RECORD_LEN: usize = 128;

impl SlotTable {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the table lock cannot leave it inconsistent (every
        // mutation is a single assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The release generation, to pass to [`SlotTable::wait_for_release`].
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Sleeps until a slot of this process is released after `generation`, or `timeout`.
    pub fn wait_for_release(&self, generation: u64, timeout: Duration) {
        let state = self.lock();
        if state.generation != generation {
            return;
        }
        let _ = self
            .released
            .wait_timeout_while(state, timeout, |state| state.generation == generation);
    }

    /// Takes every slot `wants` asks for, and the memory reservation, or nothing.
    pub fn try_take(&self, wants: &[Want], mem: Option<&MemWant>) -> io::Result<Option<Taken>> {
        let mut state = self.lock();
        let mut taken: Vec<(ResourceKey, Vec<u32>)> = Vec::with_capacity(wants.len());
        let mut outcome = Ok(true);
        for want in wants {
            match take_slots(&mut state, want) {
                Ok(Some(ids)) => taken.push((want.key.clone(), ids)),
                Ok(None) => {
                    outcome = Ok(false);
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let mut reservation = None;
        if matches!(outcome, Ok(true))
            && let Some(mem) = mem
        {
            match memory::try_reserve(&mem.dir, mem.budget, mem.amount) {
                Ok(Some(r)) => reservation = Some(r),
                Ok(None) => outcome = Ok(false),
                Err(e) => outcome = Err(e),
            }
        }
        match outcome {
            Ok(true) => Ok(Some(Taken {
                slots: taken,
                reservation,
            })),
            Ok(false) => {
                release_slots(&mut state, &taken);
                Ok(None)
            }
            Err(e) => {
                release_slots(&mut state, &taken);
                Err(e)
            }
        }
    }

    /// Releases slots taken by [`SlotTable::try_take`] and wakes waiters.
    pub fn release(&self, slots: &[(ResourceKey, Vec<u32>)]) {
        let mut state = self.lock();
        release_slots(&mut state, slots);
        state.generation = state.generation.wrapping_add(1);
        drop(state);
        self.released.notify_all();
    }

    /// Who holds the slots of `key` that this process does not: `(slot, "pid exe")` read
    /// from the slot files whose lock is taken (and from `/proc/locks`).
    pub fn foreign_holders(&self, key: &ResourceKey, capacity: u32) -> Vec<(u32, String)> {
        let Some(dir) = &key.dir else {
            return Vec::new();
        };
        let state = self.lock();
        let ours = state.resources.get(key);
        let mut holders = Vec::new();
        for slot in 0..capacity {
            if ours
                .and_then(|slots| slots.get(slot as usize))
                .is_some_and(|s| s.held)
            {
                holders.push((slot, format!("{} (this process)", std::process::id())));
                continue;
            }
            let path = key.slot_path(dir, slot);
            let Some(file) = lock_dir::open_existing_read_only(&path) else {
                continue;
            };
            match file.try_lock_shared() {
                Ok(()) => continue,
                Err(std::fs::TryLockError::WouldBlock) => {
                    holders.push((slot, describe_holder(&file)));
                }
                Err(_) => continue,
            }
        }
        holders
    }
}

fn take_slots(state: &mut State, want: &Want) -> io::Result<Option<Vec<u32>>> {
    if want.count == 0 {
        return Ok(Some(Vec::new()));
    }
    let slots = state.resources.entry(want.key.clone()).or_default();
    if slots.len() < want.capacity as usize {
        slots.resize_with(want.capacity as usize, Slot::default);
    }
    let mut ids = Vec::with_capacity(want.count as usize);
    let mut result = Ok(());
    for id in 0..want.capacity {
        if ids.len() == want.count as usize {
            break;
        }
        let slot = &mut slots[id as usize];
        if slot.held {
            continue;
        }
        match &want.key.dir {
            None => {}
            Some(dir) => match lock_slot_file(slot, &want.key, dir, id) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            },
        }
        slot.held = true;
        ids.push(id);
    }
    if result.is_ok() && ids.len() == want.count as usize {
        return Ok(Some(ids));
    }
    for &id in &ids {
        free_slot(&mut slots[id as usize]);
    }
    result.map(|()| None)
}

/// Tries the slot's lock file; `Ok(false)` when another process holds it.
fn lock_slot_file(slot: &mut Slot, key: &ResourceKey, dir: &Path, id: u32) -> io::Result<bool> {
    if slot.file.is_none() {
        let sub = lock_dir::open_subdir(dir, &key.name)?;
        let opened = lock_dir::open_lock_file(&sub, &dir.join(&key.name), &format!("{id}.lock"))?;
        slot.file = Some(opened.file);
        slot.ours = opened.ours;
    }
    let file = slot.file.as_ref().expect("opened above");
    match file.try_lock() {
        Ok(()) => {
            // Best effort: the record only serves "who holds it" messages. Another
            // user's file is never written; readers then ask the kernel who holds it.
            if slot.ours {
                let _ = file.write_at(holder_record(), 0);
            }
            Ok(true)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(with_path(e, "lock", &key.slot_path(dir, id))),
    }
}

/// `pid exe` of the holder of a locked slot file: its record when the kernel agrees on
/// the pid (or cannot say), else the kernel's pid with the process's name, since a
/// record left by an earlier holder of another user's file is stale.
fn describe_holder(file: &File) -> String {
    let mut record = [0u8; HOLDER_RECORD_LEN];
    let n = file.read_at(&mut record, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&record[..n]).trim().to_string();
    let recorded: Option<u32> = text.split_whitespace().next().and_then(|p| p.parse().ok());
    match lock_dir::flock_holder(file) {
        Some(pid) if recorded != Some(pid) => {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", name.trim()).trim_end().to_string()
        }
        _ if text.is_empty() => "unknown".into(),
        _ => text,
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

fn free_slot(slot: &mut Slot) {
    if let Some(file) = &slot.file {
        let _ = file.unlock();
    }
    slot.held = false;
}

fn release_slots(state: &mut State, taken: &[(ResourceKey, Vec<u32>)]) {
    for (key, ids) in taken {
        if let Some(slots) = state.resources.get_mut(key) {
            for &id in ids {
                if let Some(slot) = slots.get_mut(id as usize) {
                    free_slot(slot);
                }
            }
        }
    }
}
