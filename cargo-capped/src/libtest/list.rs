//! Parsing a test binary's `--list --format terse` output.
//!
//! A plain libtest binary prints one `NAME: test` (or `NAME: bench`) line per test, and
//! without `--format terse` a closing `N tests, M benchmarks` line. A harness-mode binary
//! (`capped_test::main!()`) run with `CAPPED_LIST_RESOURCES=1` prints one JSON
//! [`ListedTest`] per line instead, which carries each test's declared resources.

use capped_model::protocol::ListedTest;

/// The arguments that make a test binary list its tests in the form [`parse_list`] reads.
/// Pass the run's filter arguments (`FILTER`, `--exact`, `--skip`, `--ignored`, …) too, so
/// the listing names exactly the tests the run will execute.
pub const LIST_ARGS: [&str; 3] = ["--list", "--format", "terse"];

/// What a binary's `--list` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The tests, in the order the binary printed them (libtest's execution order).
    pub tests: Vec<ListedTest>,
    /// Whether the binary is harness mode: it printed [`ListedTest`] JSON lines, so every
    /// test's resources are known. Plain listings give each test `threads: 1`, no groups,
    /// no memory, no timeout, and `ignored: false` (see [`mark_ignored`]).
    pub harness: bool,
    /// Whether the binary writes libtest's `--logfile` records (it is libtest, not another
    /// harness), so plain tests' verdicts can come from there.
    pub logfile: bool,
}

/// Parses `--list` output (`--format terse` or not, plain or harness JSON).
///
/// Lines that are neither a JSON [`ListedTest`] nor `NAME: test` / `NAME: bench` (the
/// summary line, blank lines, anything a binary prints at load time) are skipped. When any
/// JSON line is present the binary is harness mode and the JSON lines are the listing.
pub fn parse_list(stdout: &str) -> Listing {
    let mut json = Vec::new();
    let mut terse = Vec::new();
    for line in stdout.lines() {
        let line = super::strip_ansi(line);
        let line = line.trim_end_matches('\r');
        if line.starts_with('{') {
            if let Ok(test) = serde_json::from_str::<ListedTest>(line) {
                json.push(test);
            }
            continue;
        }
        if let Some(name) = terse_name(line) {
            terse.push(ListedTest::plain(name));
        }
    }
    if json.is_empty() {
        Listing {
            tests: terse,
            harness: false,
            logfile: false,
        }
    } else {
        Listing {
            tests: json,
            harness: true,
            logfile: false,
        }
    }
}

/// Sets `ignored` on the tests named by a `--list --ignored --format terse` output, for plain
/// binaries whose listing does not say which tests are ignored.
pub fn mark_ignored(tests: &mut [ListedTest], ignored_listing: &str) {
    let ignored: std::collections::HashSet<&str> =
        ignored_listing.lines().filter_map(terse_name).collect();
    for test in tests {
        if ignored.contains(test.name.as_str()) {
            test.ignored = true;
        }
    }
}

/// The name in a `NAME: test` / `NAME: bench` line (a libtest-mimic `[kind] ` prefix
/// removed), or `None`.
fn terse_name(line: &str) -> Option<&str> {
    let line = line.trim_end();
    let name = line
        .strip_suffix(": test")
        .or_else(|| line.strip_suffix(": bench"))?;
    let name = strip_kind(name);
    (!name.is_empty()).then_some(name)
}

/// Removes libtest-mimic's `[kind] ` prefix from a name.
pub(crate) fn strip_kind(name: &str) -> &str {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((kind, name)) = rest.split_once("] ")
        && !kind.contains(' ')
    {
        return name;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/libtest/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn names(listing: &Listing) -> Vec<&str> {
        listing.tests.iter().map(|t| t.name.as_str()).collect()
    }

    const BASIC: [&str; 8] = [
        "tests::fails_multiline",
        "tests::ignored_plain",
        "tests::ignored_with_reason",
        "tests::passes",
        "tests::passes_with_output",
        "tests::returns_err",
        "tests::should_panic_but_did_not",
        "tests::should_panic_ok",
    ];

    #[test]
    fn terse_listing() {
        let listing = parse_list(&fixture("list_terse.txt"));
        assert!(!listing.harness);
        assert_eq!(names(&listing), BASIC);
        let first = &listing.tests[0];
        assert_eq!(first.threads, 1);
        assert!(first.groups.is_empty() && first.mem.is_none() && !first.ignored);
    }

    #[test]
    fn plain_listing_skips_the_summary_line() {
        let listing = parse_list(&fixture("list_plain.txt"));
        assert_eq!(names(&listing), BASIC);
    }

    #[test]
    fn libtest_mimic_listing_keeps_declaration_order() {
        let listing = parse_list(&fixture("mimic_list.txt"));
        assert_eq!(
            names(&listing),
            [
                "gpu::a_passes",
                "gpu::b_fails",
                "long_name_test_c",
                "d_panics",
                "e_runtime_ignored"
            ]
        );
    }

    #[test]
    fn ignored_tests_are_marked_from_a_second_listing() {
        let mut listing = parse_list(&fixture("list_terse.txt"));
        mark_ignored(&mut listing.tests, &fixture("list_ignored.txt"));
        let ignored: Vec<&str> = listing
            .tests
            .iter()
            .filter(|t| t.ignored)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            ignored,
            ["tests::ignored_plain", "tests::ignored_with_reason"]
        );
    }

    #[test]
    fn benches_kinds_and_noise() {
        let text = "warming up the GPU\n\
                    bench_matmul: bench\n\
                    [slow] kinded::test: test\n\
                    src/lib.rs - foo (line 3): test\r\n\
                    : test\n\
                    \n\
                    2 tests, 1 benchmarks\n";
        let listing = parse_list(text);
        assert_eq!(
            names(&listing),
            ["bench_matmul", "kinded::test", "src/lib.rs - foo (line 3)"]
        );
    }

    #[test]
    fn harness_json_listing() {
        let gpu = ListedTest {
            name: "gpu::matmul".into(),
            groups: vec!["gpu".into()],
            threads: 2,
            mem: Some(1 << 30),
            timeout_ms: Some(30_000),
            ignored: false,
        };
        let light = ListedTest {
            name: "light".into(),
            groups: vec![],
            threads: 1,
            mem: None,
            timeout_ms: None,
            ignored: true,
        };
        let text = format!(
            "{}\n{}\nnot json\n{{\"torn\":\n",
            serde_json::to_string(&gpu).unwrap(),
            serde_json::to_string(&light).unwrap()
        );
        let listing = parse_list(&text);
        assert!(listing.harness);
        assert_eq!(listing.tests, vec![gpu, light]);
    }

    #[test]
    fn empty_listing() {
        assert_eq!(parse_list(""), Listing::default());
        assert_eq!(parse_list("\n0 tests, 0 benchmarks\n"), Listing::default());
    }
}
