//! Reading what a test binary prints: its `--list` output ([`list`]) and, while it runs,
//! libtest's pretty output line by line ([`output`]).
//!
//! Both stable libtest and the `capped_test::main!()` harness (built on libtest-mimic, which
//! mimics libtest) are understood. Plain libtest binaries say nothing about timing or about
//! which tests are running when several threads run, so the parser infers what it can and the
//! runner tells it the rest (why the binary ended, harness events) when the binary is done.

use std::borrow::Cow;

pub mod lines;
pub mod list;
pub mod logfile;
pub mod output;

pub use list::{LIST_ARGS, Listing, mark_ignored, parse_list};
pub use output::{BinaryEnd, KillReason, LibtestSummary, OutputEvent, OutputParser, ParsedBinary};

/// The conventional name of a Unix signal (`SIGABRT` for 6), for messages.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// `signal 6 (SIGABRT)`, or `signal 42` for a signal without a well-known name.
pub fn describe_signal(signal: i32) -> String {
    match signal_name(signal) {
        Some(name) => format!("signal {signal} ({name})"),
        None => format!("signal {signal}"),
    }
}

/// What ended a binary, as a report says it when the runner did not kill it: `signal 11
/// (SIGSEGV)`, and for SIGKILL that it came from elsewhere (the runner records every kill
/// it sends; an OOM kill the kernel counted is reported as such before this is asked).
pub fn describe_end_signal(signal: i32) -> String {
    if signal_name(signal) == Some("SIGKILL") {
        "killed by SIGKILL, not sent by cargo capped".to_string()
    } else {
        describe_signal(signal)
    }
}

/// Removes ANSI escape sequences (colors, cursor movement) from a line, so colored libtest
/// output (`--color always`) parses like plain output.
pub fn strip_ansi(line: &str) -> Cow<'_, str> {
    if !line.contains('\u{1b}') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: ESC [ parameters intermediates final-byte (0x40..=0x7e)
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: ESC ] … (BEL | ESC \)
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // Two-character sequences (ESC c, ESC 7, …).
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colors() {
        assert_eq!(
            strip_ansi("test a ... \u{1b}[32mok\u{1b}[0m"),
            "test a ... ok"
        );
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}plain"), "plain");
        assert_eq!(strip_ansi("\u{1b}cx"), "x");
        assert!(matches!(strip_ansi("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn names_signals() {
        assert_eq!(describe_signal(6), "signal 6 (SIGABRT)");
        assert_eq!(describe_signal(9), "signal 9 (SIGKILL)");
        assert_eq!(describe_signal(64), "signal 64");
    }
}
