//! The EMFILE policy: recognise "Too many open files", lower the width, choose the tests to
//! rerun once (the runner's `run::emfile_rerun` holds results back and runs the reruns).
//!
//! The policy (detect, warn, adapt, continue: a run finishes despite a low limit):
//!
//! * a failed test whose output [looks like EMFILE](looks_like_emfile) lowers the run's
//!   width by a quarter, at least by 1, never below 1 ([`AdaptiveWidth::on_emfile`]), for
//!   the rest of the run — once per finished binary, however many of its tests failed so;
//! * a binary that ran at a width the run has already lowered from does not lower it again
//!   (its EMFILE is the old width's doing), but its tests are still rerun;
//! * those tests are rerun **once**, at the lower width; a test that fails again is
//!   reported failed (with the advice), never rerun a second time;
//! * at width 1 with nothing left to lower, there is no rerun: the failure stands, with
//!   the `ulimit` advice.

use std::collections::BTreeSet;
use std::fmt;

use super::nofile::ulimit_advice;

/// Whether `text` (a test's output or panic message, a binary's stderr) reports running out
/// of file descriptors: "Too many open files" (also "… in system"), `os error 24` / `23`,
/// or the words `EMFILE` / `ENFILE`.
pub fn looks_like_emfile(text: &str) -> bool {
    if contains_ignore_ascii_case(text, "too many open files") {
        return true;
    }
    for code in ["os error 24", "os error 23", "errno 24", "errno=24"] {
        if find_bounded(text, code, |next| !next.is_ascii_digit()) {
            return true;
        }
    }
    ["EMFILE", "ENFILE"].iter().any(|word| has_word(text, word))
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `needle` occurs (ASCII case-insensitively) followed by end of text or a byte `after`
/// accepts.
fn find_bounded(haystack: &str, needle: &str, after: impl Fn(u8) -> bool) -> bool {
    let (hay, n) = (haystack.as_bytes(), needle.len());
    (0..hay.len().saturating_sub(n - 1)).any(|i| {
        hay[i..i + n].eq_ignore_ascii_case(needle.as_bytes())
            && hay.get(i + n).is_none_or(|&next| after(next))
    })
}

/// `word` occurs (case-sensitively) not inside a longer identifier.
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(word).any(|(i, _)| {
        let bytes = text.as_bytes();
        let before_ok = i == 0 || !is_ident(bytes[i - 1]);
        let after_ok = bytes.get(i + word.len()).is_none_or(|&b| !is_ident(b));
        before_ok && after_ok
    })
}

/// A width lowered in steps of a quarter when descriptors run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveWidth {
    current: usize,
    floor: usize,
}

/// A change of width, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The width before.
    pub from: usize,
    /// The width from now on.
    pub to: usize,
    /// One line for people: the new width and the `ulimit` advice.
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl AdaptiveWidth {
    /// Starts at `width` (at least 1); the floor is 1.
    pub fn new(width: usize) -> Self {
        AdaptiveWidth {
            current: width.max(1),
            floor: 1,
        }
    }

    /// The width in force.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The lowest width it goes down to (1).
    #[cfg(test)]
    pub fn floor(&self) -> usize {
        self.floor
    }

    /// The width after one more EMFILE: lower by a quarter, at least by 1, never below
    /// the floor (`8 → 6`, `4 → 3`, `2 → 1`, `1 → 1`).
    pub fn next_width(width: usize, floor: usize) -> usize {
        width.saturating_sub((width / 4).max(1)).max(floor)
    }

    /// Lowers the width after an EMFILE; `None` when it is already at the floor.
    pub fn on_emfile(&mut self) -> Option<Notice> {
        let from = self.current;
        let to = Self::next_width(from, self.floor);
        if to == from {
            return None;
        }
        self.current = to;
        Some(Notice {
            from,
            to,
            message: format!(
                "too many open files (EMFILE): width lowered from {from} to {to} for the rest of the run; to keep the width, {}",
                ulimit_advice(from)
            ),
        })
    }
}

/// A failed test and what it printed (captured output, panic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedTest<'a> {
    /// The test's full name as libtest names it (`module::name`).
    pub name: &'a str,
    /// Its output.
    pub output: &'a str,
}

/// What to run again after a binary finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// Nothing.
    Nothing,
    /// These tests, once, by exact name (see `run::binary_schedule::selection_args`).
    Tests(Vec<String>),
    /// The whole binary once more: it died of EMFILE without naming a failed test (the
    /// harness itself could not open a file).
    WholeBinary,
}

/// What [`EmfileAdapter::on_binary_finished`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adaptation {
    /// The failed tests whose output showed EMFILE.
    pub emfile_tests: Vec<String>,
    /// The width change, when there was one.
    pub lowered: Option<Notice>,
    /// What to rerun, at [`Adaptation::width`].
    pub rerun: Rerun,
    /// The width from now on.
    pub width: usize,
    /// One line for the report, when EMFILE was seen: what happened, the new width, what
    /// is rerun, and the `ulimit` advice.
    pub message: Option<String>,
}

/// The run-wide EMFILE policy: the adaptive width and which tests were already rerun.
#[derive(Debug, Clone)]
pub struct EmfileAdapter {
    width: AdaptiveWidth,
    rerun: BTreeSet<(String, String)>,
    rerun_binaries: BTreeSet<String>,
    messages: Vec<String>,
}

impl EmfileAdapter {
    /// A run of `width`.
    pub fn new(width: usize) -> Self {
        EmfileAdapter {
            width: AdaptiveWidth::new(width),
            rerun: BTreeSet::new(),
            rerun_binaries: BTreeSet::new(),
            messages: Vec::new(),
        }
    }

    /// The width in force: schedule later binaries and reruns with it.
    pub fn width(&self) -> usize {
        self.width.current()
    }

    /// Whether `test` of `binary` was already rerun after an EMFILE (its next result is
    /// final; the report can say "failed again after an EMFILE rerun").
    pub fn was_rerun(&self, binary: &str, test: &str) -> bool {
        self.rerun.contains(&(binary.to_string(), test.to_string()))
    }

    /// Every message given so far.
    #[cfg(test)]
    pub fn messages(&self) -> &[String] {
        &self.messages
    }

    /// Applies the policy to a finished binary: `ran_at_width` is the width in force when
    /// it started, `failed` its failed tests with their output, `binary_output` what it
    /// printed outside any test (its stderr), used only when no failed test shows EMFILE.
    pub fn on_binary_finished(
        &mut self,
        binary: &str,
        ran_at_width: usize,
        failed: &[FailedTest<'_>],
        binary_output: &str,
    ) -> Adaptation {
        let emfile_tests: Vec<String> = failed
            .iter()
            .filter(|test| looks_like_emfile(test.output))
            .map(|test| test.name.to_string())
            .collect();
        let whole_binary = emfile_tests.is_empty() && looks_like_emfile(binary_output);
        if emfile_tests.is_empty() && !whole_binary {
            return Adaptation {
                emfile_tests,
                lowered: None,
                rerun: Rerun::Nothing,
                width: self.width(),
                message: None,
            };
        }
        // A binary started under a width we already lowered from does not lower it again.
        let lowered = if ran_at_width > self.width() {
            None
        } else {
            self.width.on_emfile()
        };
        let width = self.width();
        let adapted = lowered.is_some() || ran_at_width > width;
        let rerun = if !adapted {
            Rerun::Nothing
        } else if whole_binary {
            if self.rerun_binaries.insert(binary.to_string()) {
                Rerun::WholeBinary
            } else {
                Rerun::Nothing
            }
        } else {
            let tests = tests_to_rerun(failed, |test| self.was_rerun(binary, test));
            for test in &tests {
                self.rerun.insert((binary.to_string(), test.clone()));
            }
            if tests.is_empty() {
                Rerun::Nothing
            } else {
                Rerun::Tests(tests)
            }
        };
        let what = if whole_binary {
            format!("`{binary}` failed with \"Too many open files\" (EMFILE)")
        } else {
            format!(
                "{} of `{binary}` failed with \"Too many open files\" (EMFILE): {}",
                count(emfile_tests.len(), "test"),
                shorten_list(&emfile_tests)
            )
        };
        let change = match &lowered {
            Some(notice) => format!(
                "width lowered from {} to {} for the rest of the run",
                notice.from, notice.to
            ),
            None if ran_at_width > width => {
                format!("it ran at width {ran_at_width}; the width is already {width}")
            }
            None => format!("the width is already {width}, the lowest"),
        };
        let next = match &rerun {
            Rerun::Nothing if !adapted => "no rerun (nothing left to lower)".to_string(),
            Rerun::Nothing => "no rerun (already rerun once)".to_string(),
            Rerun::Tests(tests) => format!(
                "rerunning {} once at width {width}",
                if tests.len() == 1 {
                    "it".to_string()
                } else {
                    format!("those {}", tests.len())
                }
            ),
            Rerun::WholeBinary => format!("rerunning the binary once at width {width}"),
        };
        let message = format!(
            "{what}; {change}; {next}. To avoid it, {}",
            ulimit_advice(ran_at_width.max(width))
        );
        self.messages.push(message.clone());
        Adaptation {
            emfile_tests,
            lowered,
            rerun,
            width,
            message: Some(message),
        }
    }
}

/// Of a binary's failed tests, those whose output shows EMFILE and that were not rerun
/// before (`already_rerun`), in the given order without duplicates: the tests to run once
/// more at the lower width.
pub fn tests_to_rerun(
    failed: &[FailedTest<'_>],
    already_rerun: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    failed
        .iter()
        .filter(|test| looks_like_emfile(test.output) && !already_rerun(test.name))
        .filter(|test| seen.insert(test.name))
        .map(|test| test.name.to_string())
        .collect()
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `a, b, c` or `a, b, c and 4 more`.
fn shorten_list(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown = items
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        format!("{shown} and {} more", items.len() - SHOWN)
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_emfile_in_its_usual_shapes() {
        for text in [
            "thread 'opens' panicked at src/lib.rs:3:5:\ncalled `Result::unwrap()` on an `Err` value: Os { code: 24, kind: Uncategorized, message: \"Too many open files\" }",
            "Error: Too many open files (os error 24)",
            "error: os error 24",
            "IO error: EMFILE",
            "accept failed: EMFILE: too many open files",
            "OSError: [Errno 24] Too many open files: '/tmp/x'",
            "socket: too many open files in system",
            "ENFILE while opening",
            "TOO MANY OPEN FILES",
        ] {
            assert!(looks_like_emfile(text), "{text}");
        }
    }

    #[test]
    fn does_not_cry_wolf() {
        for text in [
            "",
            "assertion `left == right` failed\n  left: 24\n right: 23",
            "os error 245",
            "os error 2",
            "No such file or directory (os error 2)",
            "MY_EMFILE_COUNTER=3",
            "EMFILES",
            "too many open file handles? no",
            "test opens_many_files ... ok",
        ] {
            assert!(!looks_like_emfile(text), "{text}");
        }
    }

    #[test]
    fn width_drops_by_a_quarter_at_least_one_never_below_one() {
        let steps = |start: usize| {
            let mut width = AdaptiveWidth::new(start);
            let mut seen = vec![width.current()];
            while let Some(notice) = width.on_emfile() {
                assert_eq!(notice.from, *seen.last().unwrap());
                assert_eq!(notice.to, width.current());
                seen.push(width.current());
            }
            seen
        };
        assert_eq!(steps(16), [16, 12, 9, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(steps(8), [8, 6, 5, 4, 3, 2, 1]);
        assert_eq!(steps(2), [2, 1]);
        assert_eq!(steps(1), [1]);
        assert_eq!(steps(0), [1], "a width of 0 is treated as 1");
        let mut width = AdaptiveWidth::new(4);
        let notice = width.on_emfile().unwrap();
        assert!(
            notice
                .message
                .contains("width lowered from 4 to 3 for the rest of the run"),
            "{notice}"
        );
        assert!(notice.message.contains("ulimit -n 4096"), "{notice}");
        assert_eq!(width.floor(), 1);
    }

    #[test]
    fn picks_emfile_failures_once() {
        let failed = [
            FailedTest {
                name: "a::opens",
                output: "Too many open files (os error 24)",
            },
            FailedTest {
                name: "a::asserts",
                output: "assertion failed",
            },
            FailedTest {
                name: "a::sockets",
                output: "EMFILE",
            },
            FailedTest {
                name: "a::opens",
                output: "os error 24",
            },
        ];
        assert_eq!(
            tests_to_rerun(&failed, |_| false),
            ["a::opens", "a::sockets"]
        );
        assert_eq!(
            tests_to_rerun(&failed, |name| name == "a::opens"),
            ["a::sockets"]
        );
    }

    #[test]
    fn adapter_lowers_reruns_once_and_completes() {
        let mut adapter = EmfileAdapter::new(4);
        let emfile = "called `Result::unwrap()` on an `Err` value: Os { code: 24, kind: Uncategorized, message: \"Too many open files\" }";
        let failed = [
            FailedTest {
                name: "fd::opens_many",
                output: emfile,
            },
            FailedTest {
                name: "fd::plain_failure",
                output: "assertion failed: 1 == 2",
            },
        ];
        let first = adapter.on_binary_finished("fd", 4, &failed, "");
        assert_eq!(first.emfile_tests, ["fd::opens_many"]);
        assert_eq!(first.width, 3);
        assert_eq!(adapter.width(), 3);
        assert_eq!(first.rerun, Rerun::Tests(vec!["fd::opens_many".into()]));
        let message = first.message.unwrap();
        assert!(
            message.starts_with(
                "1 test of `fd` failed with \"Too many open files\" (EMFILE): fd::opens_many; width lowered from 4 to 3 for the rest of the run; rerunning it once at width 3. To avoid it, run `ulimit -n 4096`"
            ),
            "{message}"
        );
        assert!(adapter.was_rerun("fd", "fd::opens_many"));
        assert!(!adapter.was_rerun("fd", "fd::plain_failure"));

        // The rerun fails the same way again: the width drops once more, no second rerun.
        let again = adapter.on_binary_finished("fd", 3, &failed[..1], "");
        assert_eq!(again.width, 2);
        assert_eq!(again.rerun, Rerun::Nothing);
        assert!(
            again
                .message
                .as_deref()
                .unwrap()
                .contains("no rerun (already rerun once)"),
            "{again:?}"
        );

        // Another binary that started at width 4 (before the lowering) hits EMFILE: no
        // second lowering for the same overload, but its tests are rerun.
        let late = adapter.on_binary_finished("io", 4, &failed[..1], "");
        assert_eq!(late.width, 2);
        assert!(late.lowered.is_none());
        assert_eq!(late.rerun, Rerun::Tests(vec!["fd::opens_many".into()]));
        assert!(
            late.message
                .as_deref()
                .unwrap()
                .contains("it ran at width 4; the width is already 2"),
            "{late:?}"
        );

        // Failures without EMFILE change nothing.
        let plain = adapter.on_binary_finished("other", 2, &failed[1..], "error: test failed");
        assert_eq!(plain.rerun, Rerun::Nothing);
        assert!(plain.message.is_none() && plain.lowered.is_none());
        assert_eq!(adapter.width(), 2);
        assert_eq!(adapter.messages().len(), 3);
    }

    #[test]
    fn at_width_one_nothing_is_rerun() {
        let mut adapter = EmfileAdapter::new(1);
        let failed = [FailedTest {
            name: "t",
            output: "Too many open files",
        }];
        let outcome = adapter.on_binary_finished("b", 1, &failed, "");
        assert_eq!(outcome.rerun, Rerun::Nothing);
        assert_eq!(outcome.width, 1);
        let message = outcome.message.unwrap();
        assert!(
            message
                .contains("the width is already 1, the lowest; no rerun (nothing left to lower)"),
            "{message}"
        );
        assert!(message.contains("ulimit -n"), "{message}");
    }

    #[test]
    fn a_harness_dying_of_emfile_reruns_the_binary_once() {
        let mut adapter = EmfileAdapter::new(2);
        let stderr = "error: failed to spawn test thread: Too many open files (os error 24)";
        let first = adapter.on_binary_finished("heavy", 2, &[], stderr);
        assert_eq!(first.rerun, Rerun::WholeBinary);
        assert_eq!(first.width, 1);
        assert!(
            first.message.as_deref().unwrap().starts_with(
                "`heavy` failed with \"Too many open files\" (EMFILE); width lowered from 2 to 1"
            ),
            "{first:?}"
        );
        let second = adapter.on_binary_finished("heavy", 1, &[], stderr);
        assert_eq!(second.rerun, Rerun::Nothing);
    }

    #[test]
    fn long_lists_are_shortened() {
        let names: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        assert_eq!(shorten_list(&names), "t0, t1, t2 and 2 more");
        assert_eq!(shorten_list(&names[..2]), "t0, t1");
    }
}
