//! Once per process, before the first test body: cap the global rayon pool and export the
//! thread-count variables for child processes.
//!
//! It runs at load time (a constructor) wherever this crate is linked, so plain `#[test]`
//! functions in the same binary see the capped pool too; `#[capped]` tests and the harness
//! call [`ensure_init`] as well, in case a linker dropped the constructor.

use std::sync::Once;

use capped_model::protocol::env;
use capped_model::{caps, try_caps};

#[ctor::ctor(unsafe)]
fn capped_init_at_load() {
    export_env_at_load();
}

/// Sets `RAYON_NUM_THREADS` and `TOKIO_WORKER_THREADS` to the caps, and the BLAS/OpenMP
/// variables where the user has not set them, so that both this process's lazily built
/// rayon pool and every child see the caps.
fn export_env_at_load() {
    let caps = match try_caps() {
        Ok(caps) => caps,
        Err(e) => {
            // Reported again, as a test failure, by the first capped test.
            eprintln!("capped-test: {e}");
            return;
        }
    };
    let mut vars = vec![
        (
            "RAYON_NUM_THREADS".to_string(),
            caps.rayon_threads().to_string(),
        ),
        (
            "TOKIO_WORKER_THREADS".to_string(),
            caps.async_threads().to_string(),
        ),
    ];
    for var in env::BLAS_VARS {
        if std::env::var_os(var).is_none() {
            vars.push((var.to_string(), caps.blas_threads().to_string()));
        }
    }
    for (var, value) in vars {
        // SAFETY: this runs in a load-time constructor, before `main` and before any test
        // thread exists, so no other thread can be reading the environment.
        unsafe { std::env::set_var(var, value) };
    }
}

/// Builds the global rayon pool with the capped size, once; says so (once) if something
/// already built it larger. Called by every `#[capped]` test and by the harness.
pub fn ensure_init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let caps = caps();
        let wanted = caps.rayon_threads() as usize;
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(wanted)
            .thread_name(|i| format!("capped-rayon-{i}"))
            .build_global();
        if built.is_err() && rayon::current_num_threads() > wanted {
            eprintln!(
                "capped-test: the global rayon pool was built with {} threads before capped-test could cap it at {wanted}; \
                 build it with capped_test::caps().rayon_threads() or let capped-test build it",
                rayon::current_num_threads()
            );
        }
    });
}
