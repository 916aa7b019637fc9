//! What `get`, `describe` and `delete` accept as a KIND argument.

use std::fmt;
use std::str::FromStr;
use trellis_config::Kind;

/// A kind of stored resource, or the proxies the control plane knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A stored resource kind.
    Kind(Kind),
    /// `proxies`: status reported by (and for) proxies; read-only.
    Proxies,
    /// `targets`: the targets of one target group with their health (the
    /// name given is the target group's); read-only.
    Targets,
}

impl FromStr for Subject {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "proxies" | "proxy" | "px" => Ok(Subject::Proxies),
            "targets" | "target" => Ok(Subject::Targets),
            _ => s
                .parse::<Kind>()
                .map(Subject::Kind)
                .map_err(|e| format!("{e}, targets, or proxies")),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Kind(k) => f.write_str(cli_name(*k)),
            Subject::Proxies => f.write_str("proxy"),
            Subject::Targets => f.write_str("target group"),
        }
    }
}

/// The singular, lower-case name the CLI prints (`service-network/demo`);
/// `Kind::from_str` accepts it back.
pub fn cli_name(kind: Kind) -> &'static str {
    match kind {
        Kind::ServiceNetwork => "service-network",
        Kind::TargetGroup => "target-group",
        Kind::Service => "service",
        Kind::ServiceAssociation => "service-association",
        Kind::ProxyAssociation => "proxy-association",
        Kind::AccessLogSubscription => "access-log-subscription",
    }
}

/// `service/catalog`.
pub fn qualified(kind: Kind, name: &str) -> String {
    format!("{}/{name}", cli_name(kind))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn printed_names_parse_back() {
        for k in Kind::ALL {
            assert_eq!(cli_name(k).parse::<Kind>().unwrap(), k);
            assert_eq!(format!("{}s", cli_name(k)), k.collection());
        }
    }

    #[test]
    fn aliases_and_proxies() {
        assert_eq!("svc".parse::<Subject>(), Ok(Subject::Kind(Kind::Service)));
        assert_eq!(
            "TG".parse::<Subject>(),
            Ok(Subject::Kind(Kind::TargetGroup))
        );
        assert_eq!("proxies".parse::<Subject>(), Ok(Subject::Proxies));
        assert_eq!("targets".parse::<Subject>(), Ok(Subject::Targets));
        let e = "widgets".parse::<Subject>().unwrap_err();
        assert!(
            e.contains("unknown kind 'widgets'") && e.ends_with("or proxies"),
            "{e}"
        );
    }
}
