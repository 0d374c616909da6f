//! `bitstratus`: the BitStratus command-line client. It encrypts and decrypts on this machine
//! with the same crypto core and byte format as the browser app, so links work both ways:
//! a file uploaded here opens in the browser and the other way round.
//!
//! ```text
//! bitstratus upload report.pdf photos/ --expires 3d --download-limit 5
//! bitstratus download 'https://host/d/<id>#<key>' -o ~/Downloads/
//! bitstratus download 'https://host/d/<id>#<key>' -o - | tar x
//! bitstratus ls | info <id> | set-expiry <id> 7d | rm <id>
//! ```
//!
//! The server comes from `--server`, `$BITSTRATUS_URL` or `config.json` in the configuration
//! directory (`bitstratus config --set-server URL`); `download` takes it from the link. Nothing
//! secret reaches the server: the link's key stays in the fragment, names and contents are
//! encrypted, and only an auth token derived from the key (and password) is sent.
//!
//! Upload resumes, folder uploads and download verification are described in the `upload`
//! and `download` modules. Progress bars go to stderr and only to a terminal; `--json` prints
//! one JSON object per result on stdout instead of text, and a failure as one more object,
//! `{"error": {"kind", "exit_code", "message", ...}}` (see `Error::to_json`), besides the
//! sentence on stderr. Mistakes on the command line itself are reported by the argument parser,
//! as text, with exit code 2.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error (e.g. data that fails verification, a malformed link) |
//! | 2 | usage: bad arguments, no server configured |
//! | 3 | network: the server could not be reached, even after retries |
//! | 4 | not found: unknown, expired, deleted or download limit reached |
//! | 5 | wrong key or password, or too many wrong attempts (the file is locked for a while) |
//! | 6 | the server refused the request (its error code and message are shown) |
//! | 7 | local file problem: unreadable or unwritable, changed since an interrupted upload, or an output that exists or would escape the target directory |

mod api;
mod download;
mod error;
mod link;
mod manage;
mod store;
mod upload;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{EXIT_OK, EXIT_OTHER, Error, Result};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error (e.g. data failing verification, malformed link)
  2  usage error (bad arguments, no server configured)
  3  network: server unreachable after retries
  4  not found: unknown, expired, deleted or download limit reached
  5  wrong key or password, or too many wrong attempts
  6  the server refused the request
  7  local file problem (unreadable, exists, changed since an interrupted upload)";

/// End-to-end encrypted file sharing with a BitStratus server.
#[derive(Debug, Parser)]
#[command(name = "bitstratus", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Server URL, e.g. <https://files.example.org> (default: the configured one).
    #[arg(long, global = true, env = "BITSTRATUS_URL")]
    server: Option<String>,
    /// Directory holding the configuration, the uploads list and resume state.
    #[arg(long, global = true, env = "BITSTRATUS_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (one object per result) and no progress.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars and no notes on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Retries of a request that failed transiently (network, 408, 429, 5xx).
    #[arg(long, global = true, default_value_t = 8, env = "BITSTRATUS_RETRIES")]
    retries: u32,
}

#[derive(Debug, Args)]
struct PasswordArgs {
    /// Password (visible to other local users in the process list: prefer the environment
    /// variable or --ask-password).
    #[arg(long, short = 'p', env = "BITSTRATUS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Prompt for the password on the terminal (a given password takes precedence).
    #[arg(long)]
    ask_password: bool,
}

impl PasswordArgs {
    fn source(&self) -> util::PasswordSource {
        util::PasswordSource {
            given: self.password.clone().filter(|p| !p.is_empty()),
            ask: self.ask_password,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encrypt and upload files or folders; prints a share link and a manage link per file.
    ///
    /// A folder uploads as its files, each with its path relative to the folder's parent as
    /// its name. Running the same command again resumes an interrupted upload.
    Upload {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Lifetime after the upload completes: 3600, 90m, 24h, 7d (1 hour to 30 days).
        #[arg(long, short, default_value = "7d", value_parser = util::parse_duration)]
        expires: u64,
        /// Number of downloads allowed (default: unlimited).
        #[arg(long, short = 'l', value_parser = clap::value_parser!(u64).range(1..))]
        download_limit: Option<u64>,
        #[command(flatten)]
        password: PasswordArgs,
        /// Parts encrypted and sent at the same time (each holds about 4 MiB in memory).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Discard an interrupted upload of the same file and upload it anew.
        #[arg(long)]
        restart: bool,
    },
    /// Download and decrypt a shared file; running it again resumes an interrupted download.
    Download {
        /// The share link, `<server>/d/<id>#<key>`.
        link: String,
        /// Output file, directory (the file keeps its name) or `-` for stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        password: PasswordArgs,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// List your completed uploads.
    Ls,
    /// Show an upload's state, expiry and downloads (by id, id prefix or manage link).
    Info {
        /// Id, unique id prefix, or manage link.
        #[arg(allow_hyphen_values = true)]
        file: String,
    },
    /// Delete uploads on the server and from the list.
    Rm {
        /// Ids, unique id prefixes, or manage links (an id that starts with `-` goes after
        /// `--`, as in `bitstratus rm -- -x1y2`, so that options may follow the ids).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Give an upload a new lifetime, counted from now.
    SetExpiry {
        /// Id, unique id prefix, or manage link.
        #[arg(allow_hyphen_values = true)]
        file: String,
        /// New lifetime: 3600, 90m, 24h, 7d (1 hour to 30 days).
        #[arg(value_parser = util::parse_duration)]
        expires: u64,
    },
    /// Show the configuration, or set the default server.
    Config {
        /// Save this URL as the default server.
        #[arg(long)]
        set_server: Option<String>,
    },
}

/// What every command needs: the local store and the global options.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) store: store::Store,
    server: Option<String>,
    retries: u32,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

impl Context {
    /// The server for commands that do not take it from a link.
    pub(crate) fn server(&self) -> Result<String> {
        let configured = match &self.server {
            Some(server) => Some(server.clone()),
            None => self.store.config()?.server,
        };
        let server = configured.ok_or_else(|| {
            Error::Usage(
                "no server: pass --server URL, set BITSTRATUS_URL or run \
                 `bitstratus config --set-server URL`"
                    .into(),
            )
        })?;
        link::normalize_server(&server)
    }

    /// A client for `server`.
    pub(crate) fn api(&self, server: &str) -> Result<api::Api> {
        api::Api::new(server, self.retries)
    }

    /// Whether progress bars may be drawn.
    pub(crate) fn show_progress(&self) -> bool {
        !self.json && !self.quiet
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = Context {
        store: store::Store::open(cli.global.config_dir)?,
        server: cli.global.server,
        retries: cli.global.retries,
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    match cli.command {
        Command::Upload {
            paths,
            expires,
            download_limit,
            password,
            parallel,
            restart,
        } => {
            let options = upload::Options {
                expires_in: expires,
                download_limit,
                password: password.source(),
                parallel: usize::from(parallel),
                restart,
            };
            upload::run(&ctx, &paths, &options).await
        }
        Command::Download {
            link,
            output,
            password,
            force,
        } => {
            let options = download::Options {
                output,
                password: password.source(),
                force,
            };
            download::run(&ctx, &link, &options).await
        }
        Command::Ls => manage::ls(&ctx),
        Command::Info { file } => manage::info(&ctx, &file).await,
        Command::Rm { files } => manage::rm(&ctx, &files).await,
        Command::SetExpiry { file, expires } => manage::set_expiry(&ctx, &file, expires).await,
        Command::Config { set_server } => config(&ctx, set_server),
    }
}

/// `config`: shows the configuration, or saves the default server.
fn config(ctx: &Context, set_server: Option<String>) -> Result<()> {
    let mut config = ctx.store.config()?;
    if let Some(server) = set_server {
        config.server = Some(link::normalize_server(&server)?);
        ctx.store.save_config(&config)?;
    }
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            config_dir: String,
            server: Option<&'a str>,
        }
        let shown = Shown {
            config_dir: ctx.store.dir().display().to_string(),
            server: config.server.as_deref(),
        };
        let line = serde_json::to_string(&shown)
            .map_err(|e| Error::Internal(format!("could not encode the output: {e}")))?;
        println!("{line}");
    } else {
        println!("config dir: {}", ctx.store.dir().display());
        println!(
            "server:     {}",
            config.server.as_deref().unwrap_or("(none)")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bitstratus: could not start: {e}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            if json {
                println!("{}", e.to_json());
            }
            let message = e.to_string();
            eprintln!("bitstratus: {}.", message.trim_end_matches('.'));
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Ids are base64url, so one in 64 starts with `-`: `info` and `set-expiry` take it as
    /// it is, with options before or after it; `rm` takes it after `--`.
    #[test]
    fn ids_may_start_with_a_hyphen() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bitstratus").chain(args.iter().copied()))
        };
        let cli = parse(&["info", "-y1ULFqMJzJh0ehrWl2l3A", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(matches!(cli.command, Command::Info { file } if file == "-y1ULFqMJzJh0ehrWl2l3A"));
        let cli = parse(&["--json", "set-expiry", "-y1U", "2h"]).unwrap();
        assert!(
            matches!(cli.command, Command::SetExpiry { file, expires: 7200 } if file == "-y1U")
        );
        let cli = parse(&["rm", "--", "-y1U", "abc"]).unwrap();
        assert!(matches!(cli.command, Command::Rm { files } if files == ["-y1U", "abc"]));
        // Without `--`, options may follow the ids, so a hyphen id reads as an option.
        assert!(parse(&["rm", "-y1U"]).is_err());
        let cli = parse(&["rm", "abc", "--json"]).unwrap();
        assert!(cli.global.json);
    }
}
