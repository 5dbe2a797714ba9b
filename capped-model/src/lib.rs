//! # capped-model
//!
//! What `cargo capped` (the runner) and `capped-test` (the library test binaries link) must
//! agree on, in one crate with no load-time side effects — no constructor, no thread pool,
//! no async runtime:
//!
//! * [`Caps`]: a process's caps (width, rayon/BLAS/async threads, deterministic mode, seed,
//!   groups, lock dirs), resolved by one function from a profile, overrides and the
//!   environment, and written to a child's environment by one serializer;
//! * [`config`]: `.config/capped.toml` (profiles, groups), checked with `file:line:col`;
//! * [`protocol`]: the runner ↔ test protocol — environment variable names, `CAPPED_GROUPS`,
//!   the events file and the resource listing, each as a format/parse pair;
//! * [`resource`]: the resource model — named counting resources whose slots are shared
//!   within a [`Scope`] (a process, a run, a workspace, the host) through `flock`ed lock
//!   files that the kernel releases when a holder dies, and memory reservations;
//! * [`libtest_args`]: libtest's command line — one table of its flags, and the helpers
//!   that tell flags, their values and filters apart;
//! * [`units`]: the small value languages (sizes, durations, group names) shared by the
//!   attribute, the config file, the environment and the command line;
//! * [`derive_seed`]: a test's seed from the run seed and its name, stable everywhere.
//!
//! Test authors use `capped-test`, which re-exports what they need; this crate is for the
//! runner and for tools that speak the protocol.
//!
//! ```
//! use capped_model::{Caps, Request, Scope};
//! use capped_model::protocol::{GroupLimit, format_groups, parse_groups};
//!
//! // The runner writes the groups into a child's environment; the test process reads them.
//! let limits = [("gpu", GroupLimit { max: 1, scope: Scope::Host })];
//! let text = format_groups(limits);
//! assert_eq!(text, "gpu=1@host");
//! assert_eq!(parse_groups(&text).unwrap()["gpu"].max, 1);
//!
//! // Caps resolved from an environment lookup (here: a fixed map).
//! let lock_dir = std::env::temp_dir().join(format!("capped-doc-{}", std::process::id()));
//! let env = [
//!     ("CAPPED_TEST_THREADS", "2".to_string()),
//!     ("CAPPED_GROUPS", text),
//!     ("CAPPED_LOCK_DIR", lock_dir.display().to_string()),
//! ];
//! let get = |var: &str| env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone());
//! let caps = Caps::from_sources(&get, &[], None).unwrap();
//! assert_eq!(caps.test_threads(), 2);
//!
//! // One host-wide gpu slot, held until the guard drops.
//! let guard = Request::new().group("gpu").acquire_with(&caps).unwrap();
//! assert_eq!(guard.slot("gpu"), Some(0));
//! # drop(guard);
//! # let _ = std::fs::remove_dir_all(&lock_dir);
//! ```

mod caps;
pub mod config;
pub mod devices;
mod error;
pub mod libtest_args;
mod metrics;
pub mod protocol;
pub mod resource;
mod seed;
pub mod units;

pub use caps::{
    Caps, CapsOverrides, DETERMINISTIC_SEED, RANDOM_SEED_BOUND, SeedOrigin, caps, try_caps,
};
pub use error::Error;
pub use metrics::{Percentiles, ResourceMetrics, metrics};
pub use resource::{Guard, Request, Scope, group};
pub use seed::derive_seed;
