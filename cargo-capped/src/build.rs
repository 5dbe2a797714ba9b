//! *Build*: `cargo test --no-run --message-format json-render-diagnostics`, parsed with
//! `cargo_metadata`.
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

/// One test executable to run.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Package, target and kind.
    pub id: BinaryId,
    /// The executable.
    pub path: PathBuf,
    /// What `cargo test` tells the process about its package.
    pub package: PackageInfo,
    /// `cargo:rustc-env` pairs of the package's build script.
    pub build_env: Vec<(String, String)>,
    /// Native library dirs from build scripts (inside the target dir), for the dylib path.
    pub native_dirs: Vec<PathBuf>,
}

/// What the build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// Test executables, in the order cargo reported them.
    pub binaries: Vec<TestBinary>,
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
            Ok(Message::TextLine(line)) => eprintln!("{line}"),
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
                build_env: script.map(|s| s.env.clone()).unwrap_or_default(),
                native_dirs,
                package,
            }
        })
        .collect();
    BuildOutput { binaries }
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
