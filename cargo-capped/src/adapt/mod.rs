//! Adapting a run to the host's file-descriptor limits: a low `RLIMIT_NOFILE` and
//! binaries that fail with EMFILE.
//!
//! Two policies, both "detect, warn, adapt, continue", never a hang: a run on a constrained
//! host should finish and say what it changed, not fail or stall.
//!
//! * [`nofile`]: at start the runner raises its soft `RLIMIT_NOFILE` to the hard limit
//!   (children inherit it) and warns when the hard limit is low for the width
//!   ([`nofile::raise_at_start`]).
//! * [`emfile_policy`]: a test that fails with "Too many open files" is recognised
//!   ([`emfile_policy::looks_like_emfile`]); the run's width drops by a quarter (at least 1, never
//!   below 1) for the rest of the run ([`emfile_policy::AdaptiveWidth`]), and the affected tests
//!   are rerun once at the lower width ([`emfile_policy::EmfileAdapter`]).
//!
//! # In the run loop
//!
//! 1. Before the first test binary is listed or spawned, `run::host_safety::HostSafety`
//!    calls [`nofile::raise_at_start`]`(width)`; warnings are notices, the raise itself one
//!    with `-v`.
//! 2. The runner keeps one [`emfile_policy::EmfileAdapter::new`]`(width)` per run.
//! 3. When a test binary finishes with failed tests, the runner calls
//!    [`emfile_policy::EmfileAdapter::on_binary_finished`] with the binary's name, its failed tests
//!    and each one's captured output (and the binary's own stderr, for a harness that died
//!    of EMFILE before reporting tests), shows the returned [`emfile_policy::Adaptation`]'s
//!    message as a notice, takes [`emfile_policy::EmfileAdapter::width`] as the width from now on
//!    (for scheduling and `--test-threads` of later binaries), and runs the tests to rerun
//!    again (`--exact NAME…`) at the new width; the rerun's results replace the first ones.
//!
//! EMFILE failures are held back until their binary is done (`run/mod.rs`,
//! `adapt_to_emfile`), so a test that passes on its rerun is counted once, as passed.

pub mod emfile_policy;
pub mod nofile;
