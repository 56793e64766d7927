//! The `tokenkeeper` binary: see the library part, `tokenkeeper_cli`.

fn main() -> std::process::ExitCode {
    tokenkeeper_cli::run(std::env::args_os())
}
