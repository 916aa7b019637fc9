//! `trellis get KIND [NAME]` and `trellis proxies`: tables, or the API
//! objects with `-o json|yaml`.

use super::kinds::{Subject, qualified};
use super::output::{Format, render};
use super::table::{Table, ago, expires};
use crate::client::Client;
use serde_json::Value;
use std::time::SystemTime;
use trellis_config::{
    AccessLogDestination, AccessLogResource, AccessLogSubscriptionSpec, Action, Kind,
    ProxyAssociationSpec, ProxyStatus, ServiceAssociationSpec, ServiceNetworkSpec, ServiceSpec,
    Spec, TargetGroupSpec, spec_from_json,
};

/// Fetch and print.
pub async fn get(
    client: &Client,
    subject: Subject,
    name: Option<&str>,
    format: Format,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let text = match subject {
        Subject::Kind(kind) => {
            let mut items = match name {
                Some(n) => vec![client.get(kind, n).await?],
                None => client.list(kind).await?,
            };
            items.sort_by(|a, b| str_field(a, "name").cmp(str_field(b, "name")));
            match format {
                Format::Table if items.is_empty() => format!("No {}s found.\n", kind.words()),
                Format::Table => resource_table(kind, &items, now).render(),
                f => render(&items, name.is_none(), f)?,
            }
        }
        Subject::Targets => {
            // `trellis get targets TG`: the run loop sends it to [`super::targets`].
            match name {
                Some(tg) => return super::targets::get(client, tg, format, out).await,
                None => anyhow::bail!("name the target group: trellis get targets TARGET_GROUP"),
            }
        }
        Subject::Proxies => {
            let mut items = match name {
                Some(n) => vec![client.proxy(n).await?],
                None => client.proxies().await?,
            };
            items.sort_by(|a, b| a.registration.name.cmp(&b.registration.name));
            match format {
                Format::Table if items.is_empty() => {
                    "No proxies have registered yet.\n".to_string()
                }
                Format::Table => proxy_table(&items, now).render(),
                f => {
                    let json: Vec<Value> = items
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<Result<_, _>>()?;
                    render(&json, name.is_none(), f)?
                }
            }
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A string field of an API object, `""` when absent.
pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The spec of an API object (metadata stripped), if it has the model's
/// shape.
pub fn spec_of<S: Spec>(v: &Value) -> Option<S> {
    spec_from_json::<S>(v.clone()).ok()
}

/// Columns only some kinds have.
fn kind_headers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::ServiceNetwork => &["AUTH", "SHARED BY"],
        Kind::TargetGroup => &["PORT", "PROTOCOL", "TARGETS"],
        Kind::Service => &["LISTENERS", "CUSTOM DOMAIN"],
        Kind::ServiceAssociation => &["NETWORK", "SERVICE"],
        Kind::ProxyAssociation => &["NETWORK", "APPLIES TO"],
        Kind::AccessLogSubscription => &["RESOURCE", "DESTINATION"],
    }
}

fn kind_cells(kind: Kind, v: &Value) -> Vec<String> {
    let unknown = || vec!["?".to_string(); kind_headers(kind).len()];
    match kind {
        Kind::ServiceNetwork => spec_of::<ServiceNetworkSpec>(v).map_or_else(unknown, |s| {
            // A network another account shared with the caller names its owner.
            let owner = if v["shared"] == true {
                v["account"].as_str().unwrap_or("?").to_string()
            } else {
                "-".to_string()
            };
            vec![wire(&s.auth_type), owner]
        }),
        Kind::TargetGroup => spec_of::<TargetGroupSpec>(v).map_or_else(unknown, |s| {
            vec![
                s.port.to_string(),
                format!("{}/{}", wire(&s.protocol), wire(&s.protocol_version)),
                s.targets.len().to_string(),
            ]
        }),
        Kind::Service => spec_of::<ServiceSpec>(v).map_or_else(unknown, |s| {
            let listeners: Vec<String> = s
                .listeners
                .iter()
                .map(|l| {
                    let port = if l.port == 0 {
                        l.protocol.default_port()
                    } else {
                        l.port
                    };
                    format!("{}:{port} ({})", l.name, rules_word(l.rules.len()))
                })
                .collect();
            vec![
                dash(listeners.join(", ")),
                dash(s.custom_domain.unwrap_or_default()),
            ]
        }),
        Kind::ServiceAssociation => spec_of::<ServiceAssociationSpec>(v)
            .map_or_else(unknown, |s| vec![s.service_network, s.service]),
        Kind::ProxyAssociation => spec_of::<ProxyAssociationSpec>(v).map_or_else(unknown, |s| {
            let to = match (s.proxy, s.proxy_group) {
                (Some(p), _) => format!("proxy {p}"),
                (None, Some(g)) => format!("group {g}"),
                (None, None) => "-".into(),
            };
            vec![s.service_network, to]
        }),
        Kind::AccessLogSubscription => {
            spec_of::<AccessLogSubscriptionSpec>(v).map_or_else(unknown, |s| {
                vec![
                    access_log_resource_text(&s.resource),
                    access_log_destination_text(&s.destination),
                ]
            })
        }
    }
}

/// `service-network/shop` or `service/catalog`.
pub fn access_log_resource_text(r: &AccessLogResource) -> String {
    match r {
        AccessLogResource::ServiceNetwork(n) => qualified(Kind::ServiceNetwork, n),
        AccessLogResource::Service(n) => qualified(Kind::Service, n),
    }
}

/// `stdout`, or `file /var/log/a.log (rotate at 100 MiB, keep 5)`.
pub fn access_log_destination_text(d: &AccessLogDestination) -> String {
    match d {
        AccessLogDestination::Stdout => "stdout".into(),
        AccessLogDestination::File(f) => {
            let size = if f.max_bytes % (1024 * 1024) == 0 {
                format!("{} MiB", f.max_bytes / (1024 * 1024))
            } else if f.max_bytes % 1024 == 0 {
                format!("{} KiB", f.max_bytes / 1024)
            } else {
                format!("{} bytes", f.max_bytes)
            };
            format!("file {} (rotate at {size}, keep {})", f.path, f.max_files)
        }
    }
}

/// How an enum value is spelled in the API (`NONE`, `round_robin`).
pub fn wire<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

fn rules_word(n: usize) -> String {
    if n == 1 {
        "1 rule".into()
    } else {
        format!("{n} rules")
    }
}

fn dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// NAME, ID, VERSION, the kind's own columns, UPDATED.
pub fn resource_table(kind: Kind, items: &[Value], now: SystemTime) -> Table {
    let mut headers = vec!["NAME", "ID", "VERSION"];
    headers.extend_from_slice(kind_headers(kind));
    headers.push("UPDATED");
    let mut t = Table::new(headers);
    for v in items {
        let mut row = vec![
            str_field(v, "name").to_string(),
            str_field(v, "id").to_string(),
            v.get("version").map(|x| x.to_string()).unwrap_or_default(),
        ];
        row.extend(kind_cells(kind, v));
        row.push(ago(v.get("updatedAt").and_then(Value::as_str), now));
        t.row(row);
    }
    t
}

/// NAME, GROUP, SCOPE, APPLIED, DESIRED, IN-SYNC, LAST CONTACT, CERT EXPIRES.
pub fn proxy_table(items: &[ProxyStatus], now: SystemTime) -> Table {
    let mut t = Table::new([
        "NAME",
        "GROUP",
        "SCOPE",
        "APPLIED",
        "DESIRED",
        "IN-SYNC",
        "LAST CONTACT",
        "CERT EXPIRES",
    ]);
    for p in items {
        let contact = match p.last_contact.as_deref() {
            None => "never".to_string(),
            Some(c) => ago(Some(c), now),
        };
        let in_sync = match (p.in_sync, &p.last_error) {
            (true, _) => "yes",
            (false, Some(_)) => "no (rejected)",
            (false, None) => "no",
        };
        t.row([
            p.registration.name.clone(),
            p.registration
                .group
                .clone()
                .unwrap_or_else(|| "-".to_string()),
            dash(p.scope.join(",")),
            p.applied_version.to_string(),
            p.desired_version.to_string(),
            in_sync.to_string(),
            contact,
            expires(p.certificate_not_after.as_deref(), now),
        ]);
    }
    t
}

/// `catalog-v1 80%, catalog-v2 20%`, or `fixed 404`.
pub fn action_text(a: &Action) -> String {
    match a {
        Action::FixedResponse(r) => format!("fixed response {}", r.status_code),
        Action::Forward(f) => {
            let total: u64 = f.target_groups.iter().map(|t| u64::from(t.weight)).sum();
            if f.target_groups.len() == 1 {
                return format!("forward to {}", f.target_groups[0].target_group);
            }
            let parts: Vec<String> = f
                .target_groups
                .iter()
                .map(|t| {
                    let pct = if total == 0 {
                        0.0
                    } else {
                        f64::from(t.weight) * 100.0 / total as f64
                    };
                    format!(
                        "{} (weight {}, {}%)",
                        t.target_group,
                        t.weight,
                        trim_pct(pct)
                    )
                })
                .collect();
            format!("forward to {}", parts.join(", "))
        }
    }
}

fn trim_pct(p: f64) -> String {
    let s = format!("{p:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2025-01-01T01:00:00Z").unwrap()
    }

    #[test]
    fn service_table_shows_listeners_and_domain() {
        let items = [
            json!({"kind": "Service", "id": "svc-0a", "name": "catalog", "version": 3,
                "account": "000000000000", "createdAt": "2025-01-01T00:00:00Z",
                "updatedAt": "2025-01-01T00:58:00Z", "authType": "NONE",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                    "defaultAction": {"fixedResponse": {"statusCode": 404}},
                    "rules": [{"name": "r", "priority": 1, "match": {"method": "GET"},
                        "action": {"fixedResponse": {"statusCode": 200}}}]}]}),
            json!({"kind": "Service", "id": "svc-0b", "name": "reviews", "version": 1,
                "customDomain": "reviews.example.com", "listeners": [],
                "updatedAt": "2024-12-30T00:00:00Z",
                "status": {"anything": true}}),
        ];
        assert_eq!(
            resource_table(Kind::Service, &items, now()).render(),
            "NAME      ID       VERSION   LISTENERS          CUSTOM DOMAIN         UPDATED\n\
             catalog   svc-0a   3         http:80 (1 rule)   -                     2m ago\n\
             reviews   svc-0b   1         -                  reviews.example.com   2d ago\n"
        );
    }

    #[test]
    fn target_group_and_association_columns() {
        let tg = json!({"name": "v1", "id": "tg-1", "version": 1, "port": 8080,
            "targets": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]});
        let t = resource_table(Kind::TargetGroup, &[tg], now()).render();
        assert!(
            t.starts_with("NAME   ID     VERSION   PORT   PROTOCOL     TARGETS   UPDATED\n"),
            "{t}"
        );
        assert!(t.contains("8080   HTTP/HTTP1   2         -\n"), "{t}");

        let pa = json!({"name": "dev-demo", "serviceNetwork": "demo", "proxyGroup": "dev"});
        let t = resource_table(Kind::ProxyAssociation, &[pa], now()).render();
        assert!(t.contains("demo      group dev"), "{t}");
    }

    #[test]
    fn an_object_of_another_shape_shows_question_marks() {
        let t = resource_table(
            Kind::TargetGroup,
            &[json!({"name": "x", "port": "no"})],
            now(),
        );
        assert!(t.render().contains("?      ?          ?"), "{}", t.render());
    }

    #[test]
    fn proxy_table_columns() {
        let p: ProxyStatus = serde_json::from_value(json!({
            "name": "dev-node", "group": "dev", "scope": ["demo"],
            "desiredVersion": 7, "appliedVersion": 7, "inSync": true, "connected": true,
            "lastContact": "2025-01-01T00:59:57Z", "certificateNotAfter": "2025-01-01T05:00:00Z"
        }))
        .unwrap();
        let q: ProxyStatus = serde_json::from_value(json!({
            "name": "other", "scope": [], "desiredVersion": 7, "appliedVersion": 5,
            "inSync": false, "connected": false, "lastContact": null, "lastError": "bad",
            "certificateNotAfter": "2025-01-01T00:59:50Z"
        }))
        .unwrap();
        assert_eq!(
            proxy_table(&[p, q], now()).render(),
            "NAME       GROUP   SCOPE   APPLIED   DESIRED   IN-SYNC         LAST CONTACT   CERT EXPIRES\n\
             dev-node   dev     demo    7         7         yes             3s ago         in 4h\n\
             other      -       -       5         7         no (rejected)   never          expired 10s ago\n"
        );
    }

    #[test]
    fn actions_read_as_percentages() {
        let a: Action = serde_json::from_value(json!({"forward": {"targetGroups": [
            {"targetGroup": "v1", "weight": 80}, {"targetGroup": "v2", "weight": 20}]}}))
        .unwrap();
        assert_eq!(
            action_text(&a),
            "forward to v1 (weight 80, 80%), v2 (weight 20, 20%)"
        );
        let b: Action = serde_json::from_value(json!({"forward": {"targetGroups": [
            {"targetGroup": "a", "weight": 1}, {"targetGroup": "b", "weight": 2}]}}))
        .unwrap();
        assert!(action_text(&b).contains("33.3%"));
        let c: Action =
            serde_json::from_value(json!({"fixedResponse": {"statusCode": 404}})).unwrap();
        assert_eq!(action_text(&c), "fixed response 404");
    }
}
