//! What earlier runs measured: every test's outcomes and durations, and every binary's
//! duration and peak RSS, kept per workspace under the target dir
//! (`target/capped/history.json`), so a run can start the longest work first and cut
//! partitions of equal time.
//!
//! ## Invariants
//!
//! * **Bounded.** A test keeps its last [`RUNS_KEPT`] runs; an entry not seen for
//!   [`FORGET_AFTER_DAYS`] days is dropped, and at most [`MAX_ENTRIES`] entries are kept (the
//!   most recently seen), so the file cannot grow without bound.
//! * **Never a failed run.** A file that cannot be parsed (corrupt, another schema
//!   version, larger than [`MAX_FILE_BYTES`]) is set aside as `history.json.bad` with one
//!   warning and the run goes on without history. Writing failures are warnings too.
//! * **Nothing else is touched.** `$CAPPED_HISTORY` may name any path: one that is no
//!   regular file (a symlink, a FIFO, a device, a directory) or cannot be read is neither
//!   read through, set aside nor replaced; the run goes on without history. The lock file
//!   is never truncated and the new file is created fresh, neither through a symlink.
//! * **Only what a run could measure is learned.** A duration outside `0..=`
//!   [`MAX_DURATION_MS`] in the file is ignored, so sums over many tests cannot overflow.
//! * **Concurrent runs merge.** A run records under an exclusive `flock` on
//!   `history.lock`: it re-reads the file, adds its own runs and writes a new file that
//!   replaces the old one atomically (`rename`), so two runs ending together both land and a
//!   reader never sees half a file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

use crate::events::{BinaryId, TestResult, TestStatus};

/// The file's schema version; another one is set aside, not misread.
pub const VERSION: u32 = 1;
/// Runs kept per test and per binary.
pub const RUNS_KEPT: usize = 10;
/// Entries not seen for this many days are dropped.
pub const FORGET_AFTER_DAYS: u64 = 30;
/// The most entries (tests plus binaries) the file keeps.
pub const MAX_ENTRIES: usize = 50_000;
/// The longest duration learned, in milliseconds (a week); a longer one was not measured.
pub const MAX_DURATION_MS: f64 = 7.0 * 86_400e3;
/// The largest history file read. [`MAX_ENTRIES`] entries of [`RUNS_KEPT`] runs each take
/// well under this; a larger file no run wrote is set aside unread, so that reading it
/// cannot take the runner's memory.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// One run of a test or binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `passed`, `failed`, … ([`TestStatus::keyword`]).
    pub outcome: String,
    /// How long it ran, in milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The peak RSS of its process tree, in bytes, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
    /// When it ended, unix seconds.
    pub at: u64,
}

/// The runs of one test or binary, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// At most [`RUNS_KEPT`].
    pub runs: Vec<Run>,
}

impl Entry {
    /// The median duration of the runs that have one.
    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The 95th-percentile duration (nearest rank) of the runs that have one.
    pub fn p95(&self) -> Option<Duration> {
        self.quantile(0.95)
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        // The file is anyone's to edit: a duration no run measured (negative, not finite,
        // beyond any test's) is not learned, so sums over many tests cannot overflow.
        let mut ms: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.duration_ms)
            .filter(|ms| (0.0..=MAX_DURATION_MS).contains(ms))
            .collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        Some(Duration::from_secs_f64(ms[rank - 1] / 1e3))
    }

    /// The highest peak RSS of its runs.
    pub fn peak_rss(&self) -> Option<u64> {
        self.runs.iter().filter_map(|r| r.peak_rss).max()
    }

    fn last_at(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.at)
    }

    fn push(&mut self, run: Run) {
        self.runs.push(run);
        if self.runs.len() > RUNS_KEPT {
            let extra = self.runs.len() - RUNS_KEPT;
            self.runs.drain(..extra);
        }
    }
}

/// A workspace's history. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// [`VERSION`].
    pub version: u32,
    /// Tests, by [`History::test_key`].
    pub tests: BTreeMap<String, Entry>,
    /// Binaries, by their id (`pkg::target`).
    pub binaries: BTreeMap<String, Entry>,
}

/// The variable that names the history file instead (a CI job can restore it from a
/// cache before the run and save it after).
pub const HISTORY_VAR: &str = "CAPPED_HISTORY";

/// Where a workspace keeps its history: `$CAPPED_HISTORY`, else
/// `TARGET/capped/history.json`.
pub fn path_in(target_dir: &Path) -> PathBuf {
    match std::env::var_os(HISTORY_VAR).filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => target_dir.join("capped").join("history.json"),
    }
}

impl History {
    /// The key of a test: `pkg::target NAME`.
    pub fn test_key(binary: &BinaryId, name: &str) -> String {
        format!("{binary} {name}")
    }

    /// A test's entry.
    pub fn test(&self, binary: &BinaryId, name: &str) -> Option<&Entry> {
        self.tests.get(&History::test_key(binary, name))
    }

    /// What earlier runs say `binary`'s tests take together (the sum of their medians),
    /// whatever this run selects of them; `None` when it knows none of them.
    pub fn binary_work(&self, binary: &BinaryId) -> Option<Duration> {
        let prefix = History::test_key(binary, "");
        let medians: Vec<Duration> = self
            .tests
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            // A library shows as its package's name, which begins its doc tests' keys
            // (`pkg (doc) NAME`) too; no test name begins so.
            .filter(|(key, _)| !key[prefix.len()..].starts_with("(doc) "))
            .filter_map(|(_, entry)| entry.median())
            .collect();
        (!medians.is_empty()).then(|| medians.iter().sum())
    }

    /// Reads the history at `path`: empty when there is none; a file that cannot be used
    /// is set aside (`.bad`) and the warning says so. A path that is no regular file (a
    /// symlink, a FIFO, a device, a directory) or cannot be read is left as it is.
    pub fn load(path: &Path) -> (History, Option<String>) {
        match History::read(path) {
            Found::Nothing => (History::empty(), None),
            Found::History(history) => (history, None),
            Found::SetAside(warning) | Found::LeftAlone(warning) => {
                (History::empty(), Some(warning))
            }
        }
    }

    /// What is at `path`, setting aside a regular file that is no history of ours.
    fn read(path: &Path) -> Found {
        let unusable = |why: String| Found::LeftAlone(left_alone(path, &why));
        // Never through a symlink (whatever it points to is not ours to set aside or
        // replace), and without waiting for a FIFO's writer.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return unusable("it is not a regular file".to_string());
            }
            Err(e) => return unusable(format!("cannot open it: {e}")),
        };
        let size = match file.metadata() {
            Ok(meta) if meta.file_type().is_file() => meta.len(),
            Ok(_) => return unusable("it is not a regular file".to_string()),
            Err(e) => return unusable(format!("cannot inspect it: {e}")),
        };
        let why = if size > MAX_FILE_BYTES {
            format!(
                "it is larger than any history a run writes ({} > {})",
                capped_model::units::format_size(size),
                capped_model::units::format_size(MAX_FILE_BYTES)
            )
        } else {
            let mut bytes = Vec::new();
            if let Err(e) = file.take(MAX_FILE_BYTES).read_to_end(&mut bytes) {
                return unusable(format!("cannot read it: {e}"));
            }
            match serde_json::from_slice::<History>(&bytes) {
                Ok(history) if history.version == VERSION => return Found::History(history),
                Ok(history) => format!("it is version {}, not {VERSION}", history.version),
                Err(e) => format!("it does not parse ({e})"),
            }
        };
        let bad = path.with_extension("json.bad");
        let _ = std::fs::rename(path, &bad);
        Found::SetAside(format!(
            "set the test history aside as {}: {why}; a new one starts with this run",
            bad.display()
        ))
    }

    fn empty() -> History {
        History {
            version: VERSION,
            ..History::default()
        }
    }

    /// Adds one run's results and binaries' measurements (`(binary, duration, peak)`), at
    /// unix time `now`, then forgets what is too old or too much.
    pub fn add(
        &mut self,
        results: &[TestResult],
        binaries: &[(String, Option<Duration>, Option<u64>)],
        now: u64,
    ) {
        for result in results {
            if result.name.starts_with('(')
                || matches!(
                    result.status,
                    TestStatus::NotRun { .. } | TestStatus::Ignored
                )
            {
                continue;
            }
            self.tests
                .entry(History::test_key(&result.binary, &result.name))
                .or_default()
                .push(Run {
                    outcome: result.status.keyword().to_string(),
                    duration_ms: result.duration.map(|d| d.as_secs_f64() * 1e3),
                    peak_rss: None,
                    at: now,
                });
        }
        for (binary, duration, peak) in binaries {
            self.binaries.entry(binary.clone()).or_default().push(Run {
                outcome: "ran".to_string(),
                duration_ms: duration.map(|d| d.as_secs_f64() * 1e3),
                peak_rss: *peak,
                at: now,
            });
        }
        self.forget(now);
    }

    fn forget(&mut self, now: u64) {
        let horizon = now.saturating_sub(FORGET_AFTER_DAYS * 86_400);
        self.tests.retain(|_, e| e.last_at() >= horizon);
        self.binaries.retain(|_, e| e.last_at() >= horizon);
        let total = self.tests.len() + self.binaries.len();
        if total > MAX_ENTRIES {
            // The most recently seen first; one run records all its tests at one instant,
            // so ties are cut by key, else the bound would not hold.
            let mut seen: Vec<(u64, bool, String)> = self
                .tests
                .iter()
                .map(|(key, e)| (e.last_at(), true, key.clone()))
                .chain(
                    self.binaries
                        .iter()
                        .map(|(key, e)| (e.last_at(), false, key.clone())),
                )
                .collect();
            seen.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.cmp(b)));
            for (_, test, key) in &seen[MAX_ENTRIES..] {
                match test {
                    true => self.tests.remove(key),
                    false => self.binaries.remove(key),
                };
            }
        }
    }

    /// Records a run into the history at `path`, merging with whatever another run wrote
    /// meanwhile (see the module docs). The warning, if anything went wrong.
    pub fn record(
        path: &Path,
        results: &[TestResult],
        binaries: &[(String, Option<Duration>, Option<u64>)],
    ) -> Option<String> {
        let dir = path.parent()?;
        // Not even a lock file beside a path that is not ours to replace (`/dev/null`).
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            return Some(left_alone(path, "it is not a regular file"));
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Some(format!(
                "cannot keep test history in {}: {e}",
                dir.display()
            ));
        }
        let write = || -> std::io::Result<Option<String>> {
            // Opened, never truncated nor followed through a symlink: the name is fixed, and
            // the dir may be anyone's (`$CAPPED_HISTORY` can name any path).
            let lock = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
                .open(dir.join("history.lock"))?;
            lock.lock()?;
            let (mut history, warning) = match History::read(path) {
                Found::Nothing => (History::empty(), None),
                Found::History(history) => (history, None),
                Found::SetAside(warning) => (History::empty(), Some(warning)),
                // Not ours to replace.
                Found::LeftAlone(warning) => return Ok(Some(warning)),
            };
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            history.add(results, binaries, now);
            let (fresh, mut file) = create_fresh(dir)?;
            let written = file
                .write_all(serde_json::to_string(&history)?.as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::rename(&fresh, path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&fresh);
                return Err(e);
            }
            Ok(warning)
        };
        match write() {
            Ok(warning) => warning,
            Err(e) => Some(format!(
                "cannot write the test history {}: {e}",
                path.display()
            )),
        }
    }
}

/// The warning for a history path left as it is, for `why`.
fn left_alone(path: &Path, why: &str) -> String {
    format!(
        "cannot use the test history {}: {why}; running without it, and leaving it as it is",
        path.display()
    )
}

/// What a history path holds.
enum Found {
    /// No file: a new history.
    Nothing,
    /// A history of this version.
    History(History),
    /// A regular file that is no history of this version, renamed to `.bad`; the warning.
    SetAside(String),
    /// Something else, or a file that cannot be read: neither set aside nor replaced; the
    /// warning.
    LeftAlone(String),
}

/// A new file in `dir` for the next history, to be renamed over the old one: created, never
/// opened through a symlink nor over an existing file (the dir may be shared, like `/tmp`).
fn create_fresh(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    loop {
        let fresh = dir.join(format!(
            "history.json.{}.{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .open(&fresh)
        {
            Ok(file) => return Ok((fresh, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary() -> BinaryId {
        BinaryId {
            package: "p".into(),
            target: "t".into(),
            kind: "test".into(),
        }
    }

    fn result(name: &str, status: TestStatus, ms: u64) -> TestResult {
        TestResult {
            binary: binary(),
            name: name.into(),
            status,
            duration: Some(Duration::from_millis(ms)),
            output: String::new(),
        }
    }

    #[test]
    fn runs_are_kept_bounded_and_summarized() {
        let mut history = History::empty();
        for i in 0..15u64 {
            history.add(
                &[result("a", TestStatus::Passed, 10 * (i + 1))],
                &[],
                1000 + i,
            );
        }
        let entry = history.test(&binary(), "a").unwrap();
        assert_eq!(entry.runs.len(), RUNS_KEPT);
        assert_eq!(entry.median(), Some(Duration::from_millis(100)));
        assert_eq!(entry.p95(), Some(Duration::from_millis(150)));
        // Not-run and ignored results say nothing about a test's length.
        history.add(
            &[result("b", TestStatus::NotRun { reason: "x".into() }, 1)],
            &[],
            2000,
        );
        assert!(history.test(&binary(), "b").is_none());
        // Long unseen entries are forgotten.
        history.add(&[], &[], 2000 + FORGET_AFTER_DAYS * 86_400 + 1);
        assert!(history.tests.is_empty());
    }

    #[test]
    fn a_binarys_work_is_the_sum_of_its_tests_medians_and_no_other_binarys() {
        let mut history = History::empty();
        let other = BinaryId {
            package: "p".into(),
            target: "t2".into(),
            kind: "test".into(),
        };
        let mut results = vec![
            result("a", TestStatus::Passed, 100),
            result("b", TestStatus::Failed, 30),
        ];
        results.push(TestResult {
            binary: other.clone(),
            ..result("c", TestStatus::Passed, 1000)
        });
        history.add(&results, &[], 1000);
        assert_eq!(
            history.binary_work(&binary()),
            Some(Duration::from_millis(130))
        );
        assert_eq!(history.binary_work(&other), Some(Duration::from_secs(1)));
        let unknown = BinaryId {
            target: "t3".into(),
            ..binary()
        };
        assert_eq!(history.binary_work(&unknown), None);
    }

    #[test]
    fn a_librarys_work_leaves_out_its_doc_tests() {
        // A library's id shows as its package's name, which its doc tests' keys
        // (`p (doc) NAME`) begin with too.
        let lib = BinaryId {
            package: "p".into(),
            target: "p".into(),
            kind: "lib".into(),
        };
        let doc = BinaryId {
            kind: crate::build::DOC_KIND.into(),
            ..lib.clone()
        };
        let mut history = History::empty();
        let results = [
            TestResult {
                binary: lib.clone(),
                ..result("tests::a", TestStatus::Passed, 10)
            },
            TestResult {
                binary: doc.clone(),
                ..result("src/lib.rs - f (line 3)", TestStatus::Passed, 400)
            },
        ];
        history.add(&results, &[], 1000);
        assert_eq!(history.binary_work(&lib), Some(Duration::from_millis(10)));
        assert_eq!(history.binary_work(&doc), Some(Duration::from_millis(400)));
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_set_aside_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        std::fs::write(&path, "{ not json").unwrap();
        let (history, warning) = History::load(&path);
        assert!(history.tests.is_empty());
        assert!(warning.unwrap().contains("aside"));
        assert!(dir.path().join("history.json.bad").exists());
        std::fs::write(&path, r#"{"version":99,"tests":{},"binaries":{}}"#).unwrap();
        let (_, warning) = History::load(&path);
        assert!(warning.unwrap().contains("version 99"));
    }

    /// A history path that is no regular file (a symlink, a FIFO) is only ever read through
    /// nothing: the run goes on without it, and it is neither set aside nor replaced.
    #[test]
    fn a_path_that_is_no_regular_file_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious.txt");
        std::fs::write(&precious, "not a history").unwrap();
        let link = dir.path().join("history.json");
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let (history, warning) = History::load(&link);
        assert!(history.tests.is_empty());
        assert!(warning.unwrap().contains("not a regular file"));
        let warning = History::record(&link, &[result("a", TestStatus::Passed, 5)], &[]);
        assert!(warning.unwrap().contains("not a regular file"));
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a history");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "precious.txt" && name != "history.json")
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // A FIFO nobody writes to: opening it to read must not wait for a writer.
        let fifo = dir.path().join("fifo.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        use std::os::unix::fs::FileTypeExt;
        let (done, finished) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let loaded = History::load(&path);
            let recorded = History::record(&path, &[result("a", TestStatus::Passed, 5)], &[]);
            let _ = done.send((loaded, recorded));
        });
        let ((_, warning), recorded) = finished
            .recv_timeout(Duration::from_secs(20))
            .expect("reading a FIFO as the history hangs");
        assert!(warning.unwrap().contains("not a regular file"));
        assert!(recorded.unwrap().contains("not a regular file"));
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(!dir.path().join("history.lock").exists());
    }

    /// Durations no run measured (negative, not finite, beyond any test run) are not
    /// learned: sums and medians over them cannot overflow or panic.
    #[test]
    fn durations_no_run_measured_are_not_learned() {
        let run = |ms: f64| Run {
            outcome: "passed".into(),
            duration_ms: Some(ms),
            peak_rss: None,
            at: 1,
        };
        let mut history = History::empty();
        for (name, ms) in [
            ("a", -5.0),
            ("b", f64::NAN),
            ("c", 1e300),
            ("d", 1e22),
            ("e", 1e22),
        ] {
            history.tests.insert(
                History::test_key(&binary(), name),
                Entry {
                    runs: vec![run(ms)],
                },
            );
        }
        for name in ["a", "b", "c", "d"] {
            let entry = history.test(&binary(), name).unwrap();
            assert_eq!(entry.median(), None, "{name}");
            assert_eq!(entry.p95(), None, "{name}");
        }
        assert_eq!(history.binary_work(&binary()), None);
    }

    /// One run of a suite larger than [`MAX_ENTRIES`] records every test at the same
    /// instant: the bound still holds.
    #[test]
    fn the_entry_bound_holds_when_every_entry_was_seen_at_once() {
        let mut history = History::empty();
        let results: Vec<TestResult> = (0..MAX_ENTRIES + 10)
            .map(|i| result(&format!("t{i}"), TestStatus::Passed, 1))
            .collect();
        history.add(&results, &[], 1000);
        assert_eq!(history.tests.len(), MAX_ENTRIES);
    }

    /// A file larger than any history a run writes is set aside unread, so it cannot take
    /// the runner's memory.
    #[test]
    fn an_oversized_file_is_set_aside_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.json");
        File::create(&path)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let (history, warning) = History::load(&path);
        assert!(history.tests.is_empty());
        let warning = warning.unwrap();
        assert!(warning.contains("larger than"), "{warning}");
        assert!(dir.path().join("history.json.bad").exists());
    }

    #[test]
    fn concurrent_records_both_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capped").join("history.json");
        std::thread::scope(|scope| {
            for name in ["x", "y", "z", "w"] {
                let path = path.clone();
                scope.spawn(move || {
                    assert_eq!(
                        History::record(&path, &[result(name, TestStatus::Passed, 5)], &[]),
                        None
                    );
                });
            }
        });
        let (history, warning) = History::load(&path);
        assert_eq!(warning, None);
        assert_eq!(history.tests.len(), 4);
    }
}
