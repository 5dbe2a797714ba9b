//! `--partition hash:K/N | time:K/N`: split a run's tests over N machines (or N CI jobs).
//!
//! `time:K/N` deals the tests out by what earlier runs measured (the test history): longest
//! first, each to the shard with the least time so far (ties to the lowest shard; a test the
//! history does not know counts as the median of those it does), so the N shards take
//! nearly equal time. Given the same history and tests every job computes the same deal.
//!
//! `hash:K/N`, as nextest's hash partitioning:
//! A test belongs to partition `K` of `N` when `derive_seed(0, KEY) % N == K − 1`, where `KEY`
//! is `package/kind/target/test-name` and `derive_seed` is capped-test's stable hash (FNV-1a
//! with the SplitMix64 finalizer: the same on every Rust version and machine). A test's
//! partition thus depends only on its own identity: adding a test never moves another one,
//! and partitions `1/N` … `N/N` together cover every test exactly once.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::events::BinaryId;

/// One partition of a run: the `index`-th (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Which partition, from 1.
    pub index: u32,
    /// How many partitions.
    pub count: u32,
    /// How tests are dealt out.
    pub kind: PartitionKind,
}

/// How `--partition` deals tests out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionKind {
    /// By a stable hash of each test's identity.
    #[default]
    Hash,
    /// By the time earlier runs measured, into shards of nearly equal time.
    Time,
}

/// What `--partition` accepts, for error messages.
pub const PARTITION_FORM: &str = "hash:K/N or time:K/N with 1 ≤ K ≤ N (e.g. hash:1/2)";

impl Partition {
    /// Parses `hash:K/N`.
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
        let kind = match kind {
            "hash" => PartitionKind::Hash,
            "time" => PartitionKind::Time,
            other => {
                return Err(bad(&format!(
                    "unknown partitioning `{}` (`hash` or `time`)",
                    capped_model::units::shown(other)
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
        Ok(Partition { index, count, kind })
    }

    /// The stable key of a test: `package/kind/target/name`.
    pub fn key(binary: &BinaryId, test: &str) -> String {
        format!(
            "{}/{}/{}/{test}",
            binary.package, binary.kind, binary.target
        )
    }

    /// The partition (1-based) a test belongs to among `count`.
    pub fn of(binary: &BinaryId, test: &str, count: u32) -> u32 {
        let hash = capped_model::derive_seed(0, &Self::key(binary, test));
        (hash % u64::from(count.max(1))) as u32 + 1
    }

    /// Whether `test` of `binary` belongs to this partition by hash.
    pub fn contains(&self, binary: &BinaryId, test: &str) -> bool {
        Self::of(binary, test, self.count) == self.index
    }

    /// `time:K/N`: which of `tests` (with what earlier runs say each takes, when known)
    /// shard `index` runs, as indices into `tests` (see the module docs).
    pub fn deal_by_time(&self, tests: &[(String, Option<Duration>)]) -> HashSet<usize> {
        let mut known: Vec<Duration> = tests.iter().filter_map(|(_, d)| *d).collect();
        known.sort();
        let prior = known
            .get(known.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(1));
        let mut order: Vec<usize> = (0..tests.len()).collect();
        let time = |i: usize| tests[i].1.unwrap_or(prior);
        order.sort_by(|&a, &b| time(b).cmp(&time(a)).then(tests[a].0.cmp(&tests[b].0)));
        let mut loads = vec![Duration::ZERO; self.count.max(1) as usize];
        let mut mine = HashSet::new();
        for i in order {
            let shard = (0..loads.len())
                .min_by_key(|&s| (loads[s], s))
                .expect("at least one shard");
            loads[shard] += time(i);
            if shard + 1 == self.index as usize {
                mine.insert(i);
            }
        }
        mine
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PartitionKind::Hash => "hash",
            PartitionKind::Time => "time",
        };
        write!(f, "{kind}:{}/{}", self.index, self.count)
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
    fn parses_and_refuses() {
        assert_eq!(
            Partition::parse("hash:1/2"),
            Ok(Partition {
                index: 1,
                count: 2,
                kind: PartitionKind::Hash
            })
        );
        assert_eq!(
            Partition::parse("hash:3/3").unwrap().to_string(),
            "hash:3/3"
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
            "time:0/2",
        ] {
            let message = Partition::parse(bad).unwrap_err();
            assert!(message.contains("hash:K/N"), "{bad}: {message}");
        }
        assert_eq!(
            Partition::parse("time:2/3").unwrap().to_string(),
            "time:2/3"
        );
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
                                index,
                                count,
                                kind: PartitionKind::Hash,
                            }
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
                    index,
                    count,
                    kind: PartitionKind::Time,
                }
                .deal_by_time(&tests)
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
        // The same history deals the same way.
        let again = Partition {
            index: 2,
            count,
            kind: PartitionKind::Time,
        }
        .deal_by_time(&tests);
        assert_eq!(again, shards[1]);
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
}
