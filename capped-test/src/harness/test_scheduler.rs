//! The harness's test scheduler: which pending test of this binary to start now (the
//! runner's `binary_schedule` decides which binaries run). Pure logic over job shapes and a
//! non-blocking "take everything or nothing" callback, so it is tested by simulation.
//!
//! # Algorithm
//!
//! The pending tests form one list in **priority order**: first tests that need more than
//! one local slot (`threads = N`, `serial`: they are hardest to fit once others run), then
//! tests on the most loaded groups (a group's *pressure* is how many selected tests need it
//! per slot of capacity: the length of the chain it serializes; a test's pressure is the sum
//! over its groups, plus its share of the memory budget), then the base order (by name, or
//! shuffled). With every test equal this is exactly the base order. Starting the long
//! serialized chains first is what brings the makespan close to the best schedule: while
//! `gpu` is busy the light tests fill every other slot, and the gpu chain is not left for
//! the end.
//!
//! Whenever a slot frees up (a test ends) or a poll tick passes, [`Scheduler::pick`] walks
//! the list and starts each test whose resources can **all be taken now** (the callback
//! never blocks; it covers cross-process slots too), until the local width is used up. A
//! test that cannot start stays pending; nothing is ever parked on a busy resource.
//!
//! **Anti-starvation.** A test is *passed over* when it is the first pending test of its
//! shape (same width, groups and memory) and cannot start while tests after it can; tests of
//! the same shape queued behind it just wait their turn. One passed over for longer than the
//! *starvation bound* (twice the longest test seen so far, clamped to 200 ms – 10 s) gets a
//! **reservation**: reserved tests are tried first, longest-waiting first, and while a
//! reserved test cannot start, no test that competes with it may start — one that shares a
//! group with it, or takes memory when it does, or any test at all when it needs more than
//! one local slot (so the width drains for it). So every resource it waits for is
//! eventually free at once, and it starts after a bounded wait (given that running tests
//! end).
//!
//! **Strict order** (deterministic mode): only the first pending test may start, so tests
//! run one at a time in the base order whatever is busy.
//!
//! # Invariants
//!
//! * The local slots in use never exceed the local width (each test counts its shape's
//!   width, `1..=width`); a started test's resources were all taken by the callback.
//! * A test is started at most once; every test is eventually picked (started or failed)
//!   as long as running tests end and other processes release their slots.
//! * In strict order tests start in the base order, one at a time when the width is 1.

use std::time::{Duration, Instant};

/// The lower bound of the starvation bound.
pub(crate) const MIN_STARVATION_BOUND: Duration = Duration::from_millis(200);
/// The upper bound of the starvation bound.
pub(crate) const MAX_STARVATION_BOUND: Duration = Duration::from_secs(10);

/// What the scheduler needs to know about a test's resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    /// Local slots it occupies: `threads` clamped to `1..=width`, the whole width if serial.
    pub width: u32,
    /// Its groups, sorted, without duplicates.
    pub groups: Vec<String>,
    /// Bytes of the memory budget it reserves (0: none).
    pub mem: u64,
}

impl Shape {
    /// Whether `self`, reserved and not startable, must keep `other` from starting.
    fn blocks(&self, other: &Shape) -> bool {
        self.width > 1
            || (self.mem > 0 && other.mem > 0)
            || self.groups.iter().any(|g| other.groups.contains(g))
    }
}

/// The priority order of `jobs` (indices into `shapes`), given in base order: more local
/// width first, then higher group pressure, then base order.
pub(crate) fn priority_order(
    shapes: &[Shape],
    base: &[usize],
    capacity: impl Fn(&str) -> u32,
    mem_budget: Option<u64>,
) -> Vec<usize> {
    let mut demand: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut mem_total = 0u64;
    for &job in base {
        for group in &shapes[job].groups {
            *demand.entry(group).or_default() += 1;
        }
        mem_total = mem_total.saturating_add(shapes[job].mem);
    }
    let pressure = |shape: &Shape| -> f64 {
        let groups: f64 = shape
            .groups
            .iter()
            .map(|g| f64::from(demand[g.as_str()]) / f64::from(capacity(g).max(1)))
            .sum();
        let mem = match mem_budget {
            Some(budget) if shape.mem > 0 && budget > 0 => mem_total as f64 / budget as f64,
            _ => 0.0,
        };
        groups + mem
    };
    let mut keyed: Vec<(u32, f64, usize, usize)> = base
        .iter()
        .enumerate()
        .map(|(pos, &job)| (shapes[job].width, pressure(&shapes[job]), pos, job))
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    keyed.into_iter().map(|(_, _, _, job)| job).collect()
}

/// What [`Scheduler::pick`] decided for one test.
#[derive(Debug)]
pub(crate) enum Picked<G, E> {
    /// Start it: its resources are held by `G`.
    Start(usize, G),
    /// Taking its resources failed with an error: report it failed.
    Fail(usize, E),
}

/// The scheduler's state. Times are passed in, so a simulation can drive it.
pub(crate) struct Scheduler {
    shapes: Vec<Shape>,
    /// Same id for tests with the same shape: when the first of a shape cannot start, the
    /// others cannot either (nothing frees up within one pick), so they are not tried.
    class: Vec<usize>,
    classes: usize,
    pending: Vec<usize>,
    /// Each test's position in the initial order (ties among reserved tests).
    rank: Vec<usize>,
    /// The pending tests that have been passed over (have a `waiting_since`).
    waiting: Vec<usize>,
    /// Since when a test has been passed over: the first test of its shape in the
    /// list could not start while tests after it could. Drives reservations.
    waiting_since: Vec<Option<Instant>>,
    /// Since when a test could have started but for its resources (also while queued
    /// behind a test of its shape): its wait, as reported.
    blocked_since: Vec<Option<Instant>>,
    width: u32,
    used: u32,
    strict: bool,
    longest: Duration,
}

impl Scheduler {
    /// A scheduler for `shapes`, to start in `order` (a permutation of some of the shape
    /// indices; see [`priority_order`]) with `width` local slots.
    pub fn new(shapes: Vec<Shape>, order: Vec<usize>, width: u32, strict: bool) -> Scheduler {
        let mut ids: std::collections::HashMap<&Shape, usize> = Default::default();
        let class = shapes
            .iter()
            .map(|shape| {
                let next = ids.len();
                *ids.entry(shape).or_insert(next)
            })
            .collect();
        let classes = ids.len();
        let waiting_since = vec![None; shapes.len()];
        let mut rank = vec![usize::MAX; shapes.len()];
        for (pos, &job) in order.iter().enumerate() {
            rank[job] = pos;
        }
        Scheduler {
            shapes,
            class,
            classes,
            pending: order,
            rank,
            waiting: Vec::new(),
            blocked_since: waiting_since.clone(),
            waiting_since,
            width: width.max(1),
            used: 0,
            strict,
            longest: Duration::ZERO,
        }
    }

    /// Tests not started yet, in priority order.
    pub fn pending(&self) -> &[usize] {
        &self.pending
    }

    /// Whether a local slot is free (so polling for other processes' slots makes sense).
    pub fn has_free_slot(&self) -> bool {
        self.used < self.width
    }

    /// How long a passed-over test waits before it gets a reservation.
    pub fn starvation_bound(&self) -> Duration {
        (self.longest * 2).clamp(MIN_STARVATION_BOUND, MAX_STARVATION_BOUND)
    }

    /// Since when `job` has waited for its resources, if it has.
    pub fn blocked_since(&self, job: usize) -> Option<Instant> {
        self.blocked_since[job]
    }

    /// Starts every test that can start now. `try_take(job, asked_at)` takes all of the
    /// test's resources or none, without blocking (`asked_at`: since when it has waited).
    pub fn pick<G, E>(
        &mut self,
        now: Instant,
        mut try_take: impl FnMut(usize, Instant) -> Result<Option<G>, E>,
    ) -> Vec<Picked<G, E>> {
        let mut picked = Vec::new();
        if self.used >= self.width || self.pending.is_empty() {
            return picked;
        }
        // Reserved tests first, longest-waiting first; then the list in order. Only the
        // passed-over tests are looked at to find the reserved ones, so a pick that starts
        // the first pending test costs O(1), not O(pending).
        let bound = self.starvation_bound();
        let mut reserved: Vec<usize> = Vec::new();
        if !self.strict {
            reserved.extend(self.waiting.iter().copied().filter(|&job| {
                self.waiting_since[job]
                    .is_some_and(|since| now.saturating_duration_since(since) >= bound)
            }));
            reserved.sort_by_key(|&job| (self.waiting_since[job], self.rank[job]));
        }
        let mut blocking: Vec<usize> = Vec::new();
        let mut class_stuck = vec![false; self.classes];
        // Whether the test left the list (started or failed).
        let mut visit = |this: &mut Scheduler, job: usize, is_reserved: bool| -> bool {
            let class = this.class[job];
            if class_stuck[class] {
                // Queued behind the first test of its shape, which cannot start now: it
                // waits its turn (it is not passed over).
                this.blocked_since[job].get_or_insert(now);
                return false;
            }
            let shape = &this.shapes[job];
            let may_try = !blocking.iter().any(|&r| this.shapes[r].blocks(shape))
                && this.width - this.used >= shape.width;
            if may_try {
                match try_take(job, this.blocked_since[job].unwrap_or(now)) {
                    Ok(Some(guard)) => {
                        this.used += shape.width;
                        picked.push(Picked::Start(job, guard));
                        return true;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        picked.push(Picked::Fail(job, e));
                        return true;
                    }
                }
            }
            // The first test of its shape cannot start now: it is passed over.
            class_stuck[class] = true;
            if this.waiting_since[job].is_none() {
                this.waiting_since[job] = Some(now);
                this.waiting.push(job);
            }
            this.blocked_since[job].get_or_insert(now);
            if is_reserved {
                blocking.push(job);
            }
            false
        };
        // Positions in `pending` of the tests that left it.
        let mut gone: Vec<usize> = Vec::new();
        for &job in &reserved {
            if self.used >= self.width {
                break;
            }
            if visit(self, job, true) {
                gone.extend(self.pending.iter().position(|&j| j == job));
                self.waiting.retain(|&j| j != job);
            }
        }
        let mut pos = 0;
        while pos < self.pending.len() && self.used < self.width {
            if self.strict && pos > 0 {
                break;
            }
            let job = self.pending[pos];
            if !reserved.contains(&job) && visit(self, job, false) {
                gone.push(pos);
                if self.waiting_since[job].is_some() {
                    self.waiting.retain(|&j| j != job);
                }
            }
            pos += 1;
        }
        gone.sort_unstable();
        for pos in gone.into_iter().rev() {
            self.pending.remove(pos);
        }
        picked
    }

    /// A started test ended after running for `took`: its local slots are free again.
    pub fn finished(&mut self, job: usize, took: Duration) {
        self.used -= self.shapes[job].width;
        self.longest = self.longest.max(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn shape(width: u32, groups: &[&str]) -> Shape {
        Shape {
            width,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            mem: 0,
        }
    }

    /// A discrete-event simulation: tests with fixed durations, groups with capacities,
    /// `width` local slots. Returns each test's (start, end) in ms.
    fn simulate(
        tests: &[(Shape, u64)],
        capacity: &BTreeMap<&str, u32>,
        width: u32,
        strict: bool,
        priority: bool,
    ) -> Vec<(u64, u64)> {
        let shapes: Vec<Shape> = tests.iter().map(|(s, _)| s.clone()).collect();
        let base: Vec<usize> = (0..tests.len()).collect();
        let order = if priority {
            priority_order(&shapes, &base, |g| capacity[g], None)
        } else {
            base
        };
        let scheduler = Scheduler::new(shapes, order, width, strict);
        simulate_with(tests, capacity, width, scheduler)
    }

    /// Runs `scheduler` over `tests` (shape, duration in ms) with group capacities and
    /// `width` local slots, checking the invariants at every event; returns each test's
    /// (start, end) in ms.
    fn simulate_with(
        tests: &[(Shape, u64)],
        capacity: &BTreeMap<&str, u32>,
        width: u32,
        mut scheduler: Scheduler,
    ) -> Vec<(u64, u64)> {
        let t0 = Instant::now();
        let mut now = 0u64;
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        let mut running: Vec<(u64, usize)> = Vec::new();
        let mut spans = vec![(u64::MAX, 0); tests.len()];
        loop {
            let picked = scheduler.pick(t0 + Duration::from_millis(now), |job, _| {
                let groups = &tests[job].0.groups;
                let free = groups
                    .iter()
                    .all(|g| held.get(g).copied().unwrap_or(0) < capacity[g.as_str()]);
                if !free {
                    return Ok::<_, ()>(None);
                }
                for g in groups {
                    *held.entry(g.clone()).or_default() += 1;
                }
                Ok(Some(()))
            });
            for p in picked {
                let Picked::Start(job, ()) = p else {
                    panic!("the simulated resources never fail")
                };
                assert_eq!(spans[job].0, u64::MAX, "started twice");
                spans[job].0 = now;
                running.push((now + tests[job].1, job));
            }
            let used: u32 = running.iter().map(|(_, j)| tests[*j].0.width).sum();
            assert!(used <= width, "local width exceeded at {now}ms");
            for (g, n) in &held {
                assert!(*n <= capacity[g.as_str()], "{g} over capacity at {now}ms");
            }
            if running.is_empty() {
                assert!(scheduler.pending().is_empty(), "stuck at {now}ms");
                return spans;
            }
            running.sort();
            let (end, job) = running.remove(0);
            now = end;
            spans[job].1 = end;
            for g in &tests[job].0.groups {
                *held.get_mut(g).unwrap() -= 1;
            }
            scheduler.finished(job, Duration::from_millis(tests[job].1));
        }
    }

    fn makespan(spans: &[(u64, u64)]) -> u64 {
        spans.iter().map(|s| s.1).max().unwrap_or(0)
    }

    #[test]
    fn a_mixed_suite_reaches_the_best_schedule() {
        let caps = BTreeMap::from([("gpu", 1)]);
        let gpu = (shape(1, &["gpu"]), 300);
        let light = (shape(1, &[]), 200);
        // Light tests first in name order: without priorities the gpu chain is left to
        // the end (1500 ms); with them the run takes the best 1100 ms.
        let mut tests = vec![light.clone(); 6];
        tests.extend(vec![gpu.clone(); 3]);
        assert_eq!(makespan(&simulate(&tests, &caps, 2, false, false)), 1500);
        let spans = simulate(&tests, &caps, 2, false, true);
        assert_eq!(makespan(&spans), 1100);
        // The gpu tests never overlap.
        let mut gpu_spans: Vec<_> = spans[6..].to_vec();
        gpu_spans.sort();
        assert!(gpu_spans.windows(2).all(|w| w[0].1 <= w[1].0));
        // In name order with gpu first it is the best schedule too.
        let mut tests = vec![gpu; 3];
        tests.extend(vec![light; 6]);
        assert_eq!(makespan(&simulate(&tests, &caps, 2, false, true)), 1100);
    }

    #[test]
    fn a_test_on_two_busy_groups_does_not_starve() {
        // `both` needs gpu and net; gpu and net tests alternate so that the two are never
        // free at once. Without reservations `both` would wait for one chain to end.
        let caps = BTreeMap::from([("gpu", 1), ("net", 1)]);
        let mut tests = vec![(shape(1, &["gpu", "net"]), 100)];
        tests.extend(vec![(shape(1, &["gpu"]), 300); 20]);
        tests.extend(vec![(shape(1, &["net"]), 200); 30]);
        // Base order, no priorities: the gpu and net chains start first.
        let shapes: Vec<Shape> = tests.iter().map(|t| t.0.clone()).collect();
        let mut order: Vec<usize> = (1..tests.len()).collect();
        order.push(0);
        let scheduler = Scheduler::new(shapes, order, 3, false);
        let spans = simulate_with(&tests, &caps, 3, scheduler);
        let both_start = spans[0].0;
        // Bound 200 ms at first, then 2 × the longest test: 600 ms; plus the running
        // chain tests (≤ 300 ms) must end.
        assert!(both_start <= 600 + 300 + 300, "started at {both_start}ms");
        assert!(
            both_start < 3000,
            "waited for a whole chain: {both_start}ms"
        );
    }

    #[test]
    fn a_serial_test_among_light_ones_gets_the_whole_width() {
        // One light test already runs when `serial` (the whole width of 2) is first
        // tried; the light tests behind it end at staggered times, so without a
        // reservation two slots would never be free at once.
        let caps = BTreeMap::new();
        let mut tests = vec![(shape(1, &[]), 150), (shape(2, &[]), 100)];
        tests.extend(vec![(shape(1, &[]), 100); 40]);
        let shapes: Vec<Shape> = tests.iter().map(|t| t.0.clone()).collect();
        let scheduler = Scheduler::new(shapes, (0..tests.len()).collect(), 2, false);
        let spans = simulate_with(&tests, &caps, 2, scheduler);
        let (start, end) = spans[1];
        assert!(start <= 700, "the serial test started at {start}ms");
        for (i, span) in spans.iter().enumerate() {
            if i != 1 {
                assert!(
                    span.1 <= start || span.0 >= end,
                    "{i} overlaps the serial test"
                );
            }
        }
    }

    #[test]
    fn priorities_put_wide_and_loaded_tests_first() {
        let shapes = vec![
            shape(1, &[]),
            shape(1, &["net"]),
            shape(1, &["gpu"]),
            shape(1, &["gpu"]),
            shape(2, &[]),
            shape(1, &["gpu", "net"]),
        ];
        let caps = BTreeMap::from([("gpu", 1), ("net", 2)]);
        let order = priority_order(&shapes, &[0, 1, 2, 3, 4, 5], |g| caps[g], None);
        // Width 2 first; then by pressure: gpu+net (3/1 + 2/2 = 4), gpu (3), net (1),
        // then the light one.
        assert_eq!(order, [4, 5, 2, 3, 1, 0]);
        // Equal tests keep the base order, whatever it is.
        let light = vec![shape(1, &[]); 4];
        assert_eq!(
            priority_order(&light, &[2, 0, 3, 1], |_| 1, None),
            [2, 0, 3, 1]
        );
    }

    #[test]
    fn strict_order_runs_one_test_at_a_time_in_order() {
        let caps = BTreeMap::from([("gpu", 1)]);
        let tests = vec![
            (shape(1, &[]), 50),
            (shape(1, &["gpu"]), 10),
            (shape(1, &[]), 30),
            (shape(1, &["gpu"]), 20),
        ];
        let shapes: Vec<Shape> = tests.iter().map(|t| t.0.clone()).collect();
        let scheduler = Scheduler::new(shapes, vec![3, 0, 2, 1], 1, true);
        let spans = simulate_with(&tests, &caps, 1, scheduler);
        assert_eq!(spans, [(20, 70), (100, 110), (70, 100), (0, 20)]);
    }

    #[test]
    fn a_failed_try_stands_for_its_whole_class() {
        let shapes = vec![shape(1, &["gpu"]); 3];
        let mut scheduler = Scheduler::new(shapes, vec![0, 1, 2], 4, false);
        let mut tries = 0;
        let picked = scheduler.pick(Instant::now(), |_, _| {
            tries += 1;
            Ok::<Option<()>, ()>(None)
        });
        assert!(picked.is_empty());
        assert_eq!(tries, 1);
        assert_eq!(scheduler.pending(), [0, 1, 2]);
        assert!(scheduler.waiting_since[0].is_some());
        assert!(scheduler.waiting_since[2].is_none());
        assert!(scheduler.blocked_since(2).is_some());
        let picked = scheduler.pick(Instant::now(), |job, _| {
            if job == 1 {
                Err("broken lock dir")
            } else {
                Ok(Some(()))
            }
        });
        assert!(matches!(picked[0], Picked::Start(0, ())));
        assert!(matches!(picked[1], Picked::Fail(1, "broken lock dir")));
        assert!(matches!(picked[2], Picked::Start(2, ())));
        assert!(scheduler.pending().is_empty());
    }
}
