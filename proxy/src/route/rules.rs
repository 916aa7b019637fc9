//! A rule's conditions, prepared for matching: method, path and header
//! matches, all of which must hold. Comparisons work on the request's
//! bytes in place; nothing is lower-cased or copied per request.

use http::header::HeaderName;
use http::{HeaderMap, Method};
use trellis_config::{HeaderMatch, MatchType, PathMatch, PathMatchType, RuleMatch};

/// The conditions of one rule.
#[derive(Debug)]
pub(super) struct Conditions {
    method: Option<Box<str>>,
    path: Option<PathCondition>,
    headers: Box<[HeaderCondition]>,
}

impl Conditions {
    pub(super) fn new(m: &RuleMatch) -> Self {
        Self {
            method: m.method.as_deref().map(Box::from),
            path: m.path.as_ref().map(PathCondition::new),
            headers: m.headers.iter().map(HeaderCondition::new).collect(),
        }
    }

    /// Whether every given condition holds. `path` is the request path
    /// without the query string; anything from a `?` on is ignored should
    /// a caller pass one.
    pub(super) fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if let Some(m) = &self.method
            && method.as_str() != &**m
        {
            return false;
        }
        if let Some(p) = &self.path {
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if !p.matches(path) {
                return false;
            }
        }
        self.headers.iter().all(|h| h.matches(headers))
    }
}

#[derive(Debug)]
struct PathCondition {
    kind: PathMatchType,
    value: Box<str>,
    case_sensitive: bool,
}

impl PathCondition {
    fn new(p: &PathMatch) -> Self {
        Self {
            kind: p.kind,
            value: p.value.as_str().into(),
            case_sensitive: p.case_sensitive,
        }
    }

    fn matches(&self, path: &str) -> bool {
        let (path, value) = (path.as_bytes(), self.value.as_bytes());
        match self.kind {
            PathMatchType::Exact => eq(path, value, self.case_sensitive),
            PathMatchType::Prefix => starts_with(path, value, self.case_sensitive),
        }
    }
}

#[derive(Debug)]
struct HeaderCondition {
    /// `None` when the configured name is not a valid header name: no
    /// request can carry it, so the condition never holds.
    name: Option<HeaderName>,
    kind: MatchType,
    value: Box<[u8]>,
    case_sensitive: bool,
}

impl HeaderCondition {
    fn new(h: &HeaderMatch) -> Self {
        Self {
            // `HeaderName` lower-cases, which makes the name match
            // case-insensitive.
            name: HeaderName::from_bytes(h.name.as_bytes()).ok(),
            kind: h.kind,
            value: h.value.as_bytes().into(),
            case_sensitive: h.case_sensitive,
        }
    }

    /// Any one of the header's values may satisfy the condition.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(name) = &self.name else {
            return false;
        };
        headers.get_all(name).iter().any(|v| {
            let (v, want, cs) = (v.as_bytes(), &*self.value, self.case_sensitive);
            match self.kind {
                MatchType::Exact => eq(v, want, cs),
                MatchType::Prefix => starts_with(v, want, cs),
                MatchType::Contains => contains(v, want, cs),
            }
        })
    }
}

fn eq(a: &[u8], b: &[u8], case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

fn starts_with(hay: &[u8], prefix: &[u8], case_sensitive: bool) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|head| eq(head, prefix, case_sensitive))
}

fn contains(hay: &[u8], needle: &[u8], case_sensitive: bool) -> bool {
    // `windows(0)` panics; an empty needle is in every value.
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len())
        .any(|w| eq(w, needle, case_sensitive))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rule(json: serde_json::Value) -> Conditions {
        Conditions::new(&serde_json::from_value::<RuleMatch>(json).unwrap())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn get(c: &Conditions, path: &str) -> bool {
        c.matches(&Method::GET, path, &HeaderMap::new())
    }

    #[test]
    fn method_is_exact() {
        let c = rule(serde_json::json!({"method": "POST"}));
        assert!(c.matches(&Method::POST, "/", &HeaderMap::new()));
        assert!(!c.matches(&Method::GET, "/", &HeaderMap::new()));
        let custom = Method::from_bytes(b"PURGE").unwrap();
        let c = rule(serde_json::json!({"method": "PURGE"}));
        assert!(c.matches(&custom, "/", &HeaderMap::new()));
    }

    #[test]
    fn path_exact_is_case_sensitive_by_default() {
        let c = rule(serde_json::json!({"path": {"type": "exact", "value": "/api"}}));
        assert!(get(&c, "/api"));
        assert!(!get(&c, "/API"));
        assert!(!get(&c, "/api/"));
        assert!(!get(&c, "/ap"));
        assert!(
            get(&c, "/api?x=1"),
            "the query string is not part of the path"
        );
    }

    #[test]
    fn path_exact_case_insensitive() {
        let c = rule(serde_json::json!(
            {"path": {"type": "exact", "value": "/Api", "caseSensitive": false}}
        ));
        assert!(get(&c, "/api"));
        assert!(get(&c, "/API"));
        assert!(!get(&c, "/apis"));
    }

    #[test]
    fn path_prefix() {
        let c = rule(serde_json::json!({"path": {"type": "prefix", "value": "/v1/"}}));
        assert!(get(&c, "/v1/"));
        assert!(get(&c, "/v1/users"));
        assert!(!get(&c, "/V1/users"));
        assert!(!get(&c, "/v1"));
        assert!(!get(&c, "/v2/users"));
        let c = rule(serde_json::json!(
            {"path": {"type": "prefix", "value": "/v1/", "caseSensitive": false}}
        ));
        assert!(get(&c, "/V1/users"));
    }

    #[test]
    fn header_exact_prefix_contains() {
        let exact = rule(serde_json::json!(
            {"headers": [{"name": "x-env", "type": "exact", "value": "canary"}]}
        ));
        let prefix = rule(serde_json::json!(
            {"headers": [{"name": "x-env", "type": "prefix", "value": "can"}]}
        ));
        let contains = rule(serde_json::json!(
            {"headers": [{"name": "x-env", "type": "contains", "value": "nar"}]}
        ));
        let m = |c: &Conditions, v: &'static str| {
            c.matches(&Method::GET, "/", &headers(&[("x-env", v)]))
        };
        assert!(m(&exact, "canary"));
        assert!(!m(&exact, "canary2"));
        assert!(m(&prefix, "canary2"));
        assert!(!m(&prefix, "xcanary"));
        assert!(m(&contains, "xcanaryx"));
        assert!(!m(&contains, "can-ary"));
        assert!(!m(&contains, "na"));
        assert!(!exact.matches(&Method::GET, "/", &HeaderMap::new()));
    }

    #[test]
    fn header_value_case_flag() {
        let insensitive = rule(serde_json::json!(
            {"headers": [{"name": "X-Env", "type": "contains", "value": "CaNaRy"}]}
        ));
        let sensitive = rule(serde_json::json!(
            {"headers": [{"name": "X-Env", "type": "exact", "value": "Canary", "caseSensitive": true}]}
        ));
        let h = headers(&[("x-env", "my-CANARY-1")]);
        assert!(
            insensitive.matches(&Method::GET, "/", &h),
            "name and value ignore case"
        );
        let h = headers(&[("x-env", "canary")]);
        assert!(!sensitive.matches(&Method::GET, "/", &h));
        let h = headers(&[("x-env", "Canary")]);
        assert!(sensitive.matches(&Method::GET, "/", &h));
    }

    #[test]
    fn any_repeated_header_value_may_match() {
        let c = rule(serde_json::json!(
            {"headers": [{"name": "x-tag", "type": "exact", "value": "b"}]}
        ));
        let h = headers(&[("x-tag", "a"), ("x-tag", "b"), ("x-tag", "c")]);
        assert!(c.matches(&Method::GET, "/", &h));
        let h = headers(&[("x-tag", "a"), ("x-tag", "c")]);
        assert!(!c.matches(&Method::GET, "/", &h));
    }

    #[test]
    fn all_conditions_must_hold() {
        let c = rule(serde_json::json!({
            "method": "GET",
            "path": {"type": "prefix", "value": "/api"},
            "headers": [
                {"name": "x-a", "type": "exact", "value": "1"},
                {"name": "x-b", "type": "exact", "value": "2"}
            ]
        }));
        let both = headers(&[("x-a", "1"), ("x-b", "2")]);
        let one = headers(&[("x-a", "1")]);
        assert!(c.matches(&Method::GET, "/api/x", &both));
        assert!(!c.matches(&Method::GET, "/api/x", &one));
        assert!(!c.matches(&Method::PUT, "/api/x", &both));
        assert!(!c.matches(&Method::GET, "/web", &both));
    }

    #[test]
    fn invalid_header_name_never_matches() {
        let c = rule(serde_json::json!(
            {"headers": [{"name": "bad name", "type": "contains", "value": "x"}]}
        ));
        assert!(!c.matches(&Method::GET, "/", &headers(&[("x-a", "x")])));
    }

    #[test]
    fn empty_needles_do_not_panic() {
        assert!(contains(b"abc", b"", true));
        assert!(starts_with(b"abc", b"", false));
        assert!(!contains(b"", b"a", false));
        assert!(!starts_with(b"ab", b"abc", true));
    }
}
