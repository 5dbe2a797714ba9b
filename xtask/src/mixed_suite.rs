//! The runner benchmark: generated mixed suites run by `cargo capped t2`, by
//! `cargo nextest run -j 2` with equivalent test groups, and by
//! `cargo test -- --test-threads 2` with `serial_test`, all in one session on one machine,
//! against the lower bound `max(total work / width, each group's work, longest test)`.
//!
//! Two shapes, because they stress different things:
//!
//! * `many-light`: four binaries of 40 light tests (10 ms) and one heavy test (300 ms) each,
//!   the heavy tests in one serialized group. Every binary keeps both slots busy on its own,
//!   so sequential binaries (cargo test) lose nothing; per-test overhead decides.
//! * `heavy-binaries`: two cross-validation binaries of one 400 ms test each, claimed whole
//!   by a serialized group (`binaries = ["crossval*"]`), beside three binaries of 20 light
//!   tests (20 ms). Run one binary at a time, a one-test binary leaves a slot idle; filling
//!   idle slots across binaries decides.
//!
//! Every contender runs twice untimed before its [`RUNS`] timed runs (the median is
//! reported), so caches are warm and the timed runs are steady state. A `cargo capped`
//! contender also learns its test history in those two warm-ups: each has a history file of
//! its own (`CAPPED_HISTORY=<bench target>/histories/<shape>-<contender>.json`), deleted
//! before the warm-ups, so every bench run measures the same thing, "after two warm-up runs
//! with a learned history", whatever ran before (the timed runs go on writing it, as every
//! run does). Its ratio to the lower bound has the target 1.05. A second, informative ratio
//! leaves out cargo's own no-op build check (`cargo test --no-run` with the contender's
//! features and targets, timed alone with the build fresh), a cost inside the makespan that
//! no scheduling wins back. Every contender pays that check, so only the whole-command
//! ratios compare contenders.
//!
//! Tests sleep instead of burning CPU so the bound is exact and the comparison measures
//! scheduling and overhead, not the noise of a shared 2-core machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WIDTH: u64 = 2;
/// Timed runs per contender; the median is reported.
const RUNS: usize = 3;
/// Untimed runs per contender before the timed ones: they warm caches and, for
/// `cargo capped`, write the history the timed runs use.
const WARM_UPS: usize = 2;
/// The target for a `cargo capped` makespan over the lower bound, after the warm-ups.
const CAPPED_TARGET: f64 = 1.05;

/// One test binary of a generated suite.
struct BinarySpec {
    name: &'static str,
    light: usize,
    light_ms: u64,
    /// Heavy tests, in the `bench-heavy` group.
    heavy: usize,
    heavy_ms: u64,
    /// The whole binary belongs to the `crossval` group (its tests are its heavy tests).
    claimed: bool,
}

/// A suite: its name and binaries.
pub(crate) struct Shape {
    pub(crate) name: &'static str,
    binaries: Vec<BinarySpec>,
}

pub(crate) fn shapes() -> Vec<Shape> {
    let many_light = (0..4)
        .map(|k| BinarySpec {
            name: ["suite_a", "suite_b", "suite_c", "suite_d"][k],
            light: 40,
            light_ms: 10,
            heavy: 1,
            heavy_ms: 300,
            claimed: false,
        })
        .collect();
    let mut heavy_binaries: Vec<BinarySpec> = ["crossval_a", "crossval_b"]
        .into_iter()
        .map(|name| BinarySpec {
            name,
            light: 0,
            light_ms: 0,
            heavy: 1,
            heavy_ms: 400,
            claimed: true,
        })
        .collect();
    heavy_binaries.extend(
        ["unit_a", "unit_b", "unit_c"]
            .into_iter()
            .map(|name| BinarySpec {
                name,
                light: 20,
                light_ms: 20,
                heavy: 0,
                heavy_ms: 0,
                claimed: false,
            }),
    );
    vec![
        Shape {
            name: "many-light",
            binaries: many_light,
        },
        Shape {
            name: "heavy-binaries",
            binaries: heavy_binaries,
        },
    ]
}

impl Shape {
    /// `max(total work / width, each group's work, longest test)`: no schedule can beat it.
    pub(crate) fn lower_bound(&self) -> Duration {
        let work: u64 = self
            .binaries
            .iter()
            .map(|b| b.light as u64 * b.light_ms + b.heavy as u64 * b.heavy_ms)
            .sum();
        let group = |claimed: bool| -> u64 {
            self.binaries
                .iter()
                .filter(|b| b.claimed == claimed)
                .map(|b| b.heavy as u64 * b.heavy_ms)
                .sum()
        };
        let longest = self
            .binaries
            .iter()
            .map(|b| b.heavy_ms.max(b.light_ms))
            .max()
            .unwrap_or(0);
        Duration::from_millis(
            work.div_ceil(WIDTH)
                .max(group(false))
                .max(group(true))
                .max(longest),
        )
    }

    /// `--test NAME` for each binary, its name prefixed (`harness_` for the harness form).
    pub(crate) fn test_args(&self, prefix: &str) -> Vec<String> {
        self.binaries
            .iter()
            .flat_map(|b| ["--test".to_string(), format!("{prefix}{}", b.name)])
            .collect()
    }

    /// Writes the suite's workspace under `dir` (idempotent).
    pub(crate) fn generate(&self, dir: &Path, repo: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("tests"))?;
        std::fs::create_dir_all(dir.join("src"))?;
        std::fs::create_dir_all(dir.join(".config"))?;
        let mut manifest = format!(
            "[package]\nname = \"bench-suite\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [workspace]\n\n[features]\ncapped = []\nserial = []\nharness = []\n\n\
             [dev-dependencies]\ncapped-test = {{ path = \"{}\" }}\nserial_test = \"3\"\n",
            repo.join("capped-test").display()
        );
        for binary in &self.binaries {
            let name = binary.name;
            manifest.push_str(&format!(
                "\n[[test]]\nname = \"{name}\"\npath = \"tests/{name}.rs\"\n\n\
                 [[test]]\nname = \"harness_{name}\"\npath = \"tests/harness_{name}.rs\"\nharness = false\nrequired-features = [\"harness\"]\n"
            ));
            write_if_changed(
                &dir.join(format!("tests/{name}.rs")),
                &binary.plain_source(),
            )?;
            write_if_changed(
                &dir.join(format!("tests/harness_{name}.rs")),
                &binary.harness_source(),
            )?;
        }
        write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
        write_if_changed(
            &dir.join("src/lib.rs"),
            "//! A generated benchmark suite.\n",
        )?;
        write_if_changed(
            &dir.join(".config/capped.toml"),
            "[groups.bench-heavy]\nmax = 1\nscope = \"run\"\n\n\
             [groups.crossval]\nmax = 1\nscope = \"run\"\nbinaries = [\"crossval*\", \"harness_crossval*\"]\n",
        )?;
        // nextest refuses a binary() filter that matches no binary: name the claimed ones.
        let mut nextest = String::from(
            "[test-groups]\nheavy = { max-threads = 1 }\ncrossval = { max-threads = 1 }\n",
        );
        let claimed: Vec<String> = self
            .binaries
            .iter()
            .filter(|b| b.claimed)
            .map(|b| format!("binary({})", b.name))
            .collect();
        if !claimed.is_empty() {
            nextest.push_str(&format!(
                "\n[[profile.default.overrides]]\nfilter = '{}'\ntest-group = 'crossval'\n",
                claimed.join(" | ")
            ));
        }
        nextest.push_str("\n[[profile.default.overrides]]\nfilter = 'test(/^heavy_/) & !(kind(lib))'\ntest-group = 'heavy'\n");
        write_if_changed(&dir.join(".config/nextest.toml"), &nextest)?;
        Ok(())
    }
}

impl BinarySpec {
    /// The libtest form: plain light tests; heavy tests `#[capped]` (feature `capped`),
    /// `#[serial]` (feature `serial`) or plain (nextest's test group serializes them).
    fn plain_source(&self) -> String {
        let mut text = String::from("use std::time::Duration;\n\n");
        for i in 0..self.light {
            text.push_str(&format!(
                "#[test]\nfn light_{i}() {{ std::thread::sleep(Duration::from_millis({})); }}\n\n",
                self.light_ms
            ));
        }
        let group = if self.claimed {
            "crossval"
        } else {
            "bench-heavy"
        };
        let serial_key = group.replace('-', "_");
        for i in 0..self.heavy {
            // A claimed binary's group is held by the runner for the whole binary.
            let capped = if self.claimed {
                "#[test]\n".to_string()
            } else {
                format!(
                    "#[cfg_attr(feature = \"capped\", capped_test::capped(group = \"{group}\"))]\n\
                     #[cfg_attr(not(feature = \"capped\"), test)]\n"
                )
            };
            text.push_str(&format!(
                "{capped}#[cfg_attr(feature = \"serial\", serial_test::serial({serial_key}))]\n\
                 fn heavy_{i}() {{ std::thread::sleep(Duration::from_millis({})); }}\n\n",
                self.heavy_ms
            ));
        }
        text
    }

    /// The harness-mode form: every test `#[capped]`.
    fn harness_source(&self) -> String {
        let mut text = String::from("use std::time::Duration;\n\n");
        for i in 0..self.light {
            text.push_str(&format!(
                "#[capped_test::capped]\nfn light_{i}() {{ std::thread::sleep(Duration::from_millis({})); }}\n\n",
                self.light_ms
            ));
        }
        for i in 0..self.heavy {
            let attribute = if self.claimed {
                "#[capped_test::capped]".to_string()
            } else {
                "#[capped_test::capped(group = \"bench-heavy\")]".to_string()
            };
            text.push_str(&format!(
                "{attribute}\nfn heavy_{i}() {{ std::thread::sleep(Duration::from_millis({})); }}\n\n",
                self.heavy_ms
            ));
        }
        text.push_str("capped_test::main!();\n");
        text
    }
}
/// Writes a generated benchmark package `name` under `dir`: its own workspace with an
/// empty library and a `tests/` dir for the caller's test files (idempotent).
pub(crate) fn write_package(dir: &Path, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::create_dir_all(dir.join("src"))?;
    write_if_changed(
        &dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n"
        ),
    )?;
    write_if_changed(
        &dir.join("src/lib.rs"),
        "//! A generated benchmark suite.\n",
    )
}

pub(crate) fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// One way to run a shape's suite.
struct Contender {
    name: &'static str,
    /// The `cargo test --no-run …` that builds what the run needs.
    build: Vec<String>,
    run: Vec<String>,
    /// Set for a `cargo capped` contender.
    capped: Option<Capped>,
}

/// What a `cargo capped` contender has beyond a command.
struct Capped {
    /// Names its history file, `<shape>-<slug>.json`.
    slug: &'static str,
    /// The no-op build check cargo does inside the run: `cargo test --no-run` with the
    /// contender's features and targets.
    build_check: Vec<String>,
}

/// `program ARGS` run in `dir` with `target` as its target dir, stdout thrown away and
/// stderr kept for a failure's message. The caller's `CAPPED*` and thread-count variables
/// are removed, so a bench measures the defaults, and locks live in the bench's target dir.
pub(crate) fn cargo_command(program: &Path, dir: &Path, target: &Path, args: &[String]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("CAPPED") || key == "RUST_TEST_THREADS" || key == "RAYON_NUM_THREADS" {
            command.env_remove(key);
        }
    }
    command.env("CAPPED_LOCK_DIR", target.join("bench-locks"));
    command
}

/// The middle sample (the upper middle one of an even count); `samples` is not empty.
pub(crate) fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("samples are comparable"));
    samples[samples.len() / 2]
}

/// Runs the command `make` returns `runs` times (it must succeed each time); returns the
/// wall time of each run.
pub(crate) fn timed_runs(
    mut make: impl FnMut() -> Command,
    runs: usize,
) -> Result<Vec<Duration>, String> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = make().output().map_err(|e| format!("cannot be run: {e}"))?;
        let took = started.elapsed();
        if !output.status.success() {
            return Err(format!(
                "failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        samples.push(took);
    }
    Ok(samples)
}

/// Runs a command `runs` times (it must succeed each time) and returns the median wall
/// time of the whole command.
pub(crate) fn median_run(
    program: &Path,
    dir: &Path,
    target: &Path,
    args: &[String],
    runs: usize,
) -> Result<Duration, String> {
    timed_runs(|| cargo_command(program, dir, target, args), runs).map(median)
}

/// Deletes `path` if it exists.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot delete {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The runner's own peak RSS in bytes, from the `run-finished` event of a
/// `--message-format json` run's stdout.
pub(crate) fn runner_peak_rss(stdout: &[u8]) -> Option<f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["type"] == "run-finished")
        .and_then(|v| v["runner_peak_rss"].as_f64())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A result row; the table judges `value` against `target` when there is one.
pub(crate) fn row(bench: String, value: f64, unit: &str, target: Option<f64>) -> serde_json::Value {
    let mut row = serde_json::json!({ "bench": bench, "value": value, "unit": unit });
    if let Some(target) = target {
        row["target"] = serde_json::json!(target);
    }
    row
}

/// A row without a target whose `note` the table shows in the verdict column.
pub(crate) fn noted(bench: String, value: f64, unit: &str, note: &str) -> serde_json::Value {
    let mut row = row(bench, value, unit, None);
    row["note"] = note.into();
    row
}

/// Runs the benchmark; returns its result rows. `capped_bin` is the cargo-capped binary.
pub fn run(repo: &Path, capped_bin: &Path) -> Result<Vec<serde_json::Value>, String> {
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nextest {
        eprintln!("cargo-nextest is not installed: its rows are left out");
    }
    let target = repo.join("target/bench-suite/target");
    let mut rows = Vec::new();
    for shape in shapes() {
        let dir = repo.join("target/bench-suite").join(shape.name);
        shape
            .generate(&dir, repo)
            .map_err(|e| format!("cannot write the suite to {}: {e}", dir.display()))?;
        rows.extend(run_shape(
            &shape, &dir, &target, &cargo, capped_bin, nextest,
        )?);
    }
    // The runner's own peak RSS, from its JSON summary, on the larger suite.
    let dir = repo.join("target/bench-suite/many-light");
    let mut args = strings(&[
        "capped",
        "t2",
        "--features",
        "harness",
        "--message-format",
        "json",
    ]);
    args.extend(
        [
            "harness_suite_a",
            "harness_suite_b",
            "harness_suite_c",
            "harness_suite_d",
        ]
        .iter()
        .flat_map(|t| ["--test".to_string(), t.to_string()]),
    );
    let output = cargo_command(capped_bin, &dir, &target, &args)
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo-capped: {e}"))?;
    if let Some(rss) = runner_peak_rss(&output.stdout) {
        rows.push(row(
            "cargo capped t2: the runner's own peak RSS".into(),
            rss / f64::from(1 << 20),
            "MiB",
            None,
        ));
    }
    Ok(rows)
}

/// Times every contender on one generated shape; returns the shape's rows.
fn run_shape(
    shape: &Shape,
    dir: &Path,
    target: &Path,
    cargo: &Path,
    capped_bin: &Path,
    nextest: bool,
) -> Result<Vec<serde_json::Value>, String> {
    let plain = shape.test_args("");
    let harness = shape.test_args("harness_");
    let capped = capped_bin.display().to_string();
    let with = |head: &[&str], targets: &[String], tail: &[&str]| -> Vec<String> {
        strings(head)
            .into_iter()
            .chain(targets.iter().cloned())
            .chain(strings(tail))
            .collect()
    };
    let mut contenders = vec![
        Contender {
            name: "cargo capped t2 (harness mode)",
            build: strings(&["test", "--no-run", "--features", "harness"]),
            run: with(
                &[
                    &capped,
                    "capped",
                    "t2",
                    "--no-degrade",
                    "--features",
                    "harness",
                ],
                &harness,
                &[],
            ),
            capped: Some(Capped {
                slug: "capped-harness",
                build_check: with(
                    &["test", "--no-run", "--features", "harness"],
                    &harness,
                    &[],
                ),
            }),
        },
        Contender {
            name: "cargo capped t2 (#[capped] under libtest)",
            build: strings(&["test", "--no-run", "--features", "capped"]),
            run: with(
                &[
                    &capped,
                    "capped",
                    "t2",
                    "--no-degrade",
                    "--features",
                    "capped",
                ],
                &plain,
                &[],
            ),
            capped: Some(Capped {
                slug: "capped-libtest",
                build_check: with(&["test", "--no-run", "--features", "capped"], &plain, &[]),
            }),
        },
        Contender {
            name: "cargo test --test-threads 2 + serial_test",
            build: strings(&["test", "--no-run", "--features", "serial"]),
            run: with(
                &["cargo", "test", "--features", "serial"],
                &plain,
                &["--", "--test-threads", "2"],
            ),
            capped: None,
        },
    ];
    if nextest {
        contenders.push(Contender {
            name: "cargo nextest run -j 2 + test groups",
            build: strings(&["test", "--no-run"]),
            run: with(&["cargo", "nextest", "run", "-j", "2"], &plain, &[]),
            capped: None,
        });
    }
    let bound = shape.lower_bound();
    let mut rows = vec![row(
        format!(
            "{}: lower bound max(work/width, group work, longest)",
            shape.name
        ),
        bound.as_secs_f64(),
        "s",
        None,
    )];
    let histories = target.join("histories");
    std::fs::create_dir_all(&histories)
        .map_err(|e| format!("cannot create {}: {e}", histories.display()))?;
    let mut capped_best: Option<Duration> = None;
    let mut others = Vec::new();
    for contender in &contenders {
        let status = cargo_command(cargo, dir, target, &contender.build)
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "{}: building the suite for {} failed",
                shape.name, contender.name
            ));
        }
        let name = format!("{}: {}", shape.name, contender.name);
        let failed = |e: String| format!("{name} {e}");
        let (program, args) = contender.run.split_first().expect("a command");
        let program = if program == "cargo" {
            cargo.to_path_buf()
        } else {
            PathBuf::from(program)
        };
        // A fresh history per contender: what the timed runs know is exactly what the two
        // warm-ups taught them, whatever ran before.
        let history = match &contender.capped {
            Some(capped) => {
                let file = histories.join(format!("{}-{}.json", shape.name, capped.slug));
                remove_if_present(&file)?;
                Some(file)
            }
            None => None,
        };
        let command = || {
            let mut command = cargo_command(&program, dir, target, args);
            if let Some(history) = &history {
                command.env("CAPPED_HISTORY", history);
            }
            command
        };
        timed_runs(command, WARM_UPS).map_err(|e| failed(format!("(warm-up) {e}")))?;
        let makespan = median(timed_runs(command, RUNS).map_err(failed)?);
        let Some(capped) = &contender.capped else {
            rows.push(row(
                format!("{name} makespan"),
                makespan.as_secs_f64(),
                "s",
                None,
            ));
            rows.push(row(
                format!("{name} / lower bound"),
                makespan.as_secs_f64() / bound.as_secs_f64(),
                "x",
                None,
            ));
            others.push((contender.name, makespan));
            continue;
        };
        let build_check = median_run(cargo, dir, target, &capped.build_check, RUNS)
            .map_err(|e| failed(format!("(no-op build check) {e}")))?;
        let warm = format!("after {WARM_UPS} warm-ups (learned history)");
        rows.push(row(
            format!("{name} makespan {warm}"),
            makespan.as_secs_f64(),
            "s",
            None,
        ));
        rows.push(row(
            format!("{name} / lower bound {warm}"),
            makespan.as_secs_f64() / bound.as_secs_f64(),
            "x",
            Some(CAPPED_TARGET),
        ));
        rows.push(noted(
            format!("{name}: cargo's no-op build check"),
            build_check.as_secs_f64(),
            "s",
            "cargo test --no-run alone, build fresh",
        ));
        rows.push(noted(
            format!("{name} (makespan - cargo's no-op build check) / lower bound"),
            makespan.saturating_sub(build_check).as_secs_f64() / bound.as_secs_f64(),
            "x",
            "informative: every contender pays cargo's check",
        ));
        capped_best = Some(capped_best.map_or(makespan, |best| best.min(makespan)));
    }
    if let Some(best) = capped_best {
        for (name, makespan) in others {
            rows.push(row(
                format!("{}: best cargo capped / {name}", shape.name),
                best.as_secs_f64() / makespan.as_secs_f64(),
                "x",
                Some(1.0),
            ));
        }
    }
    Ok(rows)
}
