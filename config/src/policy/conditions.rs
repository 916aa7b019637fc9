//! Validating the `Condition` element: operators, keys, and values checked
//! against what each key can hold, every problem under
//! `Statement[i].Condition.<operator>.<key>[j]`.

use super::document::{Condition, ConditionValues};
use super::keys::{ConditionKey, Operator};
use super::pattern::Cidr;
use super::validate::{is_account_id, only};
use crate::validate::{Validator, check_dns_label};
use serde_json::Value;

pub(super) fn conditions(v: &mut Validator, value: &Value) -> Vec<Condition> {
    let mut out = Vec::new();
    let Some(ops) = value.as_object() else {
        v.error(
            "must be an object such as {\"StringEquals\": {\"trellis:RequestMethod\": \"GET\"}}",
        );
        return out;
    };
    for (op_name, block) in ops {
        v.field(op_name, |v| {
            let Some(op) = Operator::parse(op_name) else {
                v.error(operator_error(op_name));
                return;
            };
            let Some(keys) = block.as_object().filter(|m| !m.is_empty()) else {
                v.error("must be a non-empty object of condition keys and values");
                return;
            };
            for (key_name, values) in keys {
                v.field(key_name, |v| {
                    let key = match ConditionKey::parse(key_name) {
                        Ok(k) => k,
                        Err(m) => return v.error(m),
                    };
                    if let Some(c) = condition(v, op, key, values) {
                        out.push(c);
                    }
                });
            }
        });
    }
    out
}

fn operator_error(name: &str) -> String {
    let names: Vec<&str> = Operator::ALL.iter().map(|o| o.as_str()).collect();
    if let Some(o) = Operator::ALL
        .iter()
        .find(|o| o.as_str().eq_ignore_ascii_case(name))
    {
        format!("unknown operator; did you mean '{o}'? (operators are case-sensitive)")
    } else if name.contains("IfExists") || name.contains(':') {
        format!(
            "'IfExists' and set operators (ForAnyValue:, ForAllValues:) are not supported; expected one of {}",
            names.join(", ")
        )
    } else {
        format!("unknown operator; expected one of {}", names.join(", "))
    }
}

/// The values of one operator–key pair, as strings (numbers and booleans
/// are written as JSON writes them, as IAM does).
fn value_strings(v: &mut Validator, value: &Value) -> Vec<String> {
    let one = |x: &Value| match x {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Array(list) if list.is_empty() => {
            v.error("must have at least one value");
            Vec::new()
        }
        Value::Array(list) => {
            let mut out = Vec::new();
            for (i, x) in list.iter().enumerate() {
                match one(x) {
                    Some(s) => out.push(s),
                    None => v.index(i, |v| v.error(format!("must be a string, got {x}"))),
                }
            }
            out
        }
        x => match one(x) {
            Some(s) => vec![s],
            None => {
                v.error(format!("must be a string or a list of strings, got {x}"));
                Vec::new()
            }
        },
    }
}

fn condition(
    v: &mut Validator,
    op: Operator,
    key: ConditionKey,
    values: &Value,
) -> Option<Condition> {
    let strings = value_strings(v, values);
    if op.is_ip() != (key == ConditionKey::SourceIp) {
        if op.is_ip() {
            v.error(format!("{op} applies only to trellis:SourceIp"));
        } else {
            v.error(format!("{key} takes IpAddress or NotIpAddress, not {op}"));
        }
        return None;
    }
    let indexed = |v: &mut Validator, i: usize, msg: String| {
        if strings.len() == 1 && !values.is_array() {
            v.error(msg)
        } else {
            v.index(i, |v| v.error(msg))
        }
    };
    if op.is_ip() {
        let mut ips = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            match s.parse::<Cidr>() {
                Ok(c) => ips.push(c),
                Err(m) => indexed(v, i, m),
            }
        }
        return Some(Condition {
            operator: op,
            key,
            values: ConditionValues::Ips(ips),
        });
    }
    for (i, s) in strings.iter().enumerate() {
        if let Err(m) = check_value(op, &key, s) {
            indexed(v, i, m);
        }
    }
    Some(Condition {
        operator: op,
        key,
        values: ConditionValues::Strings(strings),
    })
}

/// Catch values that can never match what the key holds.
fn check_value(op: Operator, key: &ConditionKey, s: &str) -> Result<(), String> {
    let like = op.is_like();
    let exact_case = matches!(op, Operator::StringEquals | Operator::StringNotEquals);
    match key {
        ConditionKey::RequestMethod => {
            let upper = s.to_ascii_uppercase();
            const METHODS: [&str; 9] = [
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            ];
            if (exact_case || like) && upper != s && METHODS.contains(&upper.as_str()) {
                return Err(format!(
                    "HTTP methods are case-sensitive: '{s}' never matches; write '{upper}'"
                ));
            }
            if s.is_empty() {
                return Err("a method must not be empty".into());
            }
        }
        ConditionKey::RequestPath => {
            let ok = s.starts_with('/') || (like && s.starts_with(['*', '?']));
            if !ok {
                return Err(format!(
                    "paths start with '/', so '{s}' never matches{}",
                    if like {
                        " (a pattern may start with '*')"
                    } else {
                        ""
                    }
                ));
            }
        }
        ConditionKey::RequestPort => {
            let ok = if like {
                only(s, |b| b.is_ascii_digit())
            } else {
                matches!(s.parse::<u16>(), Ok(p) if p > 0 && p.to_string() == s)
            };
            if !ok {
                return Err(format!(
                    "'{s}' is not a port (1 to 65535, no leading zeros)"
                ));
            }
        }
        ConditionKey::SourceAccount => {
            let ok = if like {
                only(s, |b| b.is_ascii_digit())
            } else {
                is_account_id(s)
            };
            if !ok {
                return Err(format!("'{s}' is not a 12-digit account id"));
            }
        }
        ConditionKey::SourceWorkload => {
            if !(s.starts_with("spiffe://") || (like && s.starts_with(['*', '?']))) {
                return Err(format!(
                    "'{s}' is not a workload id; they look like spiffe://<trust-domain>/account/<id>/workload/<name>"
                ));
            }
        }
        ConditionKey::Service | ConditionKey::ServiceNetwork => {
            let ok = if like {
                only(s, |b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
                })
            } else {
                !exact_case || check_dns_label(s).is_ok()
            };
            if !ok {
                return Err(format!(
                    "'{s}' is not a {} name (lowercase letters, digits and '-')",
                    if *key == ConditionKey::Service {
                        "service"
                    } else {
                        "service network"
                    }
                ));
            }
        }
        ConditionKey::RequestHeader(_)
        | ConditionKey::RequestQueryString(_)
        | ConditionKey::SourceIp => {}
    }
    Ok(())
}
