//! Wait and hold times per resource, and percentiles over them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// P50/P95/P99/max of a set of durations (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Percentiles {
    /// Computes percentiles of `samples` (all zero when empty).
    pub fn of(samples: &[Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            count: sorted.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: *sorted.last().expect("non-empty"),
        }
    }
}

/// What this process recorded about one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceMetrics {
    /// Time from asking to holding, per acquisition.
    pub wait: Percentiles,
    /// Time held, per acquisition (released ones only).
    pub hold: Percentiles,
}

/// At most this many samples are kept per resource and kind: beyond it, reservoir
/// sampling keeps a uniform sample, so memory stays bounded in long-lived processes.
const RESERVOIR: usize = 10_000;

#[derive(Default)]
struct Reservoir {
    seen: u64,
    kept: Vec<Duration>,
}

impl Reservoir {
    fn push(&mut self, sample: Duration) {
        self.seen += 1;
        if self.kept.len() < RESERVOIR {
            self.kept.push(sample);
        } else {
            let slot = fastrand::u64(..self.seen) as usize;
            if slot < RESERVOIR {
                self.kept[slot] = sample;
            }
        }
    }
}

#[derive(Default)]
struct Samples {
    waits: Reservoir,
    holds: Reservoir,
}

static SAMPLES: Mutex<BTreeMap<String, Samples>> = Mutex::new(BTreeMap::new());

fn samples() -> std::sync::MutexGuard<'static, BTreeMap<String, Samples>> {
    SAMPLES.lock().unwrap_or_else(|poison| poison.into_inner())
}

pub(crate) fn record_wait(resource: &str, wait: Duration) {
    samples()
        .entry(resource.to_string())
        .or_default()
        .waits
        .push(wait);
}

pub(crate) fn record_hold(resource: &str, hold: Duration) {
    samples()
        .entry(resource.to_string())
        .or_default()
        .holds
        .push(hold);
}

/// Wait and hold percentiles per resource (`width`, group names, `mem`) recorded by this
/// process's acquisitions so far.
pub fn metrics() -> BTreeMap<String, ResourceMetrics> {
    samples()
        .iter()
        .map(|(name, s)| {
            let wait = Percentiles {
                count: s.waits.seen as usize,
                ..Percentiles::of(&s.waits.kept)
            };
            let hold = Percentiles {
                count: s.holds.seen as usize,
                ..Percentiles::of(&s.holds.kept)
            };
            (name.clone(), ResourceMetrics { wait, hold })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoirs_stay_bounded_and_count_everything() {
        let mut reservoir = Reservoir::default();
        for i in 0..(RESERVOIR as u64 * 3) {
            reservoir.push(Duration::from_nanos(i));
        }
        assert_eq!(reservoir.seen, RESERVOIR as u64 * 3);
        assert_eq!(reservoir.kept.len(), RESERVOIR);
        // A uniform sample of 0..30000: its median is near 15000, not stuck at the start.
        let median = Percentiles::of(&reservoir.kept).p50.as_nanos() as f64;
        assert!((10_000.0..20_000.0).contains(&median), "median {median}");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p95, Duration::from_millis(95));
        assert_eq!(p.p99, Duration::from_millis(99));
        assert_eq!(p.max, Duration::from_millis(100));
        let one = Percentiles::of(&[Duration::from_millis(7)]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7)
            )
        );
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }
}
