//! What became of one attempt on a target, as the data path reports it to
//! passive outlier detection ([`super::EndpointGuard::record`]).

use crate::error::Reason;

/// The outcome of one attempt (one try: retries report their own) on the
/// target an [`super::EndpointGuard`] was picked for.
///
/// Report exactly one outcome per attempt, as soon as it is known: when
/// the response head arrives, or when the attempt fails before one.
/// What counts against the target (consecutive, reset by any other
/// outcome of its kind):
///
/// | outcome            | consecutive 5xx | gateway errors | connect failures |
/// |--------------------|-----------------|----------------|------------------|
/// | `Status(100..=499)`| reset           | reset          | reset            |
/// | `Status(500..=599)` other than 502/503/504 | +1 | reset | reset       |
/// | `Status(502 / 503 / 504)` | +1       | +1             | reset            |
/// | `Reset`            | +1 (as a 502)   | +1             | reset            |
/// | `Timeout`          | +1 (as a 504)   | +1             | unchanged        |
/// | `ConnectFailure`   | +1 (as a 503)   | +1             | +1               |
///
/// Do not report failures that are not the target's: a client that went
/// away, a body over the limit, a breaker overflow, a rate limit. Proxy-made
/// answers of a fronting proxy (`x-trellis-error` on the response) may be
/// reported as their status: a fronting proxy that cannot reach the target
/// answers 502/503/504, which is what they mean for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response head with this status arrived (any status: a success
    /// resets the target's counters).
    Status(u16),
    /// No connection could be opened: refused, unreachable, or the connect
    /// timeout passed.
    ConnectFailure,
    /// The connection was reset or closed before a complete response head,
    /// or what came back was not HTTP.
    Reset,
    /// No response head within the per-try or request timeout (the
    /// connection was open).
    Timeout,
}

impl Outcome {
    /// The outcome a proxy error reason stands for, when the reason is the
    /// target's doing; `None` for reasons that say nothing about the target.
    pub fn from_reason(reason: Reason) -> Option<Outcome> {
        match reason {
            Reason::UpstreamConnectFailed => Some(Outcome::ConnectFailure),
            Reason::UpstreamReset | Reason::UpstreamProtocolError => Some(Outcome::Reset),
            Reason::UpstreamTimeout => Some(Outcome::Timeout),
            _ => None,
        }
    }

    /// Counts toward `consecutive5xx`.
    pub(crate) fn is_5xx(self) -> bool {
        match self {
            Outcome::Status(s) => (500..=599).contains(&s),
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
        }
    }

    /// Counts toward `consecutiveGatewayErrors`.
    pub(crate) fn is_gateway_error(self) -> bool {
        match self {
            Outcome::Status(s) => matches!(s, 502..=504),
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(!Outcome::Status(200).is_5xx());
        assert!(!Outcome::Status(404).is_gateway_error());
        assert!(Outcome::Status(500).is_5xx());
        assert!(!Outcome::Status(500).is_gateway_error());
        assert!(Outcome::Status(503).is_gateway_error());
        for o in [Outcome::ConnectFailure, Outcome::Reset, Outcome::Timeout] {
            assert!(o.is_5xx() && o.is_gateway_error(), "{o:?}");
        }
        assert_eq!(
            Outcome::from_reason(Reason::UpstreamConnectFailed),
            Some(Outcome::ConnectFailure)
        );
        assert_eq!(
            Outcome::from_reason(Reason::UpstreamTimeout),
            Some(Outcome::Timeout)
        );
        assert_eq!(Outcome::from_reason(Reason::BadRequest), None);
    }
}
