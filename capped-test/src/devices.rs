//! The devices of device-backed groups, as a test process sees them: which device the
//! current test may use ([`device`]), and whether a test must be skipped because its group
//! has none.
//!
//! Under `cargo capped` the runner passes every device-backed group's ids in
//! `CAPPED_DEVICES_<GROUP>`, and pins a process it started holding a slot through
//! `CAPPED_DEVICE_<GROUP>` (and `CUDA_VISIBLE_DEVICES` or the group's `pin-env`). Under
//! plain `cargo test` the same variables may be set by hand; otherwise the groups of
//! `.config/capped.toml` are detected the way the runner detects them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use capped_model::config::Config;
use capped_model::devices::{self, Devices};
use capped_model::protocol::env;

/// The devices of `group`, or `None` when it is not a device-backed group; found once.
fn group_devices(group: &str) -> Option<Devices> {
    static FOUND: OnceLock<Mutex<HashMap<String, Option<Devices>>>> = OnceLock::new();
    let mut found = FOUND
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    found
        .entry(group.to_string())
        .or_insert_with(|| find(group))
        .clone()
}

fn find(group: &str) -> Option<Devices> {
    let get = |var: &str| std::env::var(var).ok();
    // A malformed override is an error, as for every `CAPPED_*` variable: a test must not
    // run (or be skipped) under a device list nobody meant.
    let overridden = devices::env_override(group).unwrap_or_else(|e| panic!("capped-test: {e}"));
    if let Some(ids) = overridden {
        let how = if ids.is_empty() {
            format!("{} is empty", env::devices_var(group))
        } else {
            format!("from {}", env::devices_var(group))
        };
        return Some(Devices { ids, how });
    }
    if get(env::CAPPED).as_deref() == Some("1") {
        // The runner names every device-backed group: this one is not.
        return None;
    }
    let dir = get("CARGO_MANIFEST_DIR")?;
    let config = Config::discover(Path::new(&dir)).ok()?;
    let source = config.group(group).devices?;
    let path = std::env::var_os("PATH");
    devices::resolve(group, &source, &get, Path::new("/dev"), path.as_deref()).ok()
}

/// The device the current test may use in device-backed group `group`: the one its
/// process was pinned to, else the device of the slot it holds (`capped_test::slot`).
/// `None` outside a `#[capped]` test of that group, or when the group is not
/// device-backed.
///
/// ```
/// #[capped_test::capped(group = "doc-devices")]
/// fn trains() {
///     // `None` here: `doc-devices` names no devices in this crate's config.
///     assert_eq!(capped_test::device("doc-devices"), None);
/// }
/// # fn main() {}
/// ```
pub fn device(group: &str) -> Option<String> {
    if let Ok(id) = std::env::var(env::device_var(group)) {
        return Some(id);
    }
    let slot = crate::slot(group)?;
    group_devices(group)?.ids.get(slot as usize).cloned()
}

/// Why a test of `groups` cannot run here: one of them is device-backed and has no devices.
pub(crate) fn skip_reason(groups: &[&str]) -> Option<String> {
    groups.iter().find_map(|group| {
        let devices = group_devices(group)?;
        devices
            .ids
            .is_empty()
            .then(|| format!("group `{group}` has no devices: {}", devices.how))
    })
}
