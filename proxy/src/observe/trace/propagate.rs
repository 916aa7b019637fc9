//! Trace context in headers: read from the incoming request (W3C
//! `traceparent`/`tracestate`, else B3 in its single `b3` or multi
//! `x-b3-*` form) and written on the upstream request.
//!
//! Upstream always gets `traceparent` (and `tracestate` when there is
//! one) naming the client span; a request that came with B3 also gets its
//! B3 fields rewritten, in the form it used, so an application behind the
//! proxy that reads only B3 sees the proxy's span as its parent.
//!
//! A B3 context without a sampling decision is taken as sampled (the
//! caller deferred the decision, and a parent-based sampler then keeps
//! the trace); `b3: 0` alone carries no ids and starts a new trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::fmt::Write as _;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The caller's span, if the request names a valid one.
pub(super) fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    if headers.contains_key(TRACEPARENT) {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(sc);
        }
    }
    if let Some(b3) = headers.get(B3) {
        return b3_single(b3.to_str().ok()?);
    }
    if headers.contains_key(X_B3_TRACE_ID) {
        return b3_multi(headers);
    }
    None
}

/// Write `sc` as the parent for the next hop (see the module doc).
pub(super) fn inject(headers: &mut HeaderMap, sc: &SpanContext) {
    let sampled = sc.trace_flags().is_sampled();
    let mut buf = String::with_capacity(55);
    let _ = write!(
        buf,
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        u8::from(sampled)
    );
    if let Ok(v) = HeaderValue::from_str(&buf) {
        headers.insert(TRACEPARENT, v);
    }
    let state = sc.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(v) if !state.is_empty() => {
            headers.insert(TRACESTATE, v);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
    if headers.contains_key(B3) {
        buf.clear();
        let _ = write!(
            buf,
            "{}-{}-{}",
            sc.trace_id(),
            sc.span_id(),
            u8::from(sampled)
        );
        if let Ok(v) = HeaderValue::from_str(&buf) {
            headers.insert(B3, v);
        }
    }
    if headers.contains_key(X_B3_TRACE_ID) {
        let hex = |buf: &mut String, v: &dyn std::fmt::Display| {
            buf.clear();
            let _ = write!(buf, "{v}");
            HeaderValue::from_str(buf).ok()
        };
        if let Some(v) = hex(&mut buf, &sc.trace_id()) {
            headers.insert(X_B3_TRACE_ID, v);
        }
        if let Some(v) = hex(&mut buf, &sc.span_id()) {
            headers.insert(X_B3_SPAN_ID, v);
        }
        headers.insert(
            X_B3_SAMPLED,
            HeaderValue::from_static(if sampled { "1" } else { "0" }),
        );
        headers.remove(X_B3_PARENT_SPAN_ID);
        headers.remove(X_B3_FLAGS);
    }
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`.
fn b3_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?; // a lone sampling flag has no ids
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    remote(trace, span, sampled)
}

fn b3_multi(headers: &HeaderMap) -> Option<SpanContext> {
    let get = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let debug = get(&X_B3_FLAGS) == Some("1");
    let sampled = match get(&X_B3_SAMPLED) {
        _ if debug => Some(true),
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    remote(get(&X_B3_TRACE_ID)?, get(&X_B3_SPAN_ID)?, sampled)
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A remote span context from B3 ids: a 64- or 128-bit trace id and a
/// 64-bit span id in lower-case hex.
fn remote(trace: &str, span: &str, sampled: Option<bool>) -> Option<SpanContext> {
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !matches!(trace.len(), 16 | 32) || span.len() != 16 || !lower_hex(trace) || !lower_hex(span)
    {
        return None;
    }
    let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
    let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
    let flags = if sampled.unwrap_or(true) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn w3c_first() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("tracestate", "vendor=x"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let sc = extract(&h).unwrap();
        assert_eq!(sc.trace_id().to_string(), TRACE);
        assert_eq!(sc.span_id().to_string(), SPAN);
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=x");
    }

    #[test]
    fn invalid_traceparent_falls_back_or_starts_anew() {
        let h = headers(&[("traceparent", "00-zz-yy-01")]);
        assert!(extract(&h).is_none());
        let h = headers(&[
            ("traceparent", "garbage"),
            ("x-b3-traceid", SPAN),
            ("x-b3-spanid", SPAN),
        ]);
        let sc = extract(&h).unwrap();
        assert_eq!(sc.trace_id().to_string(), format!("0000000000000000{SPAN}"));
        assert!(extract(&HeaderMap::new()).is_none());
    }

    #[test]
    fn b3_single_forms() {
        let sc = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-0"))])).unwrap();
        assert!(!sc.is_sampled());
        let sc = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-d-{SPAN}"))])).unwrap();
        assert!(sc.is_sampled());
        let sc = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))])).unwrap();
        assert!(sc.is_sampled(), "deferred counts as sampled");
        for bad in [
            "0",
            "1",
            &format!("{TRACE}-x"),
            &format!("{TRACE}-{SPAN}-7"),
        ] {
            assert!(extract(&headers(&[("b3", bad)])).is_none(), "{bad}");
        }
        let upper = TRACE.to_uppercase();
        assert!(extract(&headers(&[("b3", &format!("{upper}-{SPAN}"))])).is_none());
    }

    #[test]
    fn b3_multi_forms() {
        let sc = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]))
        .unwrap();
        assert!(sc.is_sampled(), "debug wins");
        assert!(extract(&headers(&[("x-b3-traceid", TRACE)])).is_none());
    }

    #[test]
    fn inject_rewrites_what_came_in() {
        let sc = SpanContext::new(
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128),
            SpanId::from(0x1122334455667788_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut h = headers(&[
            ("tracestate", "old=1"),
            ("b3", "x"),
            ("x-b3-traceid", "y"),
            ("x-b3-parentspanid", "z"),
        ]);
        inject(&mut h, &sc);
        assert_eq!(h["traceparent"], format!("00-{TRACE}-1122334455667788-01"));
        assert!(h.get("tracestate").is_none());
        assert_eq!(h["b3"], format!("{TRACE}-1122334455667788-1"));
        assert_eq!(h["x-b3-traceid"], TRACE);
        assert_eq!(h["x-b3-spanid"], "1122334455667788");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(h.get("x-b3-parentspanid").is_none());

        let mut h = HeaderMap::new();
        inject(&mut h, &sc);
        assert_eq!(h.len(), 1, "no B3 added when none came: {h:?}");
    }
}
