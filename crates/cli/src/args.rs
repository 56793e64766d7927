//! The command line, as clap parses it: flags only, every value a string
//! checked later (in `config`), so that no error message quotes a value (a
//! misplaced value may be a secret).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

/// `tokenkeeper`: OAuth2 access tokens for scripts and for programs in any
/// language.
#[derive(Debug, Parser)]
#[command(
    name = "tokenkeeper",
    // Not argv[0]: a copy or link under another name is the same tool.
    bin_name = "tokenkeeper",
    version,
    about = "OAuth2 access tokens for scripts and services: print one, or keep one fresh in files",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `tokenkeeper`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an access token alone on stdout (or watch the manager keep one fresh)
    Token(TokenArgs),
    /// Keep a token fresh in files (sinks) until SIGTERM or SIGINT
    Agent(AgentArgs),
    /// Print a completion script for SHELL on stdout
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Man,
}

/// `token` as the example `examples/token.rs` runs it: the flags alone.
#[derive(Debug, Parser)]
#[command(
    name = "token",
    bin_name = "token",
    about = "Print an OAuth2 access token alone on stdout (or watch the manager keep one fresh)"
)]
pub struct TokenCli {
    #[command(flatten)]
    pub args: TokenArgs,
}

/// The flags of `tokenkeeper token`.
#[derive(Debug, Default, clap::Args)]
#[command(after_help = TOKEN_AFTER_HELP)]
pub struct TokenArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Keep the token fresh for SECS seconds and print one JSON event per
    /// line (token values never printed)
    #[arg(long, value_name = "SECS")]
    pub watch: Option<String>,
    /// With --dpop-key-file: print a second line, a DPoP proof for a
    /// request of METHOD to URL made with the printed token (one proof per
    /// request: run again for another)
    #[arg(long, num_args = 2, value_names = ["METHOD", "URL"])]
    pub dpop_proof: Option<Vec<String>>,
}

/// The flags of `tokenkeeper agent`.
#[derive(Debug, Default, clap::Args)]
#[command(after_help = AGENT_AFTER_HELP)]
pub struct AgentArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write the token to FILE (mode 0600, replaced atomically) each time
    /// one is published; may be repeated
    #[arg(long, value_name = "FILE")]
    pub sink: Vec<PathBuf>,
    /// token (the access token alone, no newline) or json (the token
    /// response: access_token, token_type, expires_at, scope, ...)
    #[arg(long, value_name = "FORMAT")]
    pub sink_format: Option<String>,
}

/// Where the token comes from: the flags `token` and `agent` share.
#[derive(Debug, Default, clap::Args)]
pub struct SourceArgs {
    /// Read flags from the TOML file PATH (keys are the flags' names, e.g.
    /// token-url = "..."); the command line wins; never a secret
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The token endpoint (https; http only to loopback)
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// Instead of --token-url: the authority's issuer identifier; its token
    /// endpoint comes from its metadata (RFC 8414, else OpenID discovery),
    /// and the client authentication must be one it lists
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// The client identifier (may be left out with --auth none)
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// basic (client_secret_basic, the default), post (client_secret_post),
    /// client_secret_jwt, private_key_jwt, or none
    #[arg(long, value_name = "METHOD")]
    pub auth: Option<String>,
    /// private_key_jwt: sign with the key in PATH (PEM: PKCS#8, PKCS#1 or
    /// SEC1; or DER); implies --auth private_key_jwt
    #[arg(long, value_name = "PATH")]
    pub private_key_file: Option<PathBuf>,
    /// private_key_jwt: the kid header
    #[arg(long, value_name = "KID")]
    pub key_id: Option<String>,
    /// private_key_jwt: ES256, RS256, PS256 or EdDSA (default: from the key)
    #[arg(long, value_name = "ALG")]
    pub alg: Option<String>,
    /// Authenticate with the assertion in PATH, read again for every
    /// request (workload identity); takes no secret
    #[arg(long, value_name = "PATH")]
    pub client_assertion_file: Option<PathBuf>,
    /// The aud of signed assertions (default: the issuer with --issuer,
    /// else the token URL)
    #[arg(long, value_name = "AUD")]
    pub assertion_audience: Option<String>,
    /// client-credentials (the default) or token-exchange (RFC 8693)
    #[arg(long, value_name = "GRANT")]
    pub grant: Option<String>,
    /// token-exchange: the subject token, read from PATH for every request
    #[arg(long, value_name = "PATH")]
    pub subject_token_file: Option<PathBuf>,
    /// token-exchange: its type (default:
    /// urn:ietf:params:oauth:token-type:jwt)
    #[arg(long, value_name = "URI")]
    pub subject_token_type: Option<String>,
    /// token-exchange: the type of token to ask for
    #[arg(long, value_name = "URI")]
    pub requested_token_type: Option<String>,
    /// Space-separated scopes to ask for
    #[arg(long, value_name = "S")]
    pub scope: Option<String>,
    /// The audience parameter; may be repeated with token-exchange
    #[arg(long, value_name = "A")]
    pub audience: Vec<String>,
    /// A resource indicator (RFC 8707); may be repeated
    #[arg(long, value_name = "R")]
    pub resource: Vec<String>,
    /// Read the secret from PATH (one trailing newline is trimmed); takes
    /// precedence over TOKENKEEPER_CLIENT_SECRET
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// Bind the token to the DPoP key (RFC 9449) in PATH, created (ES256,
    /// mode 0600) if missing; refused if others may read it. The token
    /// then goes with `Authorization: DPoP` and a proof (--dpop-proof)
    #[arg(long, value_name = "PATH")]
    pub dpop_key_file: Option<PathBuf>,
    /// Share the token with other processes through the JSON file PATH
    /// (mode 0600; one file per client and scope)
    #[arg(long, value_name = "PATH")]
    pub cache_file: Option<PathBuf>,
    /// Share the token through Redis (redis://[:PASSWORD@]HOST:PORT/DB);
    /// also read from TOKENKEEPER_REDIS_URL, which keeps a password out of
    /// argv. Never printed. Needs the `redis` feature
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

const TOKEN_AFTER_HELP: &str = "\
The client secret is read from the environment variable
TOKENKEEPER_CLIENT_SECRET, or from --client-secret-file; never from the
command line. Warnings go to stderr as lines starting with 'token: warning:'.
Proxies: https_proxy, http_proxy, all_proxy and no_proxy as curl reads them;
a loopback token URL never goes through a proxy.

DPoP: with --dpop-key-file PATH --dpop-proof METHOD URL, stdout holds two
lines, the token then the proof, for a script to read:
  URL=https://api.example.com/orders
  tokenkeeper token ... --dpop-key-file key.pem --dpop-proof GET \"$URL\" | {
    read -r TOKEN; read -r PROOF
    curl -H \"Authorization: DPoP $TOKEN\" -H \"DPoP: $PROOF\" \"$URL\"; }

exit codes: 0 token printed or watch done; 1 refused by the authority
(e.g. invalid_client, or metadata that does not fit the issuer); 2 bad
usage; 3 no token within 10 s (transient failures or no answer)";

const AGENT_AFTER_HELP: &str = "\
The agent logs one line per event on stderr (never a token), waits on the
manager's events, and exits 0 on SIGTERM or SIGINT, leaving the sinks in
place. The client secret comes from TOKENKEEPER_CLIENT_SECRET or
--client-secret-file, never from the command line or the config file.

exit codes: 0 stopped by a signal; 1 refused by the authority before the
first token; 2 bad usage";

/// What parsing the command line gave.
pub enum Parsed<T> {
    Run(T),
    /// Help or version text, printed to stdout; exit 0.
    Text(String),
    /// A usage error: the message, never quoting a value.
    Usage(String),
}

/// Parses `args` (the program name first) into `T`.
pub fn parse<T: Parser>(args: impl IntoIterator<Item = OsString>) -> Parsed<T> {
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(flag) = empty_value(&args) {
        return Parsed::Usage(format!("{flag} needs a value"));
    }
    match T::try_parse_from(args) {
        Ok(parsed) => Parsed::Run(parsed),
        Err(error) => from_clap(&error),
    }
}

/// The flag given an empty value (`--scope ""`, `--scope=`), which clap
/// would take: every flag here takes a value, and an empty one is a
/// mistake (an unset variable in a script, say).
fn empty_value(args: &[OsString]) -> Option<String> {
    let flag = |arg: &OsString| {
        arg.to_str()
            .filter(|a| a.starts_with("--"))
            .map(str::to_owned)
    };
    for (i, arg) in args.iter().enumerate().skip(1) {
        let Some(arg) = flag(arg) else { continue };
        match arg.split_once('=') {
            Some((name, "")) => return Some(name.to_owned()),
            Some(_) => {}
            None if args.get(i + 1).is_some_and(|next| next.is_empty()) => return Some(arg),
            None => {}
        }
    }
    None
}

/// clap's error as this tool says it: clap quotes values ("invalid value
/// 'x'"), and a misplaced value may be a secret, so messages are made here
/// from the flag names alone.
fn from_clap<T>(error: &clap::Error) -> Parsed<T> {
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        Some(ContextValue::Strings(texts)) => texts.first().cloned(),
        _ => None,
    };
    // "--token-url <URL>" or "--frobnicate=value": the flag alone.
    let flag = |text: Option<String>| {
        let text = text.unwrap_or_default();
        let word = text.split([' ', '=']).next().unwrap_or_default();
        word.to_owned()
    };
    let message = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return Parsed::Text(error.render().to_string())
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            "a subcommand is required (token, agent, completions, man); see --help".to_owned()
        }
        ErrorKind::UnknownArgument => {
            let flag = flag(context(ContextKind::InvalidArg));
            match flag.as_str() {
                "--client-secret" | "--secret" => format!(
                    "{flag} is refused: a secret on the command line is visible to every local \
                     user (ps, /proc) and stays in shell history; set {} or use \
                     --client-secret-file PATH",
                    super::sources::SECRET_ENV
                ),
                flag if flag.starts_with('-') && flag.len() > 1 => {
                    format!("unknown option {flag}")
                }
                _ => "unexpected argument (not an option)".to_owned(),
            }
        }
        ErrorKind::InvalidSubcommand => "unknown subcommand; see --help".to_owned(),
        ErrorKind::ArgumentConflict => {
            let this = flag(context(ContextKind::InvalidArg));
            let prior = flag(context(ContextKind::PriorArg));
            if this == prior || prior.is_empty() {
                format!("{this} is given twice")
            } else {
                format!("{this} cannot be used with {prior}")
            }
        }
        ErrorKind::InvalidUtf8 => "an argument is not valid UTF-8".to_owned(),
        ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::ValueValidation => {
            match flag(context(ContextKind::InvalidArg)) {
                name if name.starts_with('-') => format!("{name} needs a value"),
                // A positional argument, such as the completions' shell.
                _ => "an argument has a value this command does not take; see --help".to_owned(),
            }
        }
        ErrorKind::MissingRequiredArgument => {
            "a required argument is missing; see --help".to_owned()
        }
        _ => "bad usage; see --help".to_owned(),
    };
    Parsed::Usage(message)
}
