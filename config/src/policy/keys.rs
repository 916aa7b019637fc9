//! Condition operators and condition keys: their names, how they parse, and
//! their VPC Lattice equivalents.

use std::fmt;

/// A condition operator. Each compares one request value (a condition key)
/// with the statement's values; several values are alternatives (any may
/// match). The negated operators are exactly the negation of their
/// positive twin, so a key the request does not have makes `StringEquals`
/// false and `StringNotEquals` true, as in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Equal to one of the values (case-sensitive).
    StringEquals,
    /// Equal to none of the values.
    StringNotEquals,
    /// Equal to one of the values, ignoring ASCII case.
    StringEqualsIgnoreCase,
    /// Equal to none of the values, ignoring ASCII case.
    StringNotEqualsIgnoreCase,
    /// Matches one of the globs (`*`, `?`; case-sensitive).
    StringLike,
    /// Matches none of the globs.
    StringNotLike,
    /// The caller's address lies in one of the ranges.
    IpAddress,
    /// The caller's address lies in none of the ranges.
    NotIpAddress,
}

impl Operator {
    /// Every operator, in documentation order.
    pub const ALL: [Operator; 8] = [
        Operator::StringEquals,
        Operator::StringNotEquals,
        Operator::StringEqualsIgnoreCase,
        Operator::StringNotEqualsIgnoreCase,
        Operator::StringLike,
        Operator::StringNotLike,
        Operator::IpAddress,
        Operator::NotIpAddress,
    ];

    /// The name as written in a policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operator::StringEquals => "StringEquals",
            Operator::StringNotEquals => "StringNotEquals",
            Operator::StringEqualsIgnoreCase => "StringEqualsIgnoreCase",
            Operator::StringNotEqualsIgnoreCase => "StringNotEqualsIgnoreCase",
            Operator::StringLike => "StringLike",
            Operator::StringNotLike => "StringNotLike",
            Operator::IpAddress => "IpAddress",
            Operator::NotIpAddress => "NotIpAddress",
        }
    }

    /// Parse an operator name (case-sensitive, as IAM's element names).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether this is the negation of another operator.
    pub const fn is_negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NotIpAddress
        )
    }

    /// Whether the values are IP ranges rather than strings.
    pub const fn is_ip(self) -> bool {
        matches!(self, Operator::IpAddress | Operator::NotIpAddress)
    }

    /// Whether the values are globs.
    pub const fn is_like(self) -> bool {
        matches!(self, Operator::StringLike | Operator::StringNotLike)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fact about the request a condition can test. Key names are
/// case-insensitive (`trellis:requestmethod` works); header names are
/// stored lowercase; query-string keys keep their case, because query keys
/// are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConditionKey {
    /// `trellis:RequestMethod`: the HTTP method, e.g. `GET`.
    RequestMethod,
    /// `trellis:RequestPath`: the path without the query string, as routed.
    RequestPath,
    /// `trellis:RequestHeader/<name>`: every value of header `<name>`.
    RequestHeader(String),
    /// `trellis:RequestQueryString/<key>`: every value of query parameter
    /// `<key>`, percent-decoded (`+` is a space).
    RequestQueryString(String),
    /// `trellis:RequestPort`: the listener port, in decimal.
    RequestPort,
    /// `trellis:SourceAccount`: the caller's account id (authenticated
    /// callers only).
    SourceAccount,
    /// `trellis:SourceWorkload`: the caller's SPIFFE id (authenticated
    /// callers only).
    SourceWorkload,
    /// `trellis:SourceIp`: the caller's IP address (IpAddress operators).
    SourceIp,
    /// `trellis:ServiceNetwork`: the name of the service network the
    /// request came through.
    ServiceNetwork,
    /// `trellis:Service`: the name of the service called.
    Service,
}

/// The prefix every Trellis condition key has.
pub const KEY_PREFIX: &str = "trellis:";

/// Every key name, for messages.
pub const KEY_NAMES: &str = "trellis:RequestMethod, trellis:RequestPath, trellis:RequestHeader/<name>, trellis:RequestQueryString/<key>, trellis:RequestPort, trellis:SourceAccount, trellis:SourceWorkload, trellis:SourceIp, trellis:ServiceNetwork, trellis:Service";

impl ConditionKey {
    /// Parse a key name. The error says what is wrong, and names the
    /// Trellis key when `name` is a VPC Lattice or IAM one.
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix(KEY_PREFIX) else {
            return Err(match lattice_hint(&lower) {
                Some(hint) => format!("unknown condition key; {hint}"),
                None => format!("unknown condition key; expected one of {KEY_NAMES}"),
            });
        };
        Ok(match rest {
            "requestmethod" => ConditionKey::RequestMethod,
            "requestpath" => ConditionKey::RequestPath,
            "requestport" => ConditionKey::RequestPort,
            "sourceaccount" => ConditionKey::SourceAccount,
            "sourceworkload" => ConditionKey::SourceWorkload,
            "sourceip" => ConditionKey::SourceIp,
            "servicenetwork" => ConditionKey::ServiceNetwork,
            "service" => ConditionKey::Service,
            _ => {
                if let Some(h) = rest.strip_prefix("requestheader/") {
                    check_header_name(h)?;
                    ConditionKey::RequestHeader(h.to_owned())
                } else if rest.starts_with("requestquerystring/") {
                    // Keep the key's own case: query keys are case-sensitive.
                    let key = &name[KEY_PREFIX.len() + "requestquerystring/".len()..];
                    if key.is_empty() {
                        return Err(
                            "the query-string key after 'trellis:RequestQueryString/' must not be empty"
                                .into(),
                        );
                    }
                    ConditionKey::RequestQueryString(key.to_owned())
                } else {
                    return Err(format!(
                        "unknown condition key; expected one of {KEY_NAMES}"
                    ));
                }
            }
        })
    }

    /// Whether the key describes the caller's mesh identity, which
    /// anonymous callers do not have.
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            ConditionKey::SourceAccount | ConditionKey::SourceWorkload
        )
    }

    /// The closest VPC Lattice (or global IAM) condition key.
    pub fn lattice_equivalent(&self) -> &'static str {
        match self {
            ConditionKey::RequestMethod => "vpc-lattice-svcs:RequestMethod",
            ConditionKey::RequestPath => "(none: Lattice puts the path in the Resource ARN)",
            ConditionKey::RequestHeader(_) => "vpc-lattice-svcs:RequestHeader/<name>",
            ConditionKey::RequestQueryString(_) => "vpc-lattice-svcs:RequestQueryString/<key>",
            ConditionKey::RequestPort => "vpc-lattice-svcs:Port",
            ConditionKey::SourceAccount => "aws:PrincipalAccount",
            ConditionKey::SourceWorkload => "aws:PrincipalArn",
            ConditionKey::SourceIp => "aws:SourceIp",
            ConditionKey::ServiceNetwork => "vpc-lattice-svcs:ServiceNetworkArn",
            ConditionKey::Service => "vpc-lattice-svcs:ServiceArn",
        }
    }
}

impl fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionKey::RequestMethod => f.write_str("trellis:RequestMethod"),
            ConditionKey::RequestPath => f.write_str("trellis:RequestPath"),
            ConditionKey::RequestHeader(h) => write!(f, "trellis:RequestHeader/{h}"),
            ConditionKey::RequestQueryString(k) => write!(f, "trellis:RequestQueryString/{k}"),
            ConditionKey::RequestPort => f.write_str("trellis:RequestPort"),
            ConditionKey::SourceAccount => f.write_str("trellis:SourceAccount"),
            ConditionKey::SourceWorkload => f.write_str("trellis:SourceWorkload"),
            ConditionKey::SourceIp => f.write_str("trellis:SourceIp"),
            ConditionKey::ServiceNetwork => f.write_str("trellis:ServiceNetwork"),
            ConditionKey::Service => f.write_str("trellis:Service"),
        }
    }
}

/// A header name is an HTTP token (RFC 9110 `tchar`s).
fn check_header_name(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("the header name after 'trellis:RequestHeader/' must not be empty".into());
    }
    if let Some(c) = h
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
    {
        return Err(format!("'{h}' is not a valid header name (found '{c}')"));
    }
    Ok(())
}

/// The Trellis key for a lowercased VPC Lattice or IAM key, as a hint.
fn lattice_hint(lower: &str) -> Option<String> {
    let trellis = match lower {
        "vpc-lattice-svcs:requestmethod" => "trellis:RequestMethod",
        "vpc-lattice-svcs:port" => "trellis:RequestPort",
        "vpc-lattice-svcs:servicenetworkarn" => "trellis:ServiceNetwork",
        "vpc-lattice-svcs:servicearn" => "trellis:Service",
        "vpc-lattice-svcs:sourcevpcowneraccount" | "aws:principalaccount" => {
            "trellis:SourceAccount"
        }
        "aws:principalarn" => "trellis:SourceWorkload",
        "aws:sourceip" => "trellis:SourceIp",
        "aws:principaltype" => {
            return Some(
                "Trellis has no principal type: name \"anonymous\" in Principal to admit callers without a mesh identity"
                    .into(),
            );
        }
        _ if lower.starts_with("vpc-lattice-svcs:requestheader/") => "trellis:RequestHeader/<name>",
        _ if lower.starts_with("vpc-lattice-svcs:requestquerystring/") => {
            "trellis:RequestQueryString/<key>"
        }
        _ => return None,
    };
    Some(format!("use '{trellis}' in Trellis policies"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_display_canonically() {
        for (input, shown) in [
            ("trellis:RequestMethod", "trellis:RequestMethod"),
            ("TRELLIS:requestmethod", "trellis:RequestMethod"),
            (
                "trellis:RequestHeader/X-Api-Key",
                "trellis:RequestHeader/x-api-key",
            ),
            (
                "trellis:requestquerystring/Page",
                "trellis:RequestQueryString/Page",
            ),
            ("trellis:servicenetwork", "trellis:ServiceNetwork"),
            ("trellis:SourceIp", "trellis:SourceIp"),
        ] {
            assert_eq!(ConditionKey::parse(input).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn unknown_and_lattice_keys_get_hints() {
        let e = ConditionKey::parse("trellis:Bogus").unwrap_err();
        assert!(
            e.starts_with("unknown condition key; expected one of"),
            "{e}"
        );
        let e = ConditionKey::parse("vpc-lattice-svcs:Port").unwrap_err();
        assert_eq!(
            e,
            "unknown condition key; use 'trellis:RequestPort' in Trellis policies"
        );
        let e = ConditionKey::parse("aws:PrincipalType").unwrap_err();
        assert!(e.contains("\"anonymous\""), "{e}");
        assert!(ConditionKey::parse("trellis:RequestHeader/").is_err());
        assert!(ConditionKey::parse("trellis:RequestHeader/a b").is_err());
        assert!(ConditionKey::parse("trellis:RequestQueryString/").is_err());
    }

    #[test]
    fn operators_are_case_sensitive() {
        assert_eq!(Operator::parse("StringLike"), Some(Operator::StringLike));
        assert_eq!(Operator::parse("stringlike"), None);
        for o in Operator::ALL {
            assert_eq!(Operator::parse(o.as_str()), Some(o));
        }
        assert!(Operator::StringNotLike.is_negated() && Operator::StringNotLike.is_like());
        assert!(Operator::NotIpAddress.is_ip());
    }
}
