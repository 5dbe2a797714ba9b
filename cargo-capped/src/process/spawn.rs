//! Starting a child: in a process group of its own, killed if its parent dies.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use rustix::process::Signal;

/// Spawns `command` in a new process group (its pid is the group id) with
/// `PR_SET_PDEATHSIG` = SIGKILL, so it dies with the thread that spawns it (see the module
/// doc): call this from a thread that outlives the child. Everything else about `command`
/// (arguments, environment, stdio) is the caller's.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    command.process_group(0);
    die_with_parent(command);
    // Recorded as ours, so the orphan sweep never takes it for a re-parented orphan.
    super::orphans::spawning(|| command.spawn(), Child::id)
}

/// Makes `command`'s process get SIGKILL when the thread that spawns it dies (however it
/// dies, SIGKILL included): `PR_SET_PDEATHSIG` set between fork and exec. That thread waits
/// in `spawn` until the exec, so it cannot die first unless the whole process does; then
/// the child sees another parent and fails to start (`ESRCH`) instead of running unowned.
fn die_with_parent(command: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and makes only two
    // async-signal-safe syscalls (prctl, getppid); it allocates nothing on success, and
    // on failure builds an `io::Error` from a raw code, which does not allocate either.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}
