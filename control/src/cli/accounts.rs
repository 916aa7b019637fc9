//! `trellis accounts` and `trellis tokens`: accounts (admin token) and API
//! tokens. A token's value is printed once, when it is made.

use super::error::CliError;
use super::table::Table;
use crate::client::Client;
use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};
use std::io::Write;

/// `trellis accounts ...`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (needs the admin token: `--token $(cat DATA_DIR/admin-token)`).
    Create {
        /// 12 digits, e.g. 123456789012.
        id: String,
        /// A name for people.
        #[arg(long)]
        name: String,
    },
    /// List accounts (the admin sees all, an account token its own), or show one.
    Get {
        /// An account id.
        id: Option<String>,
    },
}

/// `trellis tokens ...`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make an API token; its value is printed once and never again.
    Create {
        /// What the token is for.
        #[arg(long)]
        description: Option<String>,
        /// The account (with the admin token; an account token makes tokens for itself).
        #[arg(long)]
        account: Option<String>,
    },
    /// List the account's tokens by id (never their values).
    Get {
        /// The account (with the admin token).
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a token: the next request with it is refused.
    Revoke {
        /// The token id (`tok-...`).
        id: String,
        /// The account (with the admin token).
        #[arg(long)]
        account: Option<String>,
    },
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn account_query(account: &Option<String>) -> String {
    account
        .as_ref()
        .map(|a| format!("?account={a}"))
        .unwrap_or_default()
}

/// Run `trellis accounts`.
pub async fn accounts(
    client: &Client,
    cmd: AccountsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        AccountsCommand::Create { id, name } => {
            let body = json!({"id": id, "name": name});
            client
                .call(Method::POST, "/v1/accounts", Some(&body), &[])
                .await
                .map_err(|e| CliError::from(e).context(format!("creating account {id}")))?;
            writeln!(out, "account/{id} created")?;
        }
        AccountsCommand::Get { id } => {
            let items = match &id {
                Some(id) => vec![
                    client
                        .call(Method::GET, &format!("/v1/accounts/{id}"), None, &[])
                        .await?
                        .body,
                ],
                None => client
                    .call(Method::GET, "/v1/accounts", None, &[])
                    .await?
                    .body["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            };
            let mut t = Table::new(["ID", "NAME", "CREATED"]);
            for a in &items {
                t.row([s(a, "id"), s(a, "name"), s(a, "createdAt")]);
            }
            write!(out, "{}", t.render())?;
        }
    }
    Ok(())
}

/// Run `trellis tokens`.
pub async fn tokens(
    client: &Client,
    cmd: TokensCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        TokensCommand::Create {
            description,
            account,
        } => {
            let body = json!({"description": description, "account": account});
            let made = client
                .call(Method::POST, "/v1/tokens", Some(&body), &[])
                .await?
                .body;
            writeln!(
                out,
                "token {} created for account {}; it is shown only now:",
                s(&made, "id"),
                s(&made, "account")
            )?;
            writeln!(out, "{}", s(&made, "token"))?;
        }
        TokensCommand::Get { account } => {
            let list = client
                .call(
                    Method::GET,
                    &format!("/v1/tokens{}", account_query(&account)),
                    None,
                    &[],
                )
                .await?
                .body;
            let mut t = Table::new(["ID", "ACCOUNT", "DESCRIPTION", "CREATED"]);
            for k in list["items"].as_array().into_iter().flatten() {
                t.row([
                    s(k, "id"),
                    s(k, "account"),
                    s(k, "description"),
                    s(k, "createdAt"),
                ]);
            }
            write!(out, "{}", t.render())?;
        }
        TokensCommand::Revoke { id, account } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/tokens/{id}{}", account_query(&account)),
                    None,
                    &[],
                )
                .await?;
            writeln!(out, "token {id} revoked")?;
        }
    }
    Ok(())
}
