//! The test running on this thread: its name, seed and slots.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use capped_model::caps;
use capped_model::derive_seed;

/// What a running `#[capped]` test knows about itself.
#[derive(Debug, Clone)]
pub(crate) struct TestContext {
    /// libtest's name (`tests::gpu_a`).
    pub name: String,
    /// This test's seed.
    pub seed: u64,
    /// Slots held, by resource.
    pub slots: BTreeMap<String, Vec<u32>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<TestContext>>> = const { RefCell::new(None) };
}

/// Runs `f` with `context` as this thread's current test.
pub(crate) fn with_context<R>(context: TestContext, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Rc<TestContext>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|current| *current.borrow_mut() = self.0.take());
        }
    }
    let previous = CURRENT.with(|current| current.borrow_mut().replace(Rc::new(context)));
    let _reset = Reset(previous);
    f()
}

fn current() -> Option<Rc<TestContext>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// This test's seed: derived from the run seed ([`crate::Caps::seed`]) and the test's full
/// path, stable across Rust versions and machines.
///
/// Inside a `#[capped]` test it is that test's seed. In a plain `#[test]` it is derived from
/// the thread's name, which libtest sets to the test's name. Elsewhere it is the run seed.
pub fn seed() -> u64 {
    if let Some(context) = current() {
        return context.seed;
    }
    let run_seed = caps().seed();
    match std::thread::current().name() {
        Some(name) if name != "main" => derive_seed(run_seed, name),
        _ => run_seed,
    }
}

/// The seed of the test with full path `test_path` in this run.
pub fn seed_for(test_path: &str) -> u64 {
    derive_seed(caps().seed(), test_path)
}

/// The slot of `resource` (a group name, or `"width"`) held by the current `#[capped]`
/// test, as CTest tells a test its GPU id: `slot("gpu") == Some(0)`. `None` outside a
/// capped test or for a group it did not declare.
pub fn slot(resource: &str) -> Option<u32> {
    current().and_then(|context| {
        context
            .slots
            .get(resource)
            .and_then(|ids| ids.first().copied())
    })
}

/// The environment that tells a child process the current test's slots
/// (`CAPPED_SLOT_GPU=0`, …); pass it to `Command::envs`. Setting it on this process would
/// race with the tests running beside this one.
pub fn slot_envs() -> Vec<(String, String)> {
    current()
        .map(|context| {
            context
                .slots
                .iter()
                .filter(|(name, ids)| {
                    name.as_str() != capped_model::resource::WIDTH && !ids.is_empty()
                })
                .map(|(name, ids)| {
                    (
                        capped_model::protocol::env::slot_var(name),
                        ids[0].to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The name of the current `#[capped]` test, as libtest names it.
pub fn current_test() -> Option<String> {
    current().map(|context| context.name.clone())
}
