//! The `symphony` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    symphony::cli::main()
}
