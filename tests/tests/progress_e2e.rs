//! The progress display stays out of logs: with stderr in a pipe (or a file), and under
//! `CI`, the report is plain lines with no control characters (no redrawn bar, no cursor
//! movement), so CI logs and `2> log` read cleanly.

mod common;

use common::*;

/// Runs the eight light tests with stderr piped, `CI` set to `ci` (or unset); returns stderr.
fn piped_run(ci: Option<&str>) -> String {
    let scratch = RunScratch::new();
    let mut command = capped_in("host-safety");
    command.args(["t2", "--test", "light"]);
    scratch.apply(&mut command);
    match ci {
        Some(value) => command.env("CI", value),
        None => command.env_remove("CI"),
    };
    let output = command.output().unwrap();
    assert_eq!(exit_code(&output), 0, "{}", describe(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_progress_display_in_pipes_or_under_ci() {
    for ci in [None, Some("true")] {
        let stderr = piped_run(ci);
        assert!(stderr.contains("Summary"), "CI={ci:?}: {stderr}");
        let control: Vec<char> = stderr
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(
            control.is_empty(),
            "CI={ci:?}: control characters {control:?} in {stderr}"
        );
        assert!(
            !stderr.contains(" binaries, "),
            "CI={ci:?}: the progress text leaked into the log: {stderr}"
        );
    }
}
