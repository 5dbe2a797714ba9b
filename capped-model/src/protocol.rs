//! The protocol between `cargo capped` and the test processes: environment variables and
//! the events file. Both sides use these definitions, so they cannot drift apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::caps::SeedOrigin;
use crate::resource::Scope;
use crate::units;

/// Names of the environment variables given to every test process (docs/design.md, "The contract").
pub mod env {
    /// `1` when the process runs under `cargo capped`.
    pub const CAPPED: &str = "CAPPED";
    /// The profile's name (`t2`, `t1`, …).
    pub const PROFILE: &str = "CAPPED_PROFILE";
    /// An id unique to one `cargo capped` invocation.
    pub const RUN_ID: &str = "CAPPED_RUN_ID";
    /// The run's width.
    pub const TEST_THREADS: &str = "CAPPED_TEST_THREADS";
    /// The global rayon pool's size.
    pub const RAYON_THREADS: &str = "CAPPED_RAYON_THREADS";
    /// BLAS/OpenMP threads.
    pub const BLAS_THREADS: &str = "CAPPED_BLAS_THREADS";
    /// Worker threads of the capped tokio runtime.
    pub const ASYNC_THREADS: &str = "CAPPED_ASYNC_THREADS";
    /// `0` or `1`.
    pub const DETERMINISTIC: &str = "CAPPED_DETERMINISTIC";
    /// The run seed (a `u64`).
    pub const SEED: &str = "CAPPED_SEED";
    /// Groups as `name=max@scope,…`, e.g. `gpu=1@host,crossval=2@host`.
    pub const GROUPS: &str = "CAPPED_GROUPS";
    /// The host lock dir.
    pub const LOCK_DIR: &str = "CAPPED_LOCK_DIR";
    /// The run's own dir (run-scope lock files, events).
    pub const RUN_DIR: &str = "CAPPED_RUN_DIR";
    /// Default per-test timeout (`30s`).
    pub const TEST_TIMEOUT: &str = "CAPPED_TEST_TIMEOUT";
    /// Bytes shared by `mem = ".."` reservations (`8GiB`).
    pub const MEM_BUDGET: &str = "CAPPED_MEM_BUDGET";
    /// `1`: shuffle the test order with the run seed.
    pub const SHUFFLE: &str = "CAPPED_SHUFFLE";
    /// A file to append one JSON line per test start and end to.
    pub const EVENTS: &str = "CAPPED_EVENTS";
    /// The number of width slots the runner already holds for this whole process; tests
    /// in it then take no width slots themselves (their concurrency is `--test-threads`).
    pub const WIDTH_HELD: &str = "CAPPED_WIDTH_HELD";
    /// `1`: `--list` prints each test's resources as JSON lines (harness mode only).
    pub const LIST_RESOURCES: &str = "CAPPED_LIST_RESOURCES";
    /// How to run a test of this binary again, as [`super::format_reproduce`] writes it:
    /// the seed's origin and the command that selects the same build and binary.
    pub const REPRODUCE: &str = "CAPPED_REPRODUCE";
    /// Prefix of the per-group slot variables: `CAPPED_SLOT_GPU=0`.
    pub const SLOT_PREFIX: &str = "CAPPED_SLOT_";

    /// The variables that set BLAS/OpenMP thread counts.
    pub const BLAS_VARS: [&str; 4] = [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ];

    /// Groups that must have devices, comma-separated: a run without them fails before any
    /// test starts.
    pub const REQUIRE: &str = "CAPPED_REQUIRE";

    /// `CAPPED_DEVICES_<GROUP>`: a device-backed group's device ids, comma-separated (empty:
    /// none). Set by the runner for every test process; set by hand, it overrides detection.
    pub fn devices_var(group: &str) -> String {
        format!(
            "CAPPED_DEVICES_{}",
            group.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// `CAPPED_DEVICE_<GROUP>`: the one device a process was pinned to, when the runner (or
    /// the gate) holds the group's slot for the whole process.
    pub fn device_var(group: &str) -> String {
        format!(
            "CAPPED_DEVICE_{}",
            group.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// `CAPPED_SLOT_<GROUP>` for a group name (upper case, `-` as `_`).
    pub fn slot_var(group: &str) -> String {
        format!(
            "{SLOT_PREFIX}{}",
            group.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// Refuses two group names that differ only in `-` versus `_` (`a-b`, `a_b`): both would
/// tell a child its slot in the same `CAPPED_SLOT_A_B`. Renaming one of them is the fix;
/// the variable names stay as they always were, so no script reading them breaks.
pub fn check_slot_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for name in names {
        let var = env::slot_var(name);
        match seen.get(&var) {
            Some(&other) if other != name => {
                return Err(format!(
                    "groups `{other}` and `{name}` would share the slot variable {var}; rename one of them (names that differ only in `-` and `_` are one group to a child process)"
                ));
            }
            _ => {
                seen.insert(var, name);
            }
        }
    }
    Ok(())
}

/// One group's entry in `CAPPED_GROUPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimit {
    /// Capacity.
    pub max: u32,
    /// Who shares it.
    pub scope: Scope,
}

/// Formats groups as `CAPPED_GROUPS` does: `gpu=1@host,crossval=2@host`.
pub fn format_groups<'a>(groups: impl IntoIterator<Item = (&'a str, GroupLimit)>) -> String {
    let mut out = String::new();
    for (name, limit) in groups {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{name}={}@{}", limit.max, limit.scope);
    }
    out
}

/// The accepted form of `CAPPED_GROUPS`, for error messages.
pub const GROUPS_FORM: &str =
    "comma-separated `name=max` or `name=max@scope`, e.g. `gpu=1@host,crossval=2`";

/// Parses `CAPPED_GROUPS`. The scope defaults to `host`.
pub fn parse_groups(text: &str) -> Result<BTreeMap<String, GroupLimit>, String> {
    let mut groups = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let shown = units::shown(entry);
        let (name, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("`{shown}` has no `=`; expected {GROUPS_FORM}"))?;
        units::check_group_name(name)?;
        let (max, scope) = match rest.split_once('@') {
            Some((max, scope)) => (max, scope.parse::<Scope>()?),
            None => (rest, Scope::Host),
        };
        let max = units::parse_count(max)
            .map_err(|message| format!("`{shown}`: max {message} (the form: {GROUPS_FORM})"))?;
        if groups
            .insert(name.to_string(), GroupLimit { max, scope })
            .is_some()
        {
            return Err(format!("group `{name}` is given twice"));
        }
    }
    check_slot_vars(groups.keys().map(String::as_str))?;
    Ok(groups)
}

/// How a test ended, as reported in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed (panicked, returned `Err`, or did not panic under `#[should_panic]`).
    Failed,
    /// It was ignored.
    Ignored,
    /// It ran past its timeout.
    TimedOut,
}

/// One line of the events file (`CAPPED_EVENTS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A test took its resources and started.
    Start {
        /// The libtest name (`tests::gpu_a`).
        test: String,
        /// The process id.
        pid: u32,
        /// Unix time in microseconds.
        at_us: u64,
        /// Slots held: resource name → slot ids (`width` → `[0]`, `gpu` → `[0]`).
        slots: BTreeMap<String, Vec<u32>>,
        /// Time waited for each resource group, in microseconds (the whole request's wait
        /// is attributed to every resource in it).
        waits_us: BTreeMap<String, u64>,
    },
    /// A test ended.
    End {
        /// The libtest name.
        test: String,
        /// The process id.
        pid: u32,
        /// Unix time in microseconds.
        at_us: u64,
        /// How it ended.
        outcome: Outcome,
        /// How long the body ran, in microseconds.
        duration_us: u64,
        /// The failure message, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Event {
    /// Appends this event as one line to `path` (one `write` call, so lines from several
    /// processes never interleave).
    pub fn append_to(&self, path: &Path) -> std::io::Result<()> {
        let mut line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(line.as_bytes())
    }

    /// Reads every well-formed event of an events file (a torn last line is skipped).
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Event>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// The test this event is about.
    pub fn test(&self) -> &str {
        match self {
            Event::Start { test, .. } | Event::End { test, .. } => test,
        }
    }
}

/// The line a harness prints for the tests it never started, so the runner can give them
/// that reason: `capped: 2 tests not run because REASON: a, b`. It is text for people; the
/// runner takes only the reason from it, never a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRunNote {
    /// Why (`the run stopped after x timed out`).
    pub reason: String,
    /// The tests.
    pub tests: Vec<String>,
}

impl NotRunNote {
    /// The line, without a newline.
    pub fn format(&self) -> String {
        let count = match self.tests.len() {
            1 => "1 test".to_string(),
            n => format!("{n} tests"),
        };
        format!(
            "capped: {count} not run because {}: {}",
            self.reason,
            self.tests.join(", ")
        )
    }

    /// Reads a line [`NotRunNote::format`] wrote.
    pub fn parse(line: &str) -> Option<NotRunNote> {
        let rest = line.strip_prefix("capped: ")?;
        let (_, rest) = rest.split_once(" not run because ")?;
        let (reason, names) = rest.rsplit_once(": ")?;
        Some(NotRunNote {
            reason: reason.to_string(),
            tests: names.split(", ").map(|n| n.trim().to_string()).collect(),
        })
    }
}

/// How to run one test of a binary again: the command that selects the same build
/// (profile, features, target, release) and the same binary, up to the test's name, and
/// where the run seed in it came from. The runner builds it once per binary and both the
/// runner's report and a failing `#[capped]` test print [`Reproduce::command_for`], so the
/// two lines agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproduce {
    /// Where the run's seed came from (`--seed` in `words` is always that seed).
    pub seed_origin: SeedOrigin,
    /// The command's words, ending where the test's name goes
    /// (`cargo capped run --profile t2 --seed 7 -p pkg --test it -- --exact`).
    pub words: Vec<String>,
}

impl Reproduce {
    /// The shell command that runs `test` again.
    pub fn command_for(&self, test: &str) -> String {
        let mut line = shell_join(&self.words);
        line.push(' ');
        line.push_str(&shell_quote(test));
        line
    }
}

/// The `CAPPED_REPRODUCE` value: `ORIGIN:WORDS`, the words shell-quoted and joined by
/// spaces (so the value reads as the command it is).
pub fn format_reproduce(reproduce: &Reproduce) -> String {
    format!(
        "{}:{}",
        reproduce.seed_origin.label(),
        shell_join(&reproduce.words)
    )
}

/// Reads a [`format_reproduce`] value back.
pub fn parse_reproduce(text: &str) -> Result<Reproduce, String> {
    let (origin, command) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not ORIGIN:COMMAND"))?;
    let seed_origin = SeedOrigin::from_label(origin).ok_or_else(|| {
        format!("unknown seed origin `{origin}` (expected given, deterministic or drawn)")
    })?;
    let words = shell_split(command)?;
    if words.is_empty() {
        return Err("empty command".to_string());
    }
    Ok(Reproduce { seed_origin, words })
}

/// One word as a POSIX shell reads it back: bare when it holds only characters no shell
/// treats specially, else in single quotes (a quote inside as `'\''`).
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits what [`shell_join`] wrote: words separated by spaces, bare or single-quoted,
/// with `\'` between quoted parts.
fn shell_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(format!("unclosed quote in `{text}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("trailing backslash in `{text}`")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Unix time now, in microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl ListedTest {
    /// A test as a plain libtest listing knows it: its name only (one width slot, no
    /// groups, no memory, no timeout, not known to be ignored).
    pub fn plain(name: impl Into<String>) -> ListedTest {
        ListedTest {
            name: name.into(),
            groups: Vec::new(),
            threads: 1,
            mem: None,
            timeout_ms: None,
            ignored: false,
        }
    }
}

/// One line of `--list` output under `CAPPED_LIST_RESOURCES=1` (harness mode): a test and
/// the resources it declares, so the runner can schedule whole binaries knowingly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedTest {
    /// The libtest name.
    pub name: String,
    /// Groups it takes.
    pub groups: Vec<String>,
    /// Width slots it takes.
    pub threads: u32,
    /// Bytes it reserves.
    pub mem: Option<u64>,
    /// Its timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether it is `#[ignore]`d.
    pub ignored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduce_round_trips_and_quotes_for_the_shell() {
        let reproduce = Reproduce {
            seed_origin: SeedOrigin::Random,
            words: [
                "cargo",
                "capped",
                "run",
                "--profile",
                "t2",
                "--seed",
                "7",
                "--features",
                "a b",
                "--config",
                "x='y'",
                "--",
                "--exact",
            ]
            .map(String::from)
            .to_vec(),
        };
        let text = format_reproduce(&reproduce);
        assert_eq!(
            text,
            r#"drawn:cargo capped run --profile t2 --seed 7 --features 'a b' --config 'x='\''y'\''' -- --exact"#
        );
        assert_eq!(parse_reproduce(&text).unwrap(), reproduce);
        assert_eq!(
            reproduce.command_for("tests::it works"),
            r#"cargo capped run --profile t2 --seed 7 --features 'a b' --config 'x='\''y'\''' -- --exact 'tests::it works'"#
        );
        for origin in [SeedOrigin::Given, SeedOrigin::Deterministic] {
            let r = Reproduce {
                seed_origin: origin,
                ..reproduce.clone()
            };
            assert_eq!(parse_reproduce(&format_reproduce(&r)).unwrap(), r);
        }
        assert!(parse_reproduce("random:cargo test").is_err());
        assert!(parse_reproduce("given:").is_err());
        assert!(parse_reproduce("given:cargo 'open").is_err());
    }

    #[test]
    fn groups_round_trip() {
        let groups = parse_groups("gpu=1@host,crossval=2@run, net=3").unwrap();
        assert_eq!(
            groups["gpu"],
            GroupLimit {
                max: 1,
                scope: Scope::Host
            }
        );
        assert_eq!(
            groups["crossval"],
            GroupLimit {
                max: 2,
                scope: Scope::Run
            }
        );
        assert_eq!(
            groups["net"],
            GroupLimit {
                max: 3,
                scope: Scope::Host
            }
        );
        let text = format_groups(groups.iter().map(|(k, v)| (k.as_str(), *v)));
        assert_eq!(text, "crossval=2@run,gpu=1@host,net=3@host");
        assert_eq!(parse_groups(&text).unwrap(), groups);
        assert!(parse_groups("").unwrap().is_empty());
    }

    #[test]
    fn malformed_groups_say_what_is_accepted() {
        for bad in [
            "gpu=x",
            "gpu",
            "gpu=0",
            "GPU=1",
            "gpu=1@planet",
            "gpu=1,gpu=2",
            "a/b=1",
            "gpu=4097",
            "gpu=4294967295",
            "gpu=-1",
        ] {
            let message = parse_groups(bad).unwrap_err();
            assert!(!message.is_empty(), "{bad}");
        }
        assert!(parse_groups("gpu=x").unwrap_err().contains("name=max"));
        assert!(parse_groups("gpu=1@planet").unwrap_err().contains("host"));
    }

    #[test]
    fn not_run_notes_round_trip() {
        for tests in [vec!["a::b".to_string()], vec!["x".into(), "y::z".into()]] {
            let note = NotRunNote {
                reason: "the run stopped after t::slow timed out".into(),
                tests,
            };
            assert_eq!(NotRunNote::parse(&note.format()), Some(note));
        }
        assert_eq!(NotRunNote::parse("test a ... ok"), None);
    }

    #[test]
    fn slot_var_names() {
        assert_eq!(env::slot_var("gpu"), "CAPPED_SLOT_GPU");
        assert_eq!(env::slot_var("cross-val"), "CAPPED_SLOT_CROSS_VAL");
    }

    #[test]
    fn groups_sharing_a_slot_variable_are_refused() {
        assert!(check_slot_vars(["a-b", "c_d", "a-b"]).is_ok());
        let message = check_slot_vars(["a-b", "x", "a_b"]).unwrap_err();
        assert!(
            message.contains("`a-b` and `a_b`") && message.contains("CAPPED_SLOT_A_B"),
            "{message}"
        );
        let message = parse_groups("a-b=1,a_b=2@run").unwrap_err();
        assert!(message.contains("CAPPED_SLOT_A_B"), "{message}");
    }

    #[test]
    fn events_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let start = Event::Start {
            test: "a::b".into(),
            pid: 7,
            at_us: 1,
            slots: BTreeMap::from([("gpu".to_string(), vec![0])]),
            waits_us: BTreeMap::new(),
        };
        let end = Event::End {
            test: "a::b".into(),
            pid: 7,
            at_us: 2,
            outcome: Outcome::TimedOut,
            duration_us: 1,
            message: None,
        };
        start.append_to(&path).unwrap();
        end.append_to(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":")
            .unwrap();
        assert_eq!(Event::read_all(&path).unwrap(), vec![start, end]);
        assert!(
            Event::read_all(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }
}
