//! Adapting a run to the host's file-descriptor limits (issue 5, items 3 and 4).
//!
//! Two policies, both "detect, warn, adapt, continue" (seed 004), never a hang:
//!
//! * [`nofile`]: at start the runner raises its soft `RLIMIT_NOFILE` to the hard limit
//!   (children inherit it) and warns when the hard limit is low for the width
//!   ([`nofile::raise_at_start`]).
//! * [`emfile`]: a test that fails with "Too many open files" is recognised
//!   ([`emfile::looks_like_emfile`]); the run's width drops by a quarter (at least 1, never
//!   below 1) for the rest of the run ([`emfile::AdaptiveWidth`]), and the affected tests
//!   are rerun once at the lower width ([`emfile::EmfileAdapter`]).
//!
//! # Wiring (run loop)
//!
//! 1. Before the first test binary starts (after the plan fixed the width), call
//!    [`nofile::raise_at_start`]`(width)` and print each returned notice on stderr (human
//!    output) or emit it as a run event.
//! 2. Create one [`emfile::EmfileAdapter::new`]`(width)` per run.
//! 3. When a test binary finishes with failed tests, call
//!    [`emfile::EmfileAdapter::on_binary_finished`] with the binary's name, its failed tests
//!    and each one's captured output (and the binary's own stderr, for a harness that died
//!    of EMFILE before reporting tests). If the returned [`emfile::Adaptation`] has a
//!    notice, print it and use [`emfile::EmfileAdapter::width`] as the width from now on
//!    (for scheduling and `--test-threads` of later binaries). If it names tests to
//!    rerun, run the binary again with [`emfile::rerun_args`] (`--exact NAME…`) and
//!    `--test-threads` at the new width; the rerun's results replace the first ones, and the
//!    report says the test was rerun after EMFILE.

pub mod emfile;
pub mod nofile;
