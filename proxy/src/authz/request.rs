//! A request's facts as policies read them, and the one check both
//! listeners call.

use super::Subject;
use super::subject::RequestParts;
use crate::error::Failure;
use http::HeaderMap;
use std::net::IpAddr;
use trellis_config::identity::WorkloadIdentity;
use trellis_config::policy::{Caller, HeaderLookup};

/// Lends an `http::HeaderMap` to policy conditions without copying it.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a>(pub &'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(f)
    }
}

/// A caller's identity as policies see it: account and SPIFFE id. Owns
/// the id's text for the duration of one check.
#[derive(Debug)]
pub struct CallerId {
    account: String,
    uri: String,
}

impl CallerId {
    /// The caller named by `identity`, if any.
    pub fn of(identity: Option<&WorkloadIdentity>) -> Option<Self> {
        identity.map(|id| Self {
            account: id.account().to_string(),
            uri: id.uri(),
        })
    }

    /// As a policy's [`Caller`].
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            account: &self.account,
            workload: &self.uri,
        }
    }
}

/// The facts of `method`, `uri` and `headers` from `caller` at
/// `source_ip`: what the proxy (and `explain`) give a [`Subject`].
pub fn request_parts<'r>(
    method: &'r http::Method,
    uri: &'r http::Uri,
    headers: &'r Headers<'r>,
    caller: Option<&'r CallerId>,
    source_ip: Option<IpAddr>,
) -> RequestParts<'r> {
    RequestParts {
        caller: caller.map(CallerId::caller),
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        source_ip,
    }
}

/// Check a request against `subject`: `Ok` when it may proceed (at once
/// when no level has a check), else the 401/403 to answer.
pub fn check<B>(
    subject: &Subject<'_>,
    req: &http::Request<B>,
    caller: Option<&WorkloadIdentity>,
    source_ip: IpAddr,
) -> Result<(), Failure> {
    if !subject.needs_check() {
        return Ok(());
    }
    let caller = CallerId::of(caller);
    let headers = Headers(req.headers());
    let parts = request_parts(
        req.method(),
        req.uri(),
        &headers,
        caller.as_ref(),
        Some(source_ip),
    );
    match subject.evaluate(&parts).failure(subject.service_name()) {
        None => Ok(()),
        Some(f) => Err(f),
    }
}
