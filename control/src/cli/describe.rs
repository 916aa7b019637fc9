//! `trellis describe KIND NAME`: one resource as a person reads it, with
//! what it is connected to (a service's DNS names, a target group's users,
//! a network's services and proxies).

use super::get::{
    access_log_destination_text, access_log_resource_text, action_text, spec_of, str_field, wire,
};
use super::kinds::Subject;
use super::output::ordered;
use super::table::{Table, ago};
use crate::client::Client;
use crate::target_health::TargetList;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::SystemTime;
use trellis_config::{
    AccessLogSubscriptionSpec, HeaderMatch, Kind, MatchType, PathMatchType, ProxyAssociationSpec,
    ProxyStatus, RuleMatch, ServiceAssociationSpec, ServiceNetworkSpec, ServiceSpec, Spec,
    TargetGroupSpec, dns_name,
};

/// Fetch one resource (and what it is connected to) and print it.
pub async fn describe(
    client: &Client,
    subject: Subject,
    name: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let kind = match subject {
        Subject::Proxies => {
            out.write_all(describe_proxy(&client.proxy(name).await?, now).as_bytes())?;
            return Ok(());
        }
        Subject::Kind(kind) => kind,
        // `describe targets TG` shows the group, whose targets come with their health.
        Subject::Targets => Kind::TargetGroup,
    };
    let v = client.get(kind, name).await?;
    let related = match kind {
        Kind::Service | Kind::ServiceNetwork => client.list(Kind::ServiceAssociation).await?,
        Kind::TargetGroup => client.list(Kind::Service).await?,
        _ => Vec::new(),
    };
    let proxy_assocs = match kind {
        Kind::ServiceNetwork => client.list(Kind::ProxyAssociation).await?,
        _ => Vec::new(),
    };
    let targets = match kind {
        // Without health (a control plane that predates it) the spec's
        // targets are still shown.
        Kind::TargetGroup => client.targets(name).await.ok(),
        _ => None,
    };
    let text = describe_resource_with(kind, &v, &related, &proxy_assocs, targets.as_ref(), now);
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Column where values start, so a whole description lines up.
const VALUE_COLUMN: usize = 20;

/// `label:` padded so values start at [`VALUE_COLUMN`].
fn fields(out: &mut String, indent: &str, rows: &[(&str, String)]) {
    for (label, value) in rows {
        field(out, indent, label, value);
    }
}

fn field(out: &mut String, indent: &str, label: &str, value: &str) {
    let w = VALUE_COLUMN.saturating_sub(indent.len());
    let _ = writeln!(out, "{indent}{:<w$}{value}", format!("{label}:"));
}

fn when(v: &Value, key: &str, now: SystemTime) -> String {
    match v.get(key).and_then(Value::as_str) {
        Some(t) => format!("{t} ({})", ago(Some(t), now)),
        None => "-".into(),
    }
}

/// The text of `describe` for a stored resource. `related` holds the
/// service associations (for a service or a network) or the services (for
/// a target group); `proxy_assocs` the proxy associations (for a network).
pub fn describe_resource(
    kind: Kind,
    v: &Value,
    related: &[Value],
    proxy_assocs: &[Value],
    now: SystemTime,
) -> String {
    describe_resource_with(kind, v, related, proxy_assocs, None, now)
}

/// [`describe_resource`], with a target group's targets and their health
/// when they could be fetched (they replace the raw `status`, which holds
/// the draining targets in machine form).
pub fn describe_resource_with(
    kind: Kind,
    v: &Value,
    related: &[Value],
    proxy_assocs: &[Value],
    targets: Option<&TargetList>,
    now: SystemTime,
) -> String {
    let name = str_field(v, "name");
    let mut out = String::new();
    fields(
        &mut out,
        "",
        &[
            ("Name", name.to_string()),
            ("Kind", kind.to_string()),
            ("ID", str_field(v, "id").to_string()),
            ("Account", str_field(v, "account").to_string()),
            (
                "Version",
                v.get("version").map(|x| x.to_string()).unwrap_or_default(),
            ),
            ("Created", when(v, "createdAt", now)),
            ("Updated", when(v, "updatedAt", now)),
        ],
    );
    match kind {
        Kind::Service => match spec_of::<ServiceSpec>(v) {
            Some(s) => service(&mut out, &s, related),
            None => unreadable(&mut out, v),
        },
        Kind::TargetGroup => match spec_of::<TargetGroupSpec>(v) {
            Some(s) => target_group(&mut out, &s, related, targets, now),
            None => unreadable(&mut out, v),
        },
        Kind::ServiceNetwork => match spec_of::<ServiceNetworkSpec>(v) {
            Some(s) => network(&mut out, &s, related, proxy_assocs),
            None => unreadable(&mut out, v),
        },
        Kind::ServiceAssociation => match spec_of::<ServiceAssociationSpec>(v) {
            Some(s) => fields(
                &mut out,
                "",
                &[
                    ("Service network", s.service_network.clone()),
                    ("Service", s.service.clone()),
                    ("DNS name", dns_name(&s.service, &s.service_network)),
                ],
            ),
            None => unreadable(&mut out, v),
        },
        Kind::ProxyAssociation => match spec_of::<ProxyAssociationSpec>(v) {
            Some(s) => fields(
                &mut out,
                "",
                &[
                    ("Service network", s.service_network.clone()),
                    ("Applies to", applies_to(&s)),
                ],
            ),
            None => unreadable(&mut out, v),
        },
        Kind::AccessLogSubscription => match spec_of::<AccessLogSubscriptionSpec>(v) {
            Some(s) => fields(
                &mut out,
                "",
                &[
                    ("Resource", access_log_resource_text(&s.resource)),
                    ("Destination", access_log_destination_text(&s.destination)),
                ],
            ),
            None => unreadable(&mut out, v),
        },
    }
    let status_shown = kind == Kind::TargetGroup && targets.is_some();
    if let Some(status) = v.get("status").filter(|s| !s.is_null() && !status_shown) {
        out.push_str("Status:\n");
        indent_yaml(&mut out, status);
    }
    out
}

fn unreadable(out: &mut String, v: &Value) {
    out.push_str("Spec (not in the shape this CLI knows):\n");
    indent_yaml(out, v);
}

fn indent_yaml(out: &mut String, v: &Value) {
    let y = serde_yaml_ng::to_string(&ordered(v)).unwrap_or_default();
    for line in y.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn applies_to(s: &ProxyAssociationSpec) -> String {
    match (&s.proxy, &s.proxy_group) {
        (Some(p), _) => format!("proxy {p}"),
        (None, Some(g)) => format!("every proxy of group {g}"),
        (None, None) => "-".into(),
    }
}

fn service(out: &mut String, s: &ServiceSpec, assocs: &[Value]) {
    let mut names: Vec<String> = assocs
        .iter()
        .filter_map(spec_of::<ServiceAssociationSpec>)
        .filter(|a| a.service == s.name)
        .map(|a| {
            format!(
                "{} (network {})",
                dns_name(&s.name, &a.service_network),
                a.service_network
            )
        })
        .collect();
    if let Some(d) = &s.custom_domain {
        names.push(format!("{d} (custom domain)"));
    }
    fields(
        out,
        "",
        &[
            ("Auth type", wire(&s.auth_type)),
            (
                "Custom domain",
                s.custom_domain.clone().unwrap_or_else(|| "-".into()),
            ),
        ],
    );
    if names.is_empty() {
        field(
            out,
            "",
            "Host names",
            "none yet: associate the service with a service network",
        );
    } else {
        out.push_str("Host names:\n");
        for n in names {
            let _ = writeln!(out, "  {n}");
        }
    }
    if s.listeners.is_empty() {
        field(out, "", "Listeners", "none (the service answers no port)");
        return;
    }
    out.push_str("Listeners:\n");
    for l in &s.listeners {
        let port = if l.port == 0 {
            l.protocol.default_port()
        } else {
            l.port
        };
        let _ = writeln!(out, "  {} ({}, port {port})", l.name, wire(&l.protocol));
        let mut rules = l.rules.clone();
        rules.sort_by_key(|r| r.priority);
        if rules.is_empty() {
            out.push_str("    Rules: none\n");
        } else {
            out.push_str("    Rules, in priority order:\n");
            let mut t = Table::new(["PRIORITY", "RULE", "MATCH", "ACTION"]);
            for r in &rules {
                t.row([
                    r.priority.to_string(),
                    r.name.clone(),
                    match_text(&r.matches),
                    action_text(&r.action),
                ]);
            }
            for line in t.render().lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
        let _ = writeln!(
            out,
            "    Default action: {}",
            action_text(&l.default_action)
        );
    }
}

/// `header x-canary = "true" and path starts with /v2/`.
pub fn match_text(m: &RuleMatch) -> String {
    let mut parts = Vec::new();
    if let Some(method) = &m.method {
        parts.push(format!("method {method}"));
    }
    if let Some(p) = &m.path {
        let op = match p.kind {
            PathMatchType::Exact => "is",
            PathMatchType::Prefix => "starts with",
        };
        let case = if p.case_sensitive { "" } else { " (any case)" };
        parts.push(format!("path {op} {}{case}", p.value));
    }
    for h in &m.headers {
        parts.push(header_text(h));
    }
    if parts.is_empty() {
        "anything".into()
    } else {
        parts.join(" and ")
    }
}

fn header_text(h: &HeaderMatch) -> String {
    let op = match h.kind {
        MatchType::Exact => "=",
        MatchType::Prefix => "starts with",
        MatchType::Contains => "contains",
    };
    let case = if h.case_sensitive {
        " (case-sensitive)"
    } else {
        ""
    };
    format!("header {} {op} {:?}{case}", h.name, h.value)
}

fn target_group(
    out: &mut String,
    s: &TargetGroupSpec,
    services: &[Value],
    targets: Option<&TargetList>,
    now: SystemTime,
) {
    fields(
        out,
        "",
        &[
            (
                "Protocol",
                format!("{}/{}", wire(&s.protocol), wire(&s.protocol_version)),
            ),
            ("Port", s.port.to_string()),
            ("Algorithm", wire(&s.algorithm)),
        ],
    );
    let h = &s.health_check;
    out.push_str("Health check:\n");
    if h.enabled {
        fields(
            out,
            "  ",
            &[
                (
                    "Request",
                    format!(
                        "GET {} on {} ({}/{})",
                        h.path,
                        h.port.map_or_else(
                            || "the target's port".to_string(),
                            |p| format!("port {p}")
                        ),
                        wire(&h.protocol.unwrap_or(s.protocol)),
                        wire(&h.protocol_version.unwrap_or_default())
                    ),
                ),
                (
                    "Every",
                    format!("{}s, timeout {}s", h.interval_seconds, h.timeout_seconds),
                ),
                (
                    "Healthy after",
                    format!("{} passes in a row", h.healthy_threshold),
                ),
                (
                    "Unhealthy after",
                    format!("{} failures in a row", h.unhealthy_threshold),
                ),
                ("Passing statuses", h.matcher.clone()),
            ],
        );
    } else {
        field(out, "  ", "Enabled", "no");
    }
    if let Some(list) = targets {
        if list.items.is_empty() {
            field(out, "", "Targets", "none");
        } else {
            out.push_str("Targets:\n");
            for line in super::targets::table(list, now).render().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    } else if s.targets.is_empty() {
        field(out, "", "Targets", "none");
    } else {
        out.push_str("Targets:\n");
        let mut t = Table::new(["ADDRESS", "PORT", "FRONTED BY PROXY"]);
        for tg in &s.targets {
            t.row([
                tg.address.clone(),
                tg.effective_port(s.port).to_string(),
                tg.proxy.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        for line in t.render().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let mut users: Vec<String> = services
        .iter()
        .filter_map(spec_of::<ServiceSpec>)
        .filter(|svc| {
            svc.references()
                .iter()
                .any(|r| r.kind == Kind::TargetGroup && r.name == s.name)
        })
        .map(|svc| svc.name)
        .collect();
    users.sort();
    field(
        out,
        "",
        "Used by",
        &if users.is_empty() {
            "no service".to_string()
        } else {
            users
                .iter()
                .map(|u| format!("service/{u}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
}

fn network(out: &mut String, s: &ServiceNetworkSpec, assocs: &[Value], proxy_assocs: &[Value]) {
    fields(out, "", &[("Auth type", wire(&s.auth_type))]);
    let services: Vec<String> = assocs
        .iter()
        .filter_map(spec_of::<ServiceAssociationSpec>)
        .filter(|a| a.service_network == s.name)
        .map(|a| format!("{} ({})", a.service, dns_name(&a.service, &s.name)))
        .collect();
    list(out, "Services", &services, "none associated");
    let proxies: Vec<String> = proxy_assocs
        .iter()
        .filter_map(spec_of::<ProxyAssociationSpec>)
        .filter(|a| a.service_network == s.name)
        .map(|a| format!("{} (proxy-association/{})", applies_to(&a), a.name))
        .collect();
    list(
        out,
        "Proxies",
        &proxies,
        "no proxy association (proxies may still join when they register)",
    );
}

fn list(out: &mut String, label: &str, items: &[String], none: &str) {
    if items.is_empty() {
        field(out, "", label, none);
    } else {
        let _ = writeln!(out, "{label}:");
        for i in items {
            let _ = writeln!(out, "  {i}");
        }
    }
}

/// The text of `describe proxy NAME`.
pub fn describe_proxy(p: &ProxyStatus, now: SystemTime) -> String {
    let r = &p.registration;
    let mut out = String::new();
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let joined = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    fields(
        &mut out,
        "",
        &[
            ("Name", r.name.clone()),
            ("Group", opt(&r.group)),
            ("Account", opt(&r.account)),
            ("Inbound address", opt(&r.inbound_address)),
            ("Joined networks", joined(&r.service_networks)),
            ("Scope", joined(&p.scope)),
            ("Desired version", p.desired_version.to_string()),
            ("Applied version", p.applied_version.to_string()),
            ("In sync", yes_no(p.in_sync).into()),
            ("Connected", yes_no(p.connected).into()),
            (
                "Last contact",
                p.last_contact.as_deref().map_or_else(
                    || "never".to_string(),
                    |t| format!("{t} ({})", ago(Some(t), now)),
                ),
            ),
            ("Last error", opt(&p.last_error)),
        ],
    );
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2025-01-01T01:00:00Z").unwrap()
    }

    fn demo_doc(kind: Kind, name: &str) -> Value {
        trellis_config::parse_documents(super::super::demo::DEMO_YAML)
            .unwrap()
            .into_iter()
            .find(|d| d.kind == kind && d.name == name)
            .unwrap()
            .body
    }

    #[test]
    fn service_lists_rules_in_priority_order_with_matches_and_actions() {
        let mut v = demo_doc(Kind::Service, "catalog");
        // Reverse the rules: describe must still print them by priority.
        v["listeners"][0]["rules"].as_array_mut().unwrap().reverse();
        v["id"] = json!("svc-1");
        v["version"] = json!(2);
        v["updatedAt"] = json!("2025-01-01T00:58:00Z");
        let assoc = demo_doc(Kind::ServiceAssociation, "catalog-demo");
        let text = describe_resource(Kind::Service, &v, &[assoc], &[], now());
        assert!(text.starts_with("Name:               catalog\nKind:               Service\nID:                 svc-1\n"), "{text}");
        assert!(
            text.contains("Updated:            2025-01-01T00:58:00Z (2m ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("Host names:\n  catalog.demo.trellis.internal (network demo)\n"),
            "{text}"
        );
        assert!(text.contains("  http (HTTP, port 80)\n"), "{text}");
        let canary = text.find("10         canary").expect(&text);
        let path = text.find("20         v2-path").expect(&text);
        assert!(canary < path, "{text}");
        assert!(text.contains("header x-canary = \"true\""), "{text}");
        assert!(text.contains("path starts with /v2/"), "{text}");
        assert!(text.contains(
            "Default action: forward to catalog-v1 (weight 80, 80%), catalog-v2 (weight 20, 20%)"
        ));
    }

    #[test]
    fn target_group_shows_targets_health_check_and_users() {
        let v = demo_doc(Kind::TargetGroup, "catalog-v2");
        let svc = demo_doc(Kind::Service, "catalog");
        let other = demo_doc(Kind::Service, "reviews");
        let text = describe_resource(Kind::TargetGroup, &v, &[svc, other], &[], now());
        assert!(
            text.contains("  Request:          GET /healthz on the target's port (HTTP/HTTP1)\n"),
            "{text}"
        );
        assert!(
            text.contains("  Every:            5s, timeout 2s\n"),
            "{text}"
        );
        assert!(text.contains("  127.0.0.1   18082   -\n"), "{text}");
        assert!(
            text.contains("Used by:            service/catalog\n"),
            "{text}"
        );
    }

    #[test]
    fn target_group_with_health_shows_states_instead_of_raw_status() {
        let mut v = demo_doc(Kind::TargetGroup, "catalog-v2");
        v["status"] = json!({"draining": [{"address": "10.0.0.9", "port": 80, "until": 1}]});
        let list: TargetList = serde_json::from_value(json!({
            "targetGroup": "tg-1", "name": "catalog-v2", "healthChecks": true, "items": [
                {"address": "127.0.0.1", "port": 18082, "state": "UNHEALTHY",
                 "reason": "dev-node: HealthCheckFailed: status 500", "reports": []},
                {"address": "10.0.0.9", "port": 80, "state": "DRAINING",
                 "drainingUntil": "2025-01-01T01:00:45Z", "reports": []}
            ]
        }))
        .unwrap();
        let text = describe_resource_with(Kind::TargetGroup, &v, &[], &[], Some(&list), now());
        assert!(
            text.contains(
                "Targets:\n  \
                 ADDRESS     PORT    PROXY   STATE       REASON\n  \
                 127.0.0.1   18082   -       UNHEALTHY   dev-node: HealthCheckFailed: status 500\n  \
                 10.0.0.9    80      -       DRAINING    deregistered, draining (45s left)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("Status:"), "{text}");
        // Without health, the spec's targets and the raw status.
        let text = describe_resource(Kind::TargetGroup, &v, &[], &[], now());
        assert!(text.contains("  127.0.0.1   18082   -\n"), "{text}");
        assert!(text.contains("Status:\n  draining:\n"), "{text}");
    }

    #[test]
    fn network_shows_services_and_proxies() {
        let v = demo_doc(Kind::ServiceNetwork, "demo");
        let a = [
            demo_doc(Kind::ServiceAssociation, "catalog-demo"),
            demo_doc(Kind::ServiceAssociation, "reviews-demo"),
        ];
        let p = [demo_doc(Kind::ProxyAssociation, "dev-demo")];
        let text = describe_resource(Kind::ServiceNetwork, &v, &a, &p, now());
        assert!(
            text.contains("Services:\n  catalog (catalog.demo.trellis.internal)\n  reviews"),
            "{text}"
        );
        assert!(
            text.contains("Proxies:\n  every proxy of group dev (proxy-association/dev-demo)\n"),
            "{text}"
        );
    }

    #[test]
    fn status_is_shown() {
        let v = json!({"name": "x", "serviceNetwork": "n", "service": "s",
            "status": {"dnsName": "s.n.trellis.internal"}});
        let text = describe_resource(Kind::ServiceAssociation, &v, &[], &[], now());
        assert!(
            text.contains("DNS name:           s.n.trellis.internal\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Status:\n  dnsName: s.n.trellis.internal\n"),
            "{text}"
        );
    }

    #[test]
    fn proxy_view() {
        let p: ProxyStatus = serde_json::from_value(json!({
            "name": "dev-node", "group": "dev", "scope": ["demo"], "desiredVersion": 4,
            "appliedVersion": 3, "inSync": false, "connected": true,
            "lastContact": "2025-01-01T00:59:50Z", "lastError": "unknown target group"
        }))
        .unwrap();
        let text = describe_proxy(&p, now());
        assert!(text.contains("In sync:            no\n"), "{text}");
        assert!(
            text.contains("Last contact:       2025-01-01T00:59:50Z (10s ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("Last error:         unknown target group\n"),
            "{text}"
        );
    }
}
