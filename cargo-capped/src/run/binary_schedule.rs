//! The run's scheduling decisions over test binaries (which unit starts, with how many
//! width slots, on which tests), kept pure so they can be tested alone. Inside a harness
//! binary, which test starts next is `capped-test`'s harness scheduler's decision.
//!
//! ## Invariants
//!
//! * **Width.** Every width slot is a lock file in `<run_dir>/locks/.width/`. A plain
//!   libtest binary runs only while the runner holds `k` of them for it (and then runs
//!   with `--test-threads k`, `CAPPED_WIDTH_HELD=k`); a harness binary's tests take their own
//!   slots from the same files. So at no instant do more than `width` tests execute,
//!   whatever this module decides: the decisions below only choose *what to try*.
//! * **Groups.** A binary claimed by a group (`binaries = [..]`) starts only once the runner
//!   holds a slot of that group, taken together with its width in one non-blocking request
//!   (all or nothing, never hold-and-wait), and keeps it until the binary's process group is
//!   gone. Inside such a binary the group is process-scoped with `max = 1`, so its own
//!   `#[capped(group = ..)]` tests do not wait for the slot their binary already holds.
//!
//! ## Choices
//!
//! * Order: deterministic mode sorts binaries by (package, target, kind) and runs one at a
//!   time; `--shuffle` shuffles that order with the run seed; otherwise binaries claimed
//!   by a group go first (they are the long poles that cannot overlap each other), then
//!   binaries with more tests, then by name.
//! * Filling: the runner estimates the width in use (a plain binary's `k`, a harness
//!   binary's [`harness_demand`]) and starts the next binary whose resources are free while
//!   the estimate is below the width. A plain binary takes `k = min(its runnable tests, idle
//!   slots)` (at least 1), trying smaller `k` when harness tests hold some slots.
//!   A binary whose group is busy is passed over, not waited on, so other binaries fill the
//!   width meanwhile.
//! * Splitting: libtest's thread count is fixed when the process starts, so a plain binary
//!   that starts with fewer slots than it could use (`k` < `min(runnable, width)`, the
//!   others busy) would stay that narrow after they free. It keeps only its share of its
//!   tests ([`split_share`]) and the rest wait, in its place in the order, as a unit of
//!   their own that takes the slots that free up (see `super::split`).
//! * Memory: a harness binary's tests that reserve memory (`mem = ".."`) count towards its
//!   demand only as many as fit the run's memory budget side by side.
//! * Selections: when the runner picks tests by name itself (`--partition`, an EMFILE rerun)
//!   it runs the binary with `--exact NAME…` ([`selection_args`]), in chunks of at most
//!   [`SELECTION_CHUNK_BYTES`] of names ([`chunk_names`]), so no command line gets near the
//!   kernel's limits however many tests a binary has.

use std::collections::BTreeMap;

use capped_model::libtest_args::{self, Kind};
use capped_model::protocol::ListedTest;

use crate::events::BinaryId;

/// How binaries are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderMode {
    /// Sorted by id.
    Sorted,
    /// Sorted, then shuffled with this seed.
    Shuffled(u64),
    /// Heavy first (claimed binaries, then more tests first).
    Heuristic,
}

/// What ordering needs to know about a binary.
#[derive(Debug, Clone)]
pub struct OrderKey<'a> {
    /// The binary.
    pub id: &'a BinaryId,
    /// Whether a group claims it.
    pub claimed: bool,
    /// Tests it will run.
    pub runnable: usize,
    /// How long earlier runs say its tests take (the sum of their median durations), when
    /// the history knows them.
    pub expected: Option<std::time::Duration>,
}

/// Indices of `keys` in the order binaries are tried.
pub fn order(keys: &[OrderKey<'_>], mode: OrderMode) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..keys.len()).collect();
    indices.sort_by(|&a, &b| keys[a].id.cmp(keys[b].id));
    match mode {
        OrderMode::Sorted => {}
        OrderMode::Shuffled(seed) => fastrand::Rng::with_seed(seed).shuffle(&mut indices),
        // Longest work first (LPT): by what earlier runs measured where the history knows
        // it, a binary it does not know counted at the median of those it does; by test
        // count when it knows none.
        OrderMode::Heuristic => {
            let mut known: Vec<std::time::Duration> =
                keys.iter().filter_map(|k| k.expected).collect();
            known.sort();
            let prior = known.get(known.len() / 2).copied();
            let expected = |k: &OrderKey<'_>| k.expected.or(prior);
            indices.sort_by(|&a, &b| {
                let (a, b) = (&keys[a], &keys[b]);
                b.claimed
                    .cmp(&a.claimed)
                    .then(expected(b).cmp(&expected(a)))
                    .then(b.runnable.cmp(&a.runnable))
                    .then(a.id.cmp(b.id))
            })
        }
    }
    indices
}

/// The width slots a plain binary asks for: its runnable tests, at most the idle slots,
/// at least one.
pub fn plain_width(runnable: usize, idle: u32) -> u32 {
    (runnable.min(idle as usize) as u32).max(1)
}

/// Which of a binary's tests, taking `times`, are worth a process of their own at `width`
/// (indices into `times`, longest first): libtest runs a test on one thread whatever it has,
/// so a test longer than the binary's work per slot (`t · width > total`) would leave slots
/// idle beside it, where alone it runs beside other binaries. Each one taken leaves the
/// rest to be judged on what remains; only tests of at least `at_least` (a process start
/// must not be a visible part of them), at most `most` of them, and never the last test.
pub fn long_tests(
    times: &[std::time::Duration],
    width: u32,
    at_least: std::time::Duration,
    most: usize,
) -> Vec<usize> {
    let mut by_length: Vec<usize> = (0..times.len()).collect();
    by_length.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));
    let mut total: std::time::Duration = times.iter().sum();
    let mut alone = Vec::new();
    for &i in &by_length {
        let time = times[i];
        if alone.len() >= most
            || alone.len() + 1 >= times.len()
            || time < at_least
            || time.saturating_mul(width.max(1)) <= total
        {
            break;
        }
        alone.push(i);
        total -= time;
    }
    alone
}

/// How many of its `runnable` tests a plain binary starting with `k` width slots keeps when
/// it could use `wanted` (`min(runnable, width)`): its share `ceil(runnable * k / wanted)`,
/// or `None` when it keeps them all (it got what it wanted, or has a single test).
pub fn split_share(runnable: usize, k: u32, wanted: u32) -> Option<usize> {
    if k == 0 || k >= wanted || runnable < 2 {
        return None;
    }
    let keep = (runnable * k as usize).div_ceil(wanted as usize);
    (keep < runnable).then_some(keep)
}

/// [`split_share`] by what earlier runs measured: the first tests (in the order the binary
/// runs them) whose learned `times` add up to its share `k / wanted` of the whole, so the
/// part that starts now and the part that waits hold equal work per slot rather than equal
/// counts. `None` when it keeps them all.
pub fn split_share_by_time(times: &[std::time::Duration], k: u32, wanted: u32) -> Option<usize> {
    let runnable = times.len();
    if k == 0 || k >= wanted || runnable < 2 {
        return None;
    }
    let total: std::time::Duration = times.iter().sum();
    let target = total * k / wanted;
    let mut sum = std::time::Duration::ZERO;
    let mut keep = runnable;
    for (i, time) in times.iter().enumerate() {
        sum += *time;
        if sum >= target {
            keep = i + 1;
            break;
        }
    }
    let keep = keep.clamp(1, runnable - 1);
    (keep < runnable).then_some(keep)
}

/// Whether the libtest arguments make ignored tests run (`--ignored`, `--include-ignored`).
pub fn runs_ignored(test_args: &[String]) -> bool {
    // Both at once (which libtest refuses) count as making them run.
    !matches!(
        libtest_args::run_ignored(test_args),
        Ok(libtest_args::RunIgnored::No)
    )
}

/// The tests of a listing that will actually execute (not skipped as ignored).
pub fn runnable<'a>(tests: &'a [ListedTest], test_args: &[String]) -> Vec<&'a ListedTest> {
    let ignored_too = runs_ignored(test_args);
    let only_ignored = libtest_args::has(test_args, &libtest_args::IGNORED);
    tests
        .iter()
        .filter(|t| ignored_too || !t.ignored || only_ignored)
        .collect()
}

/// How many width slots a harness binary can use at once from now on: those its running
/// tests hold, plus what its tests not yet started could use side by side (tests without
/// groups add their threads; tests of a group add at most the group's `max`; tests that
/// reserve memory only as many as fit `mem_budget` together, smallest first), capped by the
/// width.
pub fn harness_demand(
    not_started: &[&ListedTest],
    running_width: u32,
    width: u32,
    group_max: impl Fn(&str) -> u32,
    mem_budget: Option<u64>,
) -> u32 {
    let mut light: u32 = 0;
    let mut per_group: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut reserving, mut counted): (Vec<&ListedTest>, Vec<&ListedTest>) = not_started
        .iter()
        .copied()
        .partition(|t| t.mem.is_some_and(|m| m > 0) && mem_budget.is_some());
    if let Some(budget) = mem_budget {
        reserving.sort_by_key(|t| t.mem.unwrap_or(0));
        let mut reserved = 0u64;
        for test in reserving {
            reserved = reserved.saturating_add(test.mem.unwrap_or(0));
            if reserved > budget {
                break;
            }
            counted.push(test);
        }
    }
    for test in counted {
        let threads = test.threads.clamp(1, width);
        match test.groups.first() {
            None => light = light.saturating_add(threads),
            Some(group) => *per_group.entry(group.as_str()).or_default() += threads,
        }
    }
    let grouped: u32 = per_group
        .iter()
        .map(|(group, threads)| (*threads).min(group_max(group).max(1)))
        .sum();
    running_width
        .saturating_add(light)
        .saturating_add(grouped)
        .min(width)
}

/// The most bytes of test names one selecting command line carries (a chunk); far below
/// Linux's 128 KiB per argument and 2 MiB in all.
pub const SELECTION_CHUNK_BYTES: usize = 64 * 1024;

/// The arguments that run exactly `names` of a binary: `--exact`, the run's flags from after
/// `--` except those that select (`--exact`, `--skip` and positional filters: the listing
/// the names come from already applied them, and libtest would OR extra filters in), then
/// the names.
pub fn selection_args(test_args: &[String], names: &[String]) -> Vec<String> {
    let mut out = vec![libtest_args::EXACT.name().to_string()];
    for item in libtest_args::parse(test_args) {
        match item.kind {
            Kind::Flag { flag, .. }
                if flag == &libtest_args::EXACT || flag == &libtest_args::SKIP => {}
            Kind::Flag { .. } | Kind::Unknown => out.extend(item.raw.iter().cloned()),
            // Positional filters (and the `--` before some) are dropped.
            Kind::Filter(_) | Kind::EndOfFlags => {}
        }
    }
    out.extend(names.iter().cloned());
    out
}

/// `names` split into chunks of at most `max_bytes` of names each (a name longer than that
/// gets a chunk of its own), in order; no empty chunk.
pub fn chunk_names(names: Vec<String>, max_bytes: usize) -> Vec<Vec<String>> {
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for name in names {
        let size = name.len() + 1;
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= max_bytes => {
                bytes += size;
                chunk.push(name);
            }
            _ => {
                bytes = size;
                chunks.push(vec![name]);
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(package: &str, target: &str) -> BinaryId {
        BinaryId {
            package: package.into(),
            target: target.into(),
            kind: "test".into(),
        }
    }

    fn test(name: &str, groups: &[&str], threads: u32) -> ListedTest {
        ListedTest {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            threads,
            mem: None,
            timeout_ms: None,
            ignored: false,
        }
    }

    #[test]
    fn orders() {
        let ids = [id("b", "x"), id("a", "y"), id("a", "x"), id("c", "z")];
        let keys: Vec<OrderKey<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| OrderKey {
                id,
                claimed: i == 3,
                runnable: i,
                expected: None,
            })
            .collect();
        assert_eq!(order(&keys, OrderMode::Sorted), [2, 1, 0, 3]);
        assert_eq!(order(&keys, OrderMode::Heuristic), [3, 2, 1, 0]);
        let shuffled = order(&keys, OrderMode::Shuffled(7));
        assert_eq!(
            shuffled,
            order(&keys, OrderMode::Shuffled(7)),
            "same seed, same order"
        );
        let mut sorted = shuffled.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3]);
        let differs = (0..20u64).any(|seed| order(&keys, OrderMode::Shuffled(seed)) != shuffled);
        assert!(differs, "another seed gives another order");
    }

    #[test]
    fn plain_binaries_fill_idle_slots() {
        assert_eq!(plain_width(10, 2), 2);
        assert_eq!(plain_width(1, 2), 1);
        assert_eq!(plain_width(0, 2), 1);
        assert_eq!(plain_width(5, 1), 1);
    }

    #[test]
    fn long_tests_run_alone_while_the_rest_cannot_keep_the_width_busy_beside_them() {
        let ms = |list: &[u64]| -> Vec<std::time::Duration> {
            list.iter()
                .map(|&m| std::time::Duration::from_millis(m))
                .collect()
        };
        let floor = std::time::Duration::from_millis(100);
        // 600 of 1000 ms, then 300 of the 400 left; the 50s stay together.
        assert_eq!(long_tests(&ms(&[50, 600, 300, 50]), 2, floor, 4), [1, 2]);
        // Even tests keep the width busy together.
        assert!(long_tests(&ms(&[300, 300, 300, 300]), 2, floor, 4).is_empty());
        // Wider runs take more apart: at 4, each 300 is over a quarter of what is left.
        assert_eq!(
            long_tests(&ms(&[300, 300, 300, 100]), 4, floor, 4),
            [0, 1, 2]
        );
        assert!(long_tests(&ms(&[300, 300, 300, 100]), 2, floor, 4).is_empty());
        // Short tests never, at most `most`, and never the last one.
        assert!(long_tests(&ms(&[90, 5, 5]), 2, floor, 4).is_empty());
        assert_eq!(long_tests(&ms(&[800, 400, 200, 10]), 2, floor, 1), [0]);
        assert_eq!(long_tests(&ms(&[800, 400]), 2, floor, 4), [0]);
        assert!(long_tests(&ms(&[800]), 2, floor, 4).is_empty());
    }

    #[test]
    fn a_narrow_start_keeps_its_share() {
        // Width 2, one slot free: half of the tests, rounded up.
        assert_eq!(split_share(20, 1, 2), Some(10));
        assert_eq!(split_share(3, 1, 2), Some(2));
        assert_eq!(split_share(2, 1, 2), Some(1));
        // Width 4, a binary of 3 tests that got 1 slot: one test now, two wait.
        assert_eq!(split_share(3, 1, 3), Some(1));
        assert_eq!(split_share(9, 3, 4), Some(7));
        // Got what it wanted, a single test, nothing held: no split.
        assert_eq!(split_share(20, 2, 2), None);
        assert_eq!(split_share(1, 1, 1), None);
        assert_eq!(split_share(10, 0, 2), None);
        // By time: one long test first is a half on its own.
        let ms = std::time::Duration::from_millis;
        let times = [
            ms(900),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
            ms(100),
        ];
        assert_eq!(split_share_by_time(&times, 1, 2), Some(1));
        assert_eq!(split_share_by_time(&[ms(10); 20], 1, 2), Some(10));
        assert_eq!(split_share_by_time(&[ms(10); 20], 2, 2), None);
        assert_eq!(split_share_by_time(&[ms(10)], 1, 2), None);
    }

    #[test]
    fn runnable_tests_follow_ignore_flags() {
        let mut ignored = test("b", &[], 1);
        ignored.ignored = true;
        let tests = vec![test("a", &[], 1), ignored];
        assert_eq!(runnable(&tests, &[]).len(), 1);
        assert_eq!(runnable(&tests, &["--include-ignored".into()]).len(), 2);
        assert!(runs_ignored(&["--ignored".into()]));
    }

    #[test]
    fn harness_demand_counts_what_can_run_side_by_side() {
        let gpu = [
            test("g1", &["gpu"], 1),
            test("g2", &["gpu"], 1),
            test("g3", &["gpu"], 1),
        ];
        let refs: Vec<&ListedTest> = gpu.iter().collect();
        assert_eq!(
            harness_demand(&refs, 0, 4, |_| 1, None),
            1,
            "gpu serializes"
        );
        assert_eq!(harness_demand(&refs, 0, 4, |_| 2, None), 2);
        let light = [test("a", &[], 1), test("b", &[], 1)];
        let mut mixed: Vec<&ListedTest> = light.iter().collect();
        mixed.extend(gpu.iter());
        assert_eq!(harness_demand(&mixed, 0, 8, |_| 1, None), 3);
        assert_eq!(
            harness_demand(&mixed, 0, 2, |_| 1, None),
            2,
            "capped by the width"
        );
        assert_eq!(
            harness_demand(&[], 1, 2, |_| 1, None),
            1,
            "running tests count"
        );
        let wide = [test("w", &[], 8)];
        let refs: Vec<&ListedTest> = wide.iter().collect();
        assert_eq!(harness_demand(&refs, 0, 2, |_| 1, None), 2);
    }

    #[test]
    fn memory_reservations_count_as_far_as_they_fit() {
        let mib = 1u64 << 20;
        let mut tests = [
            test("a", &[], 1),
            test("b", &[], 1),
            test("c", &[], 1),
            test("d", &[], 1),
        ];
        for (test, mem) in tests.iter_mut().zip([600, 600, 300, 0]) {
            test.mem = (mem > 0).then_some(mem * mib);
        }
        let refs: Vec<&ListedTest> = tests.iter().collect();
        // 300 + 600 fit 1 GiB, the second 600 does not; `d` reserves nothing.
        assert_eq!(harness_demand(&refs, 0, 8, |_| 1, Some(1024 * mib)), 3);
        assert_eq!(harness_demand(&refs, 0, 8, |_| 1, Some(100 * mib)), 1);
        assert_eq!(
            harness_demand(&refs, 0, 8, |_| 1, None),
            4,
            "no budget: all"
        );
    }

    #[test]
    fn selections_run_exactly_the_names_with_the_runs_flags() {
        let args: Vec<String> = [
            "--exact",
            "needle",
            "--skip",
            "slow",
            "--skip=other",
            "--nocapture",
            "--include-ignored",
            "--color",
            "never",
            "--show-output",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let names = vec!["m::a".to_string(), "m::b".to_string()];
        assert_eq!(
            selection_args(&args, &names),
            [
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--color",
                "never",
                "--show-output",
                "m::a",
                "m::b"
            ]
        );
        assert_eq!(selection_args(&[], &names), ["--exact", "m::a", "m::b"]);
        let args: Vec<String> = ["--skip", "--nocapture", "-Z", "x", "--", "--list"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            selection_args(&args, &names),
            ["--exact", "-Z", "x", "m::a", "m::b"],
            "a skip filter that looks like a flag, and filters after `--`, are dropped"
        );
    }

    #[test]
    fn names_are_chunked_by_bytes() {
        let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let chunks = chunk_names(names.clone(), 9);
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert_eq!(chunks.concat(), names, "in order, nothing lost");
        assert!(
            chunks
                .iter()
                .all(|c| c.iter().map(|n| n.len() + 1).sum::<usize>() <= 9)
        );
        assert_eq!(chunk_names(names.clone(), SELECTION_CHUNK_BYTES).len(), 1);
        assert_eq!(chunk_names(vec!["a-very-long-name".into()], 4).len(), 1);
        assert!(chunk_names(Vec::new(), 10).is_empty());
    }
}
