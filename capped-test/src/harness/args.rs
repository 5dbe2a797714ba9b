//! libtest's command line, as `cargo test`, `cargo nextest run` and `cargo capped` pass it.
//!
//! The flags libtest-mimic knows are parsed by its clap parser (so `--help` and the errors
//! for a bad flag come from there). libtest-mimic takes one filter and no `--shuffle`, while
//! libtest takes several filters and the unstable shuffling flags, so a small pre-pass takes
//! the positional filters and those flags out first and hands the rest to clap.

use libtest_mimic::{Arguments, ColorSetting, FormatSetting};

/// Which tests `#[ignore]` selects, as libtest's `RunIgnored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunIgnored {
    /// Ignored tests are reported `ignored`, not run (the default).
    No,
    /// `--include-ignored`: ignored tests run like the others.
    Yes,
    /// `--ignored`: only ignored tests, and they run.
    Only,
}

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

/// Flags of libtest that take a value (as a separate argument or after `=`).
const WITH_VALUE: [&str; 6] = [
    "--test-threads",
    "--logfile",
    "--skip",
    "--color",
    "--format",
    "-Z",
];

/// libtest flags libtest-mimic does not know and the harness accepts without effect.
const NO_OPS: [&str; 3] = ["--report-time", "--ensure-time", "--force-run-in-process"];

/// Parses `argv` (the first element is the program). `Err` is a usage error to print;
/// clap itself exits for `--help` and for flags it rejects.
pub(crate) fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut argv = argv.into_iter();
    let mut rest = vec![argv.next().unwrap_or_else(|| "test".to_string())];
    let mut filters = Vec::new();
    let mut shuffle = false;
    let mut shuffle_seed = None;
    let mut exclude_should_panic = false;
    let mut only_positional = false;
    while let Some(arg) = argv.next() {
        if only_positional {
            filters.push(arg);
            continue;
        }
        match arg.as_str() {
            "--" => only_positional = true,
            "--shuffle" => shuffle = true,
            "--shuffle-seed" => {
                let value = argv
                    .next()
                    .ok_or("--shuffle-seed needs a value: --shuffle-seed N")?;
                shuffle_seed = Some(parse_seed(&value)?);
            }
            "--exclude-should-panic" => exclude_should_panic = true,
            "--no-capture" => rest.push("--nocapture".to_string()),
            flag if NO_OPS.contains(&flag) => {}
            flag if WITH_VALUE.contains(&flag) => {
                rest.push(arg);
                if let Some(value) = argv.next() {
                    rest.push(value);
                }
            }
            _ => {
                if let Some(value) = arg.strip_prefix("--shuffle-seed=") {
                    shuffle_seed = Some(parse_seed(value)?);
                } else if arg.starts_with('-') && arg != "-" {
                    rest.push(arg);
                } else {
                    filters.push(arg);
                }
            }
        }
    }
    let parsed = Arguments::from_iter(rest);
    let run_ignored = match (parsed.include_ignored, parsed.ignored) {
        (true, true) => {
            return Err(
                "the options --include-ignored and --ignored are mutually exclusive".into(),
            );
        }
        (true, false) => RunIgnored::Yes,
        (false, true) => RunIgnored::Only,
        (false, false) => RunIgnored::No,
    };
    let test_threads = match parsed.test_threads {
        None => None,
        Some(0) => return Err("argument for --test-threads must not be 0".into()),
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
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
