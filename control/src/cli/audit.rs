//! `trellis audit`: the account's changes, newest first.

use super::error::CliError;
use super::table::Table;
use crate::client::Client;
use http::Method;
use std::io::Write;

/// Print up to `limit` of the newest audit records as a table.
pub async fn audit(client: &Client, limit: usize, out: &mut impl Write) -> Result<(), CliError> {
    let page = client
        .call(Method::GET, &format!("/v1/audit?limit={limit}"), None, &[])
        .await?
        .body;
    let mut t = Table::new(["AT", "TOKEN", "ACTION", "KIND", "NAME", "ID", "VERSION"]);
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    for r in page["items"].as_array().into_iter().flatten() {
        let version = match (r["beforeVersion"].as_u64(), r["afterVersion"].as_u64()) {
            (Some(b), Some(a)) => format!("{b} -> {a}"),
            (None, Some(a)) => format!("-> {a}"),
            (Some(b), None) => format!("{b} ->"),
            (None, None) => String::new(),
        };
        t.row([
            s(r, "at"),
            s(r, "tokenId"),
            s(r, "action"),
            s(r, "kind"),
            s(r, "name"),
            s(r, "resourceId"),
            version,
        ]);
    }
    write!(out, "{}", t.render())?;
    Ok(())
}
