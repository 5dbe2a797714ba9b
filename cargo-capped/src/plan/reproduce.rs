//! The command that runs one failed test again, selecting the same build and the same test.
//!
//! A reproduce line that drops a flag the run was given rebuilds something else: without
//! `--features` the test may not exist (0 tests run, exit 0, and the failure looks
//! unreproducible), without `--release` or `--target` it runs other code. So the line keeps
//! every flag that decides *what is built* (features, build profile, target, manifest,
//! target dir, cargo `--config`), the run options that decide *how it runs* when they were
//! given (`--deterministic`, `--test-threads`, `--rayon-threads`, `--isolation`), the run's
//! seed, and selects the one binary (`-p PKG` and `--lib`/`--bin`/`--test`/…) and the one
//! test (`-- --exact NAME`, with `--include-ignored` when the run ran ignored tests).
//!
//! [`ReproduceBase`] is built once from the plan; [`ReproduceBase::for_binary`] gives the
//! [`Reproduce`] of one binary, which the runner hands to the binary's tests
//! (`CAPPED_REPRODUCE`) and the report prints, so the line a `#[capped]` test prints and
//! the runner's agree.

use capped_model::SeedOrigin;
use capped_model::protocol::Reproduce;

use super::Plan;
use crate::events::BinaryId;

/// What every reproduce line of a run shares: the words before the binary's selection and
/// the test flags after `--`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReproduceBase {
    /// Where the run seed came from.
    pub seed_origin: SeedOrigin,
    /// `cargo capped run --profile P --seed S` and the build and run flags.
    pub before: Vec<String>,
    /// Test flags before `--exact` (`--include-ignored`).
    pub test_flags: Vec<String>,
}

impl ReproduceBase {
    /// The base of `plan`'s reproduce lines.
    pub fn from_plan(plan: &Plan) -> ReproduceBase {
        let mut words: Vec<String> = ["cargo", "capped", "run", "--profile", &plan.profile]
            .map(String::from)
            .to_vec();
        words.extend(["--seed".to_string(), plan.caps.seed().to_string()]);
        let options = &plan.options;
        if options.deterministic {
            words.push("--deterministic".to_string());
        }
        let mut value = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                words.extend([flag.to_string(), value]);
            }
        };
        value(
            "--test-threads",
            options.test_threads.map(|n| n.to_string()),
        );
        value(
            "--rayon-threads",
            options.rayon_threads.map(|n| n.to_string()),
        );
        value(
            "--isolation",
            options.isolation.map(|i| {
                match i {
                    capped_model::config::Isolation::Test => "test",
                    capped_model::config::Isolation::Binary => "binary",
                }
                .to_string()
            }),
        );
        let cargo = &plan.cargo;
        for features in &cargo.features {
            words.extend(["--features".to_string(), features.clone()]);
        }
        for (on, flag) in [
            (cargo.all_features, "--all-features"),
            (cargo.no_default_features, "--no-default-features"),
            (cargo.release, "--release"),
        ] {
            if on {
                words.push(flag.to_string());
            }
        }
        if let Some(profile) = &cargo.cargo_profile {
            words.extend(["--cargo-profile".to_string(), profile.clone()]);
        }
        for target in &cargo.target {
            words.extend(["--target".to_string(), target.clone()]);
        }
        if let Some(path) = &cargo.manifest_path {
            words.extend(["--manifest-path".to_string(), path.display().to_string()]);
        }
        if let Some(dir) = &cargo.target_dir {
            words.extend(["--target-dir".to_string(), dir.display().to_string()]);
        }
        for config in &cargo.cargo_config {
            words.extend(["--config".to_string(), config.clone()]);
        }
        let ran_ignored = plan
            .test_args
            .iter()
            .any(|a| a == "--ignored" || a == "--include-ignored");
        ReproduceBase {
            seed_origin: plan.caps.seed_origin(),
            before: words,
            test_flags: if ran_ignored {
                vec!["--include-ignored".to_string()]
            } else {
                Vec::new()
            },
        }
    }

    /// The reproduce command of `binary`'s tests, up to the test's name.
    pub fn for_binary(&self, binary: &BinaryId) -> Reproduce {
        let mut words = self.before.clone();
        words.extend(["-p".to_string(), binary.package.clone()]);
        words.extend(target_selector(binary));
        words.push("--".to_string());
        words.extend(self.test_flags.iter().cloned());
        // A doc test's name cannot be given whole (see `test_filter`).
        if binary.kind != crate::build::DOC_KIND {
            words.push("--exact".to_string());
        }
        Reproduce {
            seed_origin: self.seed_origin,
            words,
        }
    }
}

/// What selects test `name` of `binary` after `--`: the name itself, or for a doc test
/// (`src/lib.rs - Foo::add (line 3)`) its item path (`Foo::add`), since rustdoc splits its
/// test arguments on whitespace and no argument can carry the whole name; the item path
/// may select the item's other doc tests too.
pub fn test_filter<'n>(binary: &BinaryId, name: &'n str) -> &'n str {
    if binary.kind != crate::build::DOC_KIND {
        return name;
    }
    let item = name.split_once(" - ").map_or(name, |(_, item)| item);
    let item = item.rsplit_once(" (line ").map_or(item, |(item, _)| item);
    item.trim()
}

/// `--lib`, `--test NAME`, … selecting a binary's target in cargo's terms.
fn target_selector(binary: &BinaryId) -> Vec<String> {
    match binary.kind.as_str() {
        "lib" | "proc-macro" | "rlib" | "dylib" | "cdylib" | "staticlib" => {
            vec!["--lib".to_string()]
        }
        crate::build::DOC_KIND => vec!["--doc".to_string()],
        "bin" | "test" | "bench" | "example" => {
            vec![format!("--{}", binary.kind), binary.target.clone()]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{CargoArgs, RunOptions};
    use crate::plan::{PlanInput, Workspace};
    use capped_model::config::Config;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn plan(cargo: CargoArgs, options: RunOptions, test_args: &[&str]) -> Plan {
        let lock_dir = tempfile::tempdir().unwrap().keep();
        Plan::resolve(
            Workspace {
                root: PathBuf::from("/ws"),
                target_dir: PathBuf::from("/ws/target"),
                packages: HashMap::new(),
                ..Workspace::default()
            },
            Config::default(),
            PlanInput {
                profile: "t2".into(),
                cargo,
                options: RunOptions {
                    lock_dir: Some(lock_dir),
                    ..options
                },
                test_args: test_args.iter().map(|a| a.to_string()).collect(),
                ..PlanInput::default()
            },
        )
        .unwrap()
    }

    fn binary(kind: &str, target: &str) -> BinaryId {
        BinaryId {
            package: "serial_test".into(),
            target: target.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn keeps_what_selects_the_build_and_the_test() {
        let plan = plan(
            CargoArgs {
                package: vec!["other".into()],
                workspace: true,
                features: vec!["file_locks".into(), "a b".into()],
                no_default_features: true,
                release: true,
                target: vec!["x86_64-unknown-linux-gnu".into()],
                locked: true,
                jobs: Some("4".into()),
                ..CargoArgs::default()
            },
            RunOptions {
                seed: Some(7),
                test_threads: Some(2),
                ..RunOptions::default()
            },
            &["--include-ignored", "--nocapture"],
        );
        let reproduce = ReproduceBase::from_plan(&plan).for_binary(&binary("test", "tests"));
        assert_eq!(reproduce.seed_origin, SeedOrigin::Given);
        assert_eq!(
            reproduce.command_for("locks::file"),
            "cargo capped run --profile t2 --seed 7 --test-threads 2 --features file_locks \
             --features 'a b' --no-default-features --release --target x86_64-unknown-linux-gnu \
             -p serial_test --test tests -- --include-ignored --exact locks::file"
        );
    }

    #[test]
    fn build_profile_deterministic_and_every_target_kind() {
        let plan = plan(
            CargoArgs {
                all_features: true,
                cargo_profile: Some("ci".into()),
                ..CargoArgs::default()
            },
            RunOptions {
                deterministic: true,
                ..RunOptions::default()
            },
            &[],
        );
        let base = ReproduceBase::from_plan(&plan);
        assert_eq!(base.seed_origin, SeedOrigin::Deterministic);
        let line = |kind, target| base.for_binary(&binary(kind, target)).command_for("t");
        assert_eq!(
            line("lib", "serial_test"),
            "cargo capped run --profile t2 --seed 42 --deterministic --all-features \
             --cargo-profile ci -p serial_test --lib -- --exact t"
        );
        assert!(line("proc-macro", "m").contains(" -p serial_test --lib -- "));
        assert!(line("bin", "tool").contains(" -p serial_test --bin tool -- "));
        assert!(line("example", "demo").contains(" -p serial_test --example demo -- "));
        assert!(line("bench", "speed").contains(" -p serial_test --bench speed -- "));
    }

    #[test]
    fn doc_tests_are_selected_by_their_item() {
        let plan = plan(CargoArgs::default(), RunOptions::default(), &[]);
        let doc = binary("doc", "serial_test");
        let name = "src/lib.rs - Locks::file (line 12)";
        let line = ReproduceBase::from_plan(&plan)
            .for_binary(&doc)
            .command_for(test_filter(&doc, name));
        assert!(
            line.ends_with(" -p serial_test --doc -- Locks::file"),
            "{line}"
        );
        assert_eq!(test_filter(&binary("test", "t"), name), name);
    }

    #[test]
    fn a_drawn_seed_is_labelled_drawn() {
        let plan = plan(CargoArgs::default(), RunOptions::default(), &[]);
        let reproduce = ReproduceBase::from_plan(&plan).for_binary(&binary("test", "it"));
        assert_eq!(reproduce.seed_origin, SeedOrigin::Random);
        assert!(
            reproduce
                .command_for("x")
                .contains(&format!("--seed {} ", plan.caps.seed()))
        );
    }
}
