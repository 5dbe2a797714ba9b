//! The runner benchmark: a generated mixed suite (several binaries of light tests, one
//! serialized heavy test each) run by `cargo capped t2`, by `cargo nextest run -j 2` with an
//! equivalent test group, and by `cargo test -- --test-threads 2` with `serial_test`, all
//! in one session on one machine, against the lower bound
//! `max(total work / width, heavy group's work, longest test)`.
//!
//! The shape is a typical heavy workspace's: many short light tests per binary (40 × 10 ms)
//! and one heavy test per binary (300 ms) in a serialized group. Tests sleep instead of
//! burning CPU so the bound is exact and the comparison measures scheduling and per-test
//! overhead, not the noise of a shared 2-core machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARIES: usize = 4;
const LIGHT_PER_BINARY: usize = 40;
const LIGHT_MS: u64 = 10;
const HEAVY_MS: u64 = 300;
const WIDTH: u64 = 2;
const RUNS: usize = 3;

fn lower_bound() -> Duration {
    let light = (BINARIES * LIGHT_PER_BINARY) as u64 * LIGHT_MS;
    let heavy = BINARIES as u64 * HEAVY_MS;
    let by_width = (light + heavy).div_ceil(WIDTH);
    Duration::from_millis(by_width.max(heavy).max(HEAVY_MS))
}

/// Writes the suite's workspace under `dir` (idempotent).
fn generate(dir: &Path, repo: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".config"))?;
    let mut manifest = format!(
        r#"[package]
name = "mixed-suite"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

[features]
capped = []
serial = []
harness = []

[dev-dependencies]
capped-test = {{ path = "{}" }}
serial_test = "3"
"#,
        repo.join("capped-test").display()
    );
    for k in 0..BINARIES {
        manifest.push_str(&format!(
            "\n[[test]]\nname = \"plain_{k}\"\npath = \"tests/plain_{k}.rs\"\n\n[[test]]\nname = \"harness_{k}\"\npath = \"tests/harness_{k}.rs\"\nharness = false\nrequired-features = [\"harness\"]\n"
        ));
        let mut plain = String::from("use std::time::Duration;\n\n");
        let mut harness = String::from("use std::time::Duration;\n\n");
        for i in 0..LIGHT_PER_BINARY {
            plain.push_str(&format!(
                "#[test]\nfn light_{i}() {{ std::thread::sleep(Duration::from_millis({LIGHT_MS})); }}\n\n"
            ));
            harness.push_str(&format!(
                "#[capped_test::capped]\nfn light_{i}() {{ std::thread::sleep(Duration::from_millis({LIGHT_MS})); }}\n\n"
            ));
        }
        plain.push_str(&format!(
            "#[cfg_attr(feature = \"capped\", capped_test::capped(group = \"bench-heavy\"))]\n\
             #[cfg_attr(not(feature = \"capped\"), test)]\n\
             #[cfg_attr(feature = \"serial\", serial_test::serial(heavy))]\n\
             fn heavy_{k}() {{ std::thread::sleep(Duration::from_millis({HEAVY_MS})); }}\n"
        ));
        harness.push_str(&format!(
            "#[capped_test::capped(group = \"bench-heavy\")]\nfn heavy_{k}() {{ std::thread::sleep(Duration::from_millis({HEAVY_MS})); }}\n\ncapped_test::main!();\n"
        ));
        write_if_changed(&dir.join(format!("tests/plain_{k}.rs")), &plain)?;
        write_if_changed(&dir.join(format!("tests/harness_{k}.rs")), &harness)?;
    }
    write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
    write_if_changed(
        &dir.join("src/lib.rs"),
        "//! A generated benchmark suite.\n",
    )?;
    write_if_changed(
        &dir.join(".config/capped.toml"),
        "[groups.bench-heavy]\nmax = 1\nscope = \"run\"\n",
    )?;
    write_if_changed(
        &dir.join(".config/nextest.toml"),
        "[test-groups]\nheavy = { max-threads = 1 }\n\n[[profile.default.overrides]]\nfilter = 'test(/^heavy_/)'\ntest-group = 'heavy'\n",
    )?;
    Ok(())
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)?;
    }
    Ok(())
}

struct Contender {
    name: &'static str,
    build: Vec<&'static str>,
    run: Vec<String>,
}

fn cargo_command(cargo: &Path, dir: &Path, target: &Path, args: &[String]) -> Command {
    let mut command = Command::new(cargo);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CAPPED_LOCK_DIR", target.join("bench-locks"))
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

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs the benchmark; returns its result rows. `capped_bin` is the cargo-capped binary.
pub fn run(repo: &Path, capped_bin: &Path) -> Result<Vec<serde_json::Value>, String> {
    let mut rows = Vec::new();
    let dir = repo.join("target/bench-suite/mixed");
    let target = repo.join("target/bench-suite/target");
    generate(&dir, repo)
        .map_err(|e| format!("cannot write the suite to {}: {e}", dir.display()))?;
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let plain_targets: Vec<String> = (0..BINARIES)
        .flat_map(|k| ["--test".to_string(), format!("plain_{k}")])
        .collect();
    let harness_targets: Vec<String> = (0..BINARIES)
        .flat_map(|k| ["--test".to_string(), format!("harness_{k}")])
        .collect();
    let capped = capped_bin.display().to_string();
    let with = |head: &[&str], targets: &[String], tail: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(targets.iter().cloned())
            .chain(tail.iter().map(|s| s.to_string()))
            .collect()
    };
    let mut contenders = vec![
        Contender {
            name: "cargo capped t2 (harness mode)",
            build: vec!["test", "--no-run", "--features", "harness"],
            run: with(
                &[&capped, "capped", "t2", "--features", "harness"],
                &harness_targets,
                &[],
            ),
        },
        Contender {
            name: "cargo capped t2 (#[capped] under libtest)",
            build: vec!["test", "--no-run", "--features", "capped"],
            run: with(
                &[&capped, "capped", "t2", "--features", "capped"],
                &plain_targets,
                &[],
            ),
        },
        Contender {
            name: "cargo test --test-threads 2 + serial_test",
            build: vec!["test", "--no-run", "--features", "serial"],
            run: with(
                &["cargo", "test", "--features", "serial"],
                &plain_targets,
                &["--", "--test-threads", "2"],
            ),
        },
    ];
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        contenders.push(Contender {
            name: "cargo nextest run -j 2 + test group",
            build: vec!["test", "--no-run"],
            run: with(&["cargo", "nextest", "run", "-j", "2"], &plain_targets, &[]),
        });
    } else {
        eprintln!("cargo-nextest is not installed: its row is left out");
    }
    let bound = lower_bound();
    rows.push(serde_json::json!({"bench": "mixed suite: lower bound max(work/width, heavy work, longest)", "value": bound.as_secs_f64(), "unit": "s"}));
    let mut capped_best = None;
    let mut others = Vec::new();
    for contender in &contenders {
        let build_args: Vec<String> = contender.build.iter().map(|s| s.to_string()).collect();
        let status = cargo_command(&cargo, &dir, &target, &build_args)
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the suite for {} failed", contender.name));
        }
        let mut samples = Vec::new();
        for _ in 0..RUNS {
            let (program, args) = contender.run.split_first().expect("a command");
            let program = if program == "cargo" {
                cargo.clone()
            } else {
                PathBuf::from(program)
            };
            let started = Instant::now();
            let output = cargo_command(&program, &dir, &target, args)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", contender.name))?;
            let took = started.elapsed();
            if !output.status.success() {
                return Err(format!(
                    "{} failed:\n{}",
                    contender.name,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            samples.push(took);
        }
        let makespan = median(samples);
        let ratio = makespan.as_secs_f64() / bound.as_secs_f64();
        rows.push(serde_json::json!({"bench": format!("mixed suite: {} makespan", contender.name), "value": makespan.as_secs_f64(), "unit": "s"}));
        let target_ratio = contender.name.starts_with("cargo capped").then_some(1.2);
        let mut line = serde_json::json!({"bench": format!("mixed suite: {} / lower bound", contender.name), "value": ratio, "unit": "x"});
        if let Some(t) = target_ratio {
            line["target"] = serde_json::json!(t);
        }
        rows.push(line);
        if contender.name.starts_with("cargo capped") {
            capped_best = Some(capped_best.map_or(makespan, |best: Duration| best.min(makespan)));
        } else {
            others.push((contender.name, makespan));
        }
    }
    if let Some(best) = capped_best {
        for (name, makespan) in others {
            rows.push(serde_json::json!({"bench": format!("mixed suite: best cargo capped / {name}"), "value": best.as_secs_f64() / makespan.as_secs_f64(), "unit": "x", "target": 1.0}));
        }
    }
    // The runner's own peak RSS, from its JSON summary.
    let mut args: Vec<String> = vec![
        "capped".into(),
        "t2".into(),
        "--features".into(),
        "harness".into(),
        "--message-format".into(),
        "json".into(),
    ];
    args.extend(harness_targets);
    let output = cargo_command(capped_bin, &dir, &target, &args)
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo-capped: {e}"))?;
    let rss = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["type"] == "run-finished")
        .and_then(|v| v["runner_peak_rss"].as_f64());
    if let Some(rss) = rss {
        rows.push(serde_json::json!({"bench": "cargo capped t2: the runner's own peak RSS", "value": rss / (1 << 20) as f64, "unit": "MiB"}));
    }
    Ok(rows)
}
