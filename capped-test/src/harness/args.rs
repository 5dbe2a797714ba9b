//! libtest's command line, as `cargo test`, `cargo nextest run` and `cargo capped` pass it.
//!
//! The flags libtest-mimic knows are parsed by its clap parser (so `--help` and the errors
//! for a bad flag come from there). libtest-mimic takes one filter and no `--shuffle`, while
//! libtest takes several filters and the unstable shuffling flags, so a small pre-pass takes
//! the positional filters and those flags out first and hands the rest to clap. The pre-pass
//! reads the arguments with `capped_model::libtest_args`, the table of libtest's flags the
//! runner and the caps use too, so all of them agree on which argument is a flag's value.

use capped_model::libtest_args::{self, Kind};
use libtest_mimic::{Arguments, ColorSetting, FormatSetting};

/// Which tests `#[ignore]` selects, as libtest's `RunIgnored`.
pub(crate) use capped_model::libtest_args::RunIgnored;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One line per test (libtest's default).
    Pretty,
    /// One character per test (`-q`, `--format terse`).
    Terse,
    /// One JSON object per line (`--format json`).
    Json,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    /// `--list`.
    pub list: bool,
    /// Positional filters (a test runs if it matches any of them).
    pub filters: Vec<String>,
    /// `--exact`: filters and skips match whole names.
    pub exact: bool,
    /// `--skip FILTER`, repeatable.
    pub skip: Vec<String>,
    /// `--ignored` / `--include-ignored`.
    pub run_ignored: RunIgnored,
    /// `--test-threads N`.
    pub test_threads: Option<u32>,
    /// `--format`, `-q`.
    pub format: Format,
    /// `--color`.
    pub color: bool,
    /// `--shuffle`.
    pub shuffle: bool,
    /// `--shuffle-seed N`.
    pub shuffle_seed: Option<u64>,
    /// `--bench` without `--test`: libtest runs only benchmarks; tests are reported ignored.
    pub bench_only: bool,
    /// `--exclude-should-panic`.
    pub exclude_should_panic: bool,
    /// `--logfile PATH` (accepted, not supported).
    pub logfile: Option<String>,
}

/// Parses `argv` (the first element is the program). `Err` is a usage error to print;
/// clap itself exits for `--help` and for flags it rejects.
pub(crate) fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut argv = argv.into_iter();
    let mut rest = vec![argv.next().unwrap_or_else(|| "test".to_string())];
    let args: Vec<String> = argv.collect();
    let mut filters = Vec::new();
    let mut shuffle = false;
    let mut shuffle_seed = None;
    let mut exclude_should_panic = false;
    for item in libtest_args::parse(&args) {
        let (flag, value) = match item.kind {
            Kind::EndOfFlags => continue,
            Kind::Filter(filter) => {
                filters.push(filter.to_string());
                continue;
            }
            Kind::Flag { flag, value } if flag.takes_value() || value.is_none() => (flag, value),
            // A switch given a value, or a flag libtest does not know: clap reports it.
            Kind::Flag { .. } | Kind::Unknown => {
                rest.extend(item.raw.iter().cloned());
                continue;
            }
        };
        if NO_OPS.contains(&flag) {
            continue;
        }
        if flag == &libtest_args::SHUFFLE {
            shuffle = true;
        } else if flag == &libtest_args::SHUFFLE_SEED {
            let value = value.ok_or("--shuffle-seed needs a value: --shuffle-seed N")?;
            shuffle_seed = Some(parse_seed(value)?);
        } else if flag == &libtest_args::EXCLUDE_SHOULD_PANIC {
            exclude_should_panic = true;
        } else if flag == &libtest_args::NOCAPTURE {
            // libtest-mimic knows only the older spelling.
            rest.push(libtest_args::NOCAPTURE.name().to_string());
        } else {
            rest.extend(item.raw.iter().cloned());
        }
    }
    let parsed = Arguments::from_iter(rest);
    let run_ignored = libtest_args::run_ignored(&args)?;
    let test_threads = match parsed.test_threads {
        None => None,
        Some(0) => return Err("argument for --test-threads must not be 0".into()),
        Some(n) => Some(
            capped_model::units::check_count(n as i128)
                .map_err(|message| format!("argument for --test-threads: {message}"))?,
        ),
    };
    let format = if parsed.quiet {
        Format::Terse
    } else {
        match parsed.format {
            None | Some(FormatSetting::Pretty) => Format::Pretty,
            Some(FormatSetting::Terse) => Format::Terse,
            Some(FormatSetting::Json) => Format::Json,
        }
    };
    let color = match parsed.color.unwrap_or(ColorSetting::Auto) {
        ColorSetting::Always => true,
        ColorSetting::Never => false,
        ColorSetting::Auto => {
            use std::io::IsTerminal;
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    filters.extend(parsed.filter);
    Ok(Args {
        list: parsed.list,
        filters,
        exact: parsed.exact,
        skip: parsed.skip,
        run_ignored,
        test_threads,
        format,
        color,
        shuffle,
        shuffle_seed,
        bench_only: parsed.bench && !parsed.test,
        exclude_should_panic,
        logfile: parsed.logfile,
    })
}

/// libtest flags libtest-mimic does not know and the harness accepts without effect.
const NO_OPS: [&libtest_args::Flag; 3] = [
    &libtest_args::REPORT_TIME,
    &libtest_args::ENSURE_TIME,
    &libtest_args::FORCE_RUN_IN_PROCESS,
];

fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!("--shuffle-seed {text:?} is not a whole number from 0 to 18446744073709551615")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        let mut argv = vec!["bin".to_string()];
        argv.extend(list.iter().map(|a| a.to_string()));
        parse(argv).unwrap()
    }

    #[test]
    fn libtest_flags() {
        let a = args(&[]);
        assert!(!a.list && a.filters.is_empty() && a.run_ignored == RunIgnored::No);
        assert_eq!(a.format, Format::Pretty);

        let a = args(&["--list", "--format", "terse", "--ignored"]);
        assert!(a.list);
        assert_eq!(a.format, Format::Terse);
        assert_eq!(a.run_ignored, RunIgnored::Only);

        let a = args(&["--exact", "a::b", "--nocapture", "--test-threads=3"]);
        assert!(a.exact);
        assert_eq!(a.filters, ["a::b"]);
        assert_eq!(a.test_threads, Some(3));

        let a = args(&["-q", "--skip", "x", "--skip=y", "--include-ignored"]);
        assert_eq!(a.format, Format::Terse);
        assert_eq!(a.skip, ["x", "y"]);
        assert_eq!(a.run_ignored, RunIgnored::Yes);

        let a = args(&[
            "--color",
            "never",
            "--format=json",
            "-Z",
            "unstable-options",
        ]);
        assert!(!a.color);
        assert_eq!(a.format, Format::Json);
    }

    #[test]
    fn what_libtest_mimic_lacks() {
        let a = args(&[
            "one",
            "--shuffle",
            "two",
            "--shuffle-seed",
            "7",
            "--",
            "--three",
        ]);
        assert_eq!(a.filters, ["one", "two", "--three"]);
        assert!(a.shuffle);
        assert_eq!(a.shuffle_seed, Some(7));

        let a = args(&[
            "--shuffle-seed=9",
            "--report-time",
            "--no-capture",
            "--exclude-should-panic",
            "--show-output",
        ]);
        assert_eq!(a.shuffle_seed, Some(9));
        assert!(a.exclude_should_panic);
        assert!(a.filters.is_empty());
    }

    #[test]
    fn usage_errors() {
        let parse_list = |list: &[&str]| {
            let mut argv = vec!["bin".to_string()];
            argv.extend(list.iter().map(|a| a.to_string()));
            parse(argv)
        };
        assert!(
            parse_list(&["--ignored", "--include-ignored"])
                .unwrap_err()
                .contains("mutually exclusive")
        );
        assert!(
            parse_list(&["--test-threads", "0"])
                .unwrap_err()
                .contains("must not be 0")
        );
        assert!(
            parse_list(&["--shuffle-seed", "x"])
                .unwrap_err()
                .contains("whole number")
        );
    }
}
