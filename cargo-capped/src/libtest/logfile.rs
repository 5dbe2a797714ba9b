//! libtest's `--logfile PATH`: one record per finished test, written by libtest's own
//! result loop to a file the runner names. It is the verdict channel for plain libtest
//! binaries, because nothing a test prints can reach it: stdout and stderr are shared with
//! the tests and everything they start, the logfile is not (libtest opens it close-on-exec,
//! after the runner chose its path, and writes it before the matching stdout line).
//!
//! A record is `STATUS NAME` then an optional ` <TIME>` and a newline, where STATUS is `ok`,
//! `failed`, `failed: MESSAGE`, `failed (time limit exceeded)`, `ignored` or
//! `ignored: REASON`. MESSAGE and REASON may span lines (a `#[should_panic(expected)]`
//! mismatch is three), so a record ends at the first line whose last word is a test name the
//! binary listed. libtest writes each record as the test finishes, unbuffered, so the
//! records of the tests that finished survive a crash of the process.
//!
//! libtest marks the option deprecated and says so once on stderr
//! ([`DEPRECATION_NOTICE`]); the runner drops that line. Harnesses that are not libtest
//! (libtest-mimic's) take `--logfile` to mean "print everything there instead", which
//! [`is_libtest_listing`] tells apart from libtest's listing records.

use std::collections::HashSet;

/// The line libtest prints on stderr when `--logfile` is given.
pub const DEPRECATION_NOTICE: &str = "warning: `--logfile` is deprecated";

/// The longest record kept; a longer one (an enormous failure message) is cut there.
const MAX_RECORD: usize = 64 * 1024;

/// What libtest recorded for a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogVerdict {
    /// `ok`: it passed (or panicked as `#[should_panic]` expected).
    Passed,
    /// `failed`, with libtest's message when it gave one (a `#[should_panic]` mismatch, a
    /// time limit).
    Failed {
        /// `failed: MESSAGE`.
        message: Option<String>,
    },
    /// `ignored`, with the `#[ignore = "reason"]` when given.
    Ignored {
        /// `ignored: REASON`.
        reason: Option<String>,
    },
}

/// One record: a test and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The test's libtest name.
    pub name: String,
    /// What libtest recorded.
    pub verdict: LogVerdict,
}

impl LogRecord {
    /// The record as libtest writes it (without the newline): the inverse of
    /// [`LogParser::line`], used by tests and fixtures.
    pub fn format(&self) -> String {
        let status = match &self.verdict {
            LogVerdict::Passed => "ok".to_string(),
            LogVerdict::Failed { message: None } => "failed".to_string(),
            LogVerdict::Failed {
                message: Some(message),
            } => format!("failed: {message}"),
            LogVerdict::Ignored { reason: None } => "ignored".to_string(),
            LogVerdict::Ignored {
                reason: Some(reason),
            } => format!("ignored: {reason}"),
        };
        format!("{status} {}", self.name)
    }
}

/// Parses records line by line. Only names the binary listed end a record, so the parser
/// never takes the text of a message for a record of its own.
#[derive(Debug)]
pub struct LogParser {
    names: HashSet<String>,
    /// Lines of a record whose name has not come yet.
    open: String,
    /// The open record was cut at [`MAX_RECORD`].
    cut: bool,
}

impl LogParser {
    /// A parser for a binary that listed `names`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> LogParser {
        LogParser {
            names: names.into_iter().map(Into::into).collect(),
            open: String::new(),
            cut: false,
        }
    }

    /// Takes one complete line (without its newline); returns the record it completes.
    pub fn line(&mut self, line: &str) -> Option<LogRecord> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((before, name)) = self.split_name(line) else {
            // Part of a message that spans lines: keep it for the record's end.
            if self.open.len() + line.len() < MAX_RECORD {
                if !self.open.is_empty() {
                    self.open.push('\n');
                }
                self.open.push_str(line);
            } else {
                self.cut = true;
            }
            return None;
        };
        let open = std::mem::take(&mut self.open);
        let cut = std::mem::replace(&mut self.cut, false);
        let verdict = if open.is_empty() {
            parse_status(before, false)
        } else {
            // What came before belongs to this record; if the whole does not read as one,
            // this line is a record of its own and the earlier lines were not libtest's.
            parse_status(&format!("{open}\n{before}"), cut).or_else(|| parse_status(before, false))
        }?;
        Some(LogRecord {
            name: name.to_string(),
            verdict,
        })
    }

    /// Splits `STATUS NAME[ <TIME>]` where NAME is a listed name.
    fn split_name<'l>(&self, line: &'l str) -> Option<(&'l str, &'l str)> {
        // An optional ` <1.234s>` follows the name (libtest's `--report-time`).
        let body = match line.rsplit_once(" <") {
            Some((body, time)) if time.ends_with("s>") => body,
            _ => line,
        };
        // A name may have spaces of its own (doc tests': `src/lib.rs - add (line 3)`): the
        // shortest listed name that ends the line is the record's.
        body.match_indices(' ')
            .rev()
            .map(|(at, _)| (&body[..at], &body[at + 1..]))
            .find(|(_, name)| self.names.contains(*name))
    }
}

fn parse_status(status: &str, cut: bool) -> Option<LogVerdict> {
    let note = |text: &str| {
        let mut text = text.to_string();
        if cut {
            text.push_str(" […]");
        }
        text
    };
    match status {
        "ok" => Some(LogVerdict::Passed),
        "failed" => Some(LogVerdict::Failed { message: None }),
        "ignored" => Some(LogVerdict::Ignored { reason: None }),
        "failed (time limit exceeded)" => Some(LogVerdict::Failed {
            message: Some("time limit exceeded".to_string()),
        }),
        _ => {
            if let Some(message) = status.strip_prefix("failed: ") {
                Some(LogVerdict::Failed {
                    message: Some(note(message)),
                })
            } else {
                status
                    .strip_prefix("ignored: ")
                    .map(|reason| LogVerdict::Ignored {
                        reason: Some(note(reason)),
                    })
            }
        }
    }
}

/// Whether `log` is what libtest writes to `--logfile` while listing (`test NAME` /
/// `bench NAME` lines, nothing else): then the binary writes verdict records too. A
/// harness that is not libtest writes its listing there in its own form, or nothing.
pub fn is_libtest_listing(log: &str) -> bool {
    let mut any = false;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let Some((kind, name)) = line.split_once(' ') else {
            return false;
        };
        if !matches!(kind, "test" | "bench") || name.is_empty() || name.contains(' ') {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(names: &[&str], log: &str) -> Vec<LogRecord> {
        let mut parser = LogParser::new(names.iter().copied());
        log.lines().filter_map(|line| parser.line(line)).collect()
    }

    #[test]
    fn names_with_spaces_are_doc_tests() {
        let names = ["src/lib.rs - add (line 3)", "src/lib.rs - sub (line 10)"];
        let records = parse(
            &names,
            "ok src/lib.rs - add (line 3)\nfailed src/lib.rs - sub (line 10)\n",
        );
        assert_eq!(
            records,
            [
                LogRecord {
                    name: names[0].into(),
                    verdict: LogVerdict::Passed,
                },
                LogRecord {
                    name: names[1].into(),
                    verdict: LogVerdict::Failed { message: None },
                },
            ]
        );
    }

    #[test]
    fn records_round_trip() {
        let records = [
            LogRecord {
                name: "a::ok".into(),
                verdict: LogVerdict::Passed,
            },
            LogRecord {
                name: "a::bad".into(),
                verdict: LogVerdict::Failed { message: None },
            },
            LogRecord {
                name: "a::msg".into(),
                verdict: LogVerdict::Failed {
                    message: Some(
                        "panic did not contain expected string\n      panic message: \"x\"\n expected substring: \"y\""
                            .into(),
                    ),
                },
            },
            LogRecord {
                name: "a::skip".into(),
                verdict: LogVerdict::Ignored { reason: None },
            },
            LogRecord {
                name: "a::gpu".into(),
                verdict: LogVerdict::Ignored {
                    reason: Some("needs a gpu".into()),
                },
            },
        ];
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        let log: String = records.iter().map(|r| r.format() + "\n").collect();
        assert_eq!(parse(&names, &log), records);
    }

    #[test]
    fn what_libtest_writes() {
        // Written by rustc 1.95's libtest for a binary with these five tests.
        let log = "ignored slow\nok a_pass\nfailed b_fail\nignored: needs a gpu gpu_only\n\
                   failed: panic did not contain expected string\n      panic message: \"boom\"\n \
                   expected substring: \"bang\" c_should_panic\nok d <0.201s>\n";
        let records = parse(
            &[
                "slow",
                "a_pass",
                "b_fail",
                "gpu_only",
                "c_should_panic",
                "d",
            ],
            log,
        );
        let verdicts: Vec<(&str, &LogVerdict)> = records
            .iter()
            .map(|r| (r.name.as_str(), &r.verdict))
            .collect();
        assert_eq!(verdicts.len(), 6);
        assert_eq!(verdicts[1], ("a_pass", &LogVerdict::Passed));
        assert_eq!(
            verdicts[2],
            ("b_fail", &LogVerdict::Failed { message: None })
        );
        assert_eq!(
            verdicts[3].1,
            &LogVerdict::Ignored {
                reason: Some("needs a gpu".into())
            }
        );
        assert!(
            matches!(verdicts[4].1, LogVerdict::Failed { message: Some(m) } if m.contains("bang"))
        );
        assert_eq!(verdicts[5], ("d", &LogVerdict::Passed));
    }

    #[test]
    fn only_listed_names_end_a_record() {
        // An ignore reason that ends in another test's name spelled differently, and a
        // name that is not listed: neither is taken for a record.
        let records = parse(&["t"], "ok intruder\nok t\n");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, "t");
        // A record whose status reads wrong gives no verdict rather than a wrong one.
        let mut parser = LogParser::new(["t"]);
        assert_eq!(parser.line("maybe t"), None);
    }

    #[test]
    fn an_enormous_message_is_cut_not_kept() {
        let mut parser = LogParser::new(["t"]);
        assert_eq!(parser.line("failed: start"), None);
        let long = "x".repeat(MAX_RECORD);
        for _ in 0..100 {
            assert_eq!(parser.line(&long), None);
        }
        assert!(parser.open.len() <= MAX_RECORD);
        let record = parser.line("end t").unwrap();
        assert!(parser.open.is_empty());
        assert!(
            matches!(record.verdict, LogVerdict::Failed { message: Some(m) } if m.ends_with("[…]"))
        );
    }

    #[test]
    fn listings_tell_libtest_apart() {
        assert!(is_libtest_listing("test a::b\ntest c\nbench d\n"));
        assert!(!is_libtest_listing(""));
        assert!(!is_libtest_listing("a::b: test\n"));
        assert!(!is_libtest_listing("test a ... ok\n"));
    }
}
