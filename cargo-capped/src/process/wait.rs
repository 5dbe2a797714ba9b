//! Observing a child's exit without reaping it, so its pid (and group id) stays ours.

use std::io;

use rustix::process::{Pid, WaitId, WaitIdOptions};

/// Whether child `pid` has exited, without reaping it and without blocking. A pid that is
/// not (or no longer) our unreaped child counts as exited: there is nothing left to wait
/// for.
pub fn has_exited(pid: u32) -> bool {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return true;
    };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(Some(_)) | Err(_)
    )
}

/// Blocks until child `pid` has exited, without reaping it (it stays a zombie until its
/// `Child::wait`). Fails with `ECHILD` when it is not our child or was reaped already.
pub fn wait_exited(pid: u32) -> io::Result<()> {
    let raw = Pid::from_raw(pid as i32).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot wait for pid {pid}: not a process id"),
        )
    })?;
    loop {
        match rustix::process::waitid(
            WaitId::Pid(raw),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
