//! Auto-degrade: lower a run's width to 1 while the host is busy, with hysteresis.
//!
//! Before the run and between test binaries the runner takes a [`Report`] (or cheaper
//! [`Signals`]) and asks its [`Degrader`]. A run of width > 1 degrades to width 1 when any of
//!
//! * 1-minute load per effective CPU above `degrade-load-per-cpu`,
//! * available memory below `degrade-mem-available`,
//! * `psi.cpu.some.avg10` above `degrade-psi-cpu`, counting only the share that comes from
//!   outside the run ([`Signals::psi_outside`])
//!
//! holds, and gets its width back only when every one of them is on the good side of its
//! *restore level* (`degrade-restore` × the level for load and PSI, the level ÷
//! `degrade-restore` for memory). Between the two levels the width stays where it is, so a
//! reading hovering around a threshold does not make the run flap.
//!
//! A width the user asked for on the command line (`--test-threads N`) is honoured unless a
//! reading is *critical*: an [`Degrader::explicit`] degrader judges by the `*-critical`
//! levels (`load-per-cpu-critical`, `mem-available-critical`, `psi-cpu-critical`) instead of
//! the `degrade-*` ones, with the same hysteresis.
//!
//! `--no-degrade` is the caller not asking, or asking a [`Degrader::disabled`] one.

use capped_model::units::format_size;

use super::{Report, Thresholds, Value, keys};
use crate::host::{HostRoot, PsiResource};

/// The readings a degrade decision looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// 1-minute load average.
    pub load_1m: Option<f64>,
    /// Effective CPUs (at least 1).
    pub cpus: u64,
    /// Available memory in bytes.
    pub mem_available: Option<u64>,
    /// `psi.cpu.some.avg10`, percent.
    pub psi_cpu: Option<f64>,
    /// Load this run itself puts on the host (e.g. the tests it is running), subtracted from
    /// `load_1m` so a run does not degrade because of itself. 0 by default.
    pub own_load: f64,
}

impl Signals {
    /// The signals in a report (absent readings stay `None`).
    pub fn from_report(report: &Report) -> Self {
        let value = |key| report.get(key).map_or(Value::Absent, |r| r.value);
        Signals {
            load_1m: value(keys::LOAD_1M).as_f64(),
            cpus: value(keys::CPU_COUNT).as_u64().unwrap_or(1).max(1),
            mem_available: value(keys::MEM_AVAILABLE).as_u64(),
            psi_cpu: value(keys::PSI_CPU).as_f64(),
            own_load: 0.0,
        }
    }

    /// Reads only what a decision needs: `/proc/loadavg`, `/proc/meminfo` (and the cgroup's
    /// memory headroom), `/proc/pressure/cpu` and the CPU count (affinity, cgroup quota). A
    /// few small files, cheap enough to read between binaries; what cannot be read is
    /// `None` (no reason to degrade).
    pub fn read(host: &HostRoot) -> Self {
        let cgroup = host.cgroup().ok().flatten();
        Signals {
            load_1m: host.loadavg().ok().map(|load| load.one),
            cpus: super::host_cpus(host, cgroup.as_ref()),
            mem_available: super::available_memory(host, cgroup.as_ref()),
            psi_cpu: host
                .pressure(PsiResource::Cpu)
                .ok()
                .flatten()
                .map(|p| p.some.avg10),
            own_load: 0.0,
        }
    }

    /// These signals with `own_load` set (see the field).
    pub fn with_own_load(mut self, own_load: f64) -> Self {
        self.own_load = if own_load.is_finite() {
            own_load.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// `psi.cpu.some.avg10` from outside this run: the pressure times the share of the load
    /// that is not ours, `(load.1m − own) / load.1m`.
    ///
    /// CPU pressure is system-wide: the time some runnable task waited for a CPU. A run that
    /// keeps every CPU busy (`t2` on two cores, each test with a rayon pool) causes most of
    /// it itself, and counting that made runs cut themselves to width 1 partway. The
    /// kernel does not say whose tasks waited, so the waiting is attributed in proportion to
    /// who is runnable: `load.1m` counts every runnable task, `own_load` ours (on the same
    /// 1-minute scale), and what is left of the load is the outside's share of the
    /// pressure. With no load reading, or none of it ours, the pressure counts whole, as
    /// before the run started.
    pub fn psi_outside(&self) -> Option<f64> {
        let psi = self.psi_cpu?;
        match self.load_1m {
            Some(load) if load > 0.0 && self.own_load >= 0.005 => {
                Some(psi * ((load - self.own_load).max(0.0) / load).min(1.0))
            }
            _ => Some(psi),
        }
    }

    /// `psi.cpu.some.avg10 94.2%` with, when part of the load is ours, the share outside.
    fn psi_text(&self, outside: f64) -> String {
        let psi = self.psi_cpu.unwrap_or(0.0);
        if (psi - outside).abs() < 0.05 {
            format!("psi.cpu.some.avg10 {psi:.1}%")
        } else {
            format!("psi.cpu.some.avg10 {psi:.1}%, {outside:.1}% from outside this run")
        }
    }

    /// Load per CPU after subtracting our own load.
    pub fn load_per_cpu(&self) -> Option<f64> {
        self.load_1m
            .map(|load| (load - self.own_load).max(0.0) / self.cpus.max(1) as f64)
    }
}

/// What width to run at next, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The width to use: the requested one, or 1 while degraded.
    pub width: usize,
    /// Whether the run is degraded.
    pub degraded: bool,
    /// Whether this decision differs from the previous one (print `reason` then).
    pub changed: bool,
    /// One line naming the readings and thresholds behind a degraded or restored width;
    /// `None` when running at the requested width with nothing to report.
    pub reason: Option<String>,
    /// While degraded: the readings and levels that keep it so (the part of `reason` after
    /// the colon), for the header line.
    pub why: Option<String>,
}

/// The levels a degrader judges by, with the `[preflight]` keys that set them.
#[derive(Debug, Clone)]
struct Levels {
    load: f64,
    load_key: &'static str,
    mem: u64,
    mem_key: &'static str,
    psi: f64,
    psi_key: &'static str,
}

/// Decides the width from successive readings, remembering whether it is degraded.
#[derive(Debug, Clone)]
pub struct Degrader {
    thresholds: Thresholds,
    levels: Levels,
    requested: usize,
    label: String,
    degraded: bool,
    disabled: bool,
}

impl Degrader {
    /// A degrader for a run that asked for `requested_width`, judged by `thresholds`.
    pub fn new(thresholds: &Thresholds, requested_width: usize) -> Self {
        Degrader {
            thresholds: thresholds.clone(),
            levels: Levels {
                load: thresholds.degrade_load_per_cpu,
                load_key: "degrade-load-per-cpu",
                mem: thresholds.degrade_mem_available,
                mem_key: "degrade-mem-available",
                psi: thresholds.degrade_psi_cpu,
                psi_key: "degrade-psi-cpu",
            },
            requested: requested_width.max(1),
            label: format!("width {}", requested_width.max(1)),
            degraded: false,
            disabled: false,
        }
    }

    /// A degrader that always keeps `requested_width` (`--no-degrade`).
    pub fn disabled(requested_width: usize) -> Self {
        Degrader {
            disabled: true,
            ..Degrader::new(&Thresholds::default(), requested_width)
        }
    }

    /// For a width given explicitly (`--test-threads N`): degrade only on a critical
    /// reading (the `*-critical` levels), not at the `degrade-*` levels.
    pub fn explicit(mut self) -> Self {
        let t = &self.thresholds;
        self.levels = Levels {
            load: t.load_per_cpu_critical,
            load_key: "load-per-cpu-critical",
            mem: t.mem_available_critical,
            mem_key: "mem-available-critical",
            psi: t.psi_cpu_critical,
            psi_key: "psi-cpu-critical",
        };
        self
    }

    /// Names the run in reasons (e.g. the profile, `t2`); the default is `width N`.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Whether the last decision degraded the run.
    #[cfg(test)]
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// The width of the last decision.
    #[cfg(test)]
    pub fn width(&self) -> usize {
        if self.degraded { 1 } else { self.requested }
    }

    /// Decides from a preflight report (the runner uses [`Degrader::decide_signals`] with
    /// [`Signals::from_report`], to subtract its own load).
    #[cfg(test)]
    pub fn decide(&mut self, report: &Report) -> Decision {
        self.decide_signals(&Signals::from_report(report))
    }

    /// Decides from signals.
    pub fn decide_signals(&mut self, signals: &Signals) -> Decision {
        if self.disabled || self.requested <= 1 {
            return Decision {
                width: self.requested,
                degraded: false,
                changed: false,
                reason: None,
                why: None,
            };
        }
        let restore = self.thresholds.degrade_restore;
        let l = &self.levels;
        let per_cpu = signals.load_per_cpu();
        let load_text = |per_cpu: f64| {
            let load = signals.load_1m.unwrap_or(0.0);
            // Hundredths are what the line shows: no "less our 0.00".
            if signals.own_load >= 0.005 {
                format!(
                    "load.1m {load:.2} less our {:.2} = {per_cpu:.2} per CPU",
                    signals.own_load
                )
            } else {
                format!("load.1m {load:.2} = {per_cpu:.2} per CPU")
            }
        };
        if !self.degraded {
            let mut busy = Vec::new();
            if let Some(per_cpu) = per_cpu
                && per_cpu > l.load
            {
                busy.push(format!(
                    "{} > {:.2} ([preflight] {})",
                    load_text(per_cpu),
                    l.load,
                    l.load_key
                ));
            }
            if let Some(available) = signals.mem_available
                && available < l.mem
            {
                busy.push(format!(
                    "mem.available {} < {} ([preflight] {})",
                    format_size(available),
                    format_size(l.mem),
                    l.mem_key
                ));
            }
            if let Some(psi) = signals.psi_outside()
                && psi > l.psi
            {
                busy.push(format!(
                    "{} > {}% ([preflight] {})",
                    signals.psi_text(psi),
                    l.psi,
                    l.psi_key
                ));
            }
            if busy.is_empty() {
                return Decision {
                    width: self.requested,
                    degraded: false,
                    changed: false,
                    reason: None,
                    why: None,
                };
            }
            self.degraded = true;
            let why = busy.join("; ");
            return Decision {
                width: 1,
                degraded: true,
                changed: true,
                reason: Some(format!("degraded {} → width 1: {why}", self.label)),
                why: Some(why),
            };
        }
        let load_level = l.load * restore;
        let mem_level = (l.mem as f64 / restore).min(u64::MAX as f64) as u64;
        let psi_level = l.psi * restore;
        let mut blocking = Vec::new();
        let mut calm = Vec::new();
        if let Some(per_cpu) = per_cpu {
            if per_cpu > load_level {
                blocking.push(format!(
                    "{} > {load_level:.2} (restore level: {restore} × [preflight] {} {:.2})",
                    load_text(per_cpu),
                    l.load_key,
                    l.load
                ));
            } else {
                calm.push(format!("{} ≤ {load_level:.2}", load_text(per_cpu)));
            }
        }
        if let Some(available) = signals.mem_available {
            if available < mem_level {
                blocking.push(format!(
                    "mem.available {} < {} (restore level: [preflight] {} {} / {restore})",
                    format_size(available),
                    format_size(mem_level),
                    l.mem_key,
                    format_size(l.mem)
                ));
            } else {
                calm.push(format!(
                    "mem.available {} ≥ {}",
                    format_size(available),
                    format_size(mem_level)
                ));
            }
        }
        if let Some(psi) = signals.psi_outside() {
            if psi > psi_level {
                blocking.push(format!(
                    "{} > {psi_level:.1}% (restore level: {restore} × [preflight] {} {}%)",
                    signals.psi_text(psi),
                    l.psi_key,
                    l.psi
                ));
            } else {
                calm.push(format!("{} ≤ {psi_level:.1}%", signals.psi_text(psi)));
            }
        }
        if blocking.is_empty() {
            self.degraded = false;
            let why = if calm.is_empty() {
                "no load readings".to_string()
            } else {
                calm.join(", ")
            };
            return Decision {
                width: self.requested,
                degraded: false,
                changed: true,
                reason: Some(format!(
                    "restored {} (width {}): {why}",
                    self.label, self.requested
                )),
                why: None,
            };
        }
        let why = blocking.join("; ");
        Decision {
            width: 1,
            degraded: true,
            changed: false,
            reason: Some(format!("{} stays at width 1: {why}", self.label)),
            why: Some(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::fixture;
    use crate::preflight::collect;
    use std::path::Path;

    const GIB: u64 = 1 << 30;

    fn load(load_1m: f64) -> Signals {
        Signals {
            load_1m: Some(load_1m),
            cpus: 2,
            mem_available: Some(8 * GIB),
            psi_cpu: None,
            own_load: 0.0,
        }
    }

    fn fixture_report(case: &str) -> Report {
        collect(
            &fixture(case),
            Path::new("/work/target"),
            &Thresholds::default(),
        )
    }

    #[test]
    fn busy_fixture_degrades_with_one_reason_line() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2).with_label("t2");
        let decision = degrader.decide(&fixture_report("busy"));
        assert_eq!(
            (decision.width, decision.degraded, decision.changed),
            (1, true, true)
        );
        let reason = decision.reason.unwrap();
        assert!(
            reason.starts_with("degraded t2 → width 1: load.1m 7.90 = 3.95 per CPU > 1.50 ([preflight] degrade-load-per-cpu)"),
            "{reason}"
        );
        assert!(
            reason.contains("psi.cpu.some.avg10 62.0% > 60% ([preflight] degrade-psi-cpu)"),
            "{reason}"
        );
        assert!(!reason.contains('\n'));
    }

    #[test]
    fn cheap_readings_agree_with_the_full_report() {
        for case in ["busy", "idle", "cgroup-v2-limited", "cgroup-v1", "no-psi"] {
            let host = fixture(case);
            let cheap = Signals::read(&host);
            let full = Signals::from_report(&fixture_report(case));
            assert_eq!(cheap, full, "{case}");
        }
    }

    #[test]
    fn idle_fixture_keeps_the_width() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2);
        let decision = degrader.decide(&fixture_report("idle"));
        assert_eq!(
            decision,
            Decision {
                width: 2,
                degraded: false,
                changed: false,
                reason: None,
                why: None
            }
        );
    }

    #[test]
    fn cgroup_quota_counts_as_the_cpu_count() {
        // cgroup-v2-limited: load 3.0, affinity 8 but quota 1.5 → 2 CPUs → 1.5 per CPU, not
        // above 1.5; memory 1.5 GiB available is above 1 GiB.
        let report = fixture_report("cgroup-v2-limited");
        assert_eq!(Signals::from_report(&report).load_per_cpu(), Some(1.5));
        let mut degrader = Degrader::new(&Thresholds::default(), 2);
        assert_eq!(degrader.decide(&report).width, 2);
        let strict = Thresholds {
            degrade_load_per_cpu: 1.4,
            ..Thresholds::default()
        };
        let decision = Degrader::new(&strict, 2).decide(&report);
        assert_eq!(decision.width, 1);
        assert!(
            decision
                .reason
                .unwrap()
                .contains("3.00 = 1.50 per CPU > 1.40")
        );
    }

    #[test]
    fn no_flapping_around_the_threshold() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2).with_label("t2");
        // Per CPU: 1.45 (below 1.5) → 1.6 (degrade) → 1.4, 1.2, 1.5 (between 1.125 and 1.5: stay)
        // → 1.0 (restore) → 1.4, 1.5 (below the degrade level: stay restored) → 1.55 (degrade).
        let per_cpu = [1.45, 1.6, 1.4, 1.2, 1.5, 1.0, 1.4, 1.5, 1.55];
        let widths: Vec<usize> = per_cpu
            .iter()
            .map(|p| degrader.decide_signals(&load(p * 2.0)).width)
            .collect();
        assert_eq!(widths, [2, 1, 1, 1, 1, 2, 2, 2, 1]);
        let changes: usize = {
            let mut d = Degrader::new(&Thresholds::default(), 2);
            per_cpu
                .iter()
                .filter(|p| d.decide_signals(&load(*p * 2.0)).changed)
                .count()
        };
        assert_eq!(changes, 3);
    }

    #[test]
    fn reading_hovering_at_the_threshold_never_flaps() {
        let mut degrader = Degrader::new(&Thresholds::default(), 4);
        let mut changes = 0;
        for i in 0..200 {
            // Oscillates ±0.2 around the degrade level 1.5 per CPU: degrades once, then stays.
            let per_cpu = 1.5 + if i % 2 == 0 { 0.2 } else { -0.2 };
            changes += usize::from(degrader.decide_signals(&load(per_cpu * 2.0)).changed);
        }
        assert_eq!(changes, 1);
        assert!(degrader.is_degraded());
    }

    #[test]
    fn staying_and_restoring_say_why() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2).with_label("t2");
        degrader.decide_signals(&load(4.0));
        let stay = degrader.decide_signals(&load(2.6));
        assert!(!stay.changed);
        assert_eq!(
            stay.reason.unwrap(),
            "t2 stays at width 1: load.1m 2.60 = 1.30 per CPU > 1.12 (restore level: 0.75 × [preflight] degrade-load-per-cpu 1.50)"
        );
        let back = degrader.decide_signals(&load(1.0));
        assert_eq!((back.width, back.changed, back.degraded), (2, true, false));
        assert_eq!(
            back.reason.unwrap(),
            "restored t2 (width 2): load.1m 1.00 = 0.50 per CPU ≤ 1.12, mem.available 8 GiB ≥ 1.3 GiB"
        );
        assert_eq!(degrader.width(), 2);
    }

    #[test]
    fn memory_and_psi_degrade_and_restore_with_hysteresis() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2);
        let mem = |bytes| Signals {
            mem_available: Some(bytes),
            ..load(0.0)
        };
        let d = degrader.decide_signals(&mem(800 << 20));
        assert_eq!(d.width, 1);
        assert!(
            d.reason
                .unwrap()
                .contains("mem.available 800 MiB < 1 GiB ([preflight] degrade-mem-available)")
        );
        // 1.2 GiB is above the degrade level but below 1 GiB / 0.75 = 1.33 GiB: stays.
        assert_eq!(degrader.decide_signals(&mem(GIB + (GIB / 5))).width, 1);
        assert_eq!(degrader.decide_signals(&mem(2 * GIB)).width, 2);

        let psi = |p| Signals {
            psi_cpu: Some(p),
            ..load(0.0)
        };
        assert_eq!(degrader.decide_signals(&psi(61.0)).width, 1);
        assert_eq!(
            degrader.decide_signals(&psi(50.0)).width,
            1,
            "50 > 45 = 0.75 × 60"
        );
        assert_eq!(degrader.decide_signals(&psi(44.0)).width, 2);
    }

    #[test]
    fn own_load_is_discounted() {
        let mut degrader = Degrader::new(&Thresholds::default(), 2);
        // 4.0 on 2 CPUs is 2.0 per CPU, but 2.0 of it is ours: 1.0 per CPU.
        assert_eq!(
            degrader.decide_signals(&load(4.0).with_own_load(2.0)).width,
            2
        );
        let d = degrader.decide_signals(&load(8.0).with_own_load(2.0));
        assert!(
            d.reason
                .unwrap()
                .contains("load.1m 8.00 less our 2.00 = 3.00 per CPU")
        );
    }

    #[test]
    fn pressure_the_run_causes_itself_does_not_degrade_it() {
        // A 2-core host running t2: load 2.3, 2.1 of it ours; 94.2% CPU pressure, nearly
        // all of it from our own tests competing for the two cores.
        let own_run = Signals {
            psi_cpu: Some(94.2),
            ..load(2.3)
        }
        .with_own_load(2.1);
        let outside = own_run.psi_outside().unwrap();
        assert!((outside - 94.2 * 0.2 / 2.3).abs() < 1e-9, "{outside}");
        let mut degrader = Degrader::new(&Thresholds::default(), 2).with_label("t2");
        let d = degrader.decide_signals(&own_run);
        assert_eq!((d.width, d.reason), (2, None));
        // The same pressure with most of the load from elsewhere still degrades, and says
        // what share was counted.
        let busy_outside = Signals {
            psi_cpu: Some(94.2),
            mem_available: Some(8 * GIB),
            ..load(2.3)
        }
        .with_own_load(0.3);
        let d = degrader.decide_signals(&busy_outside);
        assert_eq!(d.width, 1);
        assert_eq!(
            d.why.unwrap(),
            "psi.cpu.some.avg10 94.2%, 81.9% from outside this run > 60% ([preflight] degrade-psi-cpu)"
        );
        // Without a load reading there is no share to take: the pressure counts whole.
        let no_load = Signals {
            load_1m: None,
            psi_cpu: Some(61.0),
            ..load(0.0)
        }
        .with_own_load(2.0);
        assert_eq!(no_load.psi_outside(), Some(61.0));
    }

    #[test]
    fn an_explicit_width_degrades_only_on_a_critical_reading() {
        // 1.75 per CPU: past degrade-load-per-cpu 1.5, below load-per-cpu-critical 2.0.
        let warm = load(3.5);
        assert_eq!(
            Degrader::new(&Thresholds::default(), 2)
                .decide_signals(&warm)
                .width,
            1
        );
        let mut explicit = Degrader::new(&Thresholds::default(), 2).explicit();
        let kept = explicit.decide_signals(&warm);
        assert_eq!((kept.width, kept.reason, kept.why), (2, None, None));
        let psi = Signals {
            psi_cpu: Some(70.0),
            ..load(0.0)
        };
        assert_eq!(explicit.decide_signals(&psi).width, 2, "70% < 80% critical");
        let critical = explicit.decide_signals(&load(5.0));
        assert_eq!(critical.width, 1);
        assert_eq!(
            critical.why.as_deref(),
            Some("load.1m 5.00 = 2.50 per CPU > 2.00 ([preflight] load-per-cpu-critical)")
        );
        // Restores at 0.75 × the critical level, with the same hysteresis.
        let stay = explicit.decide_signals(&load(3.5));
        assert_eq!(stay.width, 1);
        assert!(
            stay.why
                .unwrap()
                .contains("restore level: 0.75 × [preflight] load-per-cpu-critical 2.00"),
        );
        assert_eq!(explicit.decide_signals(&load(2.0)).width, 2);
    }

    #[test]
    fn disabled_width_one_and_missing_readings() {
        let mut disabled = Degrader::disabled(2);
        assert_eq!(disabled.decide_signals(&load(100.0)).width, 2);
        let mut one = Degrader::new(&Thresholds::default(), 1);
        let d = one.decide_signals(&load(100.0));
        assert_eq!((d.width, d.changed, d.reason), (1, false, None));
        let mut degrader = Degrader::new(&Thresholds::default(), 2);
        let nothing = Signals {
            load_1m: None,
            cpus: 1,
            mem_available: None,
            psi_cpu: None,
            own_load: 0.0,
        };
        assert_eq!(
            degrader.decide_signals(&nothing).width,
            2,
            "no readings: no reason to degrade"
        );
        degrader.decide_signals(&load(10.0));
        let d = degrader.decide_signals(&nothing);
        assert_eq!(d.width, 2);
        assert!(d.reason.unwrap().ends_with("no load readings"));
    }
}
