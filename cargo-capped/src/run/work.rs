//! From built binaries and their listings to the run's units (see [`super::binary`]).
//!
//! Without `--partition` each binary is one unit, run with the run's filter and arguments
//! as `cargo test` would. With `--partition hash:K/N` (or `slice:K/N`, which places each test
//! among all the run's listed tests first) each binary keeps the tests of partition K, runs them by name ([`binary_schedule::selection_args`]) in chunks of at most
//! [`binary_schedule::SELECTION_CHUNK_BYTES`] of names, one unit per chunk; a binary with nothing in
//! partition K has no unit at all, and the tests of other partitions are counted
//! ([`PartitionCount`]) for the run's notice, never reported. A binary whose listing failed is
//! one unit carrying the error (reported as a failure, never spawned). A package's doc tests
//! cannot be selected by name, so they stay one unit (kept or left out whole by
//! `--partition`, never isolated), and a library without doc tests is no unit.

use std::collections::HashSet;

use super::binary::Unit;
use super::binary_schedule;
use super::run_dir::RunDir;
use crate::build::TestBinary;
use crate::events::{BinaryId, TestResult, TestStatus};
use crate::history::History;
use crate::libtest::Listing;
use crate::plan::partition::Selector;
use crate::plan::{Partition, Plan};

/// Tests kept and left out by `--partition`.
#[derive(Debug, Default)]
pub(super) struct PartitionCount {
    pub(super) kept: usize,
    pub(super) left: usize,
}

/// The selector of `plan`'s partition, which may depend on every test of the run (slices
/// and time shards): made once every binary is listed. Doc tests, which go to a partition
/// whole by their package's hash, are left out of the deal.
pub(super) fn selector<'b>(
    plan: &Plan,
    listed: impl Iterator<Item = (&'b TestBinary, &'b Result<Listing, String>)>,
    history: Option<&History>,
) -> Option<Selector> {
    let partition = plan.partition?;
    let tests: Vec<(&BinaryId, &str, Option<std::time::Duration>)> = listed
        .filter(|(binary, _)| !binary.is_doc())
        .flat_map(|(binary, listing)| {
            let tests = listing.as_ref().map(|l| l.tests.as_slice()).unwrap_or(&[]);
            tests
                .iter()
                .map(move |test| (&binary.id, test.name.as_str()))
        })
        .map(|(id, name)| {
            let known = history
                .and_then(|h| h.test(id, name))
                .and_then(|entry| entry.median());
            (id, name, known)
        })
        .collect();
    Some(partition.selector(tests, plan.fixed_width().unwrap_or(1)))
}

/// What one binary's listing adds to the run: its units (appended to `units`; unit `i`'s
/// events file is `run_dir`'s file `i`); returns the results of tests skipped before they
/// run (a device-backed group without devices). Partitioned runs need the run's
/// `selector`.
pub(super) fn add_units(
    plan: &Plan,
    binary: TestBinary,
    listing: Result<Listing, String>,
    selector: Option<&Selector>,
    run_dir: &RunDir,
    units: &mut Vec<Unit>,
    partitioned: &mut PartitionCount,
) -> Vec<TestResult> {
    let mut skipped = Vec::new();
    // A library without doc tests is no unit of the run (as under `cargo test`, where it
    // prints an empty "Doc-tests" section).
    if binary.is_doc() && listing.as_ref().is_ok_and(|l| l.tests.is_empty()) {
        return skipped;
    }
    let claimed = plan.groups_claiming(&binary.id.target);
    let (mut listing, list_error) = match listing {
        Ok(listing) => (listing, None),
        Err(e) => (Listing::default(), Some(e)),
    };
    // Tests of a device-backed group without devices are skipped, with the reason, where
    // the group is known before they run.
    // Under `--partition` only the partition's own: each is reported by one shard.
    listing.tests.retain(|test| {
        let Some(why) = no_devices(plan, &test.groups, &claimed) else {
            return true;
        };
        if selector.is_some_and(|selector| !selector.contains(&binary.id, &test.name)) {
            return false;
        }
        skipped.push(TestResult {
            binary: binary.id.clone(),
            name: test.name.clone(),
            status: TestStatus::Ignored,
            duration: None,
            output: why,
        });
        false
    });
    if list_error.is_none() && listing.tests.is_empty() && !skipped.is_empty() {
        return skipped;
    }
    let selections = match (&plan.partition, selector, &list_error) {
        // Doc tests cannot be selected by name: a package's go to one partition whole.
        (Some(partition), _, None) if binary.is_doc() => {
            let tests = listing.tests.len();
            if Partition::of(&binary.id, "", partition.count) != partition.index {
                partitioned.left += tests;
                return skipped;
            }
            partitioned.kept += tests;
            vec![(listing, None)]
        }
        (_, Some(selector), None) => {
            let (kept, left) = partition_listing(&listing, &binary.id, selector);
            partitioned.kept += kept.tests.len();
            partitioned.left += left;
            if kept.tests.is_empty() {
                return skipped;
            }
            if left == 0 {
                vec![(kept, None)]
            } else {
                let names = kept.tests.iter().map(|t| t.name.clone()).collect();
                binary_schedule::chunk_names(names, binary_schedule::SELECTION_CHUNK_BYTES)
                    .into_iter()
                    .map(|chunk| (subset(&kept, &chunk), Some(chunk)))
                    .collect()
            }
        }
        // Some of its tests are skipped: the others run by name, or the binary would run
        // the skipped ones too.
        _ if !skipped.is_empty() => {
            let names = listing.tests.iter().map(|t| t.name.clone()).collect();
            binary_schedule::chunk_names(names, binary_schedule::SELECTION_CHUNK_BYTES)
                .into_iter()
                .map(|chunk| (subset(&listing, &chunk), Some(chunk)))
                .collect()
        }
        _ => vec![(listing, None)],
    };
    let selections = if list_error.is_none() && !binary.is_doc() {
        selections
            .into_iter()
            .flat_map(|(listing, selection)| isolate(plan, &claimed, listing, selection))
            .collect()
    } else {
        selections
    };
    for (listing, selection) in selections {
        let index = units.len();
        // A test pinned to a device runs in a process the runner starts holding its
        // group's slot, so the runner can hand it that slot's device.
        let mut claims = claimed.clone();
        if let [test] = listing.tests.as_slice() {
            for group in &test.groups {
                if plan.pins(group) && !claims.contains(group) {
                    claims.push(group.clone());
                }
            }
        }
        units.push(Unit::new(
            binary.clone(),
            listing,
            list_error.clone(),
            claims,
            run_dir.events_file(index, &binary.id.target),
            selection,
            &plan.test_args,
        ));
    }
    skipped
}

/// Why a test of `groups` in a binary claimed by `claimed` cannot run: one of them is a
/// device-backed group with no devices.
fn no_devices(plan: &Plan, groups: &[String], claimed: &[String]) -> Option<String> {
    groups.iter().chain(claimed).find_map(|group| {
        let devices = plan.devices.get(group)?;
        devices
            .ids
            .is_empty()
            .then(|| format!("group `{group}` has no devices: {}", devices.how))
    })
}

/// Under isolation, one unit per test that runs alone ([`Plan::isolates`]), each selecting
/// just that test, and one for the rest of the binary's tests (run by name, in chunks).
/// Tests that will not execute (ignored, unless the run asks for them) stay with the rest,
/// so no process is started only to report them.
fn isolate(
    plan: &Plan,
    claimed: &[String],
    listing: Listing,
    selection: Option<Vec<String>>,
) -> Vec<(Listing, Option<Vec<String>>)> {
    let runs_ignored = binary_schedule::runs_ignored(&plan.test_args);
    let (alone, rest): (Vec<_>, Vec<_>) = listing
        .tests
        .iter()
        .partition(|test| (runs_ignored || !test.ignored) && plan.isolates(test, claimed));
    if alone.is_empty() {
        return vec![(listing, selection)];
    }
    // Each made from its test alone: a subset by name would read the whole listing for
    // every one of them.
    let mut units: Vec<(Listing, Option<Vec<String>>)> = alone
        .into_iter()
        .map(|test| {
            let one = Listing {
                tests: vec![test.clone()],
                harness: listing.harness,
                logfile: listing.logfile,
            };
            (one, Some(vec![test.name.clone()]))
        })
        .collect();
    let rest: Vec<String> = rest.into_iter().map(|test| test.name.clone()).collect();
    if !rest.is_empty() {
        for chunk in binary_schedule::chunk_names(rest, binary_schedule::SELECTION_CHUNK_BYTES) {
            units.push((subset(&listing, &chunk), Some(chunk)));
        }
    }
    units
}

/// The tests of `listing` in the partition of `selector`, and how many were left out.
fn partition_listing(
    listing: &Listing,
    binary: &BinaryId,
    selector: &Selector,
) -> (Listing, usize) {
    let kept = Listing {
        tests: listing
            .tests
            .iter()
            .filter(|test| selector.contains(binary, &test.name))
            .cloned()
            .collect(),
        harness: listing.harness,
        logfile: listing.logfile,
    };
    let left = listing.tests.len() - kept.tests.len();
    (kept, left)
}

/// `listing` restricted to `names`. Only the kept tests are copied: a binary isolated
/// into a unit per test must not give each unit a copy of all its tests.
pub(super) fn subset(listing: &Listing, names: &[String]) -> Listing {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    Listing {
        tests: listing
            .tests
            .iter()
            .filter(|test| wanted.contains(test.name.as_str()))
            .cloned()
            .collect(),
        harness: listing.harness,
        logfile: listing.logfile,
    }
}

#[cfg(test)]
mod tests {
    use capped_model::protocol::ListedTest;

    use super::*;
    use crate::plan::Partition;
    use crate::plan::partition::Scheme;

    fn listing(names: &[&str]) -> Listing {
        Listing {
            tests: names.iter().map(|name| ListedTest::plain(*name)).collect(),
            ..Listing::default()
        }
    }

    #[test]
    fn partitions_and_subsets_of_a_listing() {
        let all = listing(&["a", "b", "c", "d", "e", "f"]);
        let binary = BinaryId {
            package: "p".into(),
            target: "t".into(),
            kind: "test".into(),
        };
        let mut kept_names = Vec::new();
        for scheme in [Scheme::Hash, Scheme::Slice] {
            kept_names.clear();
            for index in 1..=3 {
                let partition = Partition {
                    scheme,
                    index,
                    count: 3,
                };
                let selector = partition.selector(
                    all.tests.iter().map(|t| (&binary, t.name.as_str(), None)),
                    2,
                );
                let (kept, left) = partition_listing(&all, &binary, &selector);
                assert_eq!(kept.tests.len() + left, 6);
                if scheme == Scheme::Slice {
                    assert_eq!(kept.tests.len(), 2, "slices are even");
                }
                kept_names.extend(kept.tests.into_iter().map(|t| t.name));
            }
            kept_names.sort();
            assert_eq!(kept_names, ["a", "b", "c", "d", "e", "f"]);
        }
        // A subset holds only its own tests, not room for all of them.
        let many = listing(
            &(0..1000)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let one = subset(&many, &["t7".to_string()]);
        assert_eq!(one.tests.len(), 1);
        assert!(one.tests.capacity() < 16, "{}", one.tests.capacity());
        let some = subset(&all, &["c".to_string(), "a".to_string(), "zz".to_string()]);
        let names: Vec<&str> = some.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "c"], "listing order, unknown names dropped");
    }
}
