//! `cargo capped nextest-config`: the `[test-groups]` and `[[profile.default.overrides]]`
//! that make `cargo nextest run` keep the groups of `.config/capped.toml`.
//!
//! What belongs to a group comes from two lists of the same build: ours (the binaries a
//! group claims with `binaries = [..]`, and the groups harness-mode tests declare in their
//! listing) and nextest's own (`cargo nextest list --message-format json`, read as
//! [`nextest_metadata::TestListSummary`]). The binaries are matched by path, so every
//! filter names nextest's binary id and test name exactly as nextest will see them, and a
//! test nextest does not list gets no override.
//!
//! `#[capped(group = ..)]` tests in plain libtest binaries declare their group only when
//! they run, so no filter can name them: under nextest they still take their group's slots
//! through the lock files, as under `cargo test`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use nextest_metadata::TestListSummary;

use crate::cli::{CargoArgs, Color};
use crate::errors::{Error, Result};
use crate::plan::{Plan, PlanInput};
use crate::{build, run};

/// `nextest-config`.
#[derive(Debug, Args)]
pub struct NextestConfigArgs {
    /// Cargo's flags (what is built and listed, for both lists).
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// Write the config to PATH (e.g. `.config/nextest.toml`) instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Colors in cargo's output.
    #[arg(long, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,
    /// Less output from the build.
    #[arg(short, long)]
    pub quiet: bool,
}

/// What our listing knows of one binary: the groups claiming it, and each grouped test's
/// groups by name.
type Known = (Vec<String>, BTreeMap<String, Vec<String>>);

/// One `[[profile.default.overrides]]` entry: the tests `filter` selects run in `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// A nextest filterset.
    pub filter: String,
    /// The test group.
    pub group: String,
    /// Why, as a comment above the entry (other groups that could not be kept).
    pub note: Option<String>,
}

/// Runs `cargo capped nextest-config`; the exit status.
pub fn run(args: NextestConfigArgs) -> Result<i32> {
    let plan = Plan::new(PlanInput {
        profile: "t2".to_string(),
        cargo: args.cargo.clone(),
        ..PlanInput::default()
    })?;
    check_nextest()?;
    run::env::prefetch_toolchain_libdir();
    let built = build::build(&plan, args.color, args.quiet)?;
    let (env, _caps) = plan.env_for_run(None);
    let listings = run::list::list_all(
        &built.binaries,
        run::list::ListArgs {
            target_dir: &plan.workspace.target_dir,
            env: &env,
            filter: None,
            test_args: &[],
            probe_dir: None,
            stop: None,
        },
    );
    let summary = nextest_list(&args)?;

    // Ours, by executable path: the groups claiming the binary and the tests' groups.
    let mut ours: HashMap<PathBuf, Known> = HashMap::new();
    for (binary, listing) in built.binaries.iter().zip(listings) {
        let listing =
            listing.map_err(|e| Error::Internal(format!("cannot list {}: {e}", binary.id)))?;
        let tests = listing
            .tests
            .into_iter()
            .filter(|test| !test.groups.is_empty())
            .map(|test| (test.name, test.groups))
            .collect();
        ours.insert(
            canonical(&binary.path),
            (plan.groups_claiming(&binary.id.target), tests),
        );
    }
    let max = |group: &str| plan.config.groups.get(group).map_or(1, |g| g.max);

    let mut overrides = Vec::new();
    for (binary_id, suite) in &summary.rust_suites {
        let Some((claimed, tests)) = ours.get(&canonical(suite.binary.binary_path.as_std_path()))
        else {
            continue;
        };
        let binary_filter = format!("binary_id(={})", escape_matcher(binary_id.as_str()));
        if let Some(over) = choose(claimed, &max, binary_filter.clone()) {
            overrides.push(over);
            // nextest gives a test one group: the binary's claim decides for all its tests.
            continue;
        }
        for (name, groups) in tests {
            if !suite.test_cases.keys().any(|case| case.as_str() == name) {
                continue;
            }
            let filter = format!("{binary_filter} & test(={})", escape_matcher(name));
            if let Some(over) = choose(groups, &max, filter) {
                overrides.push(over);
            }
        }
    }
    let groups: BTreeMap<String, u32> = plan
        .config
        .groups
        .iter()
        .map(|(name, group)| (name.clone(), group.max))
        .collect();
    let text = render(&groups, &overrides);
    match &args.output {
        None => print!("{text}"),
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::internal(format!("cannot create {}", dir.display()), e))?;
            }
            std::fs::write(path, &text)
                .map_err(|e| Error::internal(format!("cannot write {}", path.display()), e))?;
            if !args.quiet {
                say!(
                    "wrote {} ({} test groups, {} overrides); use it as .config/nextest.toml or with `cargo nextest run --config-file {}`",
                    path.display(),
                    groups.len(),
                    overrides.len(),
                    path.display()
                );
            }
        }
    }
    Ok(0)
}

/// The override for something in `groups`: nextest runs a test in one group only, so the
/// most constrained one (smallest `max`, then name) is kept and the others are noted.
fn choose(groups: &[String], max: &impl Fn(&str) -> u32, filter: String) -> Option<Override> {
    let mut sorted: Vec<&String> = groups.iter().collect();
    sorted.sort_by_key(|g| (max(g), g.as_str()));
    let (first, rest) = sorted.split_first()?;
    let note = (!rest.is_empty()).then(|| {
        format!(
            "also in {}: nextest runs a test in one group only",
            rest.iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Some(Override {
        filter,
        group: (*first).clone(),
        note,
    })
}

/// The config text: one `[test-groups]` entry per group, then the overrides in order.
pub fn render(groups: &BTreeMap<String, u32>, overrides: &[Override]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Generated by `cargo capped nextest-config` from .config/capped.toml: the same groups\n\
         # under `cargo nextest run`. A group's `scope` does not carry over (nextest's groups\n\
         # hold within one run); #[capped] tests still take their slots through the lock files.\n",
    );
    if groups.is_empty() {
        out.push_str("# .config/capped.toml names no group.\n");
        return out;
    }
    out.push_str("\n[test-groups]\n");
    for (name, max) in groups {
        let _ = writeln!(out, "{} = {{ max-threads = {max} }}", toml_key(name));
    }
    for over in overrides {
        out.push('\n');
        if let Some(note) = &over.note {
            let _ = writeln!(out, "# {note}");
        }
        out.push_str("[[profile.default.overrides]]\n");
        let _ = writeln!(out, "filter = {}", toml_string(&over.filter));
        let _ = writeln!(out, "test-group = {}", toml_string(&over.group));
    }
    out
}

/// A filterset name-matcher's text: `,` and `)` end a matcher and `\` escapes, so each is
/// escaped with a backslash.
pub fn escape_matcher(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ',' | ')') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        toml_string(name)
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Fails with a clear message when `cargo nextest` cannot run.
fn check_nextest() -> Result<()> {
    let ok = Command::new(build::cargo_program())
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(
            "cargo-nextest is not installed (`cargo nextest --version` failed): install it with \
             `cargo install --locked cargo-nextest`, then run `cargo capped nextest-config` again"
                .to_string(),
        ))
    }
}

/// Nextest's own list of the same build.
fn nextest_list(args: &NextestConfigArgs) -> Result<TestListSummary> {
    let mut list = nextest_metadata::ListCommand::new();
    list.cargo_path(
        build::cargo_program()
            .to_str()
            .ok_or_else(|| Error::Internal("the cargo path is not UTF-8".into()))?,
    );
    list.add_args(nextest_cargo_args(&args.cargo));
    list.add_args(["--color", args.color.as_str()]);
    if args.quiet {
        list.add_arg("--cargo-quiet");
    }
    let output = list
        .cargo_command()
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::internal("cannot run `cargo nextest list`", e))?;
    if !output.status.success() {
        return Err(Error::Internal(format!(
            "`cargo nextest list --message-format json` exited with {} (its errors are above)",
            output.status
        )));
    }
    TestListSummary::parse_json(String::from_utf8_lossy(&output.stdout)).map_err(|e| {
        Error::internal(
            "cannot read the output of `cargo nextest list --message-format json`",
            e,
        )
    })
}

/// Cargo's flags as `cargo nextest list` spells them: the build profile is
/// `--cargo-profile` there too, and `-j` is `--build-jobs`.
pub fn nextest_cargo_args(cargo: &CargoArgs) -> Vec<String> {
    let mut args = cargo.to_cargo_args();
    for arg in &mut args {
        match arg.as_str() {
            "--profile" => *arg = "--cargo-profile".to_string(),
            "--jobs" => *arg = "--build-jobs".to_string(),
            _ => {}
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_groups_and_overrides_in_order() {
        let groups = BTreeMap::from([("gpu".to_string(), 1), ("crossval".to_string(), 2)]);
        let overrides = vec![
            Override {
                filter: "binary_id(=pkg::crossval)".into(),
                group: "crossval".into(),
                note: None,
            },
            Override {
                filter: "binary_id(=pkg::h) & test(=a)".into(),
                group: "gpu".into(),
                note: Some("also in crossval: nextest runs a test in one group only".into()),
            },
        ];
        let text = render(&groups, &overrides);
        let parsed: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(
            parsed["test-groups"]["crossval"]["max-threads"].as_integer(),
            Some(2)
        );
        let list = parsed["profile"]["default"]["overrides"]
            .as_array()
            .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1]["filter"].as_str(),
            Some("binary_id(=pkg::h) & test(=a)")
        );
        assert_eq!(list[1]["test-group"].as_str(), Some("gpu"));
        assert!(text.contains("# also in crossval"));
    }

    #[test]
    fn keeps_the_most_constrained_group() {
        let max = |g: &str| if g == "gpu" { 1 } else { 4 };
        let over = choose(&["wide".into(), "gpu".into()], &max, "f".into()).unwrap();
        assert_eq!(over.group, "gpu");
        assert!(over.note.unwrap().contains("wide"));
        assert!(choose(&[], &max, "f".into()).is_none());
    }

    #[test]
    fn escapes_matcher_text() {
        assert_eq!(escape_matcher("a::b"), "a::b");
        assert_eq!(escape_matcher("f(x, y)"), "f(x\\, y\\)");
        assert_eq!(escape_matcher("a\\b"), "a\\\\b");
    }

    #[test]
    fn spells_cargo_flags_as_nextest_does() {
        let cargo = CargoArgs {
            cargo_profile: Some("ci".into()),
            jobs: Some("2".into()),
            package: vec!["p".into()],
            ..CargoArgs::default()
        };
        let args = nextest_cargo_args(&cargo);
        assert!(args.windows(2).any(|w| w == ["--cargo-profile", "ci"]));
        assert!(args.windows(2).any(|w| w == ["--build-jobs", "2"]));
        assert!(args.windows(2).any(|w| w == ["--package", "p"]));
    }
}
