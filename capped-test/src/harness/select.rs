//! Which tests run, in which order: libtest's filtering rules and order, plus shuffling.

use crate::test_spec::{Registration, ShouldPanic};
use capped_model::derive_seed;

use super::args::{Args, RunIgnored};

/// A test that passed the filters.
pub(crate) struct Selected<'a> {
    /// libtest's name.
    pub name: String,
    /// The registration (spec and body).
    pub reg: &'a Registration,
    /// Reported `ignored` instead of run (after `--ignored` / `--include-ignored`).
    pub ignored: bool,
}

/// Every registered test, sorted by name as libtest sorts (duplicates kept once).
pub(crate) fn registered<'a>(
    registrations: impl IntoIterator<Item = &'a Registration>,
) -> Vec<(String, &'a Registration)> {
    let mut tests: Vec<(String, &'a Registration)> = registrations
        .into_iter()
        .map(|reg| (reg.spec.name(), reg))
        .collect();
    tests.sort_by(|a, b| a.0.cmp(&b.0));
    tests.dedup_by(|a, b| a.0 == b.0);
    tests
}

/// libtest's `filter_tests`: positional filters (any matches), then `--skip` (none
/// matches), then `--exclude-should-panic`, then the ignored handling. Returns the selected
/// tests in name order and how many were filtered out.
pub(crate) fn select<'a>(
    tests: Vec<(String, &'a Registration)>,
    args: &Args,
) -> (Vec<Selected<'a>>, usize) {
    let total = tests.len();
    let matches = |name: &str, filter: &str| {
        if args.exact {
            name == filter
        } else {
            name.contains(filter)
        }
    };
    let selected: Vec<Selected<'a>> = tests
        .into_iter()
        .filter(|(name, _)| {
            args.filters.is_empty() || args.filters.iter().any(|f| matches(name, f))
        })
        .filter(|(name, _)| !args.skip.iter().any(|f| matches(name, f)))
        .filter(|(_, reg)| !args.exclude_should_panic || reg.spec.should_panic == ShouldPanic::No)
        .filter_map(|(name, reg)| {
            let is_ignored = reg.spec.ignore.is_some();
            let ignored = match args.run_ignored {
                RunIgnored::No => is_ignored,
                RunIgnored::Yes => false,
                RunIgnored::Only if is_ignored => false,
                RunIgnored::Only => return None,
            };
            Some(Selected {
                name,
                reg,
                ignored: ignored || args.bench_only,
            })
        })
        .collect();
    let filtered_out = total - selected.len();
    (selected, filtered_out)
}

/// The order tests are started in, before the scheduler's priorities: by name, or, when
/// shuffling, by a hash of the seed and the name. Hashing each name (rather than shuffling
/// the list) keeps the relative order of two tests the same whatever else is selected, so a
/// filtered rerun with the same seed meets the same order.
pub(crate) fn shuffled(names: &[&str], seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| {
        (
            derive_seed(seed, &format!("shuffle:{}", names[i])),
            names[i],
        )
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::args::parse;
    use crate::test_spec::TestSpec;

    macro_rules! spec {
        ($name:literal, $ignore:expr, $panic:expr) => {
            TestSpec {
                module_path: "krate::m",
                fn_name: $name,
                groups: &[],
                threads: 1,
                mem: None,
                timeout: None,
                serial: false,
                ignore: $ignore,
                should_panic: $panic,
                is_async: false,
                file: "f.rs",
                line: 1,
            }
        };
    }

    static A: TestSpec = spec!("alpha", None, ShouldPanic::No);
    static B: TestSpec = spec!("beta", Some(None), ShouldPanic::No);
    static C: TestSpec = spec!("alphabet", None, ShouldPanic::Yes);
    static D: TestSpec = spec!("gamma", Some(Some("slow")), ShouldPanic::No);

    fn regs() -> Vec<Registration> {
        [&D, &B, &C, &A]
            .into_iter()
            .map(|spec| Registration {
                spec,
                run: || Ok(()),
            })
            .collect()
    }

    fn names(list: &[&str]) -> (Vec<(String, bool)>, usize) {
        let regs = regs();
        let mut argv = vec!["bin".to_string()];
        argv.extend(list.iter().map(|a| a.to_string()));
        let args = parse(argv).unwrap();
        let (selected, out) = select(registered(&regs), &args);
        (
            selected.into_iter().map(|s| (s.name, s.ignored)).collect(),
            out,
        )
    }

    fn n(name: &str, ignored: bool) -> (String, bool) {
        (format!("m::{name}"), ignored)
    }

    #[test]
    fn filters_like_libtest() {
        assert_eq!(
            names(&[]),
            (
                vec![
                    n("alpha", false),
                    n("alphabet", false),
                    n("beta", true),
                    n("gamma", true)
                ],
                0
            )
        );
        assert_eq!(
            names(&["alpha"]),
            (vec![n("alpha", false), n("alphabet", false)], 2)
        );
        assert_eq!(
            names(&["--exact", "m::alpha"]),
            (vec![n("alpha", false)], 3)
        );
        assert_eq!(names(&["--exact", "alpha"]), (vec![], 4));
        assert_eq!(
            names(&["alpha", "--skip", "bet"]),
            (vec![n("alpha", false)], 3)
        );
        assert_eq!(
            names(&["beta", "gamma"]),
            (vec![n("beta", true), n("gamma", true)], 2)
        );
        assert_eq!(
            names(&["--ignored"]),
            (vec![n("beta", false), n("gamma", false)], 2)
        );
        assert_eq!(
            names(&["--include-ignored", "--skip", "alpha"]),
            (vec![n("beta", false), n("gamma", false)], 2)
        );
        assert_eq!(
            names(&["--exclude-should-panic", "alpha"]),
            (vec![n("alpha", false)], 3)
        );
        assert_eq!(
            names(&["--exact", "--skip", "m::alpha", "m::alphabet", "m::alpha"]),
            (vec![n("alphabet", false)], 3)
        );
    }

    #[test]
    fn shuffling_is_stable_under_filtering() {
        let all = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let order = shuffled(&all, 7);
        assert_eq!(order, shuffled(&all, 7));
        assert_ne!(order, shuffled(&all, 8));
        assert_ne!(order, (0..all.len()).collect::<Vec<_>>());
        let full: Vec<&str> = order.iter().map(|&i| all[i]).collect();
        let some = ["b", "d", "g"];
        let part: Vec<&str> = shuffled(&some, 7).iter().map(|&i| some[i]).collect();
        let expected: Vec<&str> = full.into_iter().filter(|n| some.contains(n)).collect();
        assert_eq!(part, expected);
    }
}
