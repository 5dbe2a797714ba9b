//! The report: consumes the runner's [`RunEvent`]s and shows them to people, programs and CI.
//!
//! * **Human** lines ([`human`]) always go to **stderr**, as nextest's do: a header, one line
//!   per finished test, failing tests' output, notices, binary problems and the summary. On a
//!   terminal (and not under `CI`) an indicatif progress bar sits below them: tests and
//!   binaries done, an estimate of the time left, and what runs now with how long it has
//!   run ([`progress`]). In a pipe or a file, and under `CI`, there is none: the log holds
//!   only lines. `-q` keeps only failures and the summary; `-v` adds binary
//!   start/finish lines and binaries' unattributed output.
//! * **JSON** (`--message-format json`, [`json`]): one object per event per line on
//!   **stdout**, which carries nothing else, so `cargo capped t2 --message-format json | jq`
//!   works while people still see the human report on stderr.
//! * **JUnit** (`--junit PATH`, [`junit`]): written when the run finishes.
//!
//! The runner calls [`Reporter::event`] for every event, in order, ending with
//! [`RunEvent::RunFinished`], then [`Reporter::finish`].

pub mod human;
pub mod json;
pub mod junit;
pub mod progress;
pub mod style;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::RunEvent;
use human::Human;
use junit::Junit;
use progress::Progress;
use style::Painter;

/// `--message-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    /// Lines for people (stderr).
    #[default]
    Human,
    /// JSON events on stdout, and the human lines on stderr.
    Json,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colors when stderr is a terminal, unless `CARGO_TERM_COLOR` or `NO_COLOR` say
    /// otherwise.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `-q` / `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Failures (and their output), binary problems, notices and the summary.
    Quiet,
    /// Also a line for every test that passed, was skipped or did not run, and the header.
    #[default]
    Normal,
    /// Also binaries starting and finishing, and their output not attributed to a test.
    Verbose,
}

/// How the report looks.
#[derive(Debug, Clone, Default)]
pub struct ReporterOptions {
    /// Human only, or JSON too.
    pub format: ReportFormat,
    /// Colors.
    pub color: ColorChoice,
    /// How much to show.
    pub verbosity: Verbosity,
    /// Where to write a JUnit report.
    pub junit: Option<PathBuf>,
    /// Whether stderr is a terminal: the progress bar shows (unless `CI` is set) and `auto`
    /// colors are on. [`ReporterOptions::detect_terminal`] fills it in.
    pub is_terminal: bool,
}

impl ReporterOptions {
    /// Sets `is_terminal` from the real stderr.
    pub fn detect_terminal(mut self) -> ReporterOptions {
        self.is_terminal = io::stderr().is_terminal();
        self
    }
}

/// Whether to color, given the choice, whether stderr is a terminal, and the values of
/// `CARGO_TERM_COLOR` and `NO_COLOR`. An explicit `always`/`never` wins; under `auto`,
/// `CARGO_TERM_COLOR=always|never` decides, then a non-empty `NO_COLOR` turns colors off,
/// then the terminal decides.
pub fn color_enabled(
    choice: ColorChoice,
    is_terminal: bool,
    cargo_term_color: Option<&str>,
    no_color: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => match cargo_term_color.map(str::trim) {
            Some("always") => true,
            Some("never") => false,
            _ => no_color.is_none_or(str::is_empty) && is_terminal,
        },
    }
}

/// Whether a value of `CI` means a CI job (set and not empty, `false` or `0`).
fn ci_says_so(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the progress bar shows: stderr is a terminal and this is not a CI job (CI logs
/// are files, where a redrawn bar is noise).
pub fn progress_enabled(is_terminal: bool, ci: Option<&str>) -> bool {
    is_terminal && !ci_says_so(ci)
}

/// A report [`Reporter::finish`] could not write completely.
#[derive(Debug)]
pub struct ReportError {
    /// The first output error.
    pub error: io::Error,
    /// Whether the report already said so (the summary names a JUnit report it could not
    /// write), so it is not said twice.
    pub shown: bool,
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the report: {}", self.error)
    }
}

impl std::error::Error for ReportError {}

/// Consumes a run's events and writes the reports. See the [module docs](self).
pub struct Reporter {
    human: Human,
    /// stderr (human lines).
    err: Box<dyn Write + Send>,
    /// stdout (JSON lines), when the format is JSON.
    json: Option<Box<dyn Write + Send>>,
    junit: Option<(PathBuf, Junit)>,
    junit_written: bool,
    progress: Option<ProgressBar>,
    /// What the bar shows after itself, shared with its style, which renders it on every
    /// tick so elapsed times move between events.
    work: Arc<Mutex<Progress>>,
    error: Option<io::Error>,
    /// Whether `error` was already shown (a JUnit report that could not be written is
    /// named in the summary).
    error_shown: bool,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter writing to the process's stdout and stderr, reading `NO_COLOR`,
    /// `CARGO_TERM_COLOR` and `CI` from the environment.
    pub fn new(options: ReporterOptions) -> Reporter {
        let color = color_enabled(
            options.color,
            options.is_terminal,
            std::env::var("CARGO_TERM_COLOR").ok().as_deref(),
            std::env::var("NO_COLOR").ok().as_deref(),
        );
        let ci = std::env::var("CI").ok();
        let progress = progress_enabled(options.is_terminal, ci.as_deref()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Reporter::build(
            options,
            color,
            Box::new(io::stdout()),
            Box::new(io::stderr()),
            progress,
        )
    }

    /// A reporter writing JSON to `out` and human lines to `err`, without a progress bar
    /// and without reading the environment (`auto` colors follow `is_terminal`). For tests
    /// and embedding.
    pub fn with_writers(
        options: ReporterOptions,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Reporter {
        let color = color_enabled(options.color, options.is_terminal, None, None);
        Reporter::build(options, color, out, err, None)
    }

    fn build(
        options: ReporterOptions,
        color: bool,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        progress: Option<ProgressBar>,
    ) -> Reporter {
        let work = Arc::new(Mutex::new(Progress::default()));
        if let Some(bar) = &progress {
            let template = if color {
                "{prefix:>12.green.bold} [{elapsed_precise}] {bar:20.cyan/blue} {work}"
            } else {
                "{prefix:>12} [{elapsed_precise}] {bar:20} {work}"
            };
            let shown = Arc::clone(&work);
            if let Ok(style) = ProgressStyle::with_template(template) {
                let style = style.progress_chars("=> ").with_key(
                    "work",
                    move |_: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                        if let Ok(work) = shown.lock() {
                            let _ = out.write_str(&work.render(Instant::now()));
                        }
                    },
                );
                bar.set_style(style);
            }
            bar.set_prefix("Running");
        }
        Reporter {
            human: Human::new(Painter { on: color }, options.verbosity),
            err,
            json: (options.format == ReportFormat::Json).then_some(out),
            junit: options.junit.map(|path| (path, Junit::default())),
            junit_written: false,
            progress,
            work,
            error: None,
            error_shown: false,
        }
    }

    /// Takes the next event of the run. Output errors are remembered and returned by
    /// [`Reporter::finish`]; a failed writer is not written to again.
    pub fn event(&mut self, event: &RunEvent) {
        if let Some(out) = &mut self.json {
            let line = json::line(event);
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                self.json = None;
                self.error.get_or_insert(e);
            }
        }
        if let Some((_, junit)) = &mut self.junit {
            junit.event(event);
        }
        self.track_progress(event);
        let text = match event {
            RunEvent::RunFinished(summary) => {
                if let Some(bar) = self.progress.take() {
                    bar.finish_and_clear();
                }
                let junit = self.write_junit();
                if let Some(Err(e)) = &junit
                    && self.error.is_none()
                {
                    self.error = Some(io::Error::other(e.clone()));
                    self.error_shown = true;
                }
                let junit = junit
                    .as_ref()
                    .map(|r| r.as_ref().map(|p| p.as_path()).map_err(Clone::clone));
                self.human.summary(summary, junit)
            }
            event => self.human.event(event),
        };
        self.print(&text);
    }

    /// Flushes the writers, removes the progress bar, and writes the JUnit report if
    /// `RunFinished` never came. Returns the first output error (a JSON line or the JUnit
    /// report that could not be written): the run's reports are incomplete, which fails it.
    pub fn finish(mut self) -> Result<(), ReportError> {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
        if let Some(Err(e)) = self.write_junit() {
            self.error.get_or_insert(io::Error::other(e));
        }
        if let Err(e) = self.err.flush() {
            self.error.get_or_insert(e);
        }
        if let Some(out) = &mut self.json
            && let Err(e) = out.flush()
        {
            self.error.get_or_insert(e);
        }
        match self.error {
            Some(error) => Err(ReportError {
                error,
                shown: self.error_shown,
            }),
            None => Ok(()),
        }
    }

    /// Writes the JUnit report once; `None` when there is none to write (or it was).
    fn write_junit(&mut self) -> Option<Result<PathBuf, String>> {
        if self.junit_written {
            return None;
        }
        let (path, junit) = self.junit.as_ref()?;
        self.junit_written = true;
        Some(junit.write(path).map(|()| path.clone()))
    }

    fn track_progress(&mut self, event: &RunEvent) {
        let Some(bar) = &self.progress else { return };
        if let Ok(mut work) = self.work.lock() {
            work.event(event, Instant::now());
        }
        match event {
            RunEvent::RunStarted { tests, .. } => bar.set_length(*tests as u64),
            RunEvent::TestFinished(_) => bar.inc(1),
            _ => {}
        }
    }

    /// Writes human text to stderr, above the progress bar when there is one.
    fn print(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let err = &mut self.err;
        let result = match &self.progress {
            Some(bar) => bar.suspend(|| err.write_all(text.as_bytes()).and_then(|()| err.flush())),
            None => err.write_all(text.as_bytes()),
        };
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests;
