//! VPC Lattice's `failureReason` taxonomy, and where each of the proxy's
//! own error reasons ([`Reason`]) falls in it.
//!
//! | `failureReason`              | Trellis reasons and conditions |
//! |------------------------------|--------------------------------|
//! | `TargetConnectionError`      | `upstream_connect_failed`; `no_healthy_target` and `overflow` (no connection could be made or was allowed to the target group) |
//! | `TargetProtocolError`        | `upstream_protocol_error` |
//! | `TargetDataTimeout`          | `upstream_timeout` |
//! | `TargetConnectionClosed`     | `upstream_reset`; the target's response body broke off after its head was sent on |
//! | `ClientConnectionClosed`     | the client went away before it had the whole response |
//! | `ClientRateLimited`          | `rate_limited` |
//! | `ClientAccessDenied`         | `target_not_fronted`, `access_denied`, `unauthenticated` (auth-policy refusals) |
//! | `ClientProtocolError`        | `bad_request`, `no_service`, `no_listener`, `request_timeout`, `body_too_large`, `headers_too_large`, `http_version_not_supported` |
//! | `ConnectionDurationExceeded` | not produced yet (no connection lifetime limit) |
//! | `InternalError`              | `not_ready` |
//!
//! A fixed-response action is no failure (its line has `failureReason`
//! null, and `trellisError` `fixed_response` when its status is not 2xx).
//! Every [`Reason`] must be in the table: a new one fails the test
//! `every_reason_is_mapped` until someone decides where it falls.

use crate::error::Reason;
use std::fmt;

/// A `failureReason` of VPC Lattice's access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No connection to the target.
    TargetConnectionError,
    /// The target's answer was not valid HTTP.
    TargetProtocolError,
    /// The target did not answer in time.
    TargetDataTimeout,
    /// The target closed or reset the connection.
    TargetConnectionClosed,
    /// The client closed the connection before the response was complete.
    ClientConnectionClosed,
    /// A rate limit refused the request.
    ClientRateLimited,
    /// The request was not allowed.
    ClientAccessDenied,
    /// The request was malformed or over a limit.
    ClientProtocolError,
    /// The connection lived longer than allowed.
    #[allow(dead_code)] // Lattice's; nothing produces it yet (no connection lifetime limit)
    ConnectionDurationExceeded,
    /// The proxy could not serve the request.
    InternalError,
}

impl FailureReason {
    /// Every value.
    #[cfg(test)]
    pub const ALL: [FailureReason; 10] = [
        FailureReason::TargetConnectionError,
        FailureReason::TargetProtocolError,
        FailureReason::TargetDataTimeout,
        FailureReason::TargetConnectionClosed,
        FailureReason::ClientConnectionClosed,
        FailureReason::ClientRateLimited,
        FailureReason::ClientAccessDenied,
        FailureReason::ClientProtocolError,
        FailureReason::ConnectionDurationExceeded,
        FailureReason::InternalError,
    ];

    /// Lattice's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureReason::TargetConnectionError => "TargetConnectionError",
            FailureReason::TargetProtocolError => "TargetProtocolError",
            FailureReason::TargetDataTimeout => "TargetDataTimeout",
            FailureReason::TargetConnectionClosed => "TargetConnectionClosed",
            FailureReason::ClientConnectionClosed => "ClientConnectionClosed",
            FailureReason::ClientRateLimited => "ClientRateLimited",
            FailureReason::ClientAccessDenied => "ClientAccessDenied",
            FailureReason::ClientProtocolError => "ClientProtocolError",
            FailureReason::ConnectionDurationExceeded => "ConnectionDurationExceeded",
            FailureReason::InternalError => "InternalError",
        }
    }

    /// Where a proxy-made error falls (see the module table).
    pub const fn of(reason: Reason) -> FailureReason {
        match mapped(reason) {
            Some(f) => f,
            None => FailureReason::InternalError,
        }
    }
}

/// The table above as code. A reason missing here falls back to
/// `InternalError`, and the test `every_reason_is_mapped` fails until
/// someone decides where it belongs.
const fn mapped(reason: Reason) -> Option<FailureReason> {
    Some(match reason {
        Reason::UpstreamConnectFailed | Reason::NoHealthyTarget | Reason::Overflow => {
            FailureReason::TargetConnectionError
        }
        Reason::UpstreamProtocolError => FailureReason::TargetProtocolError,
        Reason::UpstreamTimeout => FailureReason::TargetDataTimeout,
        Reason::UpstreamReset => FailureReason::TargetConnectionClosed,
        Reason::RateLimited => FailureReason::ClientRateLimited,
        Reason::TargetNotFronted | Reason::AccessDenied | Reason::Unauthenticated => {
            FailureReason::ClientAccessDenied
        }
        Reason::BadRequest
        | Reason::NoService
        | Reason::NoListener
        | Reason::RequestTimeout
        | Reason::BodyTooLarge
        | Reason::HeadersTooLarge
        | Reason::HttpVersionNotSupported => FailureReason::ClientProtocolError,
        Reason::NotReady => FailureReason::InternalError,
        #[allow(unreachable_patterns)] // reachable while a new reason is unmapped
        _ => return None,
    })
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Blame;

    #[test]
    fn every_reason_is_mapped() {
        for r in Reason::ALL {
            assert!(mapped(r).is_some(), "{r} has no failureReason");
        }
    }

    #[test]
    fn every_reason_falls_on_the_side_it_blames() {
        for r in Reason::ALL {
            let f = FailureReason::of(r);
            let target_side = f.as_str().starts_with("Target");
            match r.blame() {
                Blame::Upstream => assert!(target_side, "{r} -> {f}"),
                Blame::Client => assert!(f.as_str().starts_with("Client"), "{r} -> {f}"),
                Blame::Proxy => {}
            }
        }
        let names: std::collections::HashSet<_> =
            FailureReason::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), FailureReason::ALL.len());
    }
}
