//! The `trellis` command line: apply files, inspect and delete resources,
//! watch proxies, and run a whole mesh on one machine with `trellis dev`.
//!
//! [`run`] is the whole CLI as a function (arguments in, output to a
//! writer, an exit code out), so tests call it in-process; the binary is a
//! thin wrapper around [`main`].

pub mod accounts;
pub mod apply;
pub mod audit;
pub mod demo;
pub mod describe;
pub mod dev;
pub mod error;
pub mod explain;
pub mod get;
pub mod join_token;
pub mod kinds;
pub mod output;
pub mod shares;
pub mod table;
pub mod targets;

use crate::client::{Client, DEFAULT_SERVER};
use clap::{Args, Parser, Subcommand};
use error::{CliError, EXIT_CODES_HELP, Exit};
use kinds::{Subject, qualified};
use output::Format;
use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use trellis_config::Kind;

pub use error::Exit as ExitCode;

/// KIND accepts, case-insensitively.
const KINDS_HELP: &str = "\
Kinds (any alias works):
  service-network          ServiceNetwork, network, sn
  target-group             TargetGroup, tg
  service                  Service, svc
  service-association      ServiceAssociation, sna
  proxy-association        ProxyAssociation, pxa
  access-log-subscription  AccessLogSubscription, access-log, als
  proxies                  proxy, px (get and describe only)
  targets                  target (get only: `trellis get targets TARGET_GROUP`
                           shows each target's health state and reason)";

/// The `trellis` command line.
#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    about = "Trellis service mesh: configure the control plane, inspect proxies, run a dev mesh",
    after_help = format!("{KINDS_HELP}\n\n{EXIT_CODES_HELP}"),
)]
pub struct Cli {
    /// Base URL of the control plane's REST API.
    #[arg(long, global = true, env = "TRELLIS_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API token of the account to act as (`trellis dev` prints one).
    #[arg(long, global = true, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update every resource in a YAML/JSON file (idempotent).
    #[command(
        after_help = "Documents are applied in dependency order (networks, target groups, services, service associations, proxy associations, access-log subscriptions), in file order within a kind. Every document is validated before anything is sent."
    )]
    Apply {
        /// The file; `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
    },
    /// List resources of a kind, or show one.
    #[command(after_help = KINDS_HELP)]
    Get {
        /// The kind (see below).
        kind: Subject,
        /// A name or id; all resources of the kind when absent.
        name: Option<String>,
        /// Output format; json and yaml print API objects `trellis apply -f` takes back.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one resource in detail, with what it is connected to.
    #[command(after_help = KINDS_HELP)]
    Describe {
        /// The kind (see below).
        kind: Subject,
        /// A name or id.
        name: String,
    },
    /// Delete a resource (refused while others refer to it).
    #[command(after_help = KINDS_HELP)]
    Delete {
        /// The kind (see below; proxies cannot be deleted).
        kind: Kind,
        /// A name or id.
        name: String,
    },
    /// List the proxies and whether they run the latest configuration
    /// (same as `get proxies`).
    Proxies {
        /// One proxy's name.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// What a proxy would do with a request, and why: the route, every
    /// auth-policy statement's verdict, and the status it would answer.
    #[command(
        after_help = "Example: trellis explain --from anonymous --to http://api.blue.trellis.internal/orders -X POST -H 'x-team: blue'"
    )]
    Explain {
        /// The caller: a workload SPIFFE id (spiffe://<td>/account/<id>/workload/<name>) or `anonymous`.
        #[arg(long, value_name = "IDENTITY")]
        from: String,
        /// The URL the application calls.
        #[arg(long, value_name = "URL")]
        to: String,
        /// HTTP method (GET when absent).
        #[arg(short = 'X', long = "request", value_name = "METHOD")]
        method: Option<String>,
        /// A request header, 'name: value' (repeatable).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// Use this registered proxy's view (default: the one named as the caller's workload).
        #[arg(long, value_name = "NAME")]
        proxy: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Create, list or revoke join tokens (how proxies get their mesh
    /// certificate).
    JoinToken {
        /// What to do.
        #[command(subcommand)]
        action: JoinTokenAction,
    },
    /// Run a control plane and a node proxy in this process, until Ctrl-C.
    Dev(DevArgs),
    /// Accounts: create (admin token), list, show.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// API tokens of an account: create (value shown once), list, revoke.
    #[command(subcommand)]
    Tokens(accounts::TokensCommand),
    /// Share a service network you own with other accounts.
    #[command(subcommand)]
    Shares(shares::SharesCommand),
    /// The account's audit log: every change, newest first.
    Audit {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// `trellis join-token ...`.
#[derive(Debug, Subcommand)]
pub enum JoinTokenAction {
    /// Create a token; its value is printed once.
    Create {
        /// Lifetime (e.g. 10m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Joins allowed; unlimited (until it expires) when absent.
        #[arg(long)]
        max_uses: Option<u32>,
        /// Free text kept with the token.
        #[arg(long)]
        description: Option<String>,
        /// Print only the token value.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The account's tokens (never their values).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Flags of `trellis dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Also start two demo backends and apply examples/demo.yaml.
    #[arg(long)]
    pub demo: bool,
    /// Directory of the store; default: a fresh temporary directory,
    /// removed on exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API address.
    #[arg(long, value_name = "ADDR", default_value = dev::DEFAULT_API)]
    pub api: SocketAddr,
    /// Proxy outbound address (where HTTP clients send requests).
    #[arg(long, value_name = "ADDR", default_value = dev::DEFAULT_PROXY)]
    pub proxy: SocketAddr,
    /// Proxy inbound address (where other proxies reach fronted targets).
    #[arg(long, value_name = "ADDR", default_value = dev::DEFAULT_INBOUND)]
    pub inbound: SocketAddr,
    /// Proxy admin address.
    #[arg(long, value_name = "ADDR", default_value = dev::DEFAULT_ADMIN)]
    pub admin: SocketAddr,
}

impl DevArgs {
    fn options(&self) -> dev::DevOptions {
        dev::DevOptions {
            demo: self.demo,
            data_dir: self.data_dir.clone(),
            api: self.api,
            proxy: self.proxy,
            inbound: self.inbound,
            admin: self.admin,
            demo_file_ports: true,
        }
    }
}

/// Parse the command line (the first item is the program name). `--help`
/// and `--version` come back as `Err` with [`Exit::Ok`] and the text to
/// print on standard output.
pub fn parse<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        let exit = if e.use_stderr() {
            Exit::Usage
        } else {
            Exit::Ok
        };
        CliError::raw(exit, e.render().to_string())
    })
}

/// Run the CLI: parse `args` (the first is the program name), do the
/// command, print results to `out`. The error carries the exit code and
/// the message for standard error. `trellis dev` runs until ctrl-c.
pub async fn run<I, T>(args: I, out: &mut impl Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(args) {
        Ok(cli) => run_cli(cli, out).await,
        Err(e) if e.exit == Exit::Ok => {
            out.write_all(e.message.as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Run a parsed command line.
pub async fn run_cli(cli: Cli, out: &mut impl Write) -> Result<(), CliError> {
    if let Command::Dev(args) = &cli.command {
        return dev::run(&args.options(), out, dev::shutdown_signal()).await;
    }
    let mut client = Client::new(&cli.server)?;
    if let Some(t) = &cli.token {
        client = client.with_token(t);
    }
    match cli.command {
        Command::Apply { file } => {
            let text = apply::read_source(&file)?;
            apply::apply_text(&client, &apply::source_label(&file), &text, out).await?;
        }
        Command::Get {
            kind: Subject::Targets,
            name,
            output,
        } => {
            let tg = name.ok_or_else(|| {
                CliError::new(
                    Exit::Usage,
                    "name the target group: trellis get targets TARGET_GROUP",
                )
            })?;
            targets::get(&client, &tg, output, out)
                .await
                .map_err(|e| not_found_hint(e, Subject::Targets, Some(&tg)))?;
        }
        Command::Get { kind, name, output } => {
            get::get(&client, kind, name.as_deref(), output, out)
                .await
                .map_err(|e| not_found_hint(e, kind, name.as_deref()))?;
        }
        Command::Proxies { name, output } => {
            get::get(&client, Subject::Proxies, name.as_deref(), output, out)
                .await
                .map_err(|e| not_found_hint(e, Subject::Proxies, name.as_deref()))?;
        }
        Command::Describe { kind, name } => {
            describe::describe(&client, kind, &name, out)
                .await
                .map_err(|e| not_found_hint(e, kind, Some(&name)))?;
        }
        Command::Delete { kind, name } => {
            client.delete(kind, &name).await.map_err(|e| {
                CliError::from(e).context(format!("deleting {}", qualified(kind, &name)))
            })?;
            writeln!(out, "{} deleted", qualified(kind, &name))?;
        }
        Command::Accounts(cmd) => accounts::accounts(&client, cmd, out).await?,
        Command::Tokens(cmd) => accounts::tokens(&client, cmd, out).await?,
        Command::Shares(cmd) => shares::shares(&client, cmd, out).await?,
        Command::Audit { limit } => audit::audit(&client, limit, out).await?,
        Command::Explain {
            from,
            to,
            method,
            headers,
            proxy,
            output,
        } => {
            let req = crate::explain::ExplainRequest {
                from,
                url: to,
                method,
                headers: explain::headers(&headers)?,
                proxy,
            };
            explain::run(&client, &req, output, out)
                .await
                .map_err(|e| CliError::from(e).context("explaining the request".to_string()))?;
        }
        Command::JoinToken { action } => match action {
            JoinTokenAction::Create {
                ttl,
                max_uses,
                description,
                quiet,
            } => join_token::create(&client, ttl, max_uses, description, quiet, out).await?,
            JoinTokenAction::List => join_token::list(&client, out).await?,
            JoinTokenAction::Revoke { id } => join_token::revoke(&client, &id, out).await?,
        },
        Command::Dev(_) => {}
    }
    Ok(())
}

/// A 404 on a named resource says which, and how to list what exists.
fn not_found_hint(e: anyhow::Error, subject: Subject, name: Option<&str>) -> CliError {
    let err = CliError::from(e);
    match (err.exit, name) {
        (Exit::NotFound, Some(n)) => {
            let list = match subject {
                Subject::Proxies => "trellis proxies".to_string(),
                Subject::Targets => "trellis get target-groups".to_string(),
                Subject::Kind(k) => format!("trellis get {}", k.collection()),
            };
            CliError::new(
                Exit::NotFound,
                format!("{subject} '{n}' not found; list them with `{list}`"),
            )
        }
        _ => err,
    }
}

/// The `trellis` binary: parse `std::env::args`, set up logging (to
/// stderr; `RUST_LOG` overrides), run, print the error, exit with its code.
pub async fn main() -> std::process::ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut out = std::io::stdout();
    let result = match parse(args) {
        Ok(cli) => {
            let dev = matches!(cli.command, Command::Dev(_));
            init_tracing(if dev { "info" } else { "warn" });
            run_cli(cli, &mut out).await
        }
        Err(e) if e.exit == Exit::Ok => {
            let _ = out.write_all(e.message.as_bytes());
            Ok(())
        }
        Err(e) => Err(e),
    };
    let _ = out.flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.message.trim_end();
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            std::process::ExitCode::from(e.exit.code())
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
