//! The closing figures: counts, slowest tests, per-resource waits and peak holders, and
//! the peak concurrency measured over every binary of the run.
//!
//! Concurrency is measured in width slots from two sources: the slots the runner held for
//! each plain libtest binary (its whole life), and the `width` slots of each harness test
//! (from its start and end events). Group holders come from the events of attribute and
//! harness tests and from the runner's own slots for binaries claimed by a group.

use std::collections::BTreeMap;
use std::time::Duration;

use capped_model::Percentiles;
use capped_model::protocol::Event;

use crate::events::{GroupStats, RunSummary, TestResult};

/// Slots held, by resource name (as in [`Event::Start`]).
type Slots = BTreeMap<String, Vec<u32>>;

/// An interval during which `weight` slots of `resource` were held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// `width` or a group name.
    pub resource: String,
    /// Unix micros.
    pub from_us: u64,
    /// Unix micros.
    pub to_us: u64,
    /// Slots.
    pub weight: u32,
}

/// Everything measured during the run, turned into a [`RunSummary`] at the end.
#[derive(Debug, Default)]
pub struct Measurements {
    /// Every interval a resource was held.
    pub holdings: Vec<Holding>,
    /// Waits per resource.
    pub waits: BTreeMap<String, Vec<Duration>>,
    /// How many of `waits` were the runner waiting to start a binary.
    pub binary_waits: BTreeMap<String, usize>,
}

impl Measurements {
    /// Records the events of one binary. `count_width`: whether its tests' `width` slots
    /// count (harness binaries) or the runner's slots for the binary already did (plain).
    /// A test started but never ended is held until `end_us`.
    /// Groups in `held_by_runner` are left out: the runner held them for the whole process
    /// and counted them itself, so a test's own (process-scoped) take is not a second
    /// holder.
    pub fn add_events(
        &mut self,
        events: &[Event],
        count_width: bool,
        end_us: u64,
        held_by_runner: &[String],
    ) {
        let mut open: BTreeMap<(&str, u32), (u64, &Slots)> = BTreeMap::new();
        for event in events {
            match event {
                Event::Start {
                    test,
                    pid,
                    at_us,
                    slots,
                    waits_us,
                } => {
                    open.insert((test.as_str(), *pid), (*at_us, slots));
                    for (resource, wait) in waits_us {
                        if (resource == capped_model::resource::WIDTH && !count_width)
                            || held_by_runner.contains(resource)
                        {
                            continue;
                        }
                        self.waits
                            .entry(resource.clone())
                            .or_default()
                            .push(Duration::from_micros(*wait));
                    }
                }
                Event::End {
                    test, pid, at_us, ..
                } => {
                    if let Some((from, slots)) = open.remove(&(test.as_str(), *pid)) {
                        self.hold(slots, from, *at_us, count_width, held_by_runner);
                    }
                }
            }
        }
        for (from, slots) in open.into_values() {
            self.hold(slots, from, end_us.max(from), count_width, held_by_runner);
        }
    }

    fn hold(
        &mut self,
        slots: &Slots,
        from: u64,
        to: u64,
        count_width: bool,
        held_by_runner: &[String],
    ) {
        for (resource, ids) in slots {
            if ids.is_empty()
                || (resource == capped_model::resource::WIDTH && !count_width)
                || held_by_runner.contains(resource)
            {
                continue;
            }
            self.holdings.push(Holding {
                resource: resource.clone(),
                from_us: from,
                to_us: to,
                weight: ids.len() as u32,
            });
        }
    }

    /// Records slots the runner held for a binary.
    pub fn add_binary(&mut self, resource: &str, from_us: u64, to_us: u64, weight: u32) {
        if weight > 0 {
            self.holdings.push(Holding {
                resource: resource.to_string(),
                from_us,
                to_us: to_us.max(from_us),
                weight,
            });
        }
    }

    /// Records a wait of the runner for a binary's resources.
    pub fn add_wait(&mut self, resource: &str, wait: Duration) {
        self.waits
            .entry(resource.to_string())
            .or_default()
            .push(wait);
        *self.binary_waits.entry(resource.to_string()).or_default() += 1;
    }

    /// The most slots of `resource` held at once.
    pub fn peak(&self, resource: &str) -> u32 {
        let mut points: Vec<(u64, i64)> = Vec::new();
        for holding in self.holdings.iter().filter(|h| h.resource == resource) {
            points.push((holding.from_us, i64::from(holding.weight)));
            points.push((holding.to_us, -i64::from(holding.weight)));
        }
        // Ends before starts at the same instant: touching intervals do not overlap.
        points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut now, mut peak) = (0i64, 0i64);
        for (_, delta) in points {
            now += delta;
            peak = peak.max(now);
        }
        peak as u32
    }

    /// The summary of a run whose results are `results`.
    pub fn summarize(&self, results: &[TestResult], duration: Duration) -> RunSummary {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for result in results {
            *counts.entry(result.status.keyword()).or_default() += 1;
        }
        let mut timed: Vec<(String, Duration)> = results
            .iter()
            .filter_map(|r| r.duration.map(|d| (format!("{} {}", r.binary, r.name), d)))
            .collect();
        timed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        timed.truncate(SLOWEST);
        let mut groups = BTreeMap::new();
        let mut resources: Vec<&str> = self.waits.keys().map(String::as_str).collect();
        resources.extend(self.holdings.iter().map(|h| h.resource.as_str()));
        resources.sort_unstable();
        resources.dedup();
        for resource in resources {
            let waits = self.waits.get(resource).map_or(&[][..], Vec::as_slice);
            groups.insert(
                resource.to_string(),
                GroupStats {
                    count: waits.len(),
                    wait: Percentiles::of(waits),
                    peak_holders: self.peak(resource),
                    binary_waits: self.binary_waits.get(resource).copied().unwrap_or(0),
                },
            );
        }
        RunSummary {
            counts,
            duration,
            slowest: timed,
            groups,
            peak_concurrency: self.peak(capped_model::resource::WIDTH),
            width_changes: Vec::new(),
            runner_peak_rss: runner_peak_rss(),
            binary_peak_rss: Vec::new(),
            junit_path: None,
            exit_code: 0,
        }
    }
}

/// How many of the slowest tests the summary names.
pub const SLOWEST: usize = 5;

/// This process's peak resident set size (`VmHWM`), in bytes.
pub fn runner_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BinaryId, TestStatus};
    use capped_model::protocol::Outcome;

    fn start(test: &str, at: u64, slots: &[(&str, &[u32])], wait: u64) -> Event {
        Event::Start {
            test: test.into(),
            pid: 1,
            at_us: at,
            slots: slots
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            waits_us: slots.iter().map(|(k, _)| (k.to_string(), wait)).collect(),
        }
    }

    fn end(test: &str, at: u64) -> Event {
        Event::End {
            test: test.into(),
            pid: 1,
            at_us: at,
            outcome: Outcome::Passed,
            duration_us: 0,
            message: None,
        }
    }

    #[test]
    fn peaks_across_binaries_and_events() {
        let mut m = Measurements::default();
        // A plain binary holding 1 width slot from 0 to 100.
        m.add_binary("width", 0, 100, 1);
        // A harness binary: a (0..50, gpu), b (50..80, gpu) touching, c (10..20) light.
        m.add_events(
            &[
                start("a", 0, &[("width", &[1]), ("gpu", &[0])], 5),
                start("c", 10, &[("width", &[2])], 0),
                end("c", 20),
                end("a", 50),
                start("b", 50, &[("width", &[1]), ("gpu", &[0])], 7),
                end("b", 80),
            ],
            true,
            200,
            &[],
        );
        assert_eq!(m.peak("width"), 3);
        assert_eq!(m.peak("gpu"), 1, "touching intervals do not overlap");
        let results = vec![TestResult {
            binary: BinaryId {
                package: "p".into(),
                target: "t".into(),
                kind: "test".into(),
            },
            name: "a".into(),
            status: TestStatus::Passed,
            duration: Some(Duration::from_millis(3)),
            output: String::new(),
        }];
        let summary = m.summarize(&results, Duration::from_secs(1));
        assert_eq!(summary.peak_concurrency, 3);
        assert_eq!(summary.counts["passed"], 1);
        assert_eq!(summary.groups["gpu"].count, 2);
        assert_eq!(summary.groups["gpu"].peak_holders, 1);
        assert_eq!(summary.slowest.len(), 1);
    }

    #[test]
    fn plain_binaries_do_not_count_their_tests_twice() {
        let mut m = Measurements::default();
        m.add_binary("width", 0, 100, 2);
        m.add_events(
            &[start("a", 0, &[("gpu", &[0])], 0), end("a", 10)],
            false,
            100,
            &[],
        );
        assert_eq!(m.peak("width"), 2);
        assert_eq!(m.peak("gpu"), 1);
    }

    #[test]
    fn unfinished_tests_hold_until_the_end() {
        let mut m = Measurements::default();
        m.add_events(&[start("hung", 5, &[("width", &[0])], 0)], true, 50, &[]);
        m.add_events(&[start("other", 40, &[("width", &[1])], 0)], true, 60, &[]);
        assert_eq!(m.peak("width"), 2);
    }

    #[test]
    fn reads_own_rss() {
        assert!(runner_peak_rss().unwrap() > 0);
    }
}
