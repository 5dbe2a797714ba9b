//! The `cargo-capped` binary: everything is in the library ([`cargo_capped::main`]).

fn main() -> std::process::ExitCode {
    cargo_capped::main(std::env::args_os())
}
