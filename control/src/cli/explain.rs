//! `trellis explain --from <identity> --to <url> [-X METHOD] [-H 'name: value']...`:
//! what a proxy would do with a request (`POST /v1/explain`), as a
//! readable tree, or the API's JSON/YAML with `-o`.
//!
//! ```text
//! GET http://api.blue.trellis.internal/orders from anonymous
//! view: proxy web (registered), account 000000000000, networks: blue
//! route: service api, listener http :80, rule get-orders, network blue
//!   forward: orders-v1 (weight 90, checked at outbound), orders-v2 (weight 10, ...)
//! policy: denied — service; Statement[1] (DenyPost)
//!   network blue  NONE  not checked
//!   service api   IAM
//!     Statement[0] (ReadOnly)  Allow  no: condition StringEquals on trellis:RequestMethod does not hold
//!     Statement[1] (DenyPost)  Deny   applies
//! => 403 access_denied: ...
//! ```

use super::error::{CliError, Exit};
use super::output::{Format, render};
use crate::client::Client;
use crate::explain::{ExplainRequest, ExplainResponse};
use std::fmt::Write as _;

/// Parse `-H 'name: value'` values into the request's header object
/// (repeated names become lists).
pub fn headers(raw: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let mut out = serde_json::Map::new();
    for h in raw {
        let Some((name, value)) = h.split_once(':') else {
            return Err(CliError::new(
                Exit::Usage,
                format!("-H '{h}': expected 'name: value'"),
            ));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        match out.get_mut(&name) {
            None => {
                out.insert(name, serde_json::Value::String(value));
            }
            Some(serde_json::Value::Array(a)) => a.push(value.into()),
            Some(prev) => {
                let first = prev.take();
                *prev = serde_json::Value::Array(vec![first, value.into()]);
            }
        }
    }
    Ok(out)
}

/// Ask the control plane and print the answer.
pub async fn run(
    client: &Client,
    req: &ExplainRequest,
    format: Format,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let body = serde_json::to_value(req)?;
    let resp = client
        .call(http::Method::POST, "/v1/explain", Some(&body), &[])
        .await?;
    let text = match format {
        Format::Table => {
            let r: ExplainResponse = serde_json::from_value(resp.body)?;
            tree(req, &r)
        }
        f => render(&[resp.body], false, f)?,
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The readable form.
pub fn tree(req: &ExplainRequest, r: &ExplainResponse) -> String {
    let mut s = String::new();
    let method = req.method.as_deref().unwrap_or("GET");
    let _ = writeln!(s, "{method} {} from {}", req.url, r.caller);
    let v = &r.view;
    let _ = writeln!(
        s,
        "view: proxy {} ({}), account {}, networks: {}",
        v.proxy,
        if v.registered {
            "registered"
        } else {
            "not registered"
        },
        v.account,
        if v.service_networks.is_empty() {
            "none".to_string()
        } else {
            v.service_networks.join(", ")
        }
    );
    if let Some(route) = &r.route {
        let _ = writeln!(
            s,
            "route: service {}, listener {} :{}, rule {}, network {}",
            route.service,
            route.listener,
            route.port,
            route.rule.as_deref().unwrap_or("(default action)"),
            route.service_network.as_deref().unwrap_or("-")
        );
        if let Some(status) = route.fixed_response {
            let _ = writeln!(s, "  fixed response: {status}");
        }
        if !route.target_groups.is_empty() {
            let groups: Vec<String> = route
                .target_groups
                .iter()
                .map(|g| {
                    format!(
                        "{} (weight {}, checked at {})",
                        g.name, g.weight, g.checked_at
                    )
                })
                .collect();
            let _ = writeln!(s, "  forward: {}", groups.join(", "));
        }
    }
    if let Some(a) = &r.authorization {
        let _ = writeln!(s, "policy: {} — {}", a.decision, a.summary);
        for l in &a.levels {
            let auth = match l.auth_type {
                trellis_config::AuthType::None => "NONE  not checked",
                trellis_config::AuthType::Iam if !l.has_policy => {
                    "IAM   no policy: denies everything"
                }
                trellis_config::AuthType::Iam => "IAM",
            };
            let _ = writeln!(s, "  {} {}  {auth}", l.level, l.name);
            for st in &l.statements {
                let name = match &st.sid {
                    Some(sid) => format!("Statement[{}] ({sid})", st.index),
                    None => format!("Statement[{}]", st.index),
                };
                let verdict = if st.applies {
                    "applies".to_string()
                } else {
                    format!("no: {}", st.why)
                };
                let _ = writeln!(s, "    {name}  {}  {verdict}", st.effect);
            }
        }
    }
    let _ = writeln!(s, "=> {} {}: {}", r.status, r.outcome, r.message);
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_become_lists_and_bad_ones_are_usage_errors() {
        let h = headers(&[
            "X-Team: blue".to_string(),
            "x-team:red".to_string(),
            "x-team: green ".to_string(),
            "accept: */*".to_string(),
        ])
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(h),
            serde_json::json!({"x-team": ["blue", "red", "green"], "accept": "*/*"})
        );
        let e = headers(&["no-colon".to_string()]).unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
    }
}
