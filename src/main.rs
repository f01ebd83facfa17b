//! The `symphony` binary; everything lives in the library.

/// mimalloc: the engine allocates many small, short-lived objects (an actor
/// per attempt); measured faster than the system allocator (see
/// docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    symphony::cli::main()
}
