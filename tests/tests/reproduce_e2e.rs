//! Reproduce lines end to end: a failed test's `reproduce:` line selects the same build
//! (here a feature the failing tests need), the same binary and the same test, and running
//! it runs that one test and sees it fail again. The line a failing `#[capped]` test prints
//! is the runner's line, word for word.

mod common;

use common::*;

const FIXTURE: &str = "reproduce";

/// The runner's `reproduce:` lines under `failures:`: (command, label).
fn reproduce_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("reproduce: "))
        .map(|rest| {
            let (command, label) = rest.split_once("  # ").expect("a labelled line");
            (command.to_string(), label.to_string())
        })
        .collect()
}

/// Runs a printed `cargo capped …` line (plain words only) with this repository's binary.
fn run_line(command: &str, lock_dir: &std::path::Path) -> std::process::Output {
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(&words[..2], ["cargo", "capped"], "{command}");
    assert!(
        !command.contains('\''),
        "the fixture needs no quoting: {command}"
    );
    let mut rerun = capped_in(FIXTURE);
    rerun.args(&words[2..]).env("CAPPED_LOCK_DIR", lock_dir);
    rerun.output().unwrap()
}

#[test]
fn the_printed_line_rebuilds_with_the_features_and_reruns_the_same_failing_test() {
    let scratch = RunScratch::new();
    let output = capped_in(FIXTURE)
        .args(["t2", "--features", "extra"])
        .env("CAPPED_LOCK_DIR", scratch.lock_dir())
        .output()
        .unwrap();
    let text = all_text(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    let lines = reproduce_lines(&text);
    assert_eq!(lines.len(), 2, "one line per failed test: {text}");
    let seed = text
        .lines()
        .find_map(|l| l.split_once(", seed ").map(|(_, s)| s.to_string()))
        .and_then(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()
                .map(String::from)
        })
        .expect("the header names the seed");
    let line_of = |name: &str| {
        lines
            .iter()
            .find(|(command, _)| command.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .clone()
    };
    for name in ["capped_fails", "plain_fails"] {
        let (command, label) = line_of(name);
        assert_eq!(
            command,
            format!(
                "cargo capped run --profile t2 --seed {seed} --features extra \
                 -p reproduce-fixture --test feat -- --exact {name}"
            ),
            "{text}"
        );
        assert_eq!(label, "the seed was drawn for this run", "{text}");
    }
    // The `#[capped]` test's own line is the runner's, with the seed labelled the same way.
    assert!(
        text.contains(&format!(
            "(run seed {seed}, drawn); reproduce: {}\n",
            line_of("capped_fails").0
        )),
        "{text}"
    );
    for name in ["capped_fails", "plain_fails"] {
        let (command, _) = line_of(name);
        let rerun = run_line(&command, &scratch.lock_dir());
        let again = all_text(&rerun);
        assert_eq!(exit_code(&rerun), 100, "{command}:\n{again}");
        assert!(
            again.contains("1 test run: 0 passed, 1 failed"),
            "{command}:\n{again}"
        );
        assert!(
            again.contains("FAIL [") && again.contains(&format!("reproduce-fixture::feat {name}")),
            "{command}:\n{again}"
        );
        assert!(
            again.contains(&format!("{name} failed on purpose")),
            "{command}:\n{again}"
        );
        assert!(
            again.contains(&format!("seed {seed}")),
            "the same seed: {command}:\n{again}"
        );
    }
}
