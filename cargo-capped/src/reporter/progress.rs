//! What the progress display says: work done and in flight, not just a test count.
//!
//! A test count alone sits near zero while a few heavy tests run, so the display also shows
//! the binaries done, the tests running now with how long each has run (tests a binary
//! announces; a binary whose running tests are not known shows as itself), and an estimate
//! of the time left once some test durations are known.
//!
//! [`Progress`] is the state, fed the run's events with the time they arrived; rendering
//! takes the current time, so the reporter redraws live elapsed times on every tick
//! without an event. It knows nothing of terminals, so it is tested with fixed instants.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::events::{RunEvent, TestStatus};

/// Running entries shown at most; the others are counted (`+2 more`).
const SHOWN_RUNNING: usize = 3;
/// A running test's name is cut (from the front, keeping its last characters) to this many.
const NAME_CHARS: usize = 32;

/// One binary's progress.
#[derive(Debug, Default)]
struct BinaryProgress {
    /// Tests the run plans for it.
    expected: usize,
    /// Its tests finished so far.
    finished: usize,
    /// Its processes running now, and since when the oldest of them runs.
    running: usize,
    since: Option<Instant>,
    /// Whether one of its processes has ended.
    ended_once: bool,
}

impl BinaryProgress {
    /// Done: every planned test has a verdict and no process of it runs (a binary with no
    /// planned test is done once a process of it ended).
    fn done(&self) -> bool {
        self.running == 0
            && self.finished >= self.expected
            && (self.expected > 0 || self.ended_once)
    }
}

/// The progress of a run. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Progress {
    tests_total: usize,
    tests_done: usize,
    width: u32,
    binaries: BTreeMap<String, BinaryProgress>,
    /// Tests known to run now (binary, name), with when they started.
    running: BTreeMap<(String, String), Instant>,
    /// Sum and count of the durations of finished tests that ran (not ignored or not run).
    ran_total: Duration,
    ran_count: u32,
    /// What earlier runs say tests take, by `binary name` (see [`Progress::eta`]).
    learned: BTreeMap<String, Duration>,
    /// Tests with a verdict, by `binary name`, among those `learned` knows.
    learned_done: std::collections::HashSet<String>,
}

impl Progress {
    /// Takes the next event of the run, which arrived at `now`.
    pub fn event(&mut self, event: &RunEvent, now: Instant) {
        match event {
            RunEvent::RunStarted {
                tests,
                width,
                binary_tests,
                learned,
                ..
            } => {
                self.tests_total = *tests;
                self.width = *width;
                self.learned = learned.clone();
                for (binary, count) in binary_tests {
                    self.binaries
                        .entry(binary.to_string())
                        .or_default()
                        .expected += count;
                }
            }
            RunEvent::BinaryStarted { binary, .. } => {
                let entry = self.binaries.entry(binary.to_string()).or_default();
                entry.running += 1;
                entry.since.get_or_insert(now);
            }
            RunEvent::BinaryFinished { binary, .. } => {
                let entry = self.binaries.entry(binary.to_string()).or_default();
                entry.running = entry.running.saturating_sub(1);
                entry.ended_once = true;
                if entry.running == 0 {
                    entry.since = None;
                }
                // Tests it was running that never reported are over with it.
                let name = binary.to_string();
                self.running.retain(|(b, _), _| *b != name);
            }
            RunEvent::TestStarted { binary, name } => {
                self.running.insert((binary.to_string(), name.clone()), now);
            }
            RunEvent::TestFinished(result) => {
                let binary = result.binary.to_string();
                let key = format!("{binary} {}", result.name);
                if self.learned.contains_key(&key) {
                    self.learned_done.insert(key);
                }
                self.tests_done += 1;
                self.binaries.entry(binary.clone()).or_default().finished += 1;
                self.running.remove(&(binary, result.name.clone()));
                let ran = !matches!(
                    result.status,
                    TestStatus::Ignored | TestStatus::NotRun { .. }
                );
                if let (true, Some(duration)) = (ran, result.duration) {
                    self.ran_total += duration;
                    self.ran_count += 1;
                }
            }
            _ => {}
        }
    }

    /// Tests with a verdict so far, and how many the run has.
    pub fn tests(&self) -> (usize, usize) {
        (self.tests_done, self.tests_total.max(self.tests_done))
    }

    /// Binaries done, and how many the run has.
    pub fn binaries(&self) -> (usize, usize) {
        let done = self.binaries.values().filter(|b| b.done()).count();
        (done, self.binaries.len())
    }

    /// The time left, once a finished test's duration is known.
    ///
    /// Method: the mean duration of the finished tests that ran × the tests still without a
    /// verdict ÷ the width the run started at (that many tests run at once). It knows
    /// nothing of which tests are heavy, so it is rough while few tests have finished and
    /// when durations differ widely; it never counts ignored tests, which take no time.
    ///
    /// With a test history: what earlier runs say the tests still without a verdict take
    /// (their median; a test it does not know counts as the mean of this run's finished
    /// tests, else the median of those it knows) ÷ the width. That sees heavy tests coming.
    pub fn eta(&self) -> Option<Duration> {
        let (done, total) = self.tests();
        if !self.learned.is_empty() {
            let known_left: Vec<Duration> = self
                .learned
                .iter()
                .filter(|(key, _)| !self.learned_done.contains(*key))
                .map(|(_, d)| *d)
                .collect();
            let mut all: Vec<Duration> = self.learned.values().copied().collect();
            all.sort();
            let prior = if self.ran_count > 0 {
                self.ran_total / self.ran_count
            } else {
                all[all.len() / 2]
            };
            let unknown_left = (total - done).saturating_sub(known_left.len()) as u32;
            let left: Duration = known_left.iter().sum::<Duration>() + prior * unknown_left;
            return Some(left / self.width.max(1));
        }
        if self.ran_count == 0 {
            return None;
        }
        let remaining = (total - done) as u32;
        let mean = self.ran_total / self.ran_count;
        Some(mean * remaining / self.width.max(1))
    }

    /// What runs now, longest-running first: known tests (`name 3.2s`), then binaries
    /// running with no known test (`binary 10.0s`); at most three, then
    /// `+N more`.
    pub fn running_line(&self, now: Instant) -> String {
        let mut entries: Vec<(Duration, String)> = self
            .running
            .iter()
            .map(|((_, name), since)| (now.saturating_duration_since(*since), shorten(name)))
            .collect();
        for (binary, progress) in &self.binaries {
            let Some(since) = progress.since else {
                continue;
            };
            if progress.running > 0 && !self.running.keys().any(|(b, _)| b == binary) {
                entries.push((now.saturating_duration_since(since), shorten(binary)));
            }
        }
        entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let more = entries.len().saturating_sub(SHOWN_RUNNING);
        let mut parts: Vec<String> = entries
            .iter()
            .take(SHOWN_RUNNING)
            .map(|(elapsed, name)| format!("{name} {:.1}s", elapsed.as_secs_f64()))
            .collect();
        if more > 0 {
            parts.push(format!("+{more} more"));
        }
        parts.join(", ")
    }

    /// The text after the bar: `3/5 tests, 1/2 binaries, ETA 1m 05s, running: a 3.2s, b
    /// 1.0s`.
    pub fn render(&self, now: Instant) -> String {
        let (done, total) = self.tests();
        let (bins_done, bins) = self.binaries();
        let mut line = format!("{done}/{total} tests, {bins_done}/{bins} binaries");
        if let Some(eta) = self.eta() {
            line.push_str(&format!(", ETA {}", clock(eta)));
        }
        let running = self.running_line(now);
        if !running.is_empty() {
            line.push_str(", running: ");
            line.push_str(&running);
        }
        line
    }
}

/// `name` cut to its last [`NAME_CHARS`] characters, marked with `…`.
fn shorten(name: &str) -> String {
    let count = name.chars().count();
    if count <= NAME_CHARS {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (NAME_CHARS - 1)).collect();
    format!("…{tail}")
}

/// `<1s`, `45s`, `3m 05s`, `1h 02m`.
fn clock(duration: Duration) -> String {
    if duration < Duration::from_millis(500) {
        return "<1s".into();
    }
    let secs = duration.as_secs() + u64::from(duration.subsec_millis() >= 500);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BinaryId, TestResult};

    fn id(target: &str) -> BinaryId {
        BinaryId {
            package: "p".into(),
            target: target.into(),
            kind: "test".into(),
        }
    }

    fn started(tests: usize, width: u32, binary_tests: Vec<(BinaryId, usize)>) -> RunEvent {
        RunEvent::RunStarted {
            profile: "t2".into(),
            width,
            requested_width: width,
            explicit_width: false,
            degraded_because: None,
            rayon_threads: 2,
            seed: 1,
            deterministic: false,
            shuffle: false,
            binaries: binary_tests.len(),
            tests,
            binary_tests,
            learned: BTreeMap::new(),
            at: std::time::SystemTime::UNIX_EPOCH,
            reproduce: crate::plan::reproduce::ReproduceBase {
                seed_origin: capped_model::SeedOrigin::Deterministic,
                before: Vec::new(),
                test_flags: Vec::new(),
            },
        }
    }

    fn binary_started(binary: BinaryId) -> RunEvent {
        RunEvent::BinaryStarted {
            binary,
            pid: 1,
            width_slots: 1,
            groups: Vec::new(),
        }
    }

    fn binary_finished(binary: BinaryId) -> RunEvent {
        RunEvent::BinaryFinished {
            binary,
            exit_code: Some(0),
            signal: None,
            killed_because: None,
            duration: Duration::ZERO,
            peak_rss: None,
            stray_output: String::new(),
        }
    }

    fn finished(binary: BinaryId, name: &str, status: TestStatus, secs: Option<u64>) -> RunEvent {
        RunEvent::TestFinished(TestResult {
            binary,
            name: name.into(),
            status,
            duration: secs.map(Duration::from_secs),
            output: String::new(),
        })
    }

    #[test]
    fn counts_binaries_and_tests_done_and_shows_running_tests_with_elapsed_time() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut progress = Progress::default();
        progress.event(&started(5, 2, vec![(id("a"), 2), (id("b"), 3)]), at(0));
        assert_eq!(progress.render(at(0)), "0/5 tests, 0/2 binaries");
        progress.event(&binary_started(id("a")), at(0));
        progress.event(&binary_started(id("b")), at(1));
        // Binaries with no announced test show as themselves.
        assert_eq!(progress.running_line(at(3)), "p::a 3.0s, p::b 2.0s");
        progress.event(
            &RunEvent::TestStarted {
                binary: id("b"),
                name: "heavy::crossval".into(),
            },
            at(2),
        );
        progress.event(&finished(id("a"), "x", TestStatus::Passed, Some(4)), at(4));
        progress.event(&finished(id("a"), "y", TestStatus::Ignored, Some(0)), at(4));
        // a has both verdicts but its process still runs: not done yet.
        assert_eq!(progress.binaries(), (0, 2));
        progress.event(&binary_finished(id("a")), at(4));
        assert_eq!(progress.binaries(), (1, 2));
        assert_eq!(progress.tests(), (2, 5));
        // Mean of the tests that ran (4s; the ignored one is left out) × 3 left ÷ width 2.
        assert_eq!(progress.eta(), Some(Duration::from_secs(6)));
        assert_eq!(
            progress.render(at(12)),
            "2/5 tests, 1/2 binaries, ETA 6s, running: heavy::crossval 10.0s"
        );
        for (n, name) in ["c", "d"].iter().enumerate() {
            progress.event(
                &RunEvent::TestStarted {
                    binary: id("b"),
                    name: name.to_string(),
                },
                at(13 + n as u64),
            );
        }
        progress.event(
            &RunEvent::TestStarted {
                binary: id("b"),
                name: "e".into(),
            },
            at(15),
        );
        assert_eq!(
            progress.running_line(at(16)),
            "heavy::crossval 14.0s, c 3.0s, d 2.0s, +1 more"
        );
        progress.event(&binary_finished(id("b")), at(20));
        assert_eq!(progress.running_line(at(20)), "", "its tests ended with it");
    }

    #[test]
    fn with_a_history_the_eta_sees_the_heavy_tests_coming() {
        let binary = id("t");
        let mut progress = Progress::default();
        let now = Instant::now();
        let mut started = started(4, 2, vec![(binary.clone(), 4)]);
        if let RunEvent::RunStarted { learned, .. } = &mut started {
            learned.insert("p::t heavy".into(), Duration::from_secs(30));
            learned.insert("p::t light".into(), Duration::from_secs(2));
            learned.insert("p::t other".into(), Duration::from_secs(2));
        }
        progress.event(&started, now);
        // Before anything finished: (30 + 2 + 2 + one unknown at the median 2) / 2.
        assert_eq!(progress.eta(), Some(Duration::from_secs(18)));
        progress.event(
            &RunEvent::TestFinished(TestResult {
                binary: binary.clone(),
                name: "heavy".into(),
                status: TestStatus::Passed,
                duration: Some(Duration::from_secs(28)),
                output: String::new(),
            }),
            now,
        );
        // The heavy one is done: (2 + 2 + one unknown at this run's mean, 28) / 2.
        assert_eq!(progress.eta(), Some(Duration::from_secs(16)));
    }

    #[test]
    fn no_eta_before_a_duration_is_known_and_none_left_at_the_end() {
        let t0 = Instant::now();
        let mut progress = Progress::default();
        progress.event(&started(2, 1, vec![(id("a"), 2)]), t0);
        progress.event(&finished(id("a"), "x", TestStatus::Passed, None), t0);
        assert_eq!(progress.eta(), None, "no duration known");
        progress.event(
            &finished(
                id("a"),
                "y",
                TestStatus::NotRun {
                    reason: "binary crashed".into(),
                },
                Some(9),
            ),
            t0,
        );
        assert_eq!(progress.eta(), None, "a test that did not run says nothing");
        let mut progress = Progress::default();
        progress.event(&started(2, 1, vec![(id("a"), 2)]), t0);
        progress.event(&finished(id("a"), "x", TestStatus::Passed, Some(3)), t0);
        assert_eq!(progress.eta(), Some(Duration::from_secs(3)));
        progress.event(&finished(id("a"), "y", TestStatus::Failed, Some(5)), t0);
        assert_eq!(progress.eta(), Some(Duration::ZERO));
    }

    #[test]
    fn clock_and_names_are_short() {
        assert_eq!(clock(Duration::from_millis(44_600)), "45s");
        assert_eq!(clock(Duration::from_millis(36)), "<1s");
        assert_eq!(clock(Duration::from_secs(185)), "3m 05s");
        assert_eq!(clock(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(shorten("short"), "short");
        let long = "module::submodule::a_rather_long_test_name_indeed";
        let short = shorten(long);
        assert_eq!(short.chars().count(), NAME_CHARS);
        assert!(
            short.starts_with('…') && long.ends_with(&short[3..]),
            "{short}"
        );
    }
}
