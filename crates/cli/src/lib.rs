//! `tokenkeeper` on the command line, as a binary and as a library the
//! binary (and the `token` example of the `tokenkeeper` crate) run.
//!
//! ```sh
//! cargo install --path crates/cli            # the `tokenkeeper` binary
//! read -rs TOKENKEEPER_CLIENT_SECRET && export TOKENKEEPER_CLIENT_SECRET
//! tokenkeeper token --token-url https://auth.example.com/oauth/token \
//!     --client-id my-service --scope orders:read
//! tokenkeeper agent --config /etc/tokenkeeper/orders.toml \
//!     --sink /run/orders/token --sink /run/orders/token.json --sink-format json
//! ```
//!
//! - `tokenkeeper token`: prints an access token alone on stdout, or with
//!   `--watch SECS` one JSON line per event of the manager that keeps it
//!   fresh (never a token). Exit codes: 0 token printed (or watch done),
//!   1 refused by the authority, 2 bad usage, 3 no token within 10 s.
//! - `tokenkeeper agent`: keeps the token fresh and writes it to every
//!   `--sink FILE` (mode 0600, replaced atomically) on each publish, until
//!   SIGTERM or SIGINT (exit 0). One line per event on stderr, never a
//!   token. Unix only.
//! - `--config PATH`: a TOML file whose keys are the flags' names
//!   (`token-url = "..."`, `audience = ["a", "b"]`); the command line wins.
//!   Secrets never come from it (a `client-secret` key is refused): the
//!   secret comes from `TOKENKEEPER_CLIENT_SECRET` or
//!   `client-secret-file`.
//! - `tokenkeeper completions SHELL`, `tokenkeeper man`: a completion
//!   script and the man page, on stdout.
//!
//! The flags of `token` and `agent` are those of the `token` example of
//! the `tokenkeeper` crate, documented there in full.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::CommandFactory;

#[cfg(unix)]
mod agent;
mod args;
mod config;
mod output;
mod sources;

use args::{Cli, Command, Parsed, TokenCli};
use config::TokenConfig;
use output::{print_text, set_program, usage_error};

pub use sources::{REDIS_URL_ENV, SECRET_ENV};

const TOKEN_USAGE: &str =
    "usage: tokenkeeper token (--token-url URL | --issuer URL) --client-id ID [options]; see --help";
const EXAMPLE_USAGE: &str =
    "usage: token (--token-url URL | --issuer URL) --client-id ID [options]; see --help";
const AGENT_USAGE: &str =
    "usage: tokenkeeper agent (--token-url URL | --issuer URL) --client-id ID \
                           --sink FILE [options]; see --help";
const USAGE: &str = "usage: tokenkeeper <token|agent|completions|man> [options]; see --help";

/// Runs `tokenkeeper` with `args`, the program's name first, as
/// `std::env::args_os()` gives them; the exit code to end with.
///
/// ```
/// let code = tokenkeeper_cli::run(["tokenkeeper", "--version"].map(Into::into));
/// assert_eq!(code, std::process::ExitCode::SUCCESS);
/// ```
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    // Usage errors name the subcommand they are about, told before clap
    // has parsed anything.
    match args.get(1).and_then(|a| a.to_str()) {
        Some("token") => set_program("token", TOKEN_USAGE),
        Some("agent") => set_program("agent", AGENT_USAGE),
        _ => set_program("tokenkeeper", USAGE),
    }
    match args::parse::<Cli>(args) {
        Parsed::Text(text) => print_text(&text),
        Parsed::Usage(message) => usage_error(&message),
        Parsed::Run(cli) => match cli.command {
            Command::Token(token_args) => token(token_args),
            Command::Agent(agent_args) => agent(agent_args),
            Command::Completions { shell } => {
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "tokenkeeper", &mut out);
                write_out(&out)
            }
            Command::Man => {
                let mut out = Vec::new();
                match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                    Ok(()) => write_out(&out),
                    Err(error) => {
                        output::say(&format!("tokenkeeper: error: {error}"));
                        ExitCode::FAILURE
                    }
                }
            }
        },
    }
}

/// Runs `token` with `args`, the arguments after the program's name (as
/// `std::env::args_os().skip(1)` gives them): what `tokenkeeper token`
/// does, under the name `token`.
///
/// ```
/// // Bad usage: exit code 2, a message on stderr, nothing asked of anyone.
/// let code = tokenkeeper_cli::run_token(["--client-id".into(), "me".into()]);
/// assert_eq!(code, std::process::ExitCode::from(2));
/// ```
pub fn run_token(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    set_program("token", EXAMPLE_USAGE);
    let args = std::iter::once(OsString::from("token")).chain(args);
    match args::parse::<TokenCli>(args) {
        Parsed::Text(text) => print_text(&text),
        Parsed::Usage(message) => usage_error(&message),
        Parsed::Run(cli) => token(cli.args),
    }
}

fn token(args: args::TokenArgs) -> ExitCode {
    let config = match TokenConfig::from_args(args) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    let prepared = match sources::prepare(&config.source, config.watch.is_none()) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let asked = config.source.scope.as_deref();
    smol::block_on(async {
        match config.watch {
            None => {
                let proof = config.dpop_proof.as_ref();
                output::print_token(prepared.source, prepared.scrub, asked, proof).await
            }
            Some(duration) => output::watch(prepared.source, duration, prepared.scrub, asked).await,
        }
    })
}

#[cfg(unix)]
fn agent(args: args::AgentArgs) -> ExitCode {
    match config::AgentConfig::from_args(args) {
        Ok(config) => agent::run(config),
        Err(message) => usage_error(&message),
    }
}

#[cfg(not(unix))]
fn agent(_: args::AgentArgs) -> ExitCode {
    usage_error(&"the agent runs on Unix only")
}

/// Writes generated text to stdout; a reader that went away is no error.
fn write_out(bytes: &[u8]) -> ExitCode {
    let _ = io::stdout().lock().write_all(bytes);
    ExitCode::SUCCESS
}
