//! The access-log line: one JSON object per request, fields always in the
//! same order, every field always present.
//!
//! Field names are VPC Lattice's where Lattice has the field; `retries`,
//! `traceId` and `trellisError` are Trellis's own. An unset value is
//! always JSON `null` (never `"-"`, never left out), whatever its type, so
//! `jq 'select(.failureReason != null)'` works and numbers stay numbers.
//! Durations are whole milliseconds, as in Lattice; `startTime` is RFC
//! 3339 UTC with milliseconds.
//!
//! | field | value |
//! |---|---|
//! | `startTime` | when the proxy took the request |
//! | `serviceNetwork` | network name (of the generated host name used, or the service's only network in scope) |
//! | `service`, `listener`, `rule` | names of the route taken; `rule` null for the default action |
//! | `targetGroup`, `targetIpPort` | the last target group and target tried; null when none was |
//! | `sourceIpPort` | the client's address |
//! | `requestMethod`, `protocol` | e.g. `GET`, `HTTP/1.1`, `HTTP/2.0` |
//! | `requestPath` | the path **without the query string** |
//! | `hostHeader`, `userAgent` | as sent (cut at 1 KiB) |
//! | `serverNameIndication`, `tlsVersion` | of an HTTPS listener's TLS connection; null on plain HTTP |
//! | `responseCode` | status sent; null when the client left before a response head |
//! | `grpcResponseCode` | `grpc-status` of a gRPC response |
//! | `bytesReceived`, `bytesSent` | request and response **body** bytes |
//! | `duration` | start to last response byte |
//! | `requestToTargetDuration` | start to the target's response head (or the failure of the last try); null when no target was tried |
//! | `responseFromTargetDuration` | target's response head to last byte sent; null when the response did not come from a target |
//! | `requestId` | `x-request-id` |
//! | `callerPrincipal`, `callerAccount` | who the request is made as: the SPIFFE id of the caller's proxy (its application calls as it) and its account; `anonymous` and null for a client of an HTTPS listener (or a proxy without a mesh identity) |
//! | `authDeniedReason` | on a 401/403 made by an auth policy: the level and statement, e.g. `service; Statement[1] (DenyPost)` (never policy text); null otherwise |
//! | `failureReason` | Lattice's taxonomy (see `observe::failure`) |
//! | `retries` | attempts after the first |
//! | `traceId` | the request's trace id: the proxy's trace when tracing is on, else a valid incoming `traceparent`'s |
//! | `trellisError` | the `x-trellis-error` reason the client saw |
//!
//! No header other than `Host` and `User-Agent` is ever read into a
//! record, so `Authorization`, `Cookie`, `Set-Cookie`,
//! `Proxy-Authorization` and the like cannot reach the log.

use crate::observe::record::RequestRecord;
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A value written as its `Display` text, straight into the line (no
/// `String` in between).
struct Shown<T>(T);

impl<T: fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The line's shape; field order is the serialisation order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    start_time: Shown<humantime::Rfc3339Timestamp>,
    service_network: Option<&'a str>,
    service: &'a str,
    listener: &'a str,
    rule: Option<&'a str>,
    target_group: Option<&'a str>,
    source_ip_port: Shown<SocketAddr>,
    target_ip_port: Option<&'a str>,
    request_method: &'a str,
    request_path: &'a str,
    protocol: &'static str,
    host_header: Option<&'a str>,
    user_agent: Option<&'a str>,
    server_name_indication: Option<&'a str>,
    tls_version: Option<&'a str>,
    response_code: Option<u16>,
    grpc_response_code: Option<u32>,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    request_to_target_duration: Option<u64>,
    response_from_target_duration: Option<u64>,
    request_id: &'a str,
    caller_principal: Option<&'a str>,
    caller_account: Option<&'a str>,
    auth_denied_reason: Option<&'a str>,
    failure_reason: Option<&'static str>,
    retries: u32,
    trace_id: Option<&'a str>,
    trellis_error: Option<&'static str>,
}

/// Every field name, in line order.
#[cfg(test)]
pub const FIELDS: [&str; 30] = [
    "startTime",
    "serviceNetwork",
    "service",
    "listener",
    "rule",
    "targetGroup",
    "sourceIpPort",
    "targetIpPort",
    "requestMethod",
    "requestPath",
    "protocol",
    "hostHeader",
    "userAgent",
    "serverNameIndication",
    "tlsVersion",
    "responseCode",
    "grpcResponseCode",
    "bytesReceived",
    "bytesSent",
    "duration",
    "requestToTargetDuration",
    "responseFromTargetDuration",
    "requestId",
    "callerPrincipal",
    "callerAccount",
    "authDeniedReason",
    "failureReason",
    "retries",
    "traceId",
    "trellisError",
];

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `HTTP/1.1`, `HTTP/2.0`, ...: what `Version`'s `Debug` prints.
fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Append the record's line, newline included, to `out`.
pub fn write_line(r: &RequestRecord, out: &mut Vec<u8>) {
    let line = Line {
        start_time: Shown(humantime::format_rfc3339_millis(r.start_time)),
        service_network: r.service_network.as_deref(),
        service: &r.service,
        listener: &r.listener,
        rule: r.rule.as_deref(),
        target_group: r.target_group.as_deref(),
        source_ip_port: Shown(r.source),
        target_ip_port: r.target.as_deref(),
        request_method: r.method.as_str(),
        request_path: &r.path,
        protocol: protocol(r.version),
        host_header: r.host.as_deref(),
        user_agent: r.user_agent.as_deref(),
        server_name_indication: r.server_name.as_deref(),
        tls_version: r.tls_version,
        response_code: r.status,
        grpc_response_code: r.grpc_status,
        bytes_received: r.bytes_received,
        bytes_sent: r.bytes_sent,
        duration: ms(r.duration),
        request_to_target_duration: r.request_to_target.map(ms),
        response_from_target_duration: r.response_from_target.map(ms),
        request_id: &r.request_id,
        caller_principal: r.caller_principal.as_deref(),
        caller_account: r.caller_account.as_deref(),
        auth_denied_reason: r.auth_denied_reason.as_deref(),
        failure_reason: r.failure_reason.map(|f| f.as_str()),
        retries: r.retries,
        trace_id: r.trace_id.as_deref(),
        trellis_error: r.trellis_error(),
    };
    // Serialising a struct of strings and numbers into a Vec cannot fail;
    // should it ever, the line is left out rather than half written.
    let mark = out.len();
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    } else {
        out.truncate(mark);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;
    use crate::error::Reason;
    use crate::observe::failure::FailureReason;
    use crate::observe::record::Outcome;
    use http::{Method, Version};
    use std::time::SystemTime;

    /// A record with every optional field unset.
    pub(crate) fn bare() -> RequestRecord {
        RequestRecord {
            start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            service_network: None,
            service: "api".into(),
            service_id: "svc-1".into(),
            listener: "http".into(),
            rule: None,
            target_group: None,
            target_group_id: None,
            source: ([127, 0, 0, 1], 40000).into(),
            target: None,
            method: Method::GET,
            path: "/".into(),
            version: Version::HTTP_11,
            host: None,
            user_agent: None,
            server_name: None,
            tls_version: None,
            status: None,
            grpc_status: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            request_to_target: None,
            response_from_target: None,
            request_id: "req-1".into(),
            caller_principal: None,
            caller_account: None,
            auth_denied_reason: None,
            outcome: Outcome::NoResponse,
            failure_reason: None,
            retries: 0,
            trace_id: None,
        }
    }

    fn line(r: &RequestRecord) -> (String, serde_json::Map<String, serde_json::Value>) {
        let mut out = Vec::new();
        write_line(r, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        (text, v.as_object().unwrap().clone())
    }

    #[test]
    fn every_field_is_present_in_order_and_unset_is_null() {
        let (text, obj) = line(&bare());
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        // serde_json's map is sorted unless preserve_order: compare sets,
        // then the order in the text.
        let mut want: Vec<&str> = FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        let mut at = 0;
        for f in FIELDS {
            let i = text[at..]
                .find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("{f} out of order in {text}"));
            at += i;
        }
        for f in [
            "serviceNetwork",
            "rule",
            "targetGroup",
            "targetIpPort",
            "hostHeader",
            "userAgent",
            "serverNameIndication",
            "tlsVersion",
            "responseCode",
            "grpcResponseCode",
            "requestToTargetDuration",
            "responseFromTargetDuration",
            "callerPrincipal",
            "callerAccount",
            "authDeniedReason",
            "failureReason",
            "traceId",
            "trellisError",
        ] {
            assert!(obj[f].is_null(), "{f} = {}", obj[f]);
        }
        assert_eq!(obj["startTime"], "2023-11-14T22:13:20.123Z");
        assert_eq!(obj["sourceIpPort"], "127.0.0.1:40000");
        assert_eq!(obj["protocol"], "HTTP/1.1");
        assert_eq!(obj["duration"], 0);
        assert_eq!(obj["retries"], 0);
        // Stable: the same record, the same bytes.
        assert_eq!(line(&bare()).0, text);
    }

    #[test]
    fn a_full_record() {
        let mut r = bare();
        r.service_network = Some("net".into());
        r.rule = Some("slow".into());
        r.target_group = Some("v1".into());
        r.target = Some("10.0.0.1:8080".into());
        r.method = Method::POST;
        r.path = "/a \"quoted\" path".into();
        r.version = Version::HTTP_2;
        r.host = Some("api.net.trellis.internal".into());
        r.status = Some(504);
        r.grpc_status = Some(14);
        r.bytes_received = 12;
        r.bytes_sent = 34;
        r.duration = Duration::from_micros(1_500_900);
        r.request_to_target = Some(Duration::from_millis(1500));
        r.outcome = Outcome::Failed(Reason::UpstreamTimeout);
        r.failure_reason = Some(FailureReason::TargetDataTimeout);
        r.retries = 2;
        r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        let (_, o) = line(&r);
        assert_eq!(o["requestPath"], "/a \"quoted\" path");
        assert_eq!(o["protocol"], "HTTP/2.0");
        assert_eq!(o["responseCode"], 504);
        assert_eq!(o["grpcResponseCode"], 14);
        assert_eq!(o["duration"], 1500);
        assert_eq!(o["requestToTargetDuration"], 1500);
        assert!(o["responseFromTargetDuration"].is_null());
        assert_eq!(o["failureReason"], "TargetDataTimeout");
        assert_eq!(o["trellisError"], "upstream_timeout");
        assert_eq!(o["retries"], 2);
        assert_eq!(o["targetGroup"], "v1");
        assert_eq!(o["targetIpPort"], "10.0.0.1:8080");
    }

    #[test]
    fn protocol_and_addresses_read_as_their_debug_and_display_text() {
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(protocol(v), format!("{v:?}"));
        }
        let mut r = bare();
        r.source = "[2001:db8::1%3]:40000".parse().unwrap();
        let (_, o) = line(&r);
        assert_eq!(o["sourceIpPort"], r.source.to_string());
        assert_eq!(o["sourceIpPort"], "[2001:db8::1%3]:40000");
    }

    #[test]
    fn fixed_responses_flag_only_non_success() {
        let mut r = bare();
        r.outcome = Outcome::Fixed;
        r.status = Some(404);
        assert_eq!(line(&r).1["trellisError"], "fixed_response");
        r.status = Some(200);
        assert!(line(&r).1["trellisError"].is_null());
    }
}
