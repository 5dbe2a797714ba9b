//! `--partition hash:K/N` and `--partition slice:K/N`: split a run's tests over N machines
//! (or N CI jobs), as nextest's partitioning does.
//!
//! * **hash**: a test belongs to partition `K` of `N` when `derive_seed(0, KEY) % N == K − 1`,
//!   where `KEY` is `package/kind/target/test-name` and `derive_seed` is capped-test's stable
//!   hash (FNV-1a with the SplitMix64 finalizer: the same on every Rust version and machine).
//!   A test's partition thus depends only on its own identity: adding a test never moves
//!   another one.
//! * **slice**: the run's tests (every binary's, after filters) sorted by `KEY`; the `i`-th
//!   (from 0) belongs to slice `i % N + 1`. Slices are as even as can be (sizes differ by at
//!   most one), at the price that adding a test shifts the ones sorted after it. The order
//!   is by key, never by build or listing order, so every job of a matrix sees the same one.
//!
//! * **time**: the run's tests dealt out by what earlier runs measured (the test history):
//!   each shard is `W` slots, `W` the width every job asks for (`--test-threads` or the
//!   profile's `test-threads`; 1 when the width would come from the host's CPUs, which may
//!   differ between jobs); longest first, each test goes to the slot with the least time so
//!   far (ties to the lowest slot; a test the history does not know counts as the median of
//!   those it does), and a slot's tests to its shard. So the N shards take nearly equal time
//!   at that width, not only nearly equal work: two long tests do not land in one shard
//!   while another holds only short ones. Given the same history, tests and width every
//!   job computes the same deal.
//!
//! Every way, partitions `1/N` … `N/N` together cover every test exactly once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::events::BinaryId;

/// How `--partition` assigns tests to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// By a stable hash of each test's identity (`hash:K/N`).
    #[default]
    Hash,
    /// Every N-th test of the run in key order (`slice:K/N`).
    Slice,
    /// Shards of nearly equal learned time (`time:K/N`).
    Time,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Hash => "hash",
            Scheme::Slice => "slice",
            Scheme::Time => "time",
        }
    }
}

/// One partition of a run: the `index`-th (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// How tests are assigned.
    pub scheme: Scheme,
    /// Which partition, from 1.
    pub index: u32,
    /// How many partitions.
    pub count: u32,
}

/// What `--partition` accepts, for error messages.
pub const PARTITION_FORM: &str = "hash:K/N, slice:K/N or time:K/N with 1 ≤ K ≤ N (e.g. hash:1/2)";

/// The tests of one partition, given the whole run's tests ([`Partition::selector`]).
#[derive(Debug, Clone)]
pub struct Selector {
    partition: Partition,
    /// Under `slice` and `time`, the keys of the tests in this partition.
    slice: Option<HashSet<String>>,
}

impl Selector {
    /// Whether `test` of `binary` belongs to the partition.
    pub fn contains(&self, binary: &BinaryId, test: &str) -> bool {
        match &self.slice {
            Some(keys) => keys.contains(&Partition::key(binary, test)),
            None => Partition::of(binary, test, self.partition.count) == self.partition.index,
        }
    }
}

impl Partition {
    /// Parses `hash:K/N` or `slice:K/N`.
    pub fn parse(text: &str) -> Result<Partition, String> {
        let bad = |why: &str| {
            format!(
                "`{}`: {why}; expected {PARTITION_FORM}",
                capped_model::units::shown(text)
            )
        };
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(bad("no partitioning kind"));
        };
        let scheme = match kind {
            "hash" => Scheme::Hash,
            "slice" => Scheme::Slice,
            "time" => Scheme::Time,
            _ => {
                return Err(bad(&format!(
                    "unknown partitioning `{}` (`hash`, `slice` or `time`)",
                    capped_model::units::shown(kind)
                )));
            }
        };
        let Some((index, count)) = rest.split_once('/') else {
            return Err(bad("no `/`"));
        };
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| bad(&format!("{what} `{part}` is not a positive number")))
        };
        let (index, count) = (number(index, "K")?, number(count, "N")?);
        if count == 0 || index == 0 || index > count {
            return Err(bad("K must be between 1 and N"));
        }
        Ok(Partition {
            scheme,
            index,
            count,
        })
    }

    /// The stable key of a test: `package/kind/target/name`.
    pub fn key(binary: &BinaryId, test: &str) -> String {
        format!(
            "{}/{}/{}/{test}",
            binary.package, binary.kind, binary.target
        )
    }

    /// The hash partition (1-based) a test belongs to among `count`.
    pub fn of(binary: &BinaryId, test: &str, count: u32) -> u32 {
        let hash = capped_model::derive_seed(0, &Self::key(binary, test));
        (hash % u64::from(count.max(1))) as u32 + 1
    }

    /// Which of the run's tests (`all`: every binary's, after filters, with what earlier
    /// runs say each takes) are in this partition, time shards dealt for `width` slots per
    /// shard. A slice or a time shard needs them all, since a test's partition depends on
    /// the others.
    pub fn selector<'a>(
        &self,
        all: impl IntoIterator<Item = (&'a BinaryId, &'a str, Option<Duration>)>,
        width: u32,
    ) -> Selector {
        let slice = match self.scheme {
            Scheme::Hash => None,
            Scheme::Slice => {
                let mut keys: Vec<String> = all
                    .into_iter()
                    .map(|(binary, test, _)| Self::key(binary, test))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let count = self.count.max(1) as usize;
                let skip = self.index as usize - 1;
                Some(keys.into_iter().skip(skip).step_by(count).collect())
            }
            Scheme::Time => {
                let tests: Vec<(String, Option<Duration>)> = all
                    .into_iter()
                    .map(|(binary, test, known)| (Self::key(binary, test), known))
                    .collect();
                let mine = self.deal_by_time(&tests, width);
                Some(mine.into_iter().map(|i| tests[i].0.clone()).collect())
            }
        };
        Selector {
            partition: *self,
            slice,
        }
    }

    /// `time:K/N`: which of `tests` (keys, with their learned durations) shard `index`
    /// runs at `width` slots per shard, as indices into `tests` (see the module docs).
    pub fn deal_by_time(&self, tests: &[(String, Option<Duration>)], width: u32) -> HashSet<usize> {
        let mut known: Vec<Duration> = tests.iter().filter_map(|(_, d)| *d).collect();
        known.sort();
        let prior = known
            .get(known.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(1));
        let mut order: Vec<usize> = (0..tests.len()).collect();
        let time = |i: usize| tests[i].1.unwrap_or(prior);
        order.sort_by(|&a, &b| time(b).cmp(&time(a)).then(tests[a].0.cmp(&tests[b].0)));
        let width = u64::from(width.clamp(1, capped_model::units::MAX_COUNT));
        let slots = u64::from(self.count.max(1)) * width;
        // The slots given a test, by (time so far, slot): the freest and lowest on top.
        // The others are all empty and only the lowest of them can be next, so there are
        // never more of them than tests, however many shards and slots.
        let mut given: BinaryHeap<Reverse<(Duration, u64)>> = BinaryHeap::new();
        let mut mine = HashSet::new();
        for i in order {
            let empty = (given.len() as u64) < slots;
            let (load, slot) = match given.peek() {
                // An empty slot of its own, unless none is left or the freest is empty
                // too (and lower).
                Some(Reverse((load, _))) if !empty || load.is_zero() => {
                    given.pop().expect("peeked").0
                }
                _ => (Duration::ZERO, given.len() as u64),
            };
            given.push(Reverse((load + time(i), slot)));
            if slot / width + 1 == u64::from(self.index) {
                mine.insert(i);
            }
        }
        mine
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.scheme.name(), self.index, self.count)
    }
}

impl std::str::FromStr for Partition {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Partition::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(package: &str, target: &str, kind: &str) -> BinaryId {
        BinaryId {
            package: package.into(),
            target: target.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn time_shards_are_nearly_equal_and_cover_every_test_once() {
        // Skewed lengths: one long test, a few medium ones, many short ones.
        let mut tests: Vec<(String, Option<Duration>)> = Vec::new();
        tests.push(("long".into(), Some(Duration::from_millis(3000))));
        for n in 0..6 {
            tests.push((format!("medium{n}"), Some(Duration::from_millis(700))));
        }
        for n in 0..60 {
            tests.push((format!("short{n}"), Some(Duration::from_millis(50))));
        }
        tests.push(("unknown".into(), None));
        let count = 3;
        let shards: Vec<HashSet<usize>> = (1..=count)
            .map(|index| {
                Partition {
                    scheme: Scheme::Time,
                    index,
                    count,
                }
                .deal_by_time(&tests, 1)
            })
            .collect();
        let mut seen: Vec<usize> = shards.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..tests.len()).collect::<Vec<_>>());
        let times: Vec<f64> = shards
            .iter()
            .map(|shard| {
                shard
                    .iter()
                    .map(|&i| {
                        tests[i]
                            .1
                            .unwrap_or(Duration::from_millis(50))
                            .as_secs_f64()
                    })
                    .sum()
            })
            .collect();
        let (min, max) = (
            times.iter().copied().fold(f64::MAX, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
        assert!(max <= min * 1.10, "shards within 10%: {times:?}");
        let again = Partition {
            scheme: Scheme::Time,
            index: 2,
            count,
        }
        .deal_by_time(&tests, 1);
        assert_eq!(again, shards[1]);
        assert_eq!(
            Partition::parse("time:2/3").unwrap().to_string(),
            "time:2/3"
        );
    }

    #[test]
    fn time_shards_are_dealt_for_their_width() {
        // Eight long tests and many short ones (the time-shard bench's shape), as three
        // shards of two slots.
        let mut tests: Vec<(String, Option<Duration>)> = [600, 565, 522, 481, 440, 402, 360, 322]
            .iter()
            .enumerate()
            .map(|(n, &ms)| (format!("long{n}"), Some(Duration::from_millis(ms))))
            .collect();
        for n in 0..32u64 {
            let ms = 10 + (n * 7) % 31;
            tests.push((format!("short{n:02}"), Some(Duration::from_millis(ms))));
        }
        let count = 3;
        // The slowest shard's makespan on two slots (longest first to the freer slot),
        // dealt for `width` slots per shard; every test dealt exactly once.
        let slowest = |width: u32| -> Duration {
            let shards: Vec<HashSet<usize>> = (1..=count)
                .map(|index| {
                    Partition {
                        scheme: Scheme::Time,
                        index,
                        count,
                    }
                    .deal_by_time(&tests, width)
                })
                .collect();
            let mut seen: Vec<usize> = shards.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..tests.len()).collect::<Vec<_>>());
            shards
                .iter()
                .map(|shard| {
                    let mut times: Vec<Duration> =
                        shard.iter().map(|&i| tests[i].1.unwrap()).collect();
                    times.sort_by(|a, b| b.cmp(a));
                    let mut slots = [Duration::ZERO; 2];
                    for time in times {
                        let freer = usize::from(slots[1] < slots[0]);
                        slots[freer] += time;
                    }
                    slots[0].max(slots[1])
                })
                .max()
                .unwrap()
        };
        let total: Duration = tests.iter().filter_map(|t| t.1).sum();
        let bound = (total / (count * 2)).max(Duration::from_millis(600));
        // Dealt for two slots: within 5% of the bound; by work alone, three long tests
        // meet in one shard and it ends later.
        assert!(
            slowest(2).as_secs_f64() <= bound.as_secs_f64() * 1.05,
            "{:?} vs {bound:?}",
            slowest(2)
        );
        assert!(slowest(1) > slowest(2), "{:?} {:?}", slowest(1), slowest(2));
    }

    #[test]
    fn the_deal_gives_each_test_the_freest_lowest_slot() {
        // Every slot kept, the freest and lowest taken: what the deal must do.
        let plain = |partition: &Partition, tests: &[(String, Option<Duration>)], width: u32| {
            let mut all = HashSet::new();
            let mut known: Vec<Duration> = tests.iter().filter_map(|(_, d)| *d).collect();
            known.sort();
            let prior = known
                .get(known.len() / 2)
                .copied()
                .unwrap_or(Duration::from_millis(1));
            let time = |i: usize| tests[i].1.unwrap_or(prior);
            let mut order: Vec<usize> = (0..tests.len()).collect();
            order.sort_by(|&a, &b| time(b).cmp(&time(a)).then(tests[a].0.cmp(&tests[b].0)));
            let width = width as usize;
            let mut loads = vec![Duration::ZERO; partition.count as usize * width];
            for i in order {
                let slot = (0..loads.len()).min_by_key(|&s| (loads[s], s)).unwrap();
                loads[slot] += time(i);
                if slot / width + 1 == partition.index as usize {
                    all.insert(i);
                }
            }
            all
        };
        // Ties, zero times, unknown times, more slots than tests and fewer.
        let times = [0, 0, 5, 5, 5, 40, 3, 0, 90, 12, 12, 7, 1, 1, 64, 33, 0, 8];
        let tests: Vec<(String, Option<Duration>)> = times
            .iter()
            .enumerate()
            .map(|(n, &ms)| {
                let known = (n % 5 != 4).then(|| Duration::from_millis(ms));
                (format!("t{:02}", (n * 7) % times.len()), known)
            })
            .collect();
        for count in 1..=4 {
            for width in 1..=6 {
                for index in 1..=count {
                    let partition = Partition {
                        scheme: Scheme::Time,
                        index,
                        count,
                    };
                    for n in [0, 1, 3, 8, tests.len()] {
                        assert_eq!(
                            partition.deal_by_time(&tests[..n], width),
                            plain(&partition, &tests[..n], width),
                            "{partition} at width {width}, {n} tests"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_deal_costs_what_its_tests_do_however_many_slots() {
        // As many shards as parse, each as wide as a width may be: the deal must not make
        // room for every slot (2^44 of them here).
        let tests: Vec<(String, Option<Duration>)> = (0..3u64)
            .map(|n| (format!("t{n}"), Some(Duration::from_millis(10 * n))))
            .collect();
        let first = Partition {
            scheme: Scheme::Time,
            index: 1,
            count: u32::MAX,
        };
        let mine = first.deal_by_time(&tests, capped_model::units::MAX_COUNT);
        assert_eq!(
            mine.len(),
            3,
            "each test to a slot of its own, all in shard 1"
        );
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            Partition::parse("hash:1/2"),
            Ok(Partition {
                scheme: Scheme::Hash,
                index: 1,
                count: 2
            })
        );
        assert_eq!(
            Partition::parse("hash:3/3").unwrap().to_string(),
            "hash:3/3"
        );
        assert_eq!(
            Partition::parse("slice:2/3"),
            Ok(Partition {
                scheme: Scheme::Slice,
                index: 2,
                count: 3
            })
        );
        assert_eq!(
            Partition::parse("slice:2/3").unwrap().to_string(),
            "slice:2/3"
        );
        for bad in [
            "1/2",
            "count:1/2",
            "hash:0/2",
            "hash:3/2",
            "hash:1/0",
            "hash:a/2",
            "hash:1",
            "hash:",
            "hash:-1/2",
            "slice:0/2",
            "slice:3/2",
            "slice:1",
        ] {
            let message = Partition::parse(bad).unwrap_err();
            assert!(message.contains("hash:K/N"), "{bad}: {message}");
        }
    }

    #[test]
    fn partitions_cover_every_test_exactly_once_and_are_stable() {
        let binaries = [
            id("a", "a", "lib"),
            id("a", "it", "test"),
            id("b", "it", "test"),
        ];
        for count in 1..=5 {
            for binary in &binaries {
                for n in 0..200 {
                    let name = format!("tests::case_{n}");
                    let owners: Vec<u32> = (1..=count)
                        .filter(|&index| {
                            Partition {
                                scheme: Scheme::Hash,
                                index,
                                count,
                            }
                            .selector([], 2)
                            .contains(binary, &name)
                        })
                        .collect();
                    assert_eq!(
                        owners.len(),
                        1,
                        "{binary:?} {name} in {owners:?} of {count}"
                    );
                    assert_eq!(owners[0], Partition::of(binary, &name, count));
                }
            }
        }
        // Fixed values: a test's partition never changes between versions or machines.
        assert_eq!(
            Partition::key(&binaries[1], "tests::x"),
            "a/test/it/tests::x"
        );
        let of = |count| -> Vec<u32> {
            (0..8)
                .map(|n| Partition::of(&binaries[1], &format!("t{n}"), count))
                .collect()
        };
        assert_eq!(of(2), [2, 1, 2, 2, 1, 2, 2, 2]);
        assert_eq!(of(3), [1, 3, 3, 2, 1, 1, 2, 2]);
    }

    #[test]
    fn the_split_is_roughly_even() {
        let binary = id("p", "t", "test");
        let count = 4;
        let mut sizes = [0usize; 4];
        for n in 0..4000 {
            sizes[Partition::of(&binary, &format!("m::t{n}"), count) as usize - 1] += 1;
        }
        for size in sizes {
            assert!((800..1200).contains(&size), "{sizes:?}");
        }
    }

    #[test]
    fn slices_cover_every_test_exactly_once_evenly_in_key_order() {
        let binaries = [
            id("b", "it", "test"),
            id("a", "a", "lib"),
            id("a", "it", "test"),
        ];
        let names: Vec<String> = (0..37).map(|n| format!("tests::case_{n}")).collect();
        let all: Vec<(&BinaryId, &str)> = binaries
            .iter()
            .flat_map(|b| names.iter().map(move |n| (b, n.as_str())))
            .collect();
        for count in 1..=6 {
            let selectors: Vec<Selector> = (1..=count)
                .map(|index| {
                    Partition {
                        scheme: Scheme::Slice,
                        index,
                        count,
                    }
                    .selector(all.iter().map(|&(b, n)| (b, n, None)), 2)
                })
                .collect();
            let mut sizes = vec![0usize; count as usize];
            for &(binary, name) in &all {
                let owners: Vec<usize> = (0..selectors.len())
                    .filter(|&i| selectors[i].contains(binary, name))
                    .collect();
                assert_eq!(
                    owners.len(),
                    1,
                    "{binary:?} {name} in {owners:?} of {count}"
                );
                sizes[owners[0]] += 1;
            }
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{count}: {sizes:?}");
        }
        // The order is the keys', not the listing's: the Kth of every N sorted keys.
        let few = [
            (&binaries[0], "z"),
            (&binaries[1], "y"),
            (&binaries[2], "x"),
            (&binaries[1], "a"),
        ];
        let reversed: Vec<_> = few.iter().rev().copied().collect();
        let second = Partition {
            scheme: Scheme::Slice,
            index: 2,
            count: 2,
        };
        for order in [few.to_vec(), reversed] {
            let selector = second.selector(order.into_iter().map(|(b, n)| (b, n, None)), 2);
            // Sorted: a/lib/a/a, a/lib/a/y, a/test/it/x, b/test/it/z.
            let kept: Vec<&str> = few
                .iter()
                .filter(|(b, n)| selector.contains(b, n))
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(kept, ["z", "y"]);
        }
    }
}
