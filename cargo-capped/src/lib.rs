//! `cargo capped`: run a workspace's tests with capped width, serialized heavy groups and capped thread pools.
//!
//! Pipeline: [`plan`] (profile + config + command line → the run's caps) → [`build`]
//! (`cargo test --no-run`) → [`run`] (each test binary in its own process group, scheduled
//! under the run-wide width and groups, with the host-safety hooks of
//! [`run::host_safety`]: degrade, memory watchdog, NOFILE, EMFILE) → report (a stream of
//! [`events::RunEvent`]s). Besides: [`preflight`] (`cargo capped preflight`) and [`gate`]
//! (`cargo capped gate`). Every child process is started, waited for and killed through
//! [`process`].

/// `eprintln!` that cannot panic: a closed stderr (`2>&1 | head`) is no reason to, and the
/// exit status still says how things went.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that cannot panic: a reader that went away (`| head`) has what it wanted.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod adapt;
pub mod build;
pub mod cli;
pub mod errors;
pub mod events;
pub mod gate;
pub mod history;
pub mod host;
pub mod libtest;
pub mod nextest_config;
pub mod plan;
pub mod preflight;
pub mod process;
pub mod reporter;
pub mod run;
pub mod watchdog;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ListArgs, MessageFormat, RunArgs};
use errors::{EXIT_USAGE, Error, Result};
use events::RunEvent;
use plan::{Plan, PlanInput};

/// Runs `cargo capped` with the process's arguments (`args[0]` is the program) and returns
/// its exit status: 0 all passed, 100 a test failed, 101 the build failed, 2 bad usage, 4 no test ran, 1 the runner failed.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = cli::normalize_args(args);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let code = match dispatch(cli) {
        Ok(code) => code,
        // A Ctrl-C reaches the children in the runner's own process group too (`cargo
        // metadata`): what failed then was interrupted, whatever step saw it first.
        Err(e)
            if !matches!(e, Error::Interrupted)
                && run::signals::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            say!("error: {}", Error::Interrupted);
            Error::Interrupted.exit_code()
        }
        Err(e) => {
            if !matches!(e, Error::Build(_)) {
                say!("error: {e}");
            }
            e.exit_code()
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn dispatch(cli: Cli) -> Result<i32> {
    // These handle their own signals (the gate forwards them to CMD).
    match &cli.command {
        Command::Gate(args) => return Ok(gate::run(args)),
        Command::History(args) => return show_history(args),
        Command::Preflight(args) => return Ok(preflight::command::run(args)),
        _ => {}
    }
    if let Err(e) = run::signals::install() {
        return Err(Error::internal("cannot install signal handlers", e));
    }
    match cli.command {
        Command::T2(args) => {
            reject_misplaced_profile("t2", args.misplaced_profile)?;
            run_tests("t2", args.run)
        }
        Command::T1(args) => {
            reject_misplaced_profile("t1", args.misplaced_profile)?;
            run_tests("t1", args.run)
        }
        Command::Run(args) => run_tests(&args.profile, args.run),
        Command::List(args) => list_tests(args),
        Command::NextestConfig(args) => nextest_config::run(args),
        Command::Gate(_) | Command::Preflight(_) | Command::History(_) => {
            unreachable!("dispatched above")
        }
    }
}

/// `cargo capped history`: the workspace's test history, as a table or JSON lines.
fn show_history(args: &cli::HistoryArgs) -> Result<i32> {
    let cargo = cli::CargoArgs {
        manifest_path: args.manifest_path.clone(),
        target_dir: args.target_dir.clone(),
        ..cli::CargoArgs::default()
    };
    let workspace = plan::Workspace::discover(&cargo)?;
    let path = history::path_in(&workspace.target_dir);
    let (history, warning) = history::History::load(&path);
    if let Some(warning) = warning {
        say!("warning: {warning}");
    }
    let wanted = |key: &str| args.filter.as_deref().is_none_or(|f| key.contains(f));
    let mut shown = 0;
    for (key, entry) in history.tests.iter().filter(|(key, _)| wanted(key)) {
        shown += 1;
        let passed = entry.runs.iter().filter(|r| r.outcome == "passed").count();
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        match args.message_format {
            MessageFormat::Json => out!(
                "{}",
                serde_json::json!({
                    "test": key,
                    "runs": entry.runs.len(),
                    "passed": passed,
                    "median_ms": ms(entry.median()),
                    "p95_ms": ms(entry.p95()),
                    "last": entry.runs.last().map(|r| r.outcome.as_str()),
                })
            ),
            MessageFormat::Human => out!(
                "{key}: {passed}/{} passed, median {}, p95 {}, last {}",
                entry.runs.len(),
                entry
                    .median()
                    .map_or("-".to_string(), capped_model::units::format_duration),
                entry
                    .p95()
                    .map_or("-".to_string(), capped_model::units::format_duration),
                entry.runs.last().map_or("-", |r| r.outcome.as_str()),
            ),
        }
    }
    if shown == 0 && args.message_format == MessageFormat::Human {
        say!(
            "no test history{} in {} (it is written by `cargo capped` runs)",
            args.filter
                .as_deref()
                .map_or(String::new(), |f| format!(" matching `{f}`")),
            path.display()
        );
    }
    Ok(0)
}

fn reject_misplaced_profile(command: &str, profile: Option<String>) -> Result<()> {
    match profile {
        None => Ok(()),
        Some(name) => Err(Error::Usage(format!(
            "`cargo capped {command}` already names the capped profile `{command}`; for cargo's build \
             profile use `--cargo-profile {name}`, for another capped profile `cargo capped run --profile {name}`"
        ))),
    }
}

fn run_tests(profile: &str, args: RunArgs) -> Result<i32> {
    let no_run = args.options.no_run;
    let plan = Plan::new(PlanInput {
        profile: profile.to_string(),
        cargo: args.cargo,
        options: args.options,
        output: args.output,
        filter: args.filter,
        test_args: args.test_args,
    })?;
    run::env::prefetch_toolchain_libdir();
    // Before the build: its load on the host counts as the run's own (see OwnLoad).
    let mut hooks = run::host_safety::HostSafety::new(&plan);
    let mut built = build_all(&plan, plan.output.color, plan.output.quiet)?;
    if no_run {
        return list_binaries(&built.binaries, &plan.output);
    }
    let (doc, notices) = build::doc_tests(&plan);
    built.binaries.extend(doc);
    built.notices.extend(notices);
    let mut reporter = reporter::Reporter::new(reporter_options(&plan.output));
    let summary = run::run(&plan, built, &mut hooks, &mut |event: &RunEvent| {
        reporter.event(event)
    });
    let finished = reporter.finish();
    let summary = summary?;
    match finished {
        Ok(()) => Ok(summary.exit_code),
        Err(e) => {
            // A report that was asked for and is incomplete (an unwritable --junit path, a
            // closed stdout under --message-format json) fails the run: CI reading it would
            // otherwise see a green run with missing results. A test failure's code stands.
            if !e.shown {
                say!("error: {e}");
            }
            Ok(if summary.exit_code == errors::EXIT_OK {
                errors::EXIT_INTERNAL
            } else {
                summary.exit_code
            })
        }
    }
}

/// The test binaries; none under `--doc`, whose doc tests are compiled by rustdoc as they
/// run (their library is built by their own `cargo test --doc`).
fn build_all(plan: &Plan, color: cli::Color, quiet: bool) -> Result<build::BuildOutput> {
    if plan.cargo.doc {
        return Ok(build::BuildOutput::default());
    }
    build::build(plan, color, quiet)
}

/// `--no-run`: the binaries the build produced, and nothing run. Each is named on stderr
/// as `cargo test --no-run` names it (unless `-q`); with JSON, also a `test-binary` event
/// on stdout (see docs/json-events.md).
fn list_binaries(binaries: &[build::TestBinary], output: &cli::OutputArgs) -> Result<i32> {
    use std::io::Write;
    if !output.quiet {
        for binary in binaries {
            say!("  Executable {} ({})", binary.id, binary.path.display());
        }
    }
    if output.message_format == MessageFormat::Json {
        let mut out = std::io::stdout().lock();
        for binary in binaries {
            let line = reporter::json::test_binary_line(&binary.id, &binary.path);
            if let Err(e) = writeln!(out, "{line}") {
                say!("warning: cannot write the binaries: {e}");
                break;
            }
        }
    }
    Ok(0)
}

/// The reporter's options from the command line.
fn reporter_options(output: &cli::OutputArgs) -> reporter::ReporterOptions {
    reporter::ReporterOptions {
        format: match output.message_format {
            MessageFormat::Human => reporter::ReportFormat::Human,
            MessageFormat::Json => reporter::ReportFormat::Json,
        },
        color: match output.color {
            cli::Color::Auto => reporter::ColorChoice::Auto,
            cli::Color::Always => reporter::ColorChoice::Always,
            cli::Color::Never => reporter::ColorChoice::Never,
        },
        verbosity: if output.quiet {
            reporter::Verbosity::Quiet
        } else if output.verbose > 0 {
            reporter::Verbosity::Verbose
        } else {
            reporter::Verbosity::Normal
        },
        junit: output.junit.clone(),
        is_terminal: false,
    }
    .detect_terminal()
}

fn list_tests(args: ListArgs) -> Result<i32> {
    let plan = Plan::new(PlanInput {
        profile: "t2".to_string(),
        cargo: args.cargo,
        filter: args.filter,
        test_args: args.test_args,
        ..PlanInput::default()
    })?;
    run::env::prefetch_toolchain_libdir();
    let built = build_all(&plan, args.color, args.quiet)?;
    let (env, _caps) = plan.env_for_run(None);
    let mut binaries = built.binaries;
    let (doc, notices) = build::doc_tests(&plan);
    binaries.extend(doc);
    for notice in notices {
        say!("note: {notice}");
    }
    let listings = run::list::list_all(
        &binaries,
        run::list::ListArgs {
            target_dir: &plan.workspace.target_dir,
            env: &env,
            filter: plan.filter.as_deref(),
            test_args: &plan.test_args,
            probe_dir: None,
            stop: None,
        },
    );
    let mut failed = false;
    let mut plain = false;
    for (binary, listing) in binaries.iter().zip(listings) {
        let claimed = plan.groups_claiming(&binary.id.target);
        match listing {
            Err(e) => {
                failed = true;
                say!("error: {}: {e}", binary.id);
            }
            Ok(listing) => match args.message_format {
                MessageFormat::Json => {
                    for test in &listing.tests {
                        let line = serde_json::json!({
                            "binary": binary.id.to_string(),
                            "package": binary.id.package,
                            "target": binary.id.target,
                            "kind": binary.id.kind,
                            "name": test.name,
                            "ignored": test.ignored,
                            "harness": listing.harness,
                            "groups": test.groups,
                            "threads": test.threads,
                            "mem": test.mem,
                            "binary_groups": claimed,
                        });
                        out!("{line}");
                    }
                }
                MessageFormat::Human => {
                    let mut header = binary.id.to_string();
                    if !claimed.is_empty() {
                        header.push_str(&format!(" [binary holds: {}]", claimed.join(", ")));
                    }
                    if listing.harness {
                        header.push_str(" (harness)");
                    } else if !listing.tests.is_empty() {
                        plain = true;
                    }
                    out!("{header}:");
                    for test in &listing.tests {
                        let mut line = format!("    {}", test.name);
                        if !test.groups.is_empty() {
                            line.push_str(&format!(" [groups: {}]", test.groups.join(", ")));
                        }
                        if test.threads > 1 {
                            line.push_str(&format!(" [threads: {}]", test.threads));
                        }
                        if let Some(mem) = test.mem {
                            line.push_str(&format!(
                                " [mem: {}]",
                                capped_model::units::format_size(mem)
                            ));
                        }
                        if test.ignored {
                            line.push_str(" (ignored)");
                        }
                        out!("{line}");
                    }
                }
            },
        }
    }
    if plain && args.message_format == MessageFormat::Human {
        // A plain libtest binary lists names only: its #[capped] tests declare their groups
        // when they run, so an empty group column there means "not known yet", not "none".
        out!(
            "note: groups are shown for harness-mode tests and claimed binaries; a #[capped] test \
             in a plain libtest binary declares its groups when it runs"
        );
    }
    Ok(if failed { errors::EXIT_TEST_FAILED } else { 0 })
}
