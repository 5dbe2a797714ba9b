//! Harness mode: the test harness behind [`crate::main!`].
//!
//! A `harness = false` test target ending in `capped_test::main!()` runs every `#[capped]`
//! test of its crate under this harness instead of libtest. libtest gives each of its
//! threads the next test in line; a `#[capped(group = "gpu")]` test then waits for the gpu,
//! parking that thread while light tests queue behind it. This harness knows every test's
//! resources before it starts any, and starts a test only when it can take all of them at
//! once, without blocking (cross-process lock-file slots included); while `gpu` is busy the
//! light tests keep every other slot busy. See the `test_scheduler` module for the algorithm,
//! its priorities and anti-starvation.
//!
//! # What it keeps from libtest
//!
//! The command line (`--list [--format terse]`, filters, `--exact`, `--skip`, `--ignored`,
//! `--include-ignored`, `--test-threads`, `RUST_TEST_THREADS`, `-q`, `--color`,
//! `--format json`, `--nocapture`, `--show-output`, `--shuffle`, `--shuffle-seed`), the
//! output (`running N tests`, `test NAME ... ok`, the failures section, the closing
//! `test result:` line) and the exit status (101 when a test failed), so `cargo test`,
//! `cargo nextest run` (it lists with `--list --format terse`, then runs each test with
//! `--exact NAME --nocapture` in a process of its own) and `cargo capped` run these binaries
//! as they run libtest's.
//!
//! # What it cannot do: capture output
//!
//! libtest captures what each test prints with `println!` through an unstable std hook,
//! which a stable crate cannot use, and a test's threads share the process's stdout. So the
//! harness always runs as libtest does with `--nocapture`: what a test prints appears on the
//! terminal as it runs, interleaved with the other running tests' output. What it offers
//! instead:
//!
//! * the failures section (`---- NAME stdout ----`) holds what matters of a failure: the
//!   panic message and where it panicked (`thread 'NAME' panicked at src/x.rs:3:5`), the
//!   error a test returned, or the timeout, and the line that reproduces it with its seed;
//! * under `cargo nextest run` every test runs in its own process, so its output is
//!   captured per test, and the caps still hold (the slots are lock files);
//! * `--test-threads 1` (or `cargo capped t1`) gives readable, unmixed output.
//!
//! # Timeouts
//!
//! A test past its timeout (`#[capped(timeout = "30s")]`, else `CAPPED_TEST_TIMEOUT`) is
//! reported `FAILED (timed out after …)` at once. A thread cannot be killed, so it is left
//! running with its resources; the other running tests get a grace of 5 s, tests not started
//! yet are named as not run, the summary is printed and the process exits with 101. The
//! harness never hangs on a test with a timeout. (`cargo capped` and nextest also kill a
//! whole hung test process from outside.)

mod args;
mod report;
mod runner;
mod select;
mod test_scheduler;

use crate::init::ensure_init;
use crate::run_test::timeout_for;
use crate::test_spec::Registration;
use capped_model::protocol::{ListedTest, env};
use capped_model::{Caps, try_caps};

use args::{Args, Format};
use select::Selected;

/// The hint printed when a harness has no `#[capped]` test at all.
pub(crate) const NO_TESTS_HINT: &str = "capped-test: this `harness = false` target has no \
#[capped] tests. rustc does not compile plain #[test] functions in a `harness = false` \
target; mark them #[capped] (`use capped_test::capped;`) so the capped harness finds them. \
Tests in other crates (a library's modules) are not part of this binary.";

/// Submitted by [`crate::main!`], so that a binary whose `main!()` libtest replaced (the
/// target lacks `harness = false`) can say so.
pub struct MainMarker;

inventory::collect!(MainMarker);

/// Under libtest: warns once if this binary has a `main!()` that libtest's own `main`
/// replaced.
pub(crate) fn warn_if_main_under_libtest() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if inventory::iter::<MainMarker>().next().is_some() {
            eprintln!(
                "capped-test: this binary has `capped_test::main!()` but runs under libtest's \
                 harness: set `harness = false` on its [[test]] target in Cargo.toml to run its \
                 #[capped] tests under the capped harness"
            );
        }
    });
}

/// The body of the `main` that [`crate::main!`] writes: runs or lists this binary's
/// `#[capped]` tests as libtest would, and exits with libtest's status.
pub fn harness_main() -> ! {
    let args = match args::parse(std::env::args().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let caps = match try_caps() {
        Ok(caps) => caps,
        Err(e) => {
            eprintln!("error: capped-test: {e}");
            std::process::exit(2);
        }
    };
    let registered = select::registered(inventory::iter::<Registration>());
    if registered.is_empty() {
        eprintln!("{NO_TESTS_HINT}");
    }
    let (selected, filtered_out) = select::select(registered, &args);
    if args.list {
        list(&selected, &args, caps);
        std::process::exit(0);
    }
    ensure_init();
    runner::install_panic_hook();
    let code = runner::run(selected, filtered_out, &args, caps);
    std::process::exit(code)
}

/// `--list`: libtest's listing, or with `CAPPED_LIST_RESOURCES=1` one JSON
/// [`ListedTest`] per line for the runner.
fn list(selected: &[Selected<'_>], args: &Args, caps: &Caps) {
    use std::io::Write;
    let mut out = String::new();
    if std::env::var(env::LIST_RESOURCES).as_deref() == Ok("1") {
        for test in selected {
            let spec = test.reg.spec;
            let listed = ListedTest {
                name: test.name.clone(),
                groups: spec.groups.iter().map(|g| g.to_string()).collect(),
                threads: if spec.serial {
                    caps.test_threads()
                } else {
                    spec.threads.clamp(1, caps.test_threads())
                },
                mem: spec.mem,
                timeout_ms: timeout_for(spec, caps).map(|t| t.as_millis() as u64),
                ignored: spec.ignore.is_some(),
            };
            out.push_str(&serde_json::to_string(&listed).expect("a ListedTest serializes"));
            out.push('\n');
        }
    } else {
        match args.format {
            Format::Json => {
                out.push_str("{ \"type\": \"suite\", \"event\": \"discovery\" }\n");
                for test in selected {
                    let spec = test.reg.spec;
                    let event = serde_json::json!({
                        "type": "test",
                        "event": "discovered",
                        "name": test.name,
                        "ignore": test.ignored,
                        "ignore_message": spec.ignore.flatten().unwrap_or(""),
                        "source_path": spec.file,
                        "start_line": spec.line,
                        "start_col": 1,
                        "end_line": spec.line,
                        "end_col": 1,
                    });
                    out.push_str(&format!("{event}\n"));
                }
                let ignored = selected.iter().filter(|t| t.ignored).count();
                out.push_str(&format!(
                    "{}\n",
                    serde_json::json!({
                        "type": "suite", "event": "completed", "tests": selected.len(),
                        "benchmarks": 0, "total": selected.len(), "ignored": ignored,
                    })
                ));
            }
            Format::Pretty | Format::Terse => {
                for test in selected {
                    out.push_str(&test.name);
                    out.push_str(": test\n");
                }
                if args.format == Format::Pretty {
                    if !selected.is_empty() {
                        out.push('\n');
                    }
                    let n = selected.len();
                    out.push_str(&format!(
                        "{n} test{}, 0 benchmarks\n",
                        if n == 1 { "" } else { "s" }
                    ));
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
