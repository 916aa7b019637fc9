//! From JSON to a [`PolicyDocument`], recording every problem under its
//! field path (`Statement[1].Condition.StringLike.trellis:Bogus`).
//!
//! The walk never stops at the first problem; what it builds from a bad
//! document is thrown away.

use super::document::*;
use crate::error::ValidationErrors;
use crate::validate::Validator;
use serde_json::{Map, Value};
use std::collections::HashMap;

pub(super) fn parse_text(text: &str) -> Result<PolicyDocument, ValidationErrors> {
    let mut v = Validator::new();
    check_size(&mut v, text.len());
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let doc = document(&mut v, &value);
            v.finish().map(|()| doc)
        }
        Err(e) => {
            v.error(format!("not valid JSON: {e}"));
            v.finish().map(|()| unreachable_doc())
        }
    }
}

pub(super) fn parse_value(value: &Value) -> Result<PolicyDocument, ValidationErrors> {
    let mut v = Validator::new();
    check_size(&mut v, value.to_string().len());
    let doc = document(&mut v, value);
    v.finish().map(|()| doc)
}

/// What a failed JSON parse "returns"; `finish` always errs first.
fn unreachable_doc() -> PolicyDocument {
    PolicyDocument {
        version: None,
        id: None,
        statements: Vec::new(),
    }
}

fn check_size(v: &mut Validator, len: usize) {
    if len > MAX_POLICY_BYTES {
        v.error(format!(
            "the policy is {len} bytes; at most {MAX_POLICY_BYTES} bytes (10 KB) are allowed"
        ));
    }
}

/// Record unknown fields of `obj`, with a hint for wrong case and for IAM
/// elements Trellis does not support.
fn unknown_fields(v: &mut Validator, obj: &Map<String, Value>, known: &[&str]) {
    for k in obj.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        let msg = if let Some(right) = known.iter().find(|n| n.eq_ignore_ascii_case(k)) {
            format!("unknown field; did you mean '{right}'? (element names are case-sensitive)")
        } else if matches!(k.as_str(), "NotPrincipal" | "NotAction" | "NotResource") {
            format!("'{k}' is not supported; write the positive form with a Deny statement instead")
        } else {
            format!("unknown field; expected one of {}", known.join(", "))
        };
        v.error_at(k, msg);
    }
}

fn document(v: &mut Validator, value: &Value) -> PolicyDocument {
    let mut doc = unreachable_doc();
    let Some(obj) = value.as_object() else {
        v.error("a policy must be a JSON object with a \"Statement\" list");
        return doc;
    };
    unknown_fields(v, obj, &["Version", "Id", "Statement"]);
    if let Some(ver) = obj.get("Version") {
        match ver.as_str() {
            Some(POLICY_VERSION) => doc.version = Some(POLICY_VERSION.into()),
            _ => v.error_at(
                "Version",
                format!("must be \"{POLICY_VERSION}\" (or left out), got {ver}"),
            ),
        }
    }
    if let Some(id) = obj.get("Id") {
        match id.as_str() {
            Some(s) => doc.id = Some(s.into()),
            None => v.error_at("Id", "must be a string"),
        }
    }
    v.field("Statement", |v| match obj.get("Statement") {
        None => v.error("required: a list of statements"),
        Some(Value::Array(list)) if list.is_empty() => v.error("must have at least one statement"),
        Some(Value::Array(list)) => {
            for (i, s) in list.iter().enumerate() {
                let st = v.index(i, |v| statement(v, s));
                doc.statements.push(st);
            }
        }
        Some(s @ Value::Object(_)) => doc.statements.push(statement(v, s)),
        Some(_) => v.error("must be a list of statements (or a single statement object)"),
    });
    // Sids name statements in decisions and logs, so they must be unique.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    v.field("Statement", |v| {
        for (i, s) in doc.statements.iter().enumerate() {
            if let Some(sid) = &s.sid
                && let Some(first) = seen.insert(sid, i)
            {
                v.index(i, |v| {
                    v.error_at(
                        "Sid",
                        format!("'{sid}' is already the Sid of Statement[{first}]"),
                    )
                });
            }
        }
    });
    doc
}

fn statement(v: &mut Validator, value: &Value) -> Statement {
    let mut st = Statement {
        sid: None,
        effect: Effect::Deny,
        principals: Vec::new(),
        resources: Vec::new(),
        conditions: Vec::new(),
    };
    let Some(obj) = value.as_object() else {
        v.error("a statement must be a JSON object");
        return st;
    };
    unknown_fields(
        v,
        obj,
        &[
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ],
    );
    if let Some(sid) = obj.get("Sid") {
        v.field("Sid", |v| st.sid = sid_of(v, sid));
    }
    v.field("Effect", |v| match obj.get("Effect") {
        None => v.error("required: \"Allow\" or \"Deny\""),
        Some(Value::String(s)) if s == "Allow" => st.effect = Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => st.effect = Effect::Deny,
        Some(other) => v.error(format!("must be \"Allow\" or \"Deny\", got {other}")),
    });
    v.field("Principal", |v| match obj.get("Principal") {
        None => v.error(
            "required: \"*\", or {\"AWS\": [...]} with account ids, workload ids or \"anonymous\"",
        ),
        Some(p) => st.principals = principals(v, p),
    });
    v.field("Action", |v| match obj.get("Action") {
        None => v.error(format!("required: \"{ACTION_INVOKE}\" or \"*\"")),
        Some(a) => actions(v, a),
    });
    v.field("Resource", |v| match obj.get("Resource") {
        None => v.error("required: \"*\", or service patterns such as \"api/*\""),
        Some(r) => st.resources = resources(v, r),
    });
    if let Some(c) = obj.get("Condition") {
        v.field("Condition", |v| {
            st.conditions = super::conditions::conditions(v, c)
        });
    }
    st
}

fn sid_of(v: &mut Validator, value: &Value) -> Option<String> {
    let Some(s) = value.as_str() else {
        v.error("must be a string");
        return None;
    };
    if s.is_empty() || s.len() > MAX_SID_LEN {
        v.error(format!("must be 1 to {MAX_SID_LEN} characters"));
    } else if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        v.error(format!(
            "may contain only letters, digits, '-' and '_' (it is shown in response headers), found '{c}'"
        ));
    }
    Some(s.to_owned())
}

/// A string, or a non-empty list of strings, as IAM allows for most
/// elements. Calls `each` with the path index (None for a lone string).
fn string_or_list(v: &mut Validator, value: &Value, mut each: impl FnMut(&mut Validator, &str)) {
    match value {
        Value::String(s) => each(v, s),
        Value::Array(list) if list.is_empty() => v.error("must not be an empty list"),
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                v.index(i, |v| match item.as_str() {
                    Some(s) => each(v, s),
                    None => v.error(format!("must be a string, got {item}")),
                });
            }
        }
        other => v.error(format!(
            "must be a string or a list of strings, got {other}"
        )),
    }
}

fn principals(v: &mut Validator, value: &Value) -> Vec<Principal> {
    let mut out = Vec::new();
    match value {
        Value::String(s) if s == "*" => out.push(Principal::Any),
        Value::Object(map) if !map.is_empty() => {
            for (k, list) in map {
                v.field(k, |v| {
                    if k != "AWS" && k != "Trellis" {
                        v.error("unknown principal type; use \"AWS\" or \"Trellis\" (they mean the same)");
                        return;
                    }
                    string_or_list(v, list, |v, s| match principal(s) {
                        Ok(p) => out.push(p),
                        Err(m) => v.error(m),
                    });
                });
            }
        }
        other => v.error(format!(
            "must be \"*\" or an object such as {{\"AWS\": [\"111122223333\"]}}, got {other}"
        )),
    }
    out
}

fn principal(s: &str) -> Result<Principal, String> {
    if s == "*" {
        return Ok(Principal::Any);
    }
    if s.eq_ignore_ascii_case(ANONYMOUS) {
        return Ok(Principal::Anonymous);
    }
    if is_account_id(s) {
        return Ok(Principal::Account(s.into()));
    }
    if let Some(rest) = s.strip_prefix("spiffe://") {
        return workload_pattern(s, rest).map(|()| Principal::Workload(s.into()));
    }
    if let Some(acct) = s
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.strip_suffix(":root"))
    {
        return Err(format!(
            "IAM ARNs are not Trellis principals; write the account id \"{acct}\""
        ));
    }
    Err(format!(
        "'{s}' is not a principal; expected \"*\", \"anonymous\", a 12-digit account id, or a workload id spiffe://<trust-domain>/account/<id>/workload/<name> (with * or ? wildcards)"
    ))
}

pub(super) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is non-empty and every byte is a wildcard or `allowed`.
pub(super) fn only(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'*' || b == b'?' || allowed(b))
}

/// `<td>/account/<id>/workload/<name>`, each part a pattern of the
/// characters its part allows.
fn workload_pattern(full: &str, rest: &str) -> Result<(), String> {
    let parts: Vec<&str> = rest.split('/').collect();
    let shape_err = || {
        format!(
            "'{full}' is not a workload id pattern; expected spiffe://<trust-domain>/account/<id>/workload/<name>, where * and ? match within one segment"
        )
    };
    let [td, "account", id, "workload", name] = parts.as_slice() else {
        return Err(shape_err());
    };
    let td_ok = only(td, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
    });
    if !td_ok {
        return Err(format!(
            "'{full}': the trust domain '{td}' may contain only lowercase letters, digits, '-', '_', '.' and wildcards"
        ));
    }
    if !only(id, |b| b.is_ascii_digit()) || (!id.contains(['*', '?']) && id.len() != 12) {
        return Err(format!(
            "'{full}': the account '{id}' must be 12 digits, or a pattern of digits and wildcards"
        ));
    }
    if !only(name, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
    }) {
        return Err(format!(
            "'{full}': the workload '{name}' may contain only lowercase letters, digits, '-' and wildcards"
        ));
    }
    Ok(())
}

fn actions(v: &mut Validator, value: &Value) {
    string_or_list(v, value, |v, s| {
        let ok = s == "*"
            || s.eq_ignore_ascii_case(ACTION_INVOKE)
            || s.eq_ignore_ascii_case("trellis:*");
        if ok {
            return;
        }
        let hint = if s.to_ascii_lowercase().starts_with("vpc-lattice-svcs:") {
            format!("; write \"{ACTION_INVOKE}\" for Lattice's Invoke")
        } else {
            String::new()
        };
        v.error(format!(
            "unknown action '{s}'; the only action is \"{ACTION_INVOKE}\" (or \"trellis:*\", \"*\"){hint}"
        ));
    });
}

fn resources(v: &mut Validator, value: &Value) -> Vec<Resource> {
    let mut out = Vec::new();
    string_or_list(v, value, |v, s| match resource(s) {
        Ok(r) => out.push(r),
        Err(m) => v.error(m),
    });
    out
}

const RESOURCE_FORMS: &str = "expected \"*\", \"<service>[/<path>]\" or \"trellis:<account>:service/<service>[/<path>]\", e.g. \"api/orders/*\"";

fn resource(s: &str) -> Result<Resource, String> {
    if s == "*" {
        return Ok(Resource::any());
    }
    if s.starts_with("arn:") {
        return Err(format!(
            "'{s}': AWS ARNs are not Trellis resources; {RESOURCE_FORMS}"
        ));
    }
    let (account, rest) = match s.strip_prefix("trellis:") {
        Some(arn) => {
            let Some((acct, rest)) = arn.split_once(':') else {
                return Err(format!("'{s}': {RESOURCE_FORMS}"));
            };
            let Some(rest) = rest.strip_prefix("service/") else {
                return Err(format!(
                    "'{s}': after the account comes 'service/<service>'; {RESOURCE_FORMS}"
                ));
            };
            let pattern_ok = only(acct, |b| b.is_ascii_digit())
                && (acct.contains(['*', '?']) || acct.len() == 12);
            if !pattern_ok {
                return Err(format!(
                    "'{s}': the account '{acct}' must be 12 digits, or a pattern of digits and wildcards"
                ));
            }
            (if acct == "*" { None } else { Some(acct) }, rest)
        }
        None => (None, s),
    };
    let (service, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if !only(service, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
    }) {
        return Err(format!(
            "'{s}': the service '{service}' must be a service name pattern (lowercase letters, digits, '-', * and ?); {RESOURCE_FORMS}"
        ));
    }
    if let Some(p) = path
        && let Some(c) = p.chars().find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "'{s}': the path may not contain {c:?} (whitespace or control characters)"
        ));
    }
    Ok(Resource {
        account: account.map(str::to_owned),
        service: service.to_owned(),
        // "/*" is every path; keep it as "no path" so it costs nothing.
        path: path.filter(|p| *p != "/*").map(str::to_owned),
    })
}
