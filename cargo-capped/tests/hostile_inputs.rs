//! Property tests over what users type: config files, command lines and `CAPPED_*`
//! environments, hostile ones included (huge, negative and non-numeric counts, NUL and
//! newlines in strings, `=` in names, unknown keys and flags).
//!
//! The properties: nothing panics or aborts (an abort would end this test process), and
//! every rejection is one line that names the problem, with exit status 2. Everything runs
//! in process, on the same functions the binary calls (`Config::parse_with_preflight`,
//! clap's parser, `Plan::check_input`, `Plan::resolve`, `Caps::from_sources`), so the case
//! counts can be large and the whole file still runs in seconds.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use capped_model::config::Config;
use capped_model::units::MAX_COUNT;
use capped_model::{Caps, CapsOverrides};
use cargo_capped::cli::{Cli, Command, RunArgs, normalize_args};
use cargo_capped::errors::{EXIT_USAGE, Error};
use cargo_capped::plan::{Plan, PlanInput, Workspace};
use cargo_capped::preflight::Thresholds;
use clap::Parser;
use proptest::prelude::*;

/// Counts as people (and scripts gone wrong) write them.
fn count_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..6).prop_map(|n| n.to_string()),
        Just("4096".to_string()),
        Just("4097".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("9".repeat(400)),
        Just("1.5".to_string()),
        Just("1e3".to_string()),
        Just("0x10".to_string()),
        Just(" 2 ".to_string()),
        Just(String::new()),
        Just("two".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// Strings with the characters that break naive code: NUL, newlines, quotes, `=`, unicode.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_=-]{0,12}",
        Just("\0".to_string()),
        Just("a\nb".to_string()),
        Just("a=b".to_string()),
        Just("\"".to_string()),
        Just("é∞\u{202e}".to_string()),
        ".{0,16}",
    ]
}

/// A TOML value: an integer, a string, a float, a bool, an array.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        count_text().prop_filter_map("TOML integers only", |t| t
            .trim()
            .parse::<i64>()
            .ok()
            .map(|n| n.to_string())),
        count_text().prop_map(|t| toml_string(&t)),
        nasty_text().prop_map(|t| toml_string(&t)),
        Just("1.5".to_string()),
        Just("nan".to_string()),
        Just("true".to_string()),
        Just("[\"crossval*\", \"[\"]".to_string()),
        Just("{}".to_string()),
        Just("\"30s\"".to_string()),
        Just("\"2GiB\"".to_string()),
        Just("\"99999999999999T\"".to_string()),
        Just("\"-1s\"".to_string()),
    ]
}

/// `text` as a TOML basic string, every control character escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const PROFILE_KEYS: [&str; 14] = [
    "test-threads",
    "rayon-threads",
    "blas-threads",
    "async-threads",
    "deterministic",
    "seed",
    "shuffle",
    "timeout",
    "test-timeout",
    "mem-limit",
    "mem-budget",
    "split-binaries",
    "bogus",
    "test_threads",
];

const GROUP_KEYS: [&str; 4] = ["max", "scope", "binaries", "maxx"];

/// One table of a config file.
fn config_table() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("t2".to_string()),
        Just("ci".to_string()),
        Just("gpu".to_string()),
        Just("GPU".to_string()),
        Just("a-b".to_string()),
        nasty_text(),
    ];
    let entries = |keys: &'static [&'static str]| {
        proptest::collection::vec(
            (proptest::sample::select(keys), toml_value())
                .prop_map(|(key, value)| format!("{key} = {value}\n")),
            0..4,
        )
        .prop_map(|lines| lines.concat())
    };
    let env_entries = proptest::collection::vec(
        (nasty_text(), nasty_text())
            .prop_map(|(key, value)| format!("{} = {}\n", toml_string(&key), toml_string(&value))),
        0..3,
    )
    .prop_map(|lines| lines.concat());
    prop_oneof![
        (name.clone(), entries(&PROFILE_KEYS))
            .prop_map(|(name, body)| format!("[profile.{}]\n{body}", toml_string(&name))),
        (name.clone(), env_entries)
            .prop_map(|(name, body)| format!("[profile.{}.env]\n{body}", toml_string(&name))),
        (name, entries(&GROUP_KEYS))
            .prop_map(|(name, body)| format!("[groups.{}]\n{body}", toml_string(&name))),
        (
            proptest::sample::select(&["load-warn", "nope", "disk-warn-percent"][..]),
            toml_value()
        )
            .prop_map(|(key, value)| format!("[preflight]\n{key} = {value}\n")),
        ".{0,40}",
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(config_table(), 0..4).prop_map(|tables| tables.join("\n"))
}

/// A rejection shown to users: one non-empty line.
fn assert_one_line(message: &str, what: &str) {
    assert!(!message.trim().is_empty(), "{what}: an empty message");
    assert!(
        !message.trim_end().contains('\n') && !message.contains('\0'),
        "{what}: not one line: {message:?}"
    );
}

/// The caps every accepted value must stay within.
fn assert_bounded(caps: &Caps) {
    for (what, n) in [
        ("test-threads", caps.test_threads()),
        ("rayon-threads", caps.rayon_threads()),
        ("blas-threads", caps.blas_threads()),
        ("async-threads", caps.async_threads()),
        ("width-held", caps.width_held()),
    ] {
        assert!(n <= MAX_COUNT, "{what} = {n} got through");
    }
    for (name, limit) in caps.groups() {
        assert!(
            (1..=MAX_COUNT).contains(&limit.max),
            "group {name} max {} got through",
            limit.max
        );
    }
}

fn workspace() -> Workspace {
    Workspace {
        root: PathBuf::from("/ws"),
        target_dir: PathBuf::from("/ws/target"),
        packages: HashMap::new(),
        ..Workspace::default()
    }
}

/// What the binary does with a parsed run command short of discovering and building:
/// [`Plan::check_input`] and [`Plan::resolve`] against `config`.
fn plan(profile: &str, run: RunArgs, config: Config, lock_dir: &Path) -> Result<Plan, Error> {
    let mut options = run.options;
    options.lock_dir = Some(lock_dir.to_path_buf());
    let input = PlanInput {
        profile: profile.to_string(),
        cargo: run.cargo,
        options,
        output: run.output,
        filter: run.filter,
        test_args: run.test_args,
    };
    Plan::check_input(&input)?;
    Plan::resolve(workspace(), config, input)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn config_files_are_accepted_within_bounds_or_rejected_in_one_located_line(text in config_text()) {
        let path = Path::new("/ws/.config/capped.toml");
        match Config::parse_with_preflight::<Thresholds>(Some(path), &text) {
            Ok((config, _)) => {
                for (name, profile) in &config.profiles {
                    for n in [profile.test_threads, profile.rayon_threads, profile.blas_threads, profile.async_threads]
                        .into_iter()
                        .flatten()
                    {
                        prop_assert!((1..=MAX_COUNT).contains(&n), "profile {name}: {n}");
                    }
                    for (key, value) in &profile.env {
                        prop_assert!(!key.is_empty() && !key.contains(['=', '\0']), "env key {key:?}");
                        prop_assert!(!value.contains('\0'), "env value {value:?}");
                    }
                }
                for (name, group) in &config.groups {
                    prop_assert!((1..=MAX_COUNT).contains(&group.max), "group {name}: {}", group.max);
                }
            }
            Err(error) => {
                let message = Error::from(error);
                prop_assert_eq!(message.exit_code(), EXIT_USAGE);
                let message = message.to_string();
                assert_one_line(&message, &text);
                prop_assert!(message.starts_with("/ws/.config/capped.toml"), "{}", message);
            }
        }
    }
}

/// One command-line argument: a flag, a hostile value or a word.
fn cli_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "--test-threads",
                "--rayon-threads",
                "--seed",
                "--timeout",
                "--mem-limit",
                "--partition",
                "--no-tests",
                "--junit",
                "--message-format",
                "--deterministic",
                "--shuffle",
                "--fail-fast",
                "-j",
                "-p",
                "-v",
                "-q",
                "--doc",
                "--profile",
                "--max",
                "--group",
                "--blas-threads",
                "--async-threads",
                "--",
                "--exact",
                "--skip",
                "--ignored",
                "--include-ignored",
                "--bogus",
                "-Zx",
                "--format=json",
                "--exact=1",
                "--help",
                "--version",
                "warn",
                "hash:1/2",
                "30s",
                "300M",
            ][..]
        )
        .prop_map(str::to_string),
        count_text(),
        nasty_text().prop_filter("argv cannot carry NUL", |t| !t.contains('\0')),
    ]
}

fn cli_args() -> impl Strategy<Value = Vec<OsString>> {
    let head = prop_oneof![
        Just(vec!["t2"]),
        Just(vec!["t1"]),
        Just(vec!["run", "--profile", "t2"]),
        Just(vec!["run", "--profile", "ci"]),
        Just(vec!["list"]),
        Just(vec!["gate", "--group", "g"]),
    ];
    (
        head,
        proptest::collection::vec(cli_arg(), 0..7),
        any::<bool>(),
    )
        .prop_map(|(head, tail, gate_command)| {
            let mut args: Vec<OsString> = ["cargo-capped", "capped"].map(OsString::from).to_vec();
            args.extend(head.iter().map(OsString::from));
            args.extend(tail.into_iter().map(OsString::from));
            if gate_command {
                args.extend(["--", "true"].map(OsString::from));
            }
            args
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn command_lines_are_accepted_within_bounds_or_rejected_with_exit_2(args in cli_args()) {
        let cli = match Cli::try_parse_from(normalize_args(args.clone())) {
            Ok(cli) => cli,
            Err(error) => {
                if !error.use_stderr() {
                    // --help, --version: printed on stdout, exit 0.
                    return Ok(());
                }
                let rendered = error.render().to_string();
                let error_lines: Vec<&str> =
                    rendered.lines().filter(|line| line.starts_with("error:")).collect();
                prop_assert_eq!(error_lines.len(), 1, "{:?}: {}", args, rendered);
                prop_assert!(error_lines[0].len() > "error: ".len(), "{}", rendered);
                return Ok(());
            }
        };
        let lock_dir = tempfile::tempdir().unwrap();
        let config = Config::parse(None, "[profile.ci]\ntest-threads = 4096\n[groups.g]\nmax = 4096\n").unwrap();
        let result = match cli.command {
            Command::T2(args) => plan("t2", args.run, config, lock_dir.path()),
            Command::T1(args) => plan("t1", args.run, config, lock_dir.path()),
            Command::Run(args) => plan(&args.profile, args.run, config, lock_dir.path()),
            Command::List(args) => {
                let run = RunArgs {
                    cargo: args.cargo,
                    options: Default::default(),
                    output: Default::default(),
                    filter: args.filter,
                    test_args: args.test_args,
                };
                plan("t2", run, config, lock_dir.path())
            }
            // Reads a file and prints; nothing to resolve.
            Command::History(_) => return Ok(()),
            Command::NextestConfig(args) => {
                let run = RunArgs {
                    cargo: args.cargo,
                    options: Default::default(),
                    output: Default::default(),
                    filter: None,
                    test_args: Vec::new(),
                };
                plan("t2", run, config, lock_dir.path())
            }
            Command::Gate(gate) => {
                for n in [gate.max, gate.threads.rayon_threads, gate.threads.blas_threads, gate.threads.async_threads]
                    .into_iter()
                    .flatten()
                {
                    prop_assert!((1..=MAX_COUNT).contains(&n), "{:?}: {}", args, n);
                }
                return Ok(());
            }
            Command::Preflight(_) => return Ok(()),
        };
        match result {
            Ok(plan) => assert_bounded(&plan.caps),
            Err(error) => {
                prop_assert_eq!(error.exit_code(), EXIT_USAGE, "{:?}: {}", args, error);
                assert_one_line(&error.to_string(), &format!("{args:?}"));
            }
        }
    }
}

/// The variables a test process reads its caps from.
const ENV_VARS: [&str; 14] = [
    "CAPPED",
    "CAPPED_TEST_THREADS",
    "CAPPED_RAYON_THREADS",
    "CAPPED_BLAS_THREADS",
    "CAPPED_ASYNC_THREADS",
    "CAPPED_GROUPS",
    "CAPPED_WIDTH_HELD",
    "CAPPED_SEED",
    "CAPPED_TEST_TIMEOUT",
    "CAPPED_MEM_BUDGET",
    "RUST_TEST_THREADS",
    "RAYON_NUM_THREADS",
    "OMP_NUM_THREADS",
    "TOKIO_WORKER_THREADS",
];

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        count_text(),
        nasty_text(),
        count_text().prop_map(|n| format!("gpu={n}")),
        count_text().prop_map(|n| format!("gpu={n}@run,a-b=1")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn test_process_environments_give_bounded_caps_or_one_line_errors(
        vars in proptest::collection::vec((proptest::sample::select(&ENV_VARS[..]), env_value()), 0..5),
        threads in proptest::option::of(count_text()),
    ) {
        let env: HashMap<&str, String> = vars.into_iter().collect();
        let get = |var: &str| env.get(var).cloned();
        let args: Vec<String> = threads
            .map(|n| vec!["--test-threads".to_string(), n])
            .unwrap_or_default();
        // As a test process reads them, and (lock dirs aside) what the gate reads.
        match CapsOverrides::from_env(&get, &args) {
            Ok(_) => {
                let caps = Caps::from_sources(&get, &args, None).unwrap();
                assert_bounded(&caps);
            }
            Err(error) => {
                let error = Error::from(error);
                prop_assert_eq!(error.exit_code(), EXIT_USAGE, "{}", error);
                assert_one_line(&error.to_string(), &format!("{env:?} {args:?}"));
            }
        }
    }
}
