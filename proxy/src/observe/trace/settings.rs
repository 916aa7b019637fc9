//! What the tracer is told: the collector, the protocol, the sampler.
//!
//! [`TraceConfig::from_env`] reads the standard OpenTelemetry variables;
//! the fields of [`TraceConfig`] (set by `ProxyConfig` users and the
//! binary's flags) override them. **No endpoint, no tracing**: without a
//! collector the proxy creates no span at all and its request path pays
//! nothing.

use std::time::Duration;

/// `service.name` of the spans when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "trellis-proxy";

/// How long one export (connect, send, answer, retries included) may take:
/// the OpenTelemetry default (`OTEL_EXPORTER_OTLP_TIMEOUT`). Exports run on
/// their own thread, so this bounds how stale a queue gets, never a request.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often finished spans are sent: the OpenTelemetry default
/// (`OTEL_BSP_SCHEDULE_DELAY`). A full batch is sent at once.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(5);

/// Finished spans waiting for export, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
/// Beyond it spans are dropped and counted, and requests do not wait.
/// The OpenTelemetry default (2048) is a tenth of a second of a proxy
/// doing 10,000 requests/s with two spans each: one slow export and the
/// queue overflows, so at 100 % sampling `benches/load-observability.sh`
/// dropped 40 to 66 % of the spans with it. 16,384 holds about a second
/// of that load (four full batches) at a few KiB a span, so at most some
/// tens of MiB while a collector is slow or gone.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 16_384;

/// Spans sent in one export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`). The
/// exporter sends one batch at a time from its thread, so the fixed cost
/// of an export (a gRPC call, the resource, the collector's answer) is
/// paid per batch: 2048 pays it a quarter as often as the OpenTelemetry
/// default of 512, and the request stays far below a collector's usual
/// 4 MiB message limit (spans are a few hundred bytes on the wire).
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 2048;

/// Exports in flight at once (`OTEL_BSP_MAX_CONCURRENT_EXPORTS`). The
/// SDK's batch thread sends one batch and waits for the collector's answer
/// before it takes the next; with 2 the next batch is encoded and sent
/// while the collector still works on the previous one, so a collector's
/// round trip no longer caps the span rate. More than a few only adds
/// memory (each export holds its batch until answered). 1 exports from the
/// batch thread, one at a time, as the SDK does.
pub const DEFAULT_MAX_CONCURRENT_EXPORTS: usize = 2;

/// Wire protocol to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention). The default here, since a
    /// collector or Jaeger listens for it out of the box.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// `grpc` or `http/protobuf`, as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(format!(
                "'{other}': expected grpc or http/protobuf (http/json is not supported)"
            )),
        }
    }

    /// The name used in the variables.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Which traces are recorded, as `OTEL_TRACES_SAMPLER` names them.
///
/// The `ParentBased*` samplers follow the caller's decision when the
/// request carries a trace context (`traceparent`, or B3), and use the
/// named rule only for requests that start a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with this fraction.
    TraceIdRatio(f64),
    /// `parentbased_always_on`: the default.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with this fraction for new traces.
    ParentBasedTraceIdRatio(f64),
}

impl Default for Sampler {
    /// Parent-based, always on: every request is traced unless its caller
    /// decided otherwise. Tracing is off altogether without an endpoint, so
    /// "on" only costs where someone asked for traces; a busy mesh lowers
    /// it with `parentbased_traceidratio`.
    fn default() -> Self {
        Sampler::ParentBasedAlwaysOn
    }
}

impl Sampler {
    /// A sampler from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    /// The ratio samplers take the argument as a fraction in `[0, 1]`; a
    /// missing argument means 1.0.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim) {
                None | Some("") => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "sampler argument '{a}': expected a fraction between 0 and 1"
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
            "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(format!(
                    "sampler '{other}': expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        })
    }

    pub(super) fn to_sdk(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler as S;
        match self {
            Sampler::AlwaysOn => S::AlwaysOn,
            Sampler::AlwaysOff => S::AlwaysOff,
            Sampler::TraceIdRatio(r) => S::TraceIdRatioBased(r),
            Sampler::ParentBasedAlwaysOn => S::ParentBased(Box::new(S::AlwaysOn)),
            Sampler::ParentBasedAlwaysOff => S::ParentBased(Box::new(S::AlwaysOff)),
            Sampler::ParentBasedTraceIdRatio(r) => {
                S::ParentBased(Box::new(S::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Trace settings of one proxy. [`Default`] is off (what tests and
/// [`crate::ProxyConfig::loopback`] use); [`TraceConfig::from_env`] is what
/// [`crate::ProxyConfig::new`] uses.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Where spans go, used as is: `http://host:4317` for gRPC,
    /// `http://host:4318/v1/traces` for HTTP. `None`: no tracing at all.
    pub endpoint: Option<String>,
    /// Wire protocol; see [`OtlpProtocol`].
    pub protocol: OtlpProtocol,
    /// `service.name` of every span (`service.instance.id` is the proxy's
    /// name).
    pub service_name: String,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`), e.g. the
    /// pod or node.
    pub resource_attributes: Vec<(String, String)>,
    /// See [`Sampler`].
    pub sampler: Sampler,
    /// See [`DEFAULT_EXPORT_TIMEOUT`].
    pub export_timeout: Duration,
    /// See [`DEFAULT_BATCH_DELAY`].
    pub batch_delay: Duration,
    /// See [`DEFAULT_MAX_QUEUE_SIZE`].
    pub max_queue_size: usize,
    /// See [`DEFAULT_MAX_EXPORT_BATCH_SIZE`].
    pub max_export_batch_size: usize,
    /// See [`DEFAULT_MAX_CONCURRENT_EXPORTS`].
    pub max_concurrent_exports: usize,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            service_name: DEFAULT_SERVICE_NAME.to_string(),
            resource_attributes: Vec::new(),
            sampler: Sampler::default(),
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            batch_delay: DEFAULT_BATCH_DELAY,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            max_concurrent_exports: DEFAULT_MAX_CONCURRENT_EXPORTS,
        }
    }
}

impl TraceConfig {
    /// Settings from the standard variables:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | endpoint, used as is |
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT` | base endpoint (`/v1/traces` is appended for HTTP) |
    /// | `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` | `grpc` (default) or `http/protobuf` |
    /// | `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` | export timeout in milliseconds |
    /// | `OTEL_SERVICE_NAME` | `service.name`, default `trellis-proxy` |
    /// | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` |
    /// | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | see [`Sampler`] |
    /// | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_MAX_CONCURRENT_EXPORTS` | batching |
    /// | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | no tracing |
    ///
    /// `OTEL_EXPORTER_OTLP_HEADERS` is read by the exporter itself. An
    /// invalid value is logged and its default used, as the OpenTelemetry
    /// specification asks.
    pub fn from_env() -> Self {
        let (cfg, warnings) = Self::from_vars(|k| std::env::var(k).ok());
        for w in warnings {
            tracing::warn!("{w}");
        }
        cfg
    }

    /// [`TraceConfig::from_env`] over any source of variables; returns the
    /// settings and a warning for every ignored value.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let mut cfg = Self::default();
        let mut warnings = Vec::new();

        if let Some(p) =
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            match OtlpProtocol::parse(&p) {
                Ok(p) => cfg.protocol = p,
                Err(e) => warnings.push(format!(
                    "ignoring OTEL_EXPORTER_OTLP_PROTOCOL {e}; using grpc"
                )),
            }
        }
        cfg.endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => Some(e.trim().to_string()),
            (None, Some(base)) => Some(match cfg.protocol {
                OtlpProtocol::Grpc => base.trim().to_string(),
                OtlpProtocol::HttpProtobuf => {
                    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
                }
            }),
            (None, None) => None,
        };
        let disabled = var("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        if disabled {
            cfg.endpoint = None;
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            cfg.service_name = name.trim().to_string();
        }
        if let Some(attrs) = var("OTEL_RESOURCE_ATTRIBUTES") {
            cfg.resource_attributes = attrs
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    let (k, v) = (k.trim(), v.trim());
                    (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
                })
                .collect();
        }
        if let Some(name) = var("OTEL_TRACES_SAMPLER") {
            let arg = var("OTEL_TRACES_SAMPLER_ARG");
            match Sampler::parse(&name, arg.as_deref()) {
                Ok(s) => cfg.sampler = s,
                Err(e) => warnings.push(format!(
                    "ignoring OTEL_TRACES_SAMPLER/OTEL_TRACES_SAMPLER_ARG: {e}; using parentbased_always_on"
                )),
            }
        }
        let mut millis = |names: &[&str], slot: &mut Duration| {
            if let Some((name, v)) = names.iter().find_map(|n| var(n).map(|v| (*n, v))) {
                match v.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => *slot = Duration::from_millis(ms),
                    _ => warnings.push(format!(
                        "ignoring {name} '{v}': expected milliseconds above 0"
                    )),
                }
            }
        };
        millis(
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
            &mut cfg.export_timeout,
        );
        millis(&["OTEL_BSP_SCHEDULE_DELAY"], &mut cfg.batch_delay);
        let mut count = |name: &str, slot: &mut usize| {
            if let Some(v) = var(name) {
                match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => *slot = n,
                    _ => warnings.push(format!("ignoring {name} '{v}': expected a count above 0")),
                }
            }
        };
        count("OTEL_BSP_MAX_QUEUE_SIZE", &mut cfg.max_queue_size);
        count(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            &mut cfg.max_export_batch_size,
        );
        count(
            "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
            &mut cfg.max_concurrent_exports,
        );
        (cfg, warnings)
    }

    /// Whether spans are made at all.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }

    /// Check the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(());
        };
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("traces.endpoint '{endpoint}': {e}"))?;
        match uri.scheme_str() {
            Some("http") if uri.authority().is_some() => {}
            Some("https") => {
                return Err(format!(
                    "traces.endpoint '{endpoint}': TLS to the collector is not supported; send to a collector on this host or in the pod over http://"
                ));
            }
            _ => {
                return Err(format!(
                    "traces.endpoint '{endpoint}': expected http://host:port{}",
                    match self.protocol {
                        OtlpProtocol::Grpc => "",
                        OtlpProtocol::HttpProtobuf => "/v1/traces",
                    }
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err("traces.service_name: must not be empty".into());
        }
        for (field, d) in [
            ("traces.export_timeout", self.export_timeout),
            ("traces.batch_delay", self.batch_delay),
        ] {
            if d.is_zero() {
                return Err(format!("{field}: must be above zero"));
            }
        }
        if self.max_queue_size == 0 || self.max_export_batch_size == 0 {
            return Err(
                "traces.max_queue_size and traces.max_export_batch_size: at least 1".into(),
            );
        }
        if self.max_concurrent_exports == 0 {
            return Err("traces.max_concurrent_exports: at least 1".into());
        }
        Ok(())
    }

    /// A hint when the settings look like a common mistake (gRPC to the
    /// HTTP port or the other way round): such exports fail and are only
    /// counted, so say it once at start.
    pub(super) fn hint(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        let port = endpoint.parse::<http::Uri>().ok()?.port_u16()?;
        match (self.protocol, port) {
            (OtlpProtocol::Grpc, 4318) => Some(format!(
                "traces go over gRPC to {endpoint}, but 4318 is the OTLP/HTTP port: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or use port 4317"
            )),
            (OtlpProtocol::HttpProtobuf, 4317) => Some(format!(
                "traces go over HTTP to {endpoint}, but 4317 is the OTLP/gRPC port: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc or use port 4318"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> (TraceConfig, Vec<String>) {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TraceConfig::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn no_endpoint_means_off() {
        let (c, w) = vars(&[("OTEL_TRACES_SAMPLER", "always_on")]);
        assert!(!c.enabled());
        assert!(w.is_empty());
        assert_eq!(TraceConfig::default().validate(), Ok(()));
    }

    #[test]
    fn endpoints_and_protocols() {
        let (c, _) = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(c.endpoint.as_deref(), Some("http://c:4317"));
        assert_eq!(c.protocol, OtlpProtocol::Grpc);

        let (c, _) = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(c.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);

        let (c, _) = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/x"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(c.endpoint.as_deref(), Some("http://t:9/x"));
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);

        let (c, w) = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        assert_eq!(c.protocol, OtlpProtocol::Grpc);
        assert!(w[0].contains("http/json"), "{w:?}");

        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let (c, _) = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), off]);
            assert!(!c.enabled(), "{off:?}");
        }
    }

    #[test]
    fn samplers() {
        assert_eq!(Sampler::default(), Sampler::ParentBasedAlwaysOn);
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some("0.1")),
            Ok(Sampler::ParentBasedTraceIdRatio(0.1))
        );
        assert_eq!(
            Sampler::parse("traceidratio", None),
            Ok(Sampler::TraceIdRatio(1.0))
        );
        assert_eq!(
            Sampler::parse("always_off", Some("x")),
            Ok(Sampler::AlwaysOff)
        );
        assert!(Sampler::parse("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::parse("sometimes", None).is_err());

        let (c, w) = vars(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "abc"),
        ]);
        assert_eq!(c.sampler, Sampler::ParentBasedAlwaysOn);
        assert!(w[0].contains("abc"), "{w:?}");
    }

    #[test]
    fn the_rest_of_the_variables() {
        let (c, w) = vars(&[
            ("OTEL_SERVICE_NAME", "edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.pod.name=p-1, zone = a ,bad",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_CONCURRENT_EXPORTS", "4"),
        ]);
        assert_eq!(c.service_name, "edge");
        assert_eq!(
            c.resource_attributes,
            [
                ("k8s.pod.name".to_string(), "p-1".to_string()),
                ("zone".to_string(), "a".to_string())
            ]
        );
        assert_eq!(c.export_timeout, Duration::from_millis(2500));
        assert_eq!(c.batch_delay, Duration::from_millis(100));
        assert_eq!(c.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert_eq!(c.max_concurrent_exports, 4);
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = TraceConfig {
            endpoint: Some("https://c:4317".into()),
            ..TraceConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("TLS"));
        c.endpoint = Some("c:4317".into());
        assert!(c.validate().unwrap_err().contains("traces.endpoint"));
        c.endpoint = Some("http://c:4317".into());
        assert_eq!(c.validate(), Ok(()));
        c.max_concurrent_exports = 0;
        assert!(c.validate().unwrap_err().contains("max_concurrent_exports"));
        c.max_concurrent_exports = 1;
        c.export_timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("export_timeout"));
    }

    #[test]
    fn port_mixups_get_a_hint() {
        let c = TraceConfig {
            endpoint: Some("http://c:4318".into()),
            ..TraceConfig::default()
        };
        assert!(c.hint().unwrap().contains("http/protobuf"));
        let c = TraceConfig {
            endpoint: Some("http://c:4317".into()),
            ..TraceConfig::default()
        };
        assert!(c.hint().is_none());
    }
}
