//! The `#[capped(...)]` attribute of [`capped-test`](https://docs.rs/capped-test).
//!
//! Use it through `capped_test::capped`, not from this crate: the expansion names
//! `::capped_test::__private`, so the test crate must depend on `capped-test`.
//!
//! ```ignore
//! use capped_test::capped;
//!
//! #[capped(group = "gpu", mem = "2GiB", timeout = "5m")]
//! fn trains_on_the_gpu() {
//!     // runs while holding a `gpu` slot and 2 GiB of the memory budget
//! }
//! ```
//!
//! Every argument is checked at compile time by the same parsers `cargo capped` uses for its
//! config and flags, and every mistake is a compile error pointing at the argument. See
//! [`macro@capped`] for the arguments.
//!
//! The crate is small: `args` parses and checks the arguments, `attrs` sorts the attributes
//! of the test function (`#[ignore]`, `#[should_panic]`, `#[cfg]`…), `expand` writes the
//! test.

mod args;
mod attrs;
mod expand;

use proc_macro::TokenStream;

/// Makes a function a test that holds its resources while it runs.
///
/// `#[capped]` emits the `#[test]` itself (a `#[test]` stacked below it is accepted and
/// dropped) and registers the test with capped-test, so the caps hold under plain
/// `cargo test`, under nextest and in harness mode (`harness = false` + `capped_test::main!()`).
///
/// # Arguments
///
/// All optional, comma-separated, in any order, each at most once:
///
/// | argument | meaning |
/// | --- | --- |
/// | *(none)* | `#[capped]`: a plain capped test; it holds one slot of the run's width |
/// | `group = "gpu"` | holds one slot of the group `gpu` while it runs |
/// | `groups = ["gpu", "net"]` | holds one slot of each group (may be combined with `group`) |
/// | `threads = N` | holds `N` width slots (N ≥ 1; clamped to the width), for tests that run their own pools |
/// | `mem = "2GiB"` | reserves that much of the run's memory budget |
/// | `timeout = "30s"` | fails the test (and, under `cargo capped`, kills it) after that long |
/// | `serial` | runs alone: holds the whole width |
///
/// * Group names match `[a-z0-9][a-z0-9_-]{0,63}` (they become lock-file directories);
///   a group named twice is an error. An unconfigured group has `max = 1`: its tests
///   run one at a time, across every process of the group's scope.
/// * Sizes are a number with an optional unit: `512`, `300M`, `300MiB`, `2GiB`, `1.5G`
///   (`K`/`M`/`G`/`T` and `KiB`… are powers of 1024, `KB`/`MB`… powers of 1000).
/// * Durations are a number with a unit, or several: `500ms`, `30s`, `2m`, `1h`, `1m30s`;
///   a bare number is seconds.
/// * `serial` with `threads` is an error (a serial test already holds the whole width).
/// * Where the width is: in harness mode and under plain `cargo test` the width slots are
///   the run's (or the workspace's), shared with every capped test there. Under
///   `cargo capped`, a libtest binary runs while the runner holds `k` of the run's slots for
///   it (`--test-threads k`): its `#[capped]` tests share those `k`, so `serial` runs
///   alone within its binary while other binaries may use the rest of the width; harness
///   mode is what makes a `serial` test alone in the whole run. Plain `#[test]`s take no
///   slots and are not kept apart by any of this.
///
/// ```ignore
/// use capped_test::capped;
///
/// #[capped]
/// fn light() {}
///
/// #[capped(group = "gpu")]
/// fn uses_the_gpu() {}
///
/// #[capped(groups = ["gpu", "crossval"], threads = 4, mem = "2GiB", timeout = "10m")]
/// fn cross_validates_on_the_gpu() -> Result<(), String> {
///     Ok(())
/// }
///
/// #[capped(serial)]
/// fn changes_the_process_environment() {}
/// ```
///
/// # The function
///
/// The function takes no parameters and has no generics; it returns `()` or
/// `Result<(), E>` with `E: Debug`, as with `#[test]`. An `async fn` runs on the capped
/// tokio runtime — do not add `#[tokio::test]`, which is an error.
///
/// ```ignore
/// #[capped(group = "net", timeout = "30s")]
/// async fn fetches() -> Result<(), std::io::Error> {
///     tokio::task::yield_now().await;
///     Ok(())
/// }
/// ```
///
/// The function's attributes keep their meaning:
///
/// * `#[ignore]`, `#[ignore = "reason"]`, `#[should_panic]`,
///   `#[should_panic(expected = "..")]` and `#[should_panic = ".."]` work as with
///   `#[test]`, in libtest and in harness mode alike (also under `#[cfg_attr(..)]`).
/// * `#[cfg(..)]` removes the whole test.
/// * `#[allow(..)]` and the other lint levels apply to the body.
///
/// Put `#[capped]` above `#[test]` (not below): an outer `#[test]` makes its test before
/// `#[capped]` is seen.
///
/// ```ignore
/// #[capped(group = "gpu")]
/// #[test]
/// #[ignore = "needs a GPU"]
/// #[should_panic(expected = "out of memory")]
/// fn allocates_too_much() {
///     panic!("out of memory");
/// }
/// ```
///
/// # Errors
///
/// Unknown arguments, values of the wrong type, invalid group names, sizes or durations,
/// `threads = 0`, repeated arguments, and functions that cannot be tests are compile errors
/// pointing at the mistake and saying what is accepted; all of an attribute's mistakes are
/// reported at once.
///
/// ```text
/// error: unknown argument `thread` (did you mean `threads = 2`?); #[capped] accepts `group = "gpu"`, ...
///  --> tests/gpu.rs:3:10
///   |
/// 3 | #[capped(thread = 2)]
///   |          ^^^^^^
/// ```
#[proc_macro_attribute]
pub fn capped(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::capped(args.into(), item.into()).into()
}
