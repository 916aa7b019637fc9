//! Mesh identity: the name a proxy's certificate gives it.
//!
//! Every proxy holds a short-lived certificate issued by the control plane
//! (the mesh CA). The certificate names the proxy with exactly one URI
//! subject alternative name in SPIFFE form:
//!
//! ```text
//! spiffe://<trust-domain>/account/<account-id>/workload/<workload>
//! ```
//!
//! - the **trust domain** names the mesh (default [`DEFAULT_TRUST_DOMAIN`]);
//!   certificates from another trust domain are not ours;
//! - the **account id** is twelve ASCII digits, as in AWS (see
//!   [`check_account_id`]; the default account is
//!   [`crate::limits::DEFAULT_ACCOUNT`]);
//! - the **workload** is a DNS label (lowercase letters, digits and `-`,
//!   starting with a letter, at most 63 characters), usually the proxy's
//!   registered name.
//!
//! [`WorkloadIdentity`] is that name, parsed and validated; it is what auth
//! policies match and what access logs print. The constants here are shared
//! by the CA (control plane) and the proxies so both agree on lifetimes and
//! renewal.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The URI scheme of SPIFFE ids, with its `//`.
pub const SPIFFE_PREFIX: &str = "spiffe://";
/// Trust domain of a mesh whose operator did not choose one. `.local`
/// because the name is never resolved: it only has to differ between
/// meshes that must not trust each other.
pub const DEFAULT_TRUST_DOMAIN: &str = "trellis.local";
/// Longest trust domain (the SPIFFE spec's limit, and DNS's).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Length of an account id: twelve decimal digits, as AWS account ids.
pub const ACCOUNT_ID_LEN: usize = 12;

/// Lifetime of a workload certificate when nobody asks for another: one
/// day. Short enough that a stolen key is worth little for long, long
/// enough that a control plane outage of several hours does not take the
/// mesh down (proxies renew at [`RENEW_AT_FRACTION`] and keep retrying).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest lifetime the CA issues. Tests use a few seconds to see several
/// renewals; below this, renewal at 70 % leaves too little time to renew.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(5);
/// Longest lifetime the CA issues: a week. Certificates are not revoked,
/// they expire, so a longer lifetime would make a leaked key live too long.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The CA dates a certificate's not-before this far in the past, so a peer
/// whose clock is a little behind still accepts it. Capped at a tenth of
/// the lifetime ([`not_before_backdate`]) so that short test lifetimes still
/// renew at about 70 % of the time the certificate is really in use.
pub const NOT_BEFORE_BACKDATE: Duration = Duration::from_secs(60);
/// A proxy renews its certificate when this fraction of its lifetime
/// (not-before to not-after) has passed: 70 %, as Linkerd does, leaving
/// 30 % (about 7 h of a day-long certificate) to retry a failed renewal.
pub const RENEW_AT_FRACTION: f64 = 0.70;
/// Renewal is spread by up to this fraction of the lifetime either side of
/// [`RENEW_AT_FRACTION`] (so 65 %–75 %), so that proxies started together
/// do not all renew at the same moment.
pub const RENEW_JITTER_FRACTION: f64 = 0.05;

/// How far the CA backdates not-before for a certificate living `ttl`:
/// [`NOT_BEFORE_BACKDATE`], but at most a tenth of `ttl`.
pub fn not_before_backdate(ttl: Duration) -> Duration {
    NOT_BEFORE_BACKDATE.min(ttl / 10)
}

/// A workload's name in the mesh: trust domain, account and workload.
///
/// Always valid: the only ways to make one ([`WorkloadIdentity::new`],
/// [`FromStr`], serde) check every part. Displays (and serializes) as its
/// SPIFFE URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadIdentity {
    trust_domain: String,
    account: String,
    workload: String,
}

/// Why a string or a set of parts is not a valid [`WorkloadIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    /// The URI does not start with `spiffe://`.
    #[error("'{0}' is not a SPIFFE id: it must start with 'spiffe://'")]
    NotSpiffe(String),
    /// The trust domain is malformed.
    #[error("trust domain '{value}' is invalid: {reason}")]
    TrustDomain {
        /// The trust domain as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The path is not `/account/<id>/workload/<name>`.
    #[error(
        "'{0}' is not a Trellis workload id: the path must be /account/<12 digits>/workload/<name>"
    )]
    Path(String),
    /// The account id is not twelve digits.
    #[error("account id '{value}' is invalid: {reason}")]
    Account {
        /// The account id as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The workload name is not a DNS label.
    #[error("workload name '{value}' is invalid: {reason}")]
    Workload {
        /// The workload name as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl WorkloadIdentity {
    /// Check every part and build the identity.
    pub fn new(
        trust_domain: impl Into<String>,
        account: impl Into<String>,
        workload: impl Into<String>,
    ) -> Result<Self, InvalidIdentity> {
        let (trust_domain, account, workload) =
            (trust_domain.into(), account.into(), workload.into());
        check_trust_domain(&trust_domain).map_err(|reason| InvalidIdentity::TrustDomain {
            value: trust_domain.clone(),
            reason,
        })?;
        check_account_id(&account).map_err(|reason| InvalidIdentity::Account {
            value: account.clone(),
            reason,
        })?;
        crate::validate::check_dns_label(&workload).map_err(|reason| {
            InvalidIdentity::Workload {
                value: workload.clone(),
                reason,
            }
        })?;
        Ok(Self {
            trust_domain,
            account,
            workload,
        })
    }

    /// The trust domain, e.g. `trellis.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The twelve-digit account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The workload name.
    pub fn workload(&self) -> &str {
        &self.workload
    }

    /// The SPIFFE URI, the same text as [`fmt::Display`].
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_PREFIX}{}/account/{}/workload/{}",
            self.trust_domain, self.account, self.workload
        )
    }
}

impl FromStr for WorkloadIdentity {
    type Err = InvalidIdentity;

    /// Parse `spiffe://<td>/account/<id>/workload/<name>`. Strict: no port,
    /// user info, query, fragment, trailing slash or other path; the scheme
    /// and trust domain must be lowercase.
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let rest = uri
            .strip_prefix(SPIFFE_PREFIX)
            .ok_or_else(|| InvalidIdentity::NotSpiffe(uri.to_owned()))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(InvalidIdentity::Path(uri.to_owned())),
        };
        let mut segments = path.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some(""), Some("account"), Some(account), Some("workload"), Some(workload), None) => {
                Self::new(trust_domain, account, workload)
            }
            _ => Err(InvalidIdentity::Path(uri.to_owned())),
        }
    }
}

impl Serialize for WorkloadIdentity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkloadIdentity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The SPIFFE id of a whole trust domain, `spiffe://<td>` (what the mesh
/// CA's root certificate names).
pub fn trust_domain_uri(trust_domain: &str) -> String {
    format!("{SPIFFE_PREFIX}{trust_domain}")
}

/// Why `td` is not a valid trust domain, if it is not: 1–255 characters of
/// lowercase letters, digits, `-`, `_` and `.`, with no empty label (the
/// SPIFFE spec's characters; no port, no upper case).
pub fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("must not be empty".into());
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(format!(
            "must be at most {MAX_TRUST_DOMAIN_LEN} characters, got {}",
            td.len()
        ));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "may contain only lowercase letters, digits, '-', '_' and '.', found '{c}'"
        ));
    }
    if td.split('.').any(str::is_empty) {
        return Err("must not start or end with '.' or contain '..'".into());
    }
    Ok(())
}

/// Why `account` is not a valid account id, if it is not: exactly
/// [`ACCOUNT_ID_LEN`] ASCII digits, leading zeros allowed (as in AWS).
pub fn check_account_id(account: &str) -> Result<(), String> {
    if account.len() != ACCOUNT_ID_LEN || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "must be exactly {ACCOUNT_ID_LEN} digits, e.g. '000000000000'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "spiffe://trellis.local/account/123456789012/workload/web-1";

    #[test]
    fn parses_and_displays_the_same_uri() {
        let id: WorkloadIdentity = URI.parse().unwrap();
        assert_eq!(id.trust_domain(), "trellis.local");
        assert_eq!(id.account(), "123456789012");
        assert_eq!(id.workload(), "web-1");
        assert_eq!(id.to_string(), URI);
        assert_eq!(id.uri(), URI);
        assert_eq!(
            WorkloadIdentity::new("trellis.local", "123456789012", "web-1").unwrap(),
            id
        );
    }

    #[test]
    fn serde_is_the_uri_string() {
        let id: WorkloadIdentity = URI.parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{URI}\""));
        assert_eq!(serde_json::from_str::<WorkloadIdentity>(&json).unwrap(), id);
        let err = serde_json::from_str::<WorkloadIdentity>("\"spiffe://x/y\"").unwrap_err();
        assert!(err.to_string().contains("/account/<12 digits>"), "{err}");
    }

    #[test]
    fn rejects_malformed_uris_with_the_part_at_fault() {
        use InvalidIdentity as E;
        type IsExpected = fn(&InvalidIdentity) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            (
                "https://trellis.local/account/123456789012/workload/web",
                |e| matches!(e, E::NotSpiffe(_)),
            ),
            (
                "SPIFFE://trellis.local/account/123456789012/workload/web",
                |e| matches!(e, E::NotSpiffe(_)),
            ),
            ("spiffe://trellis.local", |e| matches!(e, E::Path(_))),
            ("spiffe://trellis.local/", |e| matches!(e, E::Path(_))),
            (
                "spiffe://trellis.local/account/123456789012/workload/web/",
                |e| matches!(e, E::Path(_)),
            ),
            (
                "spiffe://trellis.local/account/123456789012/workload/web/x",
                |e| matches!(e, E::Path(_)),
            ),
            (
                "spiffe://trellis.local/acct/123456789012/workload/web",
                |e| matches!(e, E::Path(_)),
            ),
            (
                "spiffe://trellis.local//account/123456789012/workload/web",
                |e| matches!(e, E::Path(_)),
            ),
            (
                "spiffe://Trellis.local/account/123456789012/workload/web",
                |e| matches!(e, E::TrustDomain { .. }),
            ),
            (
                "spiffe://trellis.local:443/account/123456789012/workload/web",
                |e| matches!(e, E::TrustDomain { .. }),
            ),
            (
                "spiffe://user@trellis.local/account/123456789012/workload/web",
                |e| matches!(e, E::TrustDomain { .. }),
            ),
            ("spiffe:///account/123456789012/workload/web", |e| {
                matches!(e, E::TrustDomain { .. })
            }),
            ("spiffe://a..b/account/123456789012/workload/web", |e| {
                matches!(e, E::TrustDomain { .. })
            }),
            (
                "spiffe://trellis.local/account/12345678901/workload/web",
                |e| matches!(e, E::Account { .. }),
            ),
            (
                "spiffe://trellis.local/account/12345678901a/workload/web",
                |e| matches!(e, E::Account { .. }),
            ),
            (
                "spiffe://trellis.local/account/123456789012/workload/Web",
                |e| matches!(e, E::Workload { .. }),
            ),
            (
                "spiffe://trellis.local/account/123456789012/workload/",
                |e| matches!(e, E::Workload { .. }),
            ),
            (
                "spiffe://trellis.local/account/123456789012/workload/web?x=1",
                |e| matches!(e, E::Workload { .. }),
            ),
            (
                "spiffe://trellis.local/account/123456789012/workload/web#f",
                |e| matches!(e, E::Workload { .. }),
            ),
        ];
        for (uri, expected) in cases {
            let err = uri.parse::<WorkloadIdentity>().unwrap_err();
            assert!(expected(&err), "{uri}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn error_messages_name_the_part_and_the_rule() {
        let err = WorkloadIdentity::new("trellis.local", "42", "web").unwrap_err();
        assert_eq!(
            err.to_string(),
            "account id '42' is invalid: must be exactly 12 digits, e.g. '000000000000'"
        );
        let err = WorkloadIdentity::new("trellis.local", "000000000000", "1web").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("workload name '1web' is invalid"),
            "{err}"
        );
        let err = WorkloadIdentity::new("Mesh", "000000000000", "web").unwrap_err();
        assert!(err.to_string().contains("found 'M'"), "{err}");
    }

    #[test]
    fn trust_domains() {
        assert!(check_trust_domain("trellis.local").is_ok());
        assert!(check_trust_domain("prod_mesh-1.example.org").is_ok());
        assert!(check_trust_domain("").is_err());
        assert!(check_trust_domain(".trellis").is_err());
        assert!(check_trust_domain("trellis.").is_err());
        assert!(check_trust_domain(&"a".repeat(256)).is_err());
        assert!(check_trust_domain(&"a".repeat(255)).is_ok());
        assert_eq!(trust_domain_uri("trellis.local"), "spiffe://trellis.local");
    }

    #[test]
    fn default_account_is_a_valid_account_id() {
        assert!(check_account_id(crate::limits::DEFAULT_ACCOUNT).is_ok());
    }

    #[test]
    fn lifetimes_and_renewal_constants_are_consistent() {
        assert!(MIN_CERT_TTL <= DEFAULT_CERT_TTL && DEFAULT_CERT_TTL <= MAX_CERT_TTL);
        const { assert!(RENEW_AT_FRACTION + RENEW_JITTER_FRACTION < 1.0) };
        const { assert!(RENEW_AT_FRACTION - RENEW_JITTER_FRACTION > 0.5) };
        assert_eq!(not_before_backdate(DEFAULT_CERT_TTL), NOT_BEFORE_BACKDATE);
        assert_eq!(
            not_before_backdate(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }
}
