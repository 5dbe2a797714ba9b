//! The run's intake: binaries' listings as they arrive, turned into units, and the run's
//! opening events once the last one is in.
//!
//! Listing costs a process start or two per binary, which on a workspace of many binaries
//! adds up to a visible pause before the first test. When the order binaries will start
//! in is known before any is listed, they are listed in that order and each may start as
//! soon as it and every binary before it are listed, while the rest are still being
//! listed ("early" binaries). The order is known beforehand:
//!
//! * in deterministic mode, where it is by name;
//! * with a test history that knows some of the binaries, where it is longest work first
//!   (claimed binaries first, then by what the history says their tests take, a binary it
//!   does not know counted at the median of those it does), as the final order is.
//!
//! Otherwise (no history, `--shuffle`, `--partition`, whose shards may depend on every
//! test, or `--no-capture`) every binary is listed before any starts, as before.
//!
//! Once every listing is in, the units of the rest are made, the order is decided over all
//! of them ([`binary_schedule::order`]), and the run's first event goes out
//! ([`RunEvent::RunStarted`], which counts every test). What early binaries reported
//! before that is held and sent right after it, in order; live output lines beyond
//! [`HELD_LINES`] are counted instead of held, and a notice says how many.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, SystemTime};

use super::binary_schedule::{self, OrderKey, OrderMode};
use super::child::Wake;
use super::hooks::WidthDecision;
use super::runner::Runner;
use super::work::{self, PartitionCount};
use crate::build::TestBinary;
use crate::events::{BinaryId, RunEvent};
use crate::history::History;
use crate::libtest::Listing;

/// The most live output lines (`--no-capture`) held while the first binaries run before
/// the last listing is in.
pub(super) const HELD_LINES: usize = 10_000;

/// Where listing workers leave each binary's listing for the run loop.
pub(super) struct ListingFeed {
    inner: Mutex<Feed>,
    wake: SyncSender<Wake>,
    /// Set when the run stops (`--fail-fast`, Ctrl-C): the listings still going end at
    /// once ([`super::list::ListArgs::stop`]).
    stop: AtomicBool,
}

/// What the listing workers left, under the feed's lock.
#[derive(Default)]
struct Feed {
    /// Listings not taken by the loop yet.
    arrived: Vec<(usize, Result<Listing, String>)>,
    /// Which binaries have their listing (taken or not).
    answered: Vec<bool>,
}

impl ListingFeed {
    /// A feed for `count` binaries that wakes the loop through `wake`.
    pub(super) fn new(count: usize, wake: SyncSender<Wake>) -> ListingFeed {
        ListingFeed {
            inner: Mutex::new(Feed {
                arrived: Vec::new(),
                answered: vec![false; count],
            }),
            wake,
            stop: AtomicBool::new(false),
        }
    }

    /// The flag that ends the listings still going when set.
    pub(super) fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// The feed, locked; a poisoned lock is fine, as nothing done under it panics halfway.
    fn lock(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves binary `index`'s listing and wakes the loop (a second one for the same
    /// binary is dropped). Never blocks: when the loop's queue is full the loop is busy,
    /// and it looks at the feed on every turn anyway.
    pub(super) fn put(&self, index: usize, listing: Result<Listing, String>) {
        {
            let mut feed = self.lock();
            match feed.answered.get_mut(index) {
                Some(answered) if !*answered => *answered = true,
                _ => return,
            }
            feed.arrived.push((index, listing));
        }
        let _ = self.wake.try_send(Wake::Listed);
    }

    /// Fails every binary still without a listing with `why`: the listing threads ended
    /// without answering for them, and the run must not wait for them forever.
    pub(super) fn fail_unanswered(&self, why: &str) {
        let unanswered: Vec<usize> = {
            let feed = self.lock();
            (0..feed.answered.len())
                .filter(|&i| !feed.answered[i])
                .collect()
        };
        for index in unanswered {
            self.put(index, Err(why.to_string()));
        }
    }

    fn take(&self) -> Vec<(usize, Result<Listing, String>)> {
        std::mem::take(&mut self.lock().arrived)
    }
}

/// What the run says first, once every binary is listed.
pub(super) struct Opening {
    /// When the run began (before the first listing).
    pub(super) started_at: SystemTime,
    /// The width decision before the first binary.
    pub(super) start_width: WidthDecision,
    /// The width the run started at.
    pub(super) width: u32,
    /// The hooks' and the build's notices.
    pub(super) notices: Vec<String>,
    /// Why the test history could not be read.
    pub(super) history_warning: Option<String>,
}

/// Binaries waiting for their listings, and what the run's opening will count.
pub(super) struct Intake<'a> {
    feed: &'a ListingFeed,
    /// The built binaries, each taken when its units are made.
    binaries: Vec<Option<TestBinary>>,
    listed: Vec<Option<Result<Listing, String>>>,
    /// Listings not in yet.
    waiting: usize,
    /// The order binaries are listed in (and, when `early`, may start in).
    predicted: Vec<usize>,
    /// How many of `predicted` have their units (when `early`).
    absorbed: usize,
    early: bool,
    history: Option<&'a History>,
    mode: OrderMode,
    partitioned: PartitionCount,
    /// Tests per binary as listed (skipped ones included), for the opening's counts.
    tests: BTreeMap<BinaryId, usize>,
    /// Binaries that have units.
    with_units: BTreeSet<BinaryId>,
    opening: Opening,
}

impl<'a> Intake<'a> {
    /// An intake of `binaries`, ordered by `mode` and `history`; `early` when the run may
    /// start binaries before every one is listed (see the [module docs](self)).
    pub(super) fn new(
        feed: &'a ListingFeed,
        binaries: Vec<TestBinary>,
        claimed: impl Fn(&TestBinary) -> bool,
        history: Option<&'a History>,
        mode: OrderMode,
        may_start_early: bool,
        opening: Opening,
    ) -> Intake<'a> {
        let (predicted, known) = predicted_order(&binaries, &claimed, history, mode);
        let early = may_start_early
            && match mode {
                OrderMode::Sorted => true,
                OrderMode::Heuristic => known,
                OrderMode::Shuffled(_) => false,
            };
        Intake {
            feed,
            waiting: binaries.len(),
            listed: binaries.iter().map(|_| None).collect(),
            binaries: binaries.into_iter().map(Some).collect(),
            predicted,
            absorbed: 0,
            early,
            history,
            mode,
            partitioned: PartitionCount::default(),
            tests: BTreeMap::new(),
            with_units: BTreeSet::new(),
            opening,
        }
    }

    /// The order to list binaries in (indices of the binaries given to [`Intake::new`]).
    pub(super) fn listing_order(&self) -> &[usize] {
        &self.predicted
    }
}

/// The order binaries will start in, as far as it is known before they are listed (see
/// the [module docs](self)), and whether the history knew any of them (a heuristic order
/// without it is by test counts, which only listings tell).
fn predicted_order(
    binaries: &[TestBinary],
    claimed: &dyn Fn(&TestBinary) -> bool,
    history: Option<&History>,
    mode: OrderMode,
) -> (Vec<usize>, bool) {
    let work: Vec<Option<Duration>> = binaries
        .iter()
        .map(|b| history.and_then(|h| h.binary_work(&b.id)))
        .collect();
    let known = work.iter().any(Option::is_some);
    let keys: Vec<OrderKey<'_>> = binaries
        .iter()
        .zip(&work)
        .map(|(binary, expected)| OrderKey {
            id: &binary.id,
            claimed: claimed(binary),
            runnable: 0,
            expected: *expected,
        })
        .collect();
    let mode = match mode {
        OrderMode::Heuristic if known => OrderMode::Heuristic,
        _ => OrderMode::Sorted,
    };
    (binary_schedule::order(&keys, mode), known)
}

impl<'a> Runner<'a> {
    /// Takes the listings that arrived: makes the units of early binaries whose turn it is,
    /// and once every listing is in, the rest and the run's opening.
    pub(super) fn take_listings(&mut self) {
        let Some(mut intake) = self.intake.take() else {
            return;
        };
        // Stopped (`--fail-fast`, Ctrl-C): what is still being listed will not run.
        if self.stopping() {
            intake.feed.stop.store(true, Ordering::SeqCst);
        }
        for (index, listing) in intake.feed.take() {
            if let Some(slot) = intake.listed.get_mut(index)
                && slot.is_none()
            {
                *slot = Some(listing);
                intake.waiting -= 1;
            }
        }
        if intake.early {
            while let Some(&binary) = intake.predicted.get(intake.absorbed)
                && intake.listed[binary].is_some()
            {
                self.absorb(&mut intake, binary, None);
                intake.absorbed += 1;
            }
        }
        if intake.waiting == 0 {
            self.open(intake);
        } else {
            self.intake = Some(intake);
        }
    }

    /// Whether some binary is still being listed.
    pub(super) fn listing(&self) -> bool {
        self.intake.is_some()
    }

    /// Makes binary `index`'s units (with the run's partition `selector`), settles the
    /// tests skipped before they run and reports a failed listing. Early units join the
    /// order at once, the others when the order is decided.
    fn absorb(
        &mut self,
        intake: &mut Intake<'a>,
        index: usize,
        selector: Option<&crate::plan::partition::Selector>,
    ) {
        let (Some(binary), Some(listing)) =
            (intake.binaries[index].take(), intake.listed[index].take())
        else {
            return;
        };
        let id = binary.id.clone();
        self.listed_at.insert(id.clone(), std::time::Instant::now());
        let first = self.units.len();
        let skipped = work::add_units(
            self.plan,
            binary,
            listing,
            selector,
            &self.run_dir,
            &mut self.units,
            &mut intake.partitioned,
        );
        let made = first..self.units.len();
        for unit in made.clone() {
            intake.with_units.insert(id.clone());
            *intake.tests.entry(id.clone()).or_default() += self.units[unit].listing.tests.len();
            if let Some(history) = intake.history {
                for test in &self.units[unit].listing.tests {
                    if let Some(median) = history.test(&id, &test.name).and_then(|e| e.median()) {
                        self.learned_times
                            .insert(History::test_key(&id, &test.name), median);
                    }
                }
            }
        }
        // Long tests run alone, once the history has been read into `learned_times`.
        let mut parts: Vec<usize> = made.clone().collect();
        for unit in made {
            parts.extend(self.split_long_tests(unit));
        }
        if intake.early {
            // Longest first, as the order decided at the opening will have them.
            parts.sort_by_key(|&unit| std::cmp::Reverse(self.learned_work_of(unit)));
            self.order.extend(parts);
        }
        *intake.tests.entry(id).or_default() += skipped.len();
        for result in skipped {
            self.finish_test(result);
        }
        self.report_list_errors(first);
    }

    /// Every listing is in: the remaining units, the order over all of them, then the
    /// run's opening events and what early binaries reported meanwhile.
    fn open(&mut self, mut intake: Intake<'a>) {
        let selector = work::selector(
            self.plan,
            intake
                .binaries
                .iter()
                .zip(&intake.listed)
                .filter_map(|(binary, listing)| Some((binary.as_ref()?, listing.as_ref()?))),
            intake.history,
        );
        let rest: Vec<usize> = if intake.early {
            intake.predicted[intake.absorbed..].to_vec()
        } else {
            (0..intake.binaries.len()).collect()
        };
        for index in rest {
            self.absorb(&mut intake, index, selector.as_ref());
        }
        let deterministic = self.plan.caps.deterministic();
        let keys: Vec<OrderKey<'_>> = self
            .units
            .iter()
            .enumerate()
            .map(|(index, u)| OrderKey {
                id: &u.binary.id,
                claimed: !u.claimed.is_empty(),
                runnable: u.runnable,
                expected: (!deterministic)
                    .then(|| self.learned_work_of(index))
                    .flatten(),
            })
            .collect();
        self.order = binary_schedule::order(&keys, intake.mode);
        // Retries queued before the opening keep their place at the front.
        self.order.sort_by_key(|&unit| !self.units[unit].retry);
        let held = self.held.take().unwrap_or_default();
        let Opening {
            started_at,
            start_width,
            width,
            notices,
            history_warning,
        } = intake.opening;
        let requested = self.plan.caps.test_threads();
        self.emit(RunEvent::RunStarted {
            profile: self.plan.profile.clone(),
            width,
            requested_width: requested,
            explicit_width: self.plan.options.test_threads.is_some(),
            degraded_because: start_width.why.clone().filter(|_| width < requested),
            rayon_threads: self.plan.caps.rayon_threads(),
            seed: self.plan.caps.seed(),
            deterministic,
            shuffle: self.plan.caps.shuffle(),
            binaries: intake.with_units.len(),
            tests: intake.tests.values().sum(),
            binary_tests: intake.tests.into_iter().collect(),
            learned: self.learned_times.clone(),
            at: started_at,
            reproduce: self.reproduce.clone(),
        });
        for message in notices {
            self.emit(RunEvent::Notice { message });
        }
        while let Some(message) = self.hooks.notice() {
            self.emit(RunEvent::Notice { message });
        }
        // A lowered start width is on the header line (`degraded_because`), not a notice.
        if width == requested
            && let Some(message) = start_width.notice
        {
            self.emit(RunEvent::Notice { message });
        }
        if let Some(partition) = &self.plan.partition {
            let counted = &intake.partitioned;
            self.emit(RunEvent::Notice {
                message: format!(
                    "partition {partition}: running {} of {} tests; the other {} belong to other partitions and are not counted",
                    counted.kept,
                    counted.kept + counted.left,
                    counted.left
                ),
            });
        }
        if let Some(message) = history_warning {
            self.emit(RunEvent::Notice { message });
        }
        for event in held.events {
            self.emit(event);
        }
        if held.dropped_lines > 0 {
            self.emit(RunEvent::Notice {
                message: format!(
                    "{} lines of live output printed before every binary was listed were not shown (only the first {HELD_LINES} are kept)",
                    held.dropped_lines
                ),
            });
        }
    }
}

/// What the run reported before its opening: sent right after it.
#[derive(Default)]
pub(super) struct Held {
    events: Vec<RunEvent>,
    lines: usize,
    dropped_lines: usize,
}

impl Held {
    /// Holds `event`; a live output line past [`HELD_LINES`] is only counted.
    pub(super) fn push(&mut self, event: RunEvent) {
        if matches!(event, RunEvent::TestOutput { .. }) {
            if self.lines >= HELD_LINES {
                self.dropped_lines += 1;
                return;
            }
            self.lines += 1;
        }
        self.events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(target: &str) -> TestBinary {
        TestBinary {
            id: BinaryId {
                package: "p".into(),
                target: target.into(),
                kind: "test".into(),
            },
            path: format!("/bin/{target}").into(),
            args: Vec::new(),
            package: Default::default(),
            build_env: Vec::new(),
            native_dirs: Vec::new(),
        }
    }

    fn history(work: &[(&str, u64)]) -> History {
        let results: Vec<crate::events::TestResult> = work
            .iter()
            .map(|(target, ms)| crate::events::TestResult {
                binary: binary(target).id,
                name: "t".into(),
                status: crate::events::TestStatus::Passed,
                duration: Some(Duration::from_millis(*ms)),
                output: String::new(),
            })
            .collect();
        let mut history = History::default();
        history.add(&results, &[], 1);
        history
    }

    #[test]
    fn the_predicted_order_is_the_final_orders_rule_before_listing() {
        let binaries = [binary("a"), binary("b"), binary("c"), binary("x")];
        let none = |_: &TestBinary| false;
        // By name when nothing is known, and in deterministic runs.
        let (order, known) = predicted_order(&binaries, &none, None, OrderMode::Heuristic);
        assert_eq!((order, known), (vec![0, 1, 2, 3], false));
        let learned = history(&[("a", 10), ("b", 300), ("c", 50)]);
        let (order, _) = predicted_order(&binaries, &none, Some(&learned), OrderMode::Sorted);
        assert_eq!(order, [0, 1, 2, 3]);
        // Longest first; `x`, unknown, at the median of the known (50 ms), after `c` by name.
        let (order, known) =
            predicted_order(&binaries, &none, Some(&learned), OrderMode::Heuristic);
        assert_eq!((order, known), (vec![1, 2, 3, 0], true));
        // A claimed binary first, whatever its length.
        let claimed = |b: &TestBinary| b.id.target == "a";
        let (order, _) = predicted_order(&binaries, &claimed, Some(&learned), OrderMode::Heuristic);
        assert_eq!(order, [0, 1, 2, 3]);
    }

    #[test]
    fn every_binary_gets_one_answer_and_a_full_queue_never_blocks() {
        // A queue of one, never read: puts must not block on it.
        let (wake, _receiver) = std::sync::mpsc::sync_channel(1);
        let feed = ListingFeed::new(3, wake);
        feed.put(1, Err("first".into()));
        feed.put(1, Err("second".into()));
        feed.put(7, Err("no such binary".into()));
        let taken = feed.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.as_ref().unwrap_err(), "first");
        feed.fail_unanswered("gone");
        let mut rest: Vec<usize> = feed.take().into_iter().map(|(i, _)| i).collect();
        rest.sort();
        assert_eq!(rest, [0, 2]);
        feed.fail_unanswered("again");
        assert!(feed.take().is_empty());
    }

    #[test]
    fn held_output_lines_are_bounded_and_counted() {
        let mut held = Held::default();
        let line = |n: usize| RunEvent::TestOutput {
            binary: binary("a").id,
            test: None,
            stderr: false,
            line: n.to_string(),
        };
        for n in 0..HELD_LINES + 5 {
            held.push(line(n));
        }
        held.push(RunEvent::Notice {
            message: "kept".into(),
        });
        assert_eq!(held.events.len(), HELD_LINES + 1);
        assert_eq!(held.dropped_lines, 5);
    }
}
