//! `trellis join-token create|list|revoke`: the join tokens proxies use
//! to get their mesh certificate (`POST /v1/join-tokens` and friends).

use super::error::CliError;
use super::table::{Table, expires};
use crate::client::Client;
use http::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, SystemTime};

/// `trellis join-token create`: prints the token value (shown once) on
/// its own line, so `TOKEN=$(trellis join-token create -q)` works.
pub async fn create(
    client: &Client,
    ttl: Duration,
    max_uses: Option<u32>,
    description: Option<String>,
    quiet: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let body =
        json!({"ttlSeconds": ttl.as_secs(), "maxUses": max_uses, "description": description});
    let resp = client
        .call(Method::POST, "/v1/join-tokens", Some(&body), &[])
        .await
        .map_err(|e| CliError::from(e).context("creating a join token"))?;
    let token = resp.body["token"].as_str().unwrap_or_default();
    if quiet {
        writeln!(out, "{token}")?;
        return Ok(());
    }
    writeln!(
        out,
        "join token {} for account {}, expires {}, {}:",
        resp.body["id"].as_str().unwrap_or("?"),
        resp.body["account"].as_str().unwrap_or("?"),
        resp.body["expiresAt"].as_str().unwrap_or("?"),
        match max_uses {
            Some(1) => "one use".to_string(),
            Some(n) => format!("{n} uses"),
            None => "unlimited uses".to_string(),
        }
    )?;
    writeln!(out, "{token}")?;
    writeln!(
        out,
        "It is shown only now. Start a proxy with TRELLIS_JOIN_TOKEN=<token> trellis-proxy ..."
    )?;
    Ok(())
}

/// Rows of `trellis join-token list`.
pub fn table(items: &[Value], now: SystemTime) -> Table {
    let mut t = Table::new(["ID", "STATUS", "USES", "EXPIRES", "DESCRIPTION"]);
    for i in items {
        let uses = match i["maxUses"].as_u64() {
            Some(max) => format!("{}/{max}", i["uses"]),
            None => format!("{}/-", i["uses"]),
        };
        t.row([
            i["id"].as_str().unwrap_or("?").to_string(),
            i["status"].as_str().unwrap_or("?").to_string(),
            uses,
            expires(i["expiresAt"].as_str(), now),
            i["description"].as_str().unwrap_or("-").to_string(),
        ]);
    }
    t
}

/// `trellis join-token list`.
pub async fn list(client: &Client, out: &mut impl Write) -> Result<(), CliError> {
    let resp = client
        .call(Method::GET, "/v1/join-tokens", None, &[])
        .await
        .map_err(|e| CliError::from(e).context("listing join tokens"))?;
    let items = resp.body["items"].as_array().cloned().unwrap_or_default();
    write!(out, "{}", table(&items, SystemTime::now()).render())?;
    Ok(())
}

/// `trellis join-token revoke ID`.
pub async fn revoke(client: &Client, id: &str, out: &mut impl Write) -> Result<(), CliError> {
    client
        .call(Method::DELETE, &format!("/v1/join-tokens/{id}"), None, &[])
        .await
        .map_err(|e| CliError::from(e).context(format!("revoking join token {id}")))?;
    writeln!(out, "join token {id} revoked")?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn list_shows_state_uses_and_expiry_never_a_value() {
        let now = humantime::parse_rfc3339("2025-01-01T01:00:00Z").unwrap();
        let items = vec![
            json!({"id": "ab12", "status": "active", "uses": 0, "maxUses": 1, "expiresAt": "2025-01-01T02:00:00Z", "description": "node-7"}),
            json!({"id": "cd34", "status": "expired", "uses": 3, "maxUses": null, "expiresAt": "2025-01-01T00:59:00Z"}),
        ];
        assert_eq!(
            table(&items, now).render(),
            "ID     STATUS    USES   EXPIRES           DESCRIPTION\n\
             ab12   active    0/1    in 1h             node-7\n\
             cd34   expired   3/-    expired 60s ago   -\n"
        );
    }
}
