//! EMFILE reruns in the run (the policy is [`crate::adapt::emfile_policy`]'s): a failed test whose output says "Too many open files" is held back
//! instead of reported; when its binary is done the [`EmfileAdapter`] lowers the width by a
//! quarter and the runner runs those tests once more, alone in a unit of their own
//! (`--exact NAME…`), first in line, at the lower width. Their second result is the one
//! reported; a notice says what happened.
//!
//! ## Invariants
//!
//! * A test is rerun at most once: a rerun unit's results are final (never held back), and
//!   its own EMFILE failures only lower the width further.
//! * Only tests the listing knows can be selected by name; any other keeps its first
//!   result. A held-back result not rerun is reported when its binary is done.
//!
//! [`EmfileAdapter`]: crate::adapt::emfile_policy::EmfileAdapter

use crate::adapt::emfile_policy::{FailedTest, Rerun, looks_like_emfile};
use crate::events::{RunEvent, TestResult, TestStatus};

use super::binary::Unit;
use super::runner::Runner;
use super::work::subset;

impl Runner<'_> {
    /// Whether a finished result is held back as a possible EMFILE rerun.
    pub(super) fn defers(&self, unit: usize, result: &TestResult) -> bool {
        !self.units[unit].rerun
            && result.status == TestStatus::Failed
            && looks_like_emfile(&result.output)
    }

    /// The EMFILE policy for a finished unit: asks the adapter about its failed tests that
    /// ran out of file descriptors (held back in `deferred`, or for a binary that died of it
    /// without naming a test, its unfinished ones among `remaining`), reports what it decided,
    /// lowers the width, and queues the rerun. Returns the results still to report.
    pub(super) fn adapt_to_emfile(
        &mut self,
        index: usize,
        run_width: u32,
        mut remaining: Vec<TestResult>,
        stray_output: &str,
    ) -> Vec<TestResult> {
        let deferred = std::mem::take(&mut self.units[index].deferred);
        let unit = &self.units[index];
        // A rerun's EMFILE failures are final, but they still lower the width.
        let emfile_failures: Vec<&TestResult> = if unit.rerun {
            self.results
                .iter()
                .chain(&remaining)
                .filter(|r| {
                    r.binary == unit.binary.id
                        && r.status.is_failure()
                        && looks_like_emfile(&r.output)
                        && unit
                            .selection
                            .as_ref()
                            .is_some_and(|names| names.contains(&r.name))
                })
                .collect()
        } else {
            deferred.iter().collect()
        };
        let crashed_of_emfile = emfile_failures.is_empty()
            && remaining.iter().any(|r| r.status.is_failure())
            && looks_like_emfile(stray_output);
        if emfile_failures.is_empty() && !crashed_of_emfile {
            remaining.extend(deferred);
            return remaining;
        }
        let failed: Vec<FailedTest<'_>> = emfile_failures
            .iter()
            .map(|r| FailedTest {
                name: &r.name,
                output: &r.output,
            })
            .collect();
        let name = unit.binary.id.to_string();
        let adaptation =
            self.emfile
                .on_binary_finished(&name, run_width as usize, &failed, stray_output);
        let mut rerun: Vec<String> = match adaptation.rerun {
            Rerun::Nothing => Vec::new(),
            // Doc tests cannot be selected by name: their first result stands.
            _ if unit.binary.is_doc() => Vec::new(),
            Rerun::Tests(names) => names,
            Rerun::WholeBinary if unit.rerun => Vec::new(),
            Rerun::WholeBinary => remaining
                .iter()
                .filter(|r| r.status.is_failure())
                .map(|r| r.name.clone())
                .collect(),
        };
        // Only tests the listing knows can be selected by name; the others keep their
        // first result.
        let listing = subset(&unit.listing, &rerun);
        rerun.retain(|name| listing.tests.iter().any(|t| &t.name == name));
        if let Some(message) = adaptation.message {
            self.emit(RunEvent::Notice { message });
        }
        self.apply_width();
        let out: Vec<TestResult> = remaining
            .into_iter()
            .chain(deferred)
            .filter(|r| !rerun.contains(&r.name))
            .collect();
        if !rerun.is_empty() {
            let unit = &self.units[index];
            let mut rerun_unit = Unit::new(
                unit.binary.clone(),
                listing,
                None,
                unit.claimed.clone(),
                self.run_dir
                    .events_file(self.units.len(), &unit.binary.id.target),
                Some(rerun),
                &self.plan.test_args,
            );
            rerun_unit.rerun = true;
            let new_index = self.units.len();
            self.units.push(rerun_unit);
            self.order.insert(0, new_index);
        }
        out
    }
}
