//! `-o json|yaml`: API objects with their keys in reading order, in a form
//! `trellis apply -f` takes back (a list prints as a JSON array or as
//! `---`-separated YAML documents).

use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table (the default).
    Table,
    /// The API objects as JSON.
    Json,
    /// The API objects as YAML documents.
    Yaml,
}

/// Keys printed first, in this order; the server metadata goes last so the
/// part a user edits comes first.
const FIRST: [&str; 26] = [
    "kind",
    "name",
    "serviceNetwork",
    "service",
    "proxy",
    "proxyGroup",
    "group",
    "customDomain",
    "authType",
    "protocol",
    "protocolVersion",
    "port",
    "algorithm",
    "priority",
    "match",
    "method",
    "path",
    "headers",
    "type",
    "value",
    "action",
    "defaultAction",
    "rules",
    "targetGroup",
    "weight",
    "address",
];
const LAST: [&str; 6] = [
    "id",
    "account",
    "version",
    "createdAt",
    "updatedAt",
    "status",
];

fn rank(key: &str) -> (usize, usize) {
    if let Some(i) = FIRST.iter().position(|k| *k == key) {
        (0, i)
    } else if let Some(i) = LAST.iter().position(|k| *k == key) {
        (2, i)
    } else {
        (1, 0)
    }
}

/// The value as YAML with keys in reading order (then alphabetical).
pub fn ordered(v: &Json) -> Yaml {
    match v {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Bool(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Yaml::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                Yaml::Number(i.into())
            } else {
                Yaml::Number(n.as_f64().unwrap_or(f64::NAN).into())
            }
        }
        Json::String(s) => Yaml::String(s.clone()),
        Json::Array(a) => Yaml::Sequence(a.iter().map(ordered).collect()),
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            let mut out = Mapping::new();
            for k in keys {
                out.insert(Yaml::String(k.clone()), ordered(&m[k.as_str()]));
            }
            Yaml::Mapping(out)
        }
    }
}

/// One object, or a list, in the format asked for.
pub fn render(items: &[Json], list: bool, format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => {
            let mut s = if list {
                let all: Vec<Yaml> = items.iter().map(ordered).collect();
                serde_json::to_string_pretty(&all)?
            } else {
                items
                    .first()
                    .map(|i| serde_json::to_string_pretty(&ordered(i)))
                    .transpose()?
                    .unwrap_or_default()
            };
            s.push('\n');
            Ok(s)
        }
        Format::Yaml | Format::Table => {
            let mut s = String::new();
            for (i, item) in items.iter().enumerate() {
                if list && i > 0 {
                    s.push_str("---\n");
                }
                s.push_str(&serde_yaml_ng::to_string(&ordered(item))?);
            }
            Ok(s)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Json {
        json!({
            "updatedAt": "t2", "version": 2, "id": "svc-1", "kind": "Service",
            "listeners": [{"rules": [], "port": 80, "name": "http"}],
            "name": "catalog", "createdAt": "t1", "account": "0", "authType": "NONE"
        })
    }

    #[test]
    fn keys_read_kind_name_spec_then_metadata() {
        let y = render(&[svc()], false, Format::Yaml).unwrap();
        let keys: Vec<&str> = y
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('-'))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "kind",
                "name",
                "authType",
                "listeners",
                "id",
                "account",
                "version",
                "createdAt",
                "updatedAt"
            ]
        );
        assert!(y.contains("- name: http\n  port: 80\n  rules: []\n"), "{y}");
    }

    #[test]
    fn lists_parse_back_as_documents() {
        let items = [svc(), svc()];
        for f in [Format::Json, Format::Yaml] {
            let text = render(&items, true, f).unwrap();
            let docs = trellis_config::parse_documents(&text).unwrap();
            assert_eq!(docs.len(), 2, "{f:?}: {text}");
            assert_eq!(docs[1].name, "catalog");
        }
        let one = render(&items[..1], false, Format::Json).unwrap();
        assert!(one.starts_with("{\n  \"kind\": \"Service\",\n  \"name\": \"catalog\""));
    }
}
