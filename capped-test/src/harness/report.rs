//! libtest's console output, written as libtest writes it (`pretty`, `terse`, `json`), so
//! `cargo test`, nextest, `cargo capped` and CI tooling read it as they read libtest's.

use std::io::Write;
use std::time::Duration;

use super::args::Format;

/// How one test ended, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shown {
    /// `ok`.
    Ok,
    /// `FAILED`, with an optional note (`timed out after 1.00s`).
    Failed(Option<String>),
    /// `ignored`, with the `#[ignore = "reason"]`.
    Ignored(Option<String>),
}

/// The counts of the closing `test result:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub filtered_out: usize,
}

/// Writes the run's output to stdout (or any writer, for tests).
pub(crate) struct Report<W: Write> {
    out: W,
    format: Format,
    color: bool,
    /// libtest prints `test NAME ... ` when a test starts if it runs one at a time.
    one_at_a_time: bool,
    total: usize,
    /// Terse mode: results written, and characters on the current line.
    terse_count: usize,
    terse_column: usize,
    /// `#[should_panic]` tests, which libtest names `test NAME - should panic ... ok`.
    should_panic: std::collections::HashSet<String>,
}

/// libtest wraps terse output after this many characters.
const TERSE_COLUMNS: usize = 88;

impl<W: Write> Report<W> {
    pub fn new(out: W, format: Format, color: bool, one_at_a_time: bool) -> Report<W> {
        Report {
            out,
            format,
            color,
            one_at_a_time,
            total: 0,
            terse_count: 0,
            terse_column: 0,
            should_panic: Default::default(),
        }
    }

    /// Notes that `name` is a `#[should_panic]` test.
    pub fn mark_should_panic(&mut self, name: &str) {
        self.should_panic.insert(name.to_string());
    }

    /// `test NAME ... ` or `test NAME - should panic ... `.
    fn name(&mut self, name: &str) {
        if self.should_panic.contains(name) {
            self.plain(&format!("test {name} - should panic ... "));
        } else {
            self.plain(&format!("test {name} ... "));
        }
    }

    /// The writer (for tests).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    fn plain(&mut self, text: &str) {
        // Like libtest: output that cannot be written (a closed pipe) is not an error of
        // the tests; the exit status still tells.
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn pretty(&mut self, text: &str, color: u8) {
        if self.color {
            self.plain(&format!("\x1b[{color}m{text}\x1b[0m"));
        } else {
            self.plain(text);
        }
    }

    fn json(&mut self, value: serde_json::Value) {
        self.plain(&format!("{value}\n"));
    }

    /// `running N tests`.
    pub fn run_start(&mut self, count: usize, shuffle_seed: Option<u64>) {
        self.total = count;
        match self.format {
            Format::Json => {
                let mut event = serde_json::json!({
                    "type": "suite", "event": "started", "test_count": count,
                });
                if let Some(seed) = shuffle_seed {
                    event["shuffle_seed"] = seed.into();
                }
                self.json(event);
            }
            Format::Pretty | Format::Terse => {
                let noun = if count == 1 { "test" } else { "tests" };
                let seed = shuffle_seed
                    .map(|seed| format!(" (shuffle seed: {seed})"))
                    .unwrap_or_default();
                self.plain(&format!("\nrunning {count} {noun}{seed}\n"));
            }
        }
    }

    /// A test started.
    pub fn test_start(&mut self, name: &str) {
        match self.format {
            Format::Json => self.json(serde_json::json!({
                "type": "test", "event": "started", "name": name,
            })),
            Format::Pretty if self.one_at_a_time => self.name(name),
            Format::Pretty | Format::Terse => {}
        }
    }

    /// libtest's warning for a test running for over 60 seconds.
    pub fn slow(&mut self, name: &str, after: Duration) {
        match self.format {
            Format::Json => self.json(serde_json::json!({
                "type": "test", "event": "timeout", "name": name,
            })),
            Format::Pretty | Format::Terse => self.plain(&format!(
                "test {name} has been running for over {} seconds\n",
                after.as_secs()
            )),
        }
    }

    /// A test ended (or was ignored); `stdout` is the text of its failures section.
    pub fn test_end(&mut self, name: &str, shown: &Shown, stdout: Option<&str>) {
        match self.format {
            Format::Json => {
                let mut event = serde_json::json!({ "type": "test", "name": name });
                match shown {
                    Shown::Ok => event["event"] = "ok".into(),
                    Shown::Failed(note) => {
                        event["event"] = "failed".into();
                        if let Some(stdout) = stdout {
                            event["stdout"] = stdout.into();
                        }
                        if let Some(note) = note {
                            event["message"] = note.as_str().into();
                        }
                    }
                    Shown::Ignored(reason) => {
                        event["event"] = "ignored".into();
                        if let Some(reason) = reason {
                            event["message"] = reason.as_str().into();
                        }
                    }
                }
                self.json(event);
            }
            Format::Pretty => {
                if !self.one_at_a_time || matches!(shown, Shown::Ignored(_)) {
                    self.name(name);
                }
                match shown {
                    Shown::Ok => self.pretty("ok", 32),
                    Shown::Failed(None) => self.pretty("FAILED", 31),
                    Shown::Failed(Some(note)) => self.pretty(&format!("FAILED ({note})"), 31),
                    Shown::Ignored(None) => self.pretty("ignored", 33),
                    Shown::Ignored(Some(reason)) => self.pretty(&format!("ignored, {reason}"), 33),
                }
                self.plain("\n");
            }
            Format::Terse => match shown {
                Shown::Ok => self.terse_char(".", 32),
                Shown::Ignored(_) => self.terse_char("i", 33),
                Shown::Failed(_) => {
                    // libtest puts a failed test on a line of its own, with its name.
                    if self.terse_column != 0 {
                        self.terse_progress();
                    }
                    self.terse_count += 1;
                    self.plain(&format!("{name} --- "));
                    self.pretty("FAILED", 31);
                    self.plain("\n");
                }
            },
        }
    }

    fn terse_char(&mut self, result: &str, color: u8) {
        self.pretty(result, color);
        self.terse_count += 1;
        self.terse_column += 1;
        if self.terse_column % TERSE_COLUMNS == TERSE_COLUMNS - 1 {
            self.terse_progress();
        }
    }

    fn terse_progress(&mut self) {
        let progress = format!(" {}/{}\n", self.terse_count, self.total);
        self.plain(&progress);
        self.terse_column = 0;
    }

    /// A note for people (and nothing in JSON, where it would break the stream): goes to
    /// stderr there.
    pub fn note(&mut self, text: &str) {
        match self.format {
            Format::Json => eprintln!("{text}"),
            Format::Pretty | Format::Terse => self.plain(&format!("{text}\n")),
        }
    }

    /// The failures section and the closing `test result:` line. `failures` are
    /// (name, stdout section) in the order they failed.
    pub fn run_end(&mut self, failures: &[(String, String)], counts: Counts, took: Duration) {
        let success = counts.failed == 0;
        if let Format::Json = self.format {
            self.json(serde_json::json!({
                "type": "suite",
                "event": if success { "ok" } else { "failed" },
                "passed": counts.passed,
                "failed": counts.failed,
                "ignored": counts.ignored,
                "measured": 0,
                "filtered_out": counts.filtered_out,
                "exec_time": took.as_secs_f64(),
            }));
            return;
        }
        if !failures.is_empty() {
            self.plain("\nfailures:\n");
            let mut sections = String::new();
            for (name, stdout) in failures {
                if !stdout.is_empty() {
                    sections.push_str(&format!("---- {name} stdout ----\n{stdout}\n"));
                }
            }
            if !sections.is_empty() {
                self.plain("\n");
                self.plain(&sections);
            }
            self.plain("\nfailures:\n");
            let mut names: Vec<&str> = failures.iter().map(|(name, _)| name.as_str()).collect();
            names.sort_unstable();
            for name in names {
                self.plain(&format!("    {name}\n"));
            }
        }
        self.plain("\ntest result: ");
        if success {
            self.pretty("ok", 32);
        } else {
            self.pretty("FAILED", 31);
        }
        self.plain(&format!(
            ". {} passed; {} failed; {} ignored; 0 measured; {} filtered out; finished in {:.2}s\n\n",
            counts.passed,
            counts.failed,
            counts.ignored,
            counts.filtered_out,
            took.as_secs_f64()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(report: Report<Vec<u8>>) -> String {
        String::from_utf8(report.into_inner()).unwrap()
    }

    #[test]
    fn pretty_output_is_libtests() {
        let mut r = Report::new(Vec::new(), Format::Pretty, false, false);
        r.mark_should_panic("a::ok");
        r.run_start(3, None);
        r.test_end("a::ign", &Shown::Ignored(Some("slow".into())), None);
        r.test_end("a::ok", &Shown::Ok, None);
        r.test_end("a::bad", &Shown::Failed(None), Some("boom\n"));
        let failures = vec![("a::bad".to_string(), "boom\n".to_string())];
        r.run_end(
            &failures,
            Counts {
                passed: 1,
                failed: 1,
                ignored: 1,
                filtered_out: 2,
            },
            Duration::from_millis(1234),
        );
        assert_eq!(
            text(r),
            "\nrunning 3 tests\n\
             test a::ign ... ignored, slow\n\
             test a::ok - should panic ... ok\n\
             test a::bad ... FAILED\n\
             \nfailures:\n\n---- a::bad stdout ----\nboom\n\n\
             \nfailures:\n    a::bad\n\
             \ntest result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 2 filtered out; finished in 1.23s\n\n"
        );
    }

    #[test]
    fn one_at_a_time_names_the_test_first() {
        let mut r = Report::new(Vec::new(), Format::Pretty, false, true);
        r.run_start(1, Some(7));
        r.test_start("a");
        r.test_end(
            "a",
            &Shown::Failed(Some("timed out after 1.00s".into())),
            None,
        );
        assert_eq!(
            text(r),
            "\nrunning 1 test (shuffle seed: 7)\ntest a ... FAILED (timed out after 1.00s)\n"
        );
    }

    #[test]
    fn terse_output_wraps_like_libtest() {
        let mut r = Report::new(Vec::new(), Format::Terse, false, false);
        r.run_start(100, None);
        for _ in 0..99 {
            r.test_end("t", &Shown::Ok, None);
        }
        r.test_end("t", &Shown::Ignored(None), None);
        r.run_end(&[], Counts::default(), Duration::ZERO);
        let out = text(r);
        assert!(out.starts_with("\nrunning 100 tests\n"));
        assert!(out.contains(&format!("\n{} 87/100\n", ".".repeat(87))));
        assert!(out.ends_with(&format!(
            "{}i\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n",
            ".".repeat(12)
        )));
    }

    #[test]
    fn terse_output_names_failures_on_their_own_line() {
        let mut r = Report::new(Vec::new(), Format::Terse, false, false);
        r.run_start(5, None);
        r.test_end("a", &Shown::Failed(None), None);
        r.test_end("b", &Shown::Ok, None);
        r.test_end("c", &Shown::Ignored(None), None);
        r.test_end("d", &Shown::Failed(None), None);
        r.test_end("e", &Shown::Ok, None);
        assert_eq!(
            text(r),
            "\nrunning 5 tests\na --- FAILED\n.i 3/5\nd --- FAILED\n."
        );
    }

    #[test]
    fn json_lines_parse() {
        let mut r = Report::new(Vec::new(), Format::Json, false, false);
        r.run_start(2, None);
        r.test_start("a");
        r.test_end("a", &Shown::Ok, None);
        r.test_end("b", &Shown::Failed(None), Some("boom"));
        r.run_end(&[], Counts::default(), Duration::ZERO);
        let lines: Vec<serde_json::Value> = text(r)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["test_count"], 2);
        assert_eq!(lines[3]["stdout"], "boom");
        assert_eq!(lines[4]["event"], "ok");
    }
}
