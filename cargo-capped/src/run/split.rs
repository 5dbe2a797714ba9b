//! Splitting a plain libtest binary into processes that run its tests by name.
//!
//! libtest fixes its thread count when the process starts, and runs each test on one
//! thread. Two things follow, and each is a reason to split:
//!
//! * **A narrow start.** A plain binary that starts while other binaries hold most of the
//!   width gets `k` slots, fewer than the `min(runnable, width)` it could use, and would
//!   stay that narrow after they finish: at the end of a run the last big binary then works
//!   one test at a time while a slot idles. So such a binary keeps only its share of its
//!   runnable tests (by what the test history says they take where it knows them all,
//!   [`binary_schedule::split_share_by_time`], else by count,
//!   [`binary_schedule::split_share`]) and the rest become a unit of their own, in the
//!   binary's place in the order, which starts with the slots that free up. That part may
//!   split again when it too starts narrow, at most [`MAX_SPLITS`] times in all, so a
//!   binary that waits behind one long holder does not become a process per handful of
//!   tests.
//! * **A long test.** A test longer than its binary's work per slot leaves the binary's
//!   other threads idle while it runs on. Where the test history knows every test of a
//!   binary, such tests (at least [`ALONE_FROM`] long, at most [`MAX_ALONE`] of them,
//!   [`binary_schedule::long_tests`]) run as processes of their own, which the longest-first
//!   order starts early and other binaries run beside. Not in deterministic or shuffled
//!   runs.
//!
//! Parts run by `--exact` name.
//!
//! ## Invariants
//!
//! * Every test of the binary is in exactly one part: the parts' listings partition the
//!   unit's listing (ignored tests stay with the first part, which reports them).
//! * Only a plain, unclaimed binary that is not an EMFILE rerun splits, and never in
//!   deterministic mode or with `split-binaries = false`: a binary a group claims holds that
//!   group as a whole, and a harness binary draws slots per test anyway.
//! * Each part's names fit one command line ([`binary_schedule::SELECTION_CHUNK_BYTES`]);
//!   a binary with more names runs whole.
//!
//! What changes for the tests: the two parts are two processes. Process-wide state is not
//! shared between them, and `#[capped(serial)]` or a `scope = "process"` group keeps tests
//! apart within each process only, as between any two binaries; a profile with
//! `split-binaries = false` keeps every binary in one process.

use std::collections::HashSet;

use capped_model::Scope;

use super::binary::Unit;
use super::binary_schedule::{self, SELECTION_CHUNK_BYTES};
use super::runner::Runner;
use super::work::subset;
use crate::events::BinaryId;
use crate::history::History;

/// How many times the tests of one binary may be split when it starts narrow: at most
/// `MAX_SPLITS + 1` processes.
pub const MAX_SPLITS: u8 = 3;

/// How many of one binary's long tests run as processes of their own at most.
pub const MAX_ALONE: usize = 4;

/// The shortest test that runs alone for its length: a process start must not be a
/// visible part of it.
pub const ALONE_FROM: std::time::Duration = std::time::Duration::from_millis(100);

impl Runner<'_> {
    /// Whether unit `index` may be split at all: a plain, unclaimed binary that is not an
    /// EMFILE rerun, in a run that splits binaries and has no process-scoped group.
    fn splittable(&self, index: usize) -> bool {
        let unit = &self.units[index];
        self.plan.split_binaries
            && !unit.listing.harness
            && !unit.binary.is_doc()
            && !unit.rerun
            && unit.claimed.is_empty()
            && !self
                .caps
                .groups()
                .values()
                .any(|limit| limit.scope == Scope::Process)
    }

    /// Before unit `index` starts with `k` width slots: if it is a plain binary that could
    /// use more, keep its share of its tests and queue the rest as a new unit in its place.
    pub(super) fn split_if_narrow(&mut self, index: usize, k: u32) {
        if !self.splittable(index) || self.units[index].splits >= MAX_SPLITS {
            return;
        }
        let unit = &self.units[index];
        let runnable: Vec<&str> =
            binary_schedule::runnable(&unit.listing.tests, &self.plan.test_args)
                .into_iter()
                .map(|t| t.name.as_str())
                .collect();
        let wanted = binary_schedule::plain_width(runnable.len(), self.width);
        // By time where the history knows every runnable test, else by count.
        let share = match self.learned_times_of(index) {
            Some(times) => binary_schedule::split_share_by_time(&times, k, wanted),
            None => binary_schedule::split_share(runnable.len(), k, wanted),
        };
        let Some(keep) = share else {
            return;
        };
        let moved: Vec<String> = runnable[keep..].iter().map(|n| n.to_string()).collect();
        let Some(new_index) = self.split_off(index, moved) else {
            return;
        };
        let position = self
            .order
            .iter()
            .position(|&i| i == index)
            .map_or(0, |p| p + 1);
        self.order.insert(position, new_index);
    }

    /// Unit `index`, just made: where the test history knows each of its runnable tests,
    /// its long tests ([`binary_schedule::long_tests`]) become units of their own, so they
    /// run beside other binaries instead of beside idle slots. Returns the new units (the
    /// caller places them in the order); none in deterministic or shuffled runs, whose
    /// processes stay as listed.
    pub(super) fn split_long_tests(&mut self, index: usize) -> Vec<usize> {
        if !self.splittable(index) || self.plan.caps.shuffle() {
            return Vec::new();
        }
        let Some(times) = self.learned_times_of(index) else {
            return Vec::new();
        };
        let unit = &self.units[index];
        let runnable: Vec<String> =
            binary_schedule::runnable(&unit.listing.tests, &self.plan.test_args)
                .into_iter()
                .map(|t| t.name.clone())
                .collect();
        let alone = binary_schedule::long_tests(
            &times,
            self.plan.caps.test_threads(),
            ALONE_FROM,
            MAX_ALONE,
        );
        let splits = self.units[index].splits;
        let parts = alone
            .into_iter()
            .filter_map(|i| self.split_off(index, vec![runnable[i].clone()]))
            .collect();
        // Taking long tests out is no narrow start: the rest keeps its budget for those.
        self.units[index].splits = splits;
        parts
    }

    /// Moves `moved` (names of unit `index`'s tests) to a new unit, run by `--exact` name,
    /// and keeps the rest in unit `index`, run by name too; returns the new unit's index, or
    /// `None` when either part's names would not fit one command line.
    fn split_off(&mut self, index: usize, moved: Vec<String>) -> Option<usize> {
        let unit = &self.units[index];
        let moved_set: HashSet<&str> = moved.iter().map(String::as_str).collect();
        let kept: Vec<String> = unit
            .listing
            .tests
            .iter()
            .map(|t| t.name.clone())
            .filter(|name| !moved_set.contains(name.as_str()))
            .collect();
        let fits = |names: &[String]| {
            names.iter().map(|n| n.len() + 1).sum::<usize>() <= SELECTION_CHUNK_BYTES
        };
        if !fits(&kept) || !fits(&moved) {
            return None;
        }
        let new_index = self.units.len();
        let mut rest = Unit::new(
            unit.binary.clone(),
            subset(&unit.listing, &moved),
            None,
            Vec::new(),
            self.run_dir.events_file(new_index, &unit.binary.id.target),
            Some(moved),
            &self.plan.test_args,
        );
        rest.splits = unit.splits + 1;
        let mut first = Unit::new(
            unit.binary.clone(),
            subset(&unit.listing, &kept),
            None,
            Vec::new(),
            unit.events_path.clone(),
            Some(kept),
            &self.plan.test_args,
        );
        first.splits = unit.splits + 1;
        self.units[index] = first;
        self.units.push(rest);
        Some(new_index)
    }

    /// What the test history says each runnable test of unit `index` takes, in the order
    /// the binary runs them; `None` unless it knows every one.
    pub(super) fn learned_times_of(&self, index: usize) -> Option<Vec<std::time::Duration>> {
        let unit = &self.units[index];
        binary_schedule::runnable(&unit.listing.tests, &self.plan.test_args)
            .into_iter()
            .map(|test| self.learned_time(&unit.binary.id, &test.name))
            .collect()
    }

    /// What the test history says unit `index`'s tests take together, as far as it knows
    /// them; `None` when it knows none.
    pub(super) fn learned_work_of(&self, index: usize) -> Option<std::time::Duration> {
        let unit = &self.units[index];
        let known: Vec<std::time::Duration> = unit
            .listing
            .tests
            .iter()
            .filter_map(|test| self.learned_time(&unit.binary.id, &test.name))
            .collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }

    fn learned_time(&self, binary: &BinaryId, name: &str) -> Option<std::time::Duration> {
        self.learned_times
            .get(&History::test_key(binary, name))
            .copied()
    }
}
