//! *Build*: `cargo test --no-run --message-format json-render-diagnostics`, parsed with
//! `cargo_metadata`; and the doc tests of the selected packages ([`doc_tests`]), which
//! nothing builds ahead: rustdoc compiles them when it runs them.
//!
//! Cargo renders compiler diagnostics on stderr itself (which passes through to ours, so
//! errors look exactly as under `cargo test`); stdout carries the JSON messages, from which
//! we take each test executable and what its build script told cargo (`cargo:rustc-env`,
//! link search paths), because `cargo test` hands those to the test process too.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use cargo_metadata::Message;

use crate::cli::Color;
use crate::errors::{Error, Result};
use crate::events::BinaryId;
use crate::plan::{PackageInfo, Plan};
use crate::process;
use crate::run::signals;

/// [`BinaryId::kind`] of a package's doc tests.
pub const DOC_KIND: &str = "doc";

/// One test executable to run, or a package's doc tests (`cargo test --doc -p PKG`, whose
/// runner is libtest too: it takes the same arguments after `--` and writes the same
/// `--logfile`).
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Package, target and kind ([`DOC_KIND`] for doc tests).
    pub id: BinaryId,
    /// The executable (cargo, for doc tests).
    pub path: PathBuf,
    /// Arguments before libtest's: for doc tests `test --doc -p PKG [build flags] --`,
    /// so that every libtest argument the runner adds reaches rustdoc's runner.
    pub args: Vec<String>,
    /// What `cargo test` tells the process about its package.
    pub package: PackageInfo,
    /// `cargo:rustc-env` pairs of the package's build script.
    pub build_env: Vec<(String, String)>,
    /// Native library dirs from build scripts (inside the target dir), for the dylib path.
    pub native_dirs: Vec<PathBuf>,
}

impl TestBinary {
    /// Whether this is a package's doc tests. Their names have spaces
    /// (`src/lib.rs - add (line 3)`) and rustdoc splits its test arguments on whitespace, so
    /// they cannot be selected by name: the runner never splits, isolates, retries or
    /// partitions them test by test, only as a whole.
    pub fn is_doc(&self) -> bool {
        self.id.kind == DOC_KIND
    }
}

/// What the build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// Test executables, in the order cargo reported them, then the doc tests.
    pub binaries: Vec<TestBinary>,
    /// Why doc tests the run selected will not run, for the run's header.
    pub notices: Vec<String>,
}

/// Whether the run's selection includes doc tests: as under `cargo test`, with `--doc` or
/// without any target selection flag.
pub fn runs_doc_tests(plan: &Plan) -> bool {
    plan.cargo.doc || !plan.cargo.selects_targets()
}

/// The doc tests of the packages the run selects (`-p`, `--workspace`/`--exclude`, else the
/// default members), one unit per package whose library has doc tests, each run as
/// `cargo test --doc -p PKG` with the run's build flags; and a notice for each package
/// spec whose doc tests cannot run. Empty when the selection excludes doc tests.
pub fn doc_tests(plan: &Plan) -> (Vec<TestBinary>, Vec<String>) {
    if !runs_doc_tests(plan) {
        return (Vec::new(), Vec::new());
    }
    let workspace = &plan.workspace;
    let cargo = &plan.cargo;
    let mut notices = Vec::new();
    let selected: Vec<&String> = if cargo.workspace || cargo.all {
        workspace
            .members
            .iter()
            .filter(|id| {
                let name = &workspace.packages[*id].name;
                !cargo
                    .exclude
                    .iter()
                    .any(|spec| spec_matches(spec, name, ""))
            })
            .collect()
    } else if !cargo.package.is_empty() {
        let mut selected = Vec::new();
        for spec in &cargo.package {
            let found: Vec<&String> = workspace
                .members
                .iter()
                .filter(|id| {
                    let package = &workspace.packages[*id];
                    spec_matches(spec, &package.name, &package.version)
                })
                .collect();
            if found.is_empty() {
                notices.push(format!(
                    "doc tests of `{spec}` are not run: it is not a member of the workspace \
                     (run them with `cargo test --doc -p {spec}`)"
                ));
            }
            selected.extend(found);
        }
        selected
    } else {
        match &workspace.default_members {
            Some(ids) => workspace
                .members
                .iter()
                .filter(|id| ids.contains(id))
                .collect(),
            None => {
                notices.push(
                    "doc tests are not run: this cargo does not say which packages it tests by \
                     default; select them with -p or --workspace"
                        .to_string(),
                );
                Vec::new()
            }
        }
    };
    let mut binaries: Vec<TestBinary> = Vec::new();
    for id in selected {
        let package = &workspace.packages[id];
        let Some(lib) = &package.doc_lib else {
            continue;
        };
        if binaries.iter().any(|b| b.id.package == package.name) {
            continue;
        }
        let mut args: Vec<String> = ["test", "--doc", "--package", &package.name]
            .map(String::from)
            .to_vec();
        args.extend(cargo.build_args());
        args.push("--".to_string());
        binaries.push(TestBinary {
            id: BinaryId {
                package: package.name.clone(),
                target: lib.clone(),
                kind: DOC_KIND.to_string(),
            },
            path: cargo_program(),
            args,
            package: package.clone(),
            build_env: Vec::new(),
            native_dirs: Vec::new(),
        });
    }
    (binaries, notices)
}

/// Whether cargo's package spec `spec` (`NAME`, `NAME@VERSION`, `NAME:VERSION`, or a name
/// pattern with `*` and `?`) names the package `name` at `version`.
fn spec_matches(spec: &str, name: &str, version: &str) -> bool {
    let (spec_name, spec_version) = match spec.split_once(['@', ':']) {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let spec_name = spec_name.rsplit('/').next().unwrap_or(spec_name);
    let spec_name = spec_name.rsplit('#').next().unwrap_or(spec_name);
    wildcard(spec_name.as_bytes(), name.as_bytes())
        && spec_version.is_none_or(|v| version.is_empty() || version.starts_with(v))
}

/// `*` any run of characters, `?` one character.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], name) || (!name.is_empty() && wildcard(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The `cargo` to run: `$CARGO` (set by cargo for its subcommands), else `cargo`.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Builds the test binaries. A failed build is [`Error::Build`] (exit 101) after cargo has
/// printed the compiler's errors.
pub fn build(plan: &Plan, color: Color, quiet: bool) -> Result<BuildOutput> {
    let mut command = Command::new(cargo_program());
    command
        .args([
            "test",
            "--no-run",
            "--message-format",
            "json-render-diagnostics",
        ])
        .args(["--color", color.as_str()])
        .args(plan.cargo.to_cargo_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if quiet {
        command.arg("--quiet");
    }
    // Its own process group: a signal to the runner is forwarded on our terms, and an
    // interrupted build leaves no rustc behind. And it dies with the runner, even a
    // SIGKILLed one (spawned from the main thread).
    let mut child =
        process::spawn(&mut command).map_err(|e| Error::internal("cannot run cargo", e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");

    // The reader says when cargo closed its stdout, which it does as it exits: the loop
    // then looks every millisecond for a while, instead of once per poll interval.
    let (closed, stdout_closed) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let messages = parse_messages(BufReader::new(stdout));
        drop(closed);
        messages
    });
    let mut closed_at: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::internal("cannot wait for cargo", e))?
        {
            break status;
        }
        if let Some(signal) = signals::take_pending() {
            process::forward_to_group(pid, signal);
            let _ = child.wait();
            let _ = reader.join();
            return Err(Error::Interrupted);
        }
        match closed_at {
            Some(at) if at.elapsed() < Duration::from_millis(200) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => {
                if let Err(RecvTimeoutError::Disconnected) =
                    stdout_closed.recv_timeout(Duration::from_millis(20))
                {
                    closed_at = Some(Instant::now());
                }
            }
        }
    };
    let messages = reader
        .join()
        .map_err(|_| Error::Internal("the cargo output reader panicked".into()))?;
    if signals::INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    if !status.success() || !messages.success {
        return Err(Error::Build(format!(
            "cargo test --no-run exited with {status}"
        )));
    }
    Ok(collect(plan, messages))
}

/// The messages we keep from cargo's stream.
#[derive(Default)]
struct Messages {
    artifacts: Vec<cargo_metadata::Artifact>,
    scripts: HashMap<String, cargo_metadata::BuildScript>,
    success: bool,
}

fn parse_messages(input: impl std::io::BufRead) -> Messages {
    let mut messages = Messages::default();
    for message in Message::parse_stream(input) {
        match message {
            Ok(Message::CompilerArtifact(artifact)) => {
                if artifact.profile.test && artifact.executable.is_some() {
                    messages.artifacts.push(artifact);
                }
            }
            Ok(Message::BuildScriptExecuted(script)) => {
                messages
                    .scripts
                    .insert(script.package_id.repr.clone(), script);
            }
            Ok(Message::BuildFinished(finished)) => messages.success = finished.success,
            Ok(Message::TextLine(line)) => say!("{line}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    messages
}

fn collect(plan: &Plan, messages: Messages) -> BuildOutput {
    let target_dir = &plan.workspace.target_dir;
    let binaries = messages
        .artifacts
        .into_iter()
        .map(|artifact| {
            let id_repr = artifact.package_id.repr.clone();
            let manifest_path = artifact.manifest_path.clone().into_std_path_buf();
            let package = plan
                .workspace
                .packages
                .get(&id_repr)
                .cloned()
                .unwrap_or_else(|| PackageInfo {
                    name: package_name_from_id(&id_repr),
                    version: package_version_from_id(&id_repr),
                    manifest_path: manifest_path.clone(),
                    ..PackageInfo::default()
                });
            let kind = artifact
                .target
                .kind
                .first()
                .map_or_else(|| "test".to_string(), |k| k.to_string());
            let script = messages.scripts.get(&id_repr);
            let native_dirs = script
                .map(|script| {
                    script
                        .linked_paths
                        .iter()
                        .map(|p| {
                            // `dependency=PATH`, `native=PATH`, … or a bare path.
                            let p = p.as_str();
                            PathBuf::from(p.split_once('=').map_or(p, |(_, path)| path))
                        })
                        .filter(|p| p.starts_with(target_dir))
                        .collect()
                })
                .unwrap_or_default();
            TestBinary {
                id: BinaryId {
                    package: package.name.clone(),
                    target: artifact.target.name.clone(),
                    kind,
                },
                path: artifact
                    .executable
                    .expect("kept only artifacts with an executable")
                    .into_std_path_buf(),
                args: Vec::new(),
                build_env: script.map(|s| s.env.clone()).unwrap_or_default(),
                native_dirs,
                package,
            }
        })
        .collect();
    BuildOutput {
        binaries,
        notices: Vec::new(),
    }
}

/// `name` out of a package id such as `path+file:///w/foo#0.1.0`, `path+file:///w/x#foo@0.1.0`
/// or `registry+https://…#foo@1.2.3`.
fn package_name_from_id(id: &str) -> String {
    let fragment = id.rsplit_once('#').map_or(id, |(_, f)| f);
    match fragment.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => id
            .rsplit_once('#')
            .map(|(url, _)| url.rsplit('/').next().unwrap_or(url).to_string())
            .unwrap_or_else(|| id.to_string()),
    }
}

fn package_version_from_id(id: &str) -> String {
    let fragment = id.rsplit_once('#').map_or(id, |(_, f)| f);
    fragment
        .split_once('@')
        .map_or(fragment, |(_, version)| version)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids() {
        assert_eq!(package_name_from_id("path+file:///w/foo#0.1.0"), "foo");
        assert_eq!(package_name_from_id("path+file:///w/x#foo@0.1.0"), "foo");
        assert_eq!(
            package_name_from_id(
                "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1"
            ),
            "serde"
        );
        assert_eq!(
            package_version_from_id("path+file:///w/x#foo@0.1.0"),
            "0.1.0"
        );
        assert_eq!(package_version_from_id("path+file:///w/foo#0.1.0"), "0.1.0");
    }

    #[test]
    fn package_specs() {
        assert!(spec_matches("foo", "foo", "0.1.0"));
        assert!(!spec_matches("foo", "foobar", "0.1.0"));
        assert!(spec_matches("foo@0.1", "foo", "0.1.0"));
        assert!(spec_matches("foo:0.1.0", "foo", "0.1.0"));
        assert!(!spec_matches("foo@0.2", "foo", "0.1.0"));
        assert!(spec_matches("f*o", "foo", "0.1.0"));
        assert!(spec_matches("fo?", "foo", "0.1.0"));
        assert!(!spec_matches("b*", "foo", "0.1.0"));
    }

    #[test]
    fn messages_keep_test_executables_and_build_scripts() {
        let stream = r#"{"reason":"build-script-executed","package_id":"path+file:///w#a@0.1.0","linked_libs":[],"linked_paths":["native=/w/target/debug/build/a-1/out"],"cfgs":[],"env":[["A_VAR","1"]],"out_dir":"/w/target/debug/build/a-1/out"}
{"reason":"compiler-artifact","package_id":"path+file:///w#a@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"it","src_path":"/w/tests/it.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/it-abc"],"executable":"/w/target/debug/deps/it-abc","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w#a@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"a","src_path":"/w/src/main.rs","edition":"2024","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/a"],"executable":"/w/target/debug/a","fresh":true}
{"reason":"build-finished","success":true}
"#;
        let messages = parse_messages(stream.as_bytes());
        assert!(messages.success);
        assert_eq!(messages.artifacts.len(), 1, "the plain bin is not a test");
        assert_eq!(messages.artifacts[0].target.name, "it");
        assert_eq!(
            messages.scripts["path+file:///w#a@0.1.0"].env,
            [("A_VAR".to_string(), "1".to_string())]
        );
    }
}
