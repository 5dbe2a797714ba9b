//! Splitting a plain libtest binary that starts narrower than it could run.
//!
//! libtest fixes its thread count when the process starts. A plain binary that starts while
//! other binaries hold most of the width gets `k` slots, fewer than the
//! `min(runnable, width)` it could use, and would stay that narrow after they finish: at the
//! end of a run the last big binary then works one test at a time while a slot idles. So
//! such a binary keeps only its share of its runnable tests (by what the test history says
//! they take where it knows them all, [`binary_schedule::split_share_by_time`], else by
//! count, [`binary_schedule::split_share`]; by `--exact` name) and the rest become a unit of their own, in the binary's place in the
//! order, which starts with the slots that free up. That part may split again when it too
//! starts narrow, at most [`MAX_SPLITS`] times in all, so a binary that waits behind one
//! long holder does not become a process per handful of tests.
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

/// How many times the tests of one binary may be split: at most `MAX_SPLITS + 1` processes.
pub const MAX_SPLITS: u8 = 3;

impl Runner<'_> {
    /// Before unit `index` starts with `k` width slots: if it is a plain binary that could
    /// use more, keep its share of its tests and queue the rest as a new unit in its place.
    pub(super) fn split_if_narrow(&mut self, index: usize, k: u32) {
        let unit = &self.units[index];
        if !self.plan.split_binaries
            || unit.listing.harness
            || unit.binary.is_doc()
            || unit.rerun
            || unit.splits >= MAX_SPLITS
            || !unit.claimed.is_empty()
            || self
                .caps
                .groups()
                .values()
                .any(|limit| limit.scope == Scope::Process)
        {
            return;
        }
        let runnable: Vec<&str> =
            binary_schedule::runnable(&unit.listing.tests, &self.plan.test_args)
                .into_iter()
                .map(|t| t.name.as_str())
                .collect();
        let wanted = binary_schedule::plain_width(runnable.len(), self.width);
        // By time where the history knows every runnable test, else by count.
        let times: Option<Vec<std::time::Duration>> = runnable
            .iter()
            .map(|name| {
                self.learned_times
                    .get(&format!("{} {name}", unit.binary.id))
                    .copied()
            })
            .collect();
        let share = match &times {
            Some(times) => binary_schedule::split_share_by_time(times, k, wanted),
            None => binary_schedule::split_share(runnable.len(), k, wanted),
        };
        let Some(keep) = share else {
            return;
        };
        let moved: Vec<String> = runnable[keep..].iter().map(|n| n.to_string()).collect();
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
            return;
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
        let position = self
            .order
            .iter()
            .position(|&i| i == index)
            .map_or(0, |p| p + 1);
        self.order.insert(position, new_index);
    }
}
