//! `trellis shares`: share a service network with other accounts.

use super::error::CliError;
use super::table::Table;
use crate::client::Client;
use clap::Subcommand;
use http::Method;
use serde_json::json;
use std::io::Write;

/// `trellis shares ...`
#[derive(Debug, Subcommand)]
pub enum SharesCommand {
    /// Share a network you own with an account.
    Create {
        /// The network (name or id).
        network: String,
        /// The account to share with (12 digits).
        #[arg(long)]
        account: String,
    },
    /// List the accounts a network you own is shared with.
    Get {
        /// The network (name or id).
        network: String,
    },
    /// Stop sharing a network with an account.
    Revoke {
        /// The network (name or id).
        network: String,
        /// The account.
        account: String,
    },
}

/// Run `trellis shares`.
pub async fn shares(
    client: &Client,
    cmd: SharesCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        SharesCommand::Create { network, account } => {
            let r = client
                .call(
                    Method::POST,
                    &format!("/v1/service-networks/{network}/shares"),
                    Some(&json!({ "account": account })),
                    &[],
                )
                .await?;
            let id = r.body["network"].as_str().unwrap_or_default();
            let verb = if r.status == 201 {
                "shared"
            } else {
                "already shared"
            };
            writeln!(
                out,
                "service-network/{network} {verb} with {account}; it names the network {id}"
            )?;
        }
        SharesCommand::Get { network } => {
            let list = client
                .call(
                    Method::GET,
                    &format!("/v1/service-networks/{network}/shares"),
                    None,
                    &[],
                )
                .await?
                .body;
            let mut t = Table::new(["ACCOUNT", "NETWORK", "SINCE"]);
            for s in list["items"].as_array().into_iter().flatten() {
                let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                t.row([f("account"), f("network"), f("createdAt")]);
            }
            write!(out, "{}", t.render())?;
        }
        SharesCommand::Revoke { network, account } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/service-networks/{network}/shares/{account}"),
                    None,
                    &[],
                )
                .await?;
            writeln!(
                out,
                "service-network/{network} no longer shared with {account}"
            )?;
        }
    }
    Ok(())
}
