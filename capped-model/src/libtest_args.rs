//! libtest's command line: one table of its flags, and the helpers that read and rewrite
//! an argument list with it.
//!
//! The harness parses these arguments, the runner checks and rewrites the ones after `--`,
//! and the caps read `--test-threads` from them; with one table they agree on which
//! argument is a flag, which one is that flag's value and which one is a filter. The table
//! follows stable libtest's `--help`, and the parser its `getopts` rules: a flag that takes
//! a value takes the next argument even when it starts with `-` (`--skip --list` skips
//! tests named like `--list`), `--name=value` and `-Zvalue` carry it inline, and after
//! `--` every argument is a filter.
//!
//! ```
//! use capped_model::libtest_args::{self, Kind, RunIgnored, SKIP};
//!
//! let args: Vec<String> = ["foo", "--skip", "bar", "--test-threads=3", "--ignored"]
//!     .map(String::from)
//!     .to_vec();
//! assert_eq!(libtest_args::filters(&args), ["foo"]);
//! assert_eq!(libtest_args::test_threads(&args), Some(3));
//! assert_eq!(libtest_args::run_ignored(&args), Ok(RunIgnored::Only));
//! let items = libtest_args::parse(&args);
//! assert_eq!(items[1].kind, Kind::Flag { flag: &SKIP, value: Some("bar") });
//! assert_eq!(items[1].raw, ["--skip", "bar"]);
//! ```

/// One of libtest's flags.
#[derive(Debug, PartialEq, Eq)]
pub struct Flag {
    /// Its spellings, the one `--help` lists first first (`["--quiet", "-q"]`).
    pub names: &'static [&'static str],
    /// The name of the value it takes (`"N"`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// What it makes of `#[ignore]`d tests, for the two flags that select them.
    pub ignored: Option<RunIgnored>,
}

impl Flag {
    /// The spelling `--help` lists first (`--quiet`, `--nocapture`, `-Z`).
    pub fn name(&self) -> &'static str {
        self.names[0]
    }

    /// Whether it takes a value.
    pub fn takes_value(&self) -> bool {
        self.value.is_some()
    }
}

/// Which tests `#[ignore]` selects, as libtest's `RunIgnored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunIgnored {
    /// Ignored tests are reported `ignored`, not run (the default).
    No,
    /// `--include-ignored`: ignored tests run like the others.
    Yes,
    /// `--ignored`: only ignored tests, and they run.
    Only,
}

const fn switch(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        value: None,
        ignored: None,
    }
}

const fn with_value(names: &'static [&'static str], value: &'static str) -> Flag {
    Flag {
        names,
        value: Some(value),
        ignored: None,
    }
}

/// `--include-ignored`: run ignored and not ignored tests.
pub const INCLUDE_IGNORED: Flag = Flag {
    names: &["--include-ignored"],
    value: None,
    ignored: Some(RunIgnored::Yes),
};
/// `--ignored`: run only ignored tests.
pub const IGNORED: Flag = Flag {
    names: &["--ignored"],
    value: None,
    ignored: Some(RunIgnored::Only),
};
/// `--force-run-in-process`.
pub const FORCE_RUN_IN_PROCESS: Flag = switch(&["--force-run-in-process"]);
/// `--exclude-should-panic`: leave out `#[should_panic]` tests.
pub const EXCLUDE_SHOULD_PANIC: Flag = switch(&["--exclude-should-panic"]);
/// `--test`: run tests, not benchmarks.
pub const TEST: Flag = switch(&["--test"]);
/// `--bench`: run benchmarks instead of tests.
pub const BENCH: Flag = switch(&["--bench"]);
/// `--list`: list the tests and benchmarks.
pub const LIST: Flag = switch(&["--list"]);
/// `--logfile PATH`.
pub const LOGFILE: Flag = with_value(&["--logfile"], "PATH");
/// `--nocapture`, also spelt `--no-capture`.
pub const NOCAPTURE: Flag = switch(&["--nocapture", "--no-capture"]);
/// `--test-threads N`: how many tests run at once.
pub const TEST_THREADS: Flag = with_value(&["--test-threads"], "N");
/// `--skip FILTER`, repeatable: leave out tests whose names contain (or with `--exact` are)
/// FILTER.
pub const SKIP: Flag = with_value(&["--skip"], "FILTER");
/// `-q`, `--quiet`: one character per test.
pub const QUIET: Flag = switch(&["--quiet", "-q"]);
/// `--exact`: filters match whole names.
pub const EXACT: Flag = switch(&["--exact"]);
/// `--color auto|always|never`.
pub const COLOR: Flag = with_value(&["--color"], "auto|always|never");
/// `--format pretty|terse|json|junit`.
pub const FORMAT: Flag = with_value(&["--format"], "pretty|terse|json|junit");
/// `--show-output`: print the output of passing tests too.
pub const SHOW_OUTPUT: Flag = switch(&["--show-output"]);
/// `-Z FLAG`: an unstable option (`-Z unstable-options`).
pub const UNSTABLE: Flag = with_value(&["-Z"], "FLAG");
/// `--report-time`.
pub const REPORT_TIME: Flag = switch(&["--report-time"]);
/// `--ensure-time`.
pub const ENSURE_TIME: Flag = switch(&["--ensure-time"]);
/// `--shuffle`: run the tests in random order.
pub const SHUFFLE: Flag = switch(&["--shuffle"]);
/// `--shuffle-seed SEED`.
pub const SHUFFLE_SEED: Flag = with_value(&["--shuffle-seed"], "SEED");
/// `-h`, `--help`.
pub const HELP: Flag = switch(&["--help", "-h"]);

/// Every flag of stable libtest, in `--help`'s order.
pub const FLAGS: &[Flag] = &[
    INCLUDE_IGNORED,
    IGNORED,
    FORCE_RUN_IN_PROCESS,
    EXCLUDE_SHOULD_PANIC,
    TEST,
    BENCH,
    LIST,
    LOGFILE,
    NOCAPTURE,
    TEST_THREADS,
    SKIP,
    QUIET,
    EXACT,
    COLOR,
    FORMAT,
    SHOW_OUTPUT,
    UNSTABLE,
    REPORT_TIME,
    ENSURE_TIME,
    SHUFFLE,
    SHUFFLE_SEED,
    HELP,
];

/// The flag spelt `name` (`--quiet`, `-q`; without `=value`).
pub fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|flag| flag.names.contains(&name))
}

/// What one item of a command line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A flag of the table, with its value: inline (`--skip=x`, `-Zx`) or the next argument.
    /// `None` when a flag that takes a value ends the list; `Some` for a switch given
    /// `=value`, which libtest rejects but which still names that switch.
    Flag {
        /// The flag.
        flag: &'static Flag,
        /// Its value.
        value: Option<&'a str>,
    },
    /// `--`: every argument after it is a filter.
    EndOfFlags,
    /// An argument that looks like a flag but is none of libtest's (libtest rejects it).
    Unknown,
    /// A positional filter: a test runs if its name contains (with `--exact`: is) one.
    Filter(&'a str),
}

/// One item of a command line: a flag with its value, `--`, an unknown flag or a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    /// What it is.
    pub kind: Kind<'a>,
    /// The arguments it was read from (two for `--skip x`, one otherwise), so a rewrite can
    /// keep an item exactly as it was given.
    pub raw: &'a [String],
}

impl Item<'_> {
    /// Whether this item is `flag` (in any spelling).
    pub fn is(&self, flag: &Flag) -> bool {
        matches!(self.kind, Kind::Flag { flag: f, .. } if f == flag)
    }
}

/// Reads `args` (without the program name) as libtest does: each argument, or a flag with
/// its separate value, becomes one [`Item`], in order.
pub fn parse(args: &[String]) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (kind, used) = if arg == "--" {
            items.push(Item {
                kind: Kind::EndOfFlags,
                raw: &args[i..=i],
            });
            items.extend(args[i + 1..].iter().enumerate().map(|(j, filter)| Item {
                kind: Kind::Filter(filter),
                raw: &args[i + 1 + j..=i + 1 + j],
            }));
            break;
        } else if arg.starts_with("--") {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg, None),
            };
            match lookup(name) {
                Some(flag) => flag_item(flag, inline, args.get(i + 1)),
                None => (Kind::Unknown, 1),
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            match lookup(arg) {
                Some(flag) => flag_item(flag, None, args.get(i + 1)),
                // getopts reads the rest of a short option that takes a value as the value.
                None => match arg.strip_prefix(UNSTABLE.name()) {
                    Some(value) => flag_item(&UNSTABLE, Some(value), None),
                    None => (Kind::Unknown, 1),
                },
            }
        } else {
            (Kind::Filter(arg), 1)
        };
        items.push(Item {
            kind,
            raw: &args[i..i + used],
        });
        i += used;
    }
    items
}

/// A flag's item: its value inline, else the next argument when it takes one; with how many
/// arguments it uses.
fn flag_item<'a>(
    flag: &'static Flag,
    inline: Option<&'a str>,
    next: Option<&'a String>,
) -> (Kind<'a>, usize) {
    match (inline, next) {
        (Some(value), _) => (
            Kind::Flag {
                flag,
                value: Some(value),
            },
            1,
        ),
        (None, Some(value)) if flag.takes_value() => (
            Kind::Flag {
                flag,
                value: Some(value),
            },
            2,
        ),
        (None, _) => (Kind::Flag { flag, value: None }, 1),
    }
}

/// The positional filters of `args`.
pub fn filters(args: &[String]) -> Vec<&str> {
    parse(args)
        .into_iter()
        .filter_map(|item| match item.kind {
            Kind::Filter(filter) => Some(filter),
            _ => None,
        })
        .collect()
}

/// Whether `args` give `flag`.
pub fn has(args: &[String], flag: &Flag) -> bool {
    parse(args).iter().any(|item| item.is(flag))
}

/// The value of the first `flag` in `args` (libtest rejects a second one of those that do
/// not repeat).
pub fn value<'a>(args: &'a [String], flag: &Flag) -> Option<&'a str> {
    parse(args).into_iter().find_map(|item| match item.kind {
        Kind::Flag { flag: f, value } if f == flag => value,
        _ => None,
    })
}

/// `--test-threads N` or `--test-threads=N`, when N is a positive number.
pub fn test_threads(args: &[String]) -> Option<u32> {
    value(args, &TEST_THREADS)
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

/// Which ignored tests `args` select; `Err` with libtest's message when they give both
/// `--ignored` and `--include-ignored`.
pub fn run_ignored(args: &[String]) -> Result<RunIgnored, String> {
    let items = parse(args);
    let mut selected = items.iter().filter_map(|item| match item.kind {
        Kind::Flag { flag, .. } => flag.ignored,
        _ => None,
    });
    let first = selected.next().unwrap_or(RunIgnored::No);
    if selected.any(|other| other != first) {
        return Err("the options --include-ignored and --ignored are mutually exclusive".into());
    }
    Ok(first)
}

/// `args` without any `flag` (and its value), everything else as it was given.
pub fn remove(args: &[String], flag: &Flag) -> Vec<String> {
    parse(args)
        .into_iter()
        .filter(|item| !item.is(flag))
        .flat_map(|item| item.raw.iter().cloned())
        .collect()
}

/// `args` with `flag` set to `value` (once, as `--flag value`, in place of the first one it
/// had, else first), everything else as it was given.
pub fn replace(args: &[String], flag: &Flag, value: &str) -> Vec<String> {
    let given = [flag.name().to_string(), value.to_string()];
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut placed = false;
    for item in parse(args) {
        if item.is(flag) {
            if !placed {
                out.extend(given.iter().cloned());
                placed = true;
            }
        } else {
            out.extend(item.raw.iter().cloned());
        }
    }
    if !placed {
        out.splice(0..0, given);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_table_has_each_spelling_once() {
        let mut names: Vec<&str> = FLAGS.iter().flat_map(|f| f.names.iter().copied()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a spelling names two flags");
        for name in names {
            assert!(name.starts_with('-'), "{name}");
        }
    }

    #[test]
    fn the_table_knows_values_and_roles() {
        for (name, value) in [
            ("--logfile", true),
            ("--test-threads", true),
            ("--skip", true),
            ("--color", true),
            ("--format", true),
            ("-Z", true),
            ("--shuffle-seed", true),
            ("--exact", false),
            ("--nocapture", false),
            ("--no-capture", false),
            ("-q", false),
            ("--quiet", false),
            ("-h", false),
            ("--list", false),
            ("--show-output", false),
        ] {
            assert_eq!(lookup(name).unwrap().takes_value(), value, "{name}");
        }
        assert_eq!(lookup("-q"), Some(&QUIET));
        assert_eq!(lookup("--no-capture").unwrap().name(), "--nocapture");
        assert_eq!(lookup("--nope"), None);
        let selecting: Vec<&str> = FLAGS
            .iter()
            .filter(|f| f.ignored.is_some())
            .map(Flag::name)
            .collect();
        assert_eq!(selecting, ["--include-ignored", "--ignored"]);
    }

    #[test]
    fn flags_take_their_values_and_the_rest_are_filters() {
        let args = strings(&[
            "foo",
            "--skip",
            "bar",
            "--logfile",
            "x",
            "--exact",
            "-",
            "--skip=baz",
            "-Zunstable-options",
            "-Z",
            "other",
            "--skip",
            "--list",
        ]);
        assert_eq!(filters(&args), ["foo", "-"]);
        let items = parse(&args);
        assert_eq!(
            items[1].kind,
            Kind::Flag {
                flag: &SKIP,
                value: Some("bar")
            }
        );
        assert_eq!(items[1].raw, ["--skip", "bar"]);
        assert_eq!(
            items[2].kind,
            Kind::Flag {
                flag: &LOGFILE,
                value: Some("x")
            }
        );
        assert_eq!(
            items[5].kind,
            Kind::Flag {
                flag: &SKIP,
                value: Some("baz")
            }
        );
        assert_eq!(items[5].raw, ["--skip=baz"]);
        assert_eq!(
            items[6].kind,
            Kind::Flag {
                flag: &UNSTABLE,
                value: Some("unstable-options")
            }
        );
        assert_eq!(items[7].raw, ["-Z", "other"]);
        // A value is taken even when it looks like a flag, as getopts does.
        assert_eq!(items[8].raw, ["--skip", "--list"]);
        assert!(!has(&args, &LIST));
        assert_eq!(items.len(), 9);
    }

    #[test]
    fn after_the_separator_everything_is_a_filter() {
        let args = strings(&["--exact", "--", "--list", "a"]);
        let items = parse(&args);
        assert_eq!(items[1].kind, Kind::EndOfFlags);
        assert_eq!(filters(&args), ["--list", "a"]);
        assert!(!has(&args, &LIST));
    }

    #[test]
    fn unknown_flags_and_missing_values() {
        let args = strings(&["--frobnicate", "x", "-qh", "--skip"]);
        let items = parse(&args);
        assert_eq!(items[0].kind, Kind::Unknown);
        assert_eq!(items[1].kind, Kind::Filter("x"));
        assert_eq!(items[2].kind, Kind::Unknown);
        assert_eq!(
            items[3].kind,
            Kind::Flag {
                flag: &SKIP,
                value: None
            }
        );
        let args = strings(&["--exact=yes"]);
        assert!(parse(&args)[0].is(&EXACT), "a switch given a value");
    }

    #[test]
    fn test_threads_in_either_form() {
        assert_eq!(test_threads(&strings(&["--test-threads=3"])), Some(3));
        assert_eq!(test_threads(&strings(&["--test-threads", "3"])), Some(3));
        assert_eq!(test_threads(&strings(&["a", "--test-threads", "0"])), None);
        assert_eq!(test_threads(&strings(&["--test-threads", "x"])), None);
        assert_eq!(test_threads(&strings(&["--test-threads"])), None);
        assert_eq!(
            test_threads(&strings(&["--skip", "--test-threads", "4"])),
            None,
            "a skip filter, then a filter"
        );
        assert_eq!(
            test_threads(&strings(&["--test-threads=2", "--test-threads=5"])),
            Some(2)
        );
        assert_eq!(test_threads(&strings(&["--", "--test-threads=2"])), None);
    }

    #[test]
    fn ignored_selection() {
        assert_eq!(run_ignored(&[]), Ok(RunIgnored::No));
        assert_eq!(
            run_ignored(&strings(&["--ignored", "--ignored"])),
            Ok(RunIgnored::Only)
        );
        assert_eq!(
            run_ignored(&strings(&["--include-ignored"])),
            Ok(RunIgnored::Yes)
        );
        assert!(
            run_ignored(&strings(&["--ignored", "--include-ignored"]))
                .unwrap_err()
                .contains("mutually exclusive")
        );
        assert_eq!(
            run_ignored(&strings(&["--skip", "--ignored"])),
            Ok(RunIgnored::No)
        );
    }

    #[test]
    fn remove_and_replace_keep_the_rest() {
        let args = strings(&[
            "a",
            "--test-threads",
            "2",
            "--skip=b",
            "--test-threads=3",
            "--nocapture",
        ]);
        assert_eq!(
            remove(&args, &TEST_THREADS),
            ["a", "--skip=b", "--nocapture"]
        );
        assert_eq!(
            remove(&args, &SKIP),
            strings(&[
                "a",
                "--test-threads",
                "2",
                "--test-threads=3",
                "--nocapture"
            ])
        );
        assert_eq!(
            replace(&args, &TEST_THREADS, "4"),
            ["a", "--test-threads", "4", "--skip=b", "--nocapture"]
        );
        assert_eq!(
            replace(&strings(&["a"]), &TEST_THREADS, "1"),
            ["--test-threads", "1", "a"]
        );
        assert_eq!(remove(&strings(&["-q", "--quiet=x", "b"]), &QUIET), ["b"]);
    }
}
