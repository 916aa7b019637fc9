//! Getting finished spans to the collector without ever holding up a
//! request.
//!
//! Spans go through the SDK's batch processor, which queues them and
//! exports from a thread of its own. Two thin wrappers count what happens
//! to them:
//!
//! - [`Gate`] (the processor the provider sees) admits a span only while
//!   fewer than `max_queue_size` are waiting, and otherwise drops it and
//!   counts it: a request never waits for a slow or absent collector.
//! - [`Counting`] (the exporter the batch processor sees) counts spans
//!   exported and spans whose export failed, and logs when exports start
//!   and stop failing (once each way, not per batch). With
//!   `max_concurrent_exports` above 1 it also runs each export as a task
//!   on the proxy's runtime and hands the batch thread back at once, up
//!   to that many exports in flight (the SDK's thread-based processor
//!   exports one batch at a time, waiting for each answer); the batch
//!   thread waits only when all of them are busy. Shutdown waits (within
//!   its timeout) for exports in flight. A batch in flight has left the
//!   queue, so memory is bounded by the queue plus that many batches.
//!
//! OTLP/gRPC uses tonic's channel, built on the proxy's runtime. OTLP/HTTP
//! uses [`HyperExport`], a hyper client whose requests run as tasks on the
//! proxy's runtime (the batch thread has no runtime of its own, which is
//! why the SDK's async clients panic there).

use super::settings::{OtlpProtocol, TraceConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Largest collector answer read (it is a small protobuf message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Counters of what happened to finished spans; read with
/// [`ExportCounters::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct ExportCounters {
    /// Admitted and not yet handed to the exporter.
    queued: AtomicUsize,
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    failed_exports: AtomicU64,
    /// Whether the last export failed (for logging the change only).
    failing: AtomicBool,
}

/// What happened to the spans of one proxy since it started; monotonic
/// counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans in exports that failed (collector unreachable, refused, timed
    /// out); they are not retried beyond the exporter's own retries.
    pub spans_failed: u64,
    /// Spans dropped because the export queue was full.
    pub spans_dropped: u64,
    /// Export calls that failed.
    pub failed_exports: u64,
}

impl ExportCounters {
    pub(crate) fn snapshot(&self) -> TraceStats {
        TraceStats {
            spans_exported: self.exported.load(Ordering::Relaxed),
            spans_failed: self.failed.load(Ordering::Relaxed),
            spans_dropped: self.dropped.load(Ordering::Relaxed),
            failed_exports: self.failed_exports.load(Ordering::Relaxed),
        }
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the trace exporter for {endpoint}: {message}")]
pub struct TraceSetupError {
    endpoint: String,
    message: String,
}

/// Build the span processor for `cfg` (which has an endpoint). Must run
/// within the proxy's tokio runtime.
pub(super) fn processor(
    cfg: &TraceConfig,
    endpoint: &str,
    counters: Arc<ExportCounters>,
) -> Result<Gate, TraceSetupError> {
    let setup = |e: opentelemetry_otlp::ExporterBuildError| TraceSetupError {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    };
    let exporter = match cfg.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(cfg.export_timeout)
            .build()
            .map_err(setup)?,
        OtlpProtocol::HttpProtobuf => {
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| TraceSetupError {
                endpoint: endpoint.to_string(),
                message: format!("not called within a tokio runtime: {e}"),
            })?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(HyperExport::new(runtime, cfg.export_timeout))
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(cfg.export_timeout)
                .build()
                .map_err(setup)?
        }
    };
    let concurrent = if cfg.max_concurrent_exports > 1 {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| TraceSetupError {
            endpoint: endpoint.to_string(),
            message: format!("not called within a tokio runtime: {e}"),
        })?;
        Some(Concurrent::new(runtime, cfg.max_concurrent_exports))
    } else {
        None
    };
    let exporter = Counting {
        inner: Arc::new(exporter),
        counters: Arc::clone(&counters),
        endpoint: endpoint.into(),
        concurrent,
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(cfg.max_queue_size)
        .with_max_export_batch_size(cfg.max_export_batch_size.min(cfg.max_queue_size))
        .with_scheduled_delay(cfg.batch_delay)
        .build();
    Ok(Gate {
        inner: BatchSpanProcessor::new(exporter, batch),
        limit: cfg.max_queue_size,
        counters,
    })
}

/// The batch processor behind a counted admission (see the module doc).
#[derive(Debug)]
pub(super) struct Gate {
    inner: BatchSpanProcessor,
    limit: usize,
    counters: Arc<ExportCounters>,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Spans leave `queued` when the exporter receives them, so the
        // batch processor's own queue (of the same size) is never full
        // and every drop is counted here.
        if self.counters.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counted (see the module doc).
#[derive(Debug)]
struct Counting<E> {
    inner: Arc<E>,
    counters: Arc<ExportCounters>,
    endpoint: Arc<str>,
    /// `None`: export on the batch thread, one batch at a time.
    concurrent: Option<Concurrent>,
}

/// Exports running as tasks, at most `slots` at once.
#[derive(Debug)]
struct Concurrent {
    runtime: tokio::runtime::Handle,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Concurrent {
    fn new(runtime: tokio::runtime::Handle, max: usize) -> Self {
        let max = max.min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            runtime,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Wait, at most `timeout`, until no export is in flight. Blocks: for
    /// the batch thread only (the SDK calls shutdown from it).
    fn wait_idle(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.slots.available_permits() < self.max && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Count the outcome of one export of `n` spans.
fn count(c: &ExportCounters, endpoint: &str, n: usize, result: &OTelSdkResult) {
    match result {
        Ok(()) => {
            c.exported.fetch_add(n as u64, Ordering::Relaxed);
            if c.failing.swap(false, Ordering::Relaxed) {
                tracing::info!(endpoint, "span export works again");
            }
        }
        Err(e) => {
            c.failed.fetch_add(n as u64, Ordering::Relaxed);
            c.failed_exports.fetch_add(1, Ordering::Relaxed);
            if !c.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    endpoint,
                    error = %e,
                    "span export failed; spans are dropped and counted until the collector answers (is it running, and does it speak this protocol?)"
                );
            } else {
                tracing::debug!(endpoint, error = %e, spans = n, "span export failed");
            }
        }
    }
}

impl<E: SpanExporter + 'static> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.counters.queued.fetch_sub(n, Ordering::AcqRel);
        let Some(concurrent) = &self.concurrent else {
            let result = self.inner.export(batch).await;
            count(&self.counters, &self.endpoint, n, &result);
            return result;
        };
        // Waits only while every slot is busy; the semaphore is never
        // closed, so acquiring fails only if it were.
        let Ok(slot) = Arc::clone(&concurrent.slots).acquire_owned().await else {
            count(
                &self.counters,
                &self.endpoint,
                n,
                &Err(OTelSdkError::InternalFailure("export slots closed".into())),
            );
            return Ok(());
        };
        let inner = Arc::clone(&self.inner);
        let counters = Arc::clone(&self.counters);
        let endpoint = Arc::clone(&self.endpoint);
        concurrent.runtime.spawn(async move {
            let result = inner.export(batch).await;
            count(&counters, &endpoint, n, &result);
            drop(slot);
        });
        // Failures are counted (and logged) by the task.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if let Some(c) = &self.concurrent {
            c.wait_idle(timeout);
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The provider sets it once, when it is built, before any export
        // (so before any task holds the exporter).
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.set_resource(resource),
            None => tracing::warn!(
                endpoint = %self.endpoint,
                "the trace resource changed while exports were in flight; it is not applied"
            ),
        }
    }
}

/// OTLP/HTTP through hyper: each export runs as a task on the proxy's
/// runtime, awaited from the batch thread.
#[derive(Debug, Clone)]
struct HyperExport {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl HyperExport {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            runtime,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperExport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let call = async {
                let resp = client.request(request.map(Full::new)).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(http::Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        task.await?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::{Condvar, Mutex};

    /// An exporter stuck until released, like a collector that never answers.
    #[derive(Debug, Default)]
    struct Stuck {
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Stuck {
        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    #[derive(Debug)]
    struct StuckExporter(Arc<Stuck>);

    impl SpanExporter for StuckExporter {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let mut open = self.0.open.lock().unwrap();
            while !*open {
                open = self.0.opened.wait(open).unwrap();
            }
            Ok(())
        }
    }

    #[test]
    fn a_stuck_exporter_makes_drops_that_are_counted_never_waits() {
        const LIMIT: usize = 4;
        let stuck = Arc::new(Stuck::default());
        let counters = Arc::new(ExportCounters::default());
        let exporter = Counting {
            inner: Arc::new(StuckExporter(Arc::clone(&stuck))),
            counters: Arc::clone(&counters),
            endpoint: "test".into(),
            concurrent: None,
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(LIMIT)
            .with_scheduled_delay(Duration::from_secs(3600))
            .build();
        let gate = Gate {
            inner: BatchSpanProcessor::new(exporter, batch),
            limit: LIMIT,
            counters: Arc::clone(&counters),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(gate)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..100 {
            tracer.start("span").end();
        }
        // At most one batch is stuck in the exporter and one queue waits.
        let dropped = counters.snapshot().spans_dropped;
        assert!(
            (100 - 2 * LIMIT as u64..=100 - LIMIT as u64).contains(&dropped),
            "{dropped}"
        );
        stuck.release();
        provider.shutdown().unwrap();
        let stats = counters.snapshot();
        assert_eq!(stats.spans_exported + stats.spans_dropped, 100, "{stats:?}");
        assert_eq!(stats.spans_failed, 0);
    }

    #[test]
    fn concurrent_exports_overlap_and_shutdown_waits_for_them() {
        const LIMIT: usize = 4;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let stuck = Arc::new(Stuck::default());
        let counters = Arc::new(ExportCounters::default());
        let concurrent = Concurrent::new(rt.handle().clone(), 2);
        let slots = Arc::clone(&concurrent.slots);
        let exporter = Counting {
            inner: Arc::new(StuckExporter(Arc::clone(&stuck))),
            counters: Arc::clone(&counters),
            endpoint: "test".into(),
            concurrent: Some(concurrent),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(LIMIT)
            .with_max_export_batch_size(1)
            .with_scheduled_delay(Duration::from_secs(3600))
            .build();
        let gate = Gate {
            inner: BatchSpanProcessor::new(exporter, batch),
            limit: LIMIT,
            counters: Arc::clone(&counters),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(gate)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..100 {
            tracer.start("span").end();
        }
        // Two exports are stuck at once: the batch thread did not wait for
        // the first.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while slots.available_permits() > 0 {
            assert!(std::time::Instant::now() < deadline, "never two in flight");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(counters.snapshot().spans_exported, 0);
        assert!(counters.snapshot().spans_dropped > 0);
        stuck.release();
        provider.shutdown().unwrap();
        // Shutdown waited for the exports in flight: everything is counted.
        let stats = counters.snapshot();
        assert_eq!(stats.spans_exported + stats.spans_dropped, 100, "{stats:?}");
        assert_eq!(slots.available_permits(), 2);
    }
}
