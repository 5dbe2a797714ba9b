//! `cargo capped nextest-config`: the nextest config it writes keeps the fixture's groups
//! under `cargo nextest` (nextest itself reads it back), and without cargo-nextest the
//! command says so and exits 2.

mod common;

use common::*;

#[test]
fn nextest_keeps_the_groups_of_the_generated_config() {
    if !nextest_available("nextest_keeps_the_groups_of_the_generated_config") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("nextest.toml");
    let output = capped_in("isolation")
        .args(["nextest-config", "-q", "--output"])
        .arg(&path)
        .output()
        .expect("running cargo capped nextest-config");
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let text = std::fs::read_to_string(&path).expect("the config was written");
    // A group's max is its max-threads; a claimed binary is one binary_id filter; a harness
    // binary's grouped tests are named exactly; the other tests get no override.
    assert!(text.contains("solo = { max-threads = 2 }"), "{text}");
    assert!(text.contains("alone = { max-threads = 2 }"), "{text}");
    assert!(
        text.contains("filter = \"binary_id(=isolation-fixture::grouped)\"\ntest-group = \"solo\""),
        "{text}"
    );
    for test in ["alone_one", "alone_two"] {
        assert!(
            text.contains(&format!(
                "filter = \"binary_id(=isolation-fixture::harnessed) & test(={test})\"\ntest-group = \"alone\""
            )),
            "{text}"
        );
    }
    assert!(!text.contains("shared"), "{text}");

    // nextest reads it and puts the same tests in the same groups.
    let shown = cargo_in("isolation")
        .args([
            "nextest",
            "show-config",
            "test-groups",
            "--color",
            "never",
            "--config-file",
        ])
        .arg(&path)
        .output()
        .expect("running cargo nextest show-config");
    assert!(shown.status.success(), "{}", describe(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("group: alone (max threads = 2)"), "{shown}");
    assert!(shown.contains("group: solo (max threads = 2)"), "{shown}");
    let solo = &shown[shown.find("group: solo").unwrap()..];
    for test in ["one", "two", "three"] {
        assert!(solo.lines().any(|l| l.trim() == test), "{shown}");
    }
    let alone = &shown[shown.find("group: alone").unwrap()..shown.find("group: solo").unwrap()];
    assert!(
        alone.contains("alone_one") && alone.contains("alone_two"),
        "{shown}"
    );
    assert!(!alone.contains("light"), "{shown}");
}

#[test]
fn without_nextest_it_says_how_to_install_it() {
    // A cargo that has no `nextest` subcommand, and is the real cargo otherwise.
    let scratch = tempfile::tempdir().unwrap();
    let fake = scratch.path().join("cargo");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$1\" = nextest ]; then echo 'error: no such command: `nextest`' >&2; exit 101; fi\nexec '{}' \"$@\"\n",
            cargo_path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = capped_in("isolation")
        .env("CARGO", &fake)
        .args(["nextest-config"])
        .output()
        .expect("running cargo capped nextest-config");
    assert_eq!(exit_code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cargo-nextest is not installed")
            && stderr.contains("cargo install --locked cargo-nextest"),
        "{}",
        describe(&output)
    );
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

#[test]
fn list_says_when_groups_are_known_only_at_run_time() {
    let output = capped_in("isolation")
        .args(["list", "-q"])
        .output()
        .expect("running cargo capped list");
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The harness binary's tests show their groups; the plain binaries get the note.
    assert!(stdout.contains("alone_one [groups: alone]"), "{stdout}");
    assert!(
        stdout.contains(
            "a #[capped] test in a plain libtest binary declares its groups when it runs"
        ),
        "{stdout}"
    );
}
