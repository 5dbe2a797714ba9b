//! The `[preflight]` table of `.config/capped.toml`: when a reading warns, when it is
//! critical, and when a busy host degrades a run.
//!
//! ```toml
//! [preflight]
//! load-per-cpu-warn = 1.0
//! mem-available-critical = "512MiB"
//! degrade-load-per-cpu = 1.5
//! ```
//!
//! Every key is optional; unknown keys, sizes that do not parse and inconsistent pairs (a
//! warning level past its critical level) are errors, which the config parser locates.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use capped_model::units::{SIZE_FORM, parse_size};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Warning, critical and degrade levels for the preflight readings.
///
/// Sizes are bytes (written as `"2GiB"`, `"512M"` or a number of bytes); `*-percent` are
/// percentages of the limit; PSI levels are percentages of time stalled (`avg10`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    rename_all = "kebab-case",
    default
)]
pub struct Thresholds {
    /// 1-minute load per effective CPU above which `load.1m` warns (default 1.0).
    pub load_per_cpu_warn: f64,
    /// 1-minute load per effective CPU above which `load.1m` is critical (default 2.0).
    pub load_per_cpu_critical: f64,
    /// Available memory below which `mem.available` warns (default 2 GiB).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub mem_available_warn: u64,
    /// Available memory below which `mem.available` is critical (default 512 MiB).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub mem_available_critical: u64,
    /// Percent of a pids limit (`pid_max`, cgroup `pids.max`, `RLIMIT_NPROC`) in use above
    /// which the reading warns (default 80).
    pub pids_warn_percent: f64,
    /// Percent of a pids limit in use above which the reading is critical (default 95).
    pub pids_critical_percent: f64,
    /// Percent of `file-max` allocated system-wide above which `files.system` warns
    /// (default 80).
    pub files_warn_percent: f64,
    /// Percent of `file-max` allocated above which `files.system` is critical (default 95).
    pub files_critical_percent: f64,
    /// Soft `RLIMIT_NOFILE` below which `nofile.soft` warns (default 1024).
    pub nofile_soft_warn: u64,
    /// Hard `RLIMIT_NOFILE` below which `nofile.hard` warns (default 4096).
    pub nofile_hard_warn: u64,
    /// Free disk under the target dir below which `disk.free` warns (default 5 GiB).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub disk_free_warn: u64,
    /// Free disk below which `disk.free` is critical (default 1 GiB).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub disk_free_critical: u64,
    /// `psi.cpu.some.avg10` above which it warns (default 40).
    pub psi_cpu_warn: f64,
    /// `psi.cpu.some.avg10` above which it is critical (default 80).
    pub psi_cpu_critical: f64,
    /// `psi.memory.some.avg10` above which it warns (default 20).
    pub psi_memory_warn: f64,
    /// `psi.memory.some.avg10` above which it is critical (default 50).
    pub psi_memory_critical: f64,
    /// `psi.io.some.avg10` above which it warns (default 40).
    pub psi_io_warn: f64,
    /// `psi.io.some.avg10` above which it is critical (default 80).
    pub psi_io_critical: f64,
    /// 1-minute load per effective CPU above which a run degrades to width 1 (default 1.5).
    pub degrade_load_per_cpu: f64,
    /// Available memory below which a run degrades to width 1 (default 1 GiB).
    #[serde(deserialize_with = "size", serialize_with = "show_size")]
    pub degrade_mem_available: u64,
    /// `psi.cpu.some.avg10` above which a run degrades to width 1 (default 60).
    pub degrade_psi_cpu: f64,
    /// Hysteresis: a degraded run gets its width back only when every degrade reading is on
    /// the good side of this fraction of its level (load and PSI below 0.75 × the level,
    /// available memory above the level / 0.75). Between 0 and 1 (default 0.75).
    pub degrade_restore: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            load_per_cpu_warn: 1.0,
            load_per_cpu_critical: 2.0,
            mem_available_warn: 2 * GIB,
            mem_available_critical: 512 * MIB,
            pids_warn_percent: 80.0,
            pids_critical_percent: 95.0,
            files_warn_percent: 80.0,
            files_critical_percent: 95.0,
            nofile_soft_warn: 1024,
            nofile_hard_warn: 4096,
            disk_free_warn: 5 * GIB,
            disk_free_critical: GIB,
            psi_cpu_warn: 40.0,
            psi_cpu_critical: 80.0,
            psi_memory_warn: 20.0,
            psi_memory_critical: 50.0,
            psi_io_warn: 40.0,
            psi_io_critical: 80.0,
            degrade_load_per_cpu: 1.5,
            degrade_mem_available: GIB,
            degrade_psi_cpu: 60.0,
            degrade_restore: 0.75,
        }
    }
}

impl<'de> Deserialize<'de> for Thresholds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let thresholds = Thresholds::deserialize(deserializer)?;
        thresholds.validate().map_err(de::Error::custom)?;
        Ok(thresholds)
    }
}

impl Serialize for Thresholds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Thresholds::serialize(self, serializer)
    }
}

impl Thresholds {
    /// Checks that every level is a finite non-negative number, percentages are at most
    /// 100, each warning level comes before its critical level, and `degrade-restore` is in
    /// (0, 1]. The message names the `[preflight]` keys.
    pub fn validate(&self) -> Result<(), String> {
        let floats = [
            ("load-per-cpu-warn", self.load_per_cpu_warn, None),
            ("load-per-cpu-critical", self.load_per_cpu_critical, None),
            ("pids-warn-percent", self.pids_warn_percent, Some(100.0)),
            (
                "pids-critical-percent",
                self.pids_critical_percent,
                Some(100.0),
            ),
            ("files-warn-percent", self.files_warn_percent, Some(100.0)),
            (
                "files-critical-percent",
                self.files_critical_percent,
                Some(100.0),
            ),
            ("psi-cpu-warn", self.psi_cpu_warn, Some(100.0)),
            ("psi-cpu-critical", self.psi_cpu_critical, Some(100.0)),
            ("psi-memory-warn", self.psi_memory_warn, Some(100.0)),
            ("psi-memory-critical", self.psi_memory_critical, Some(100.0)),
            ("psi-io-warn", self.psi_io_warn, Some(100.0)),
            ("psi-io-critical", self.psi_io_critical, Some(100.0)),
            ("degrade-load-per-cpu", self.degrade_load_per_cpu, None),
            ("degrade-psi-cpu", self.degrade_psi_cpu, Some(100.0)),
            ("degrade-restore", self.degrade_restore, Some(1.0)),
        ];
        for (key, value, max) in floats {
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "[preflight] {key} = {value}: expected a non-negative number"
                ));
            }
            if let Some(max) = max
                && value > max
            {
                return Err(format!(
                    "[preflight] {key} = {value}: expected at most {max}"
                ));
            }
        }
        if self.degrade_restore == 0.0 {
            return Err(
                "[preflight] degrade-restore = 0: expected a fraction in (0, 1], such as 0.75"
                    .into(),
            );
        }
        let higher_is_worse = [
            (
                "load-per-cpu-warn",
                self.load_per_cpu_warn,
                "load-per-cpu-critical",
                self.load_per_cpu_critical,
            ),
            (
                "pids-warn-percent",
                self.pids_warn_percent,
                "pids-critical-percent",
                self.pids_critical_percent,
            ),
            (
                "files-warn-percent",
                self.files_warn_percent,
                "files-critical-percent",
                self.files_critical_percent,
            ),
            (
                "psi-cpu-warn",
                self.psi_cpu_warn,
                "psi-cpu-critical",
                self.psi_cpu_critical,
            ),
            (
                "psi-memory-warn",
                self.psi_memory_warn,
                "psi-memory-critical",
                self.psi_memory_critical,
            ),
            (
                "psi-io-warn",
                self.psi_io_warn,
                "psi-io-critical",
                self.psi_io_critical,
            ),
        ];
        for (warn_key, warn, critical_key, critical) in higher_is_worse {
            if warn > critical {
                return Err(format!(
                    "[preflight] {warn_key} ({warn}) is above {critical_key} ({critical}); a warning must come first"
                ));
            }
        }
        let lower_is_worse = [
            (
                "mem-available",
                self.mem_available_warn,
                self.mem_available_critical,
            ),
            ("disk-free", self.disk_free_warn, self.disk_free_critical),
        ];
        for (name, warn, critical) in lower_is_worse {
            if warn < critical {
                return Err(format!(
                    "[preflight] {name}-warn ({warn} bytes) is below {name}-critical ({critical} bytes); a warning must come first"
                ));
            }
        }
        Ok(())
    }
}

/// Deserializes a size: a number of bytes or a string such as `"2GiB"`.
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct SizeVisitor;
    impl Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{SIZE_FORM}")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| {
                E::custom(format!(
                    "a size cannot be negative ({v}); expected {SIZE_FORM}"
                ))
            })
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(SizeVisitor)
}

/// Serializes a size as `"2GiB"` when that is exact, else as a number of bytes.
fn show_size<S: serde::Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    let text = capped_model::units::format_size(*bytes).replace(' ', "");
    if parse_size(&text) == Ok(*bytes) {
        serializer.serialize_str(&text)
    } else {
        serializer.serialize_u64(*bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        preflight: Option<Thresholds>,
    }

    fn parse(text: &str) -> Result<Thresholds, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.preflight.unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_empty_table_is_defaults() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        assert_eq!(parse("[preflight]\n").unwrap(), Thresholds::default());
        assert_eq!(parse("").unwrap(), Thresholds::default());
    }

    #[test]
    fn keys_are_kebab_case_and_sizes_parse() {
        let t = parse(
            "[preflight]\nload-per-cpu-warn = 1\nmem-available-warn = \"4GiB\"\nmem-available-critical = 1048576\ndegrade-mem-available = \"1.5G\"\n",
        )
        .unwrap();
        assert_eq!(t.load_per_cpu_warn, 1.0);
        assert_eq!(t.mem_available_warn, 4 << 30);
        assert_eq!(t.mem_available_critical, 1 << 20);
        assert_eq!(t.degrade_mem_available, 3 << 29);
        assert_eq!(
            t.disk_free_warn,
            5 << 30,
            "untouched keys keep their default"
        );
    }

    #[test]
    fn unknown_keys_bad_sizes_and_inconsistent_levels_are_errors_with_location() {
        let err = parse("[preflight]\nload-warn = 1\n").unwrap_err();
        assert!(
            err.contains("unknown field `load-warn`") && err.contains("line 2"),
            "{err}"
        );
        let err = parse("[preflight]\ndisk-free-warn = \"lots\"\n").unwrap_err();
        assert!(err.contains("lots") && err.contains("line 2"), "{err}");
        let err = parse("[preflight]\ndisk-free-warn = -5\n").unwrap_err();
        assert!(err.contains("negative"), "{err}");
        let err = parse("[preflight]\nload-per-cpu-warn = 3.0\n").unwrap_err();
        assert!(
            err.contains("load-per-cpu-warn (3) is above load-per-cpu-critical (2)"),
            "{err}"
        );
        let err = parse("[preflight]\npids-warn-percent = 120\n").unwrap_err();
        assert!(
            err.contains("pids-warn-percent = 120: expected at most 100"),
            "{err}"
        );
        let err = parse("[preflight]\nmem-available-warn = \"100MiB\"\n").unwrap_err();
        assert!(
            err.contains("mem-available-warn") && err.contains("below mem-available-critical"),
            "{err}"
        );
        let err = parse("[preflight]\ndegrade-restore = 0\n").unwrap_err();
        assert!(err.contains("degrade-restore"), "{err}");
        let err = parse("[preflight]\npids-critical-percent = 50\n").unwrap_err();
        assert!(
            err.contains("pids-warn-percent (80) is above pids-critical-percent (50)"),
            "{err}"
        );
    }

    #[test]
    fn serializes_back_to_what_parses() {
        let text = toml::to_string(&Thresholds::default()).unwrap();
        assert!(text.contains("mem-available-warn = \"2GiB\""), "{text}");
        let back: Thresholds = toml::from_str(&text).unwrap();
        assert_eq!(back, Thresholds::default());
    }
}
