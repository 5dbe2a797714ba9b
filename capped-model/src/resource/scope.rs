//! Scopes: who shares a resource's slots.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Who shares a resource's slots (docs/design.md, "The model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The threads of one test binary: an in-process semaphore.
    Process,
    /// Every process of one `cargo capped` invocation: lock files in the run's dir.
    /// Outside `cargo capped` (no `CAPPED_RUN_DIR`) it falls back to [`Scope::Workspace`].
    Run,
    /// Every run that uses the same target dir: lock files under the target dir.
    Workspace,
    /// Every run on the machine: lock files in the host lock dir.
    Host,
}

impl Scope {
    /// The scope's name as written in config and `CAPPED_GROUPS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Run => "run",
            Scope::Workspace => "workspace",
            Scope::Host => "host",
        }
    }

    /// The accepted spellings, for error messages.
    pub const FORM: &'static str = "one of \"process\", \"run\", \"workspace\", \"host\"";
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "process" => Ok(Scope::Process),
            "run" => Ok(Scope::Run),
            "workspace" => Ok(Scope::Workspace),
            "host" => Ok(Scope::Host),
            _ => Err(format!(
                "`{}` is not a scope; expected {}",
                crate::units::shown(text),
                Scope::FORM
            )),
        }
    }
}
