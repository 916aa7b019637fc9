//! A latency histogram that records with atomics only.
//!
//! prometheus-client's own `Histogram` takes a mutex on every
//! observation; this one does a binary search over fixed bounds and two
//! relaxed atomic adds, and builds the cumulative view only when scraped.
//! A scrape that races with observations may see a `_sum` that does not
//! yet include an observation its `_count` does (or the reverse); `_count`
//! always equals the `+Inf` bucket, because both are read from the same
//! bucket counters.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets, from half a millisecond
/// (a local hop through the proxy) to a minute (beyond the default
/// upstream timeout; longer requests land in `+Inf`).
pub(crate) const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A histogram of durations in seconds. Clones share their counts.
#[derive(Debug, Clone)]
pub(crate) struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// One per bound, then `+Inf`; not cumulative.
    buckets: Box<[AtomicU64]>,
    /// Sum of the observations, in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// An empty histogram over `bounds` (ascending).
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(Inner {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// An empty histogram over [`LATENCY_BOUNDS`].
    pub(crate) fn latency() -> Self {
        Self::new(LATENCY_BOUNDS)
    }

    /// Count one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.inner.bounds.partition_point(|b| *b < secs);
        if let Some(bucket) = self.inner.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let mut count = 0u64;
        let buckets: Vec<(f64, u64)> = inner
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                count += n;
                (inner.bounds.get(i).copied().unwrap_or(f64::INFINITY), n)
            })
            .collect();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_upper_inclusive_and_encoded_cumulatively() {
        let h = LatencyHistogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(100)); // le 0.1 (inclusive)
        h.observe(Duration::from_millis(101)); // le 1
        h.observe(Duration::from_secs(1)); // le 1
        h.observe(Duration::from_secs(7)); // +Inf
        assert_eq!(h.count(), 4);
        let mut r = Registry::default();
        r.register("d_seconds", "d", h.clone());
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        let want = "# HELP d_seconds d.\n# TYPE d_seconds histogram\n\
                    d_seconds_sum 8.201\n\
                    d_seconds_count 4\n\
                    d_seconds_bucket{le=\"0.1\"} 1\n\
                    d_seconds_bucket{le=\"1.0\"} 3\n\
                    d_seconds_bucket{le=\"+Inf\"} 4\n\
                    # EOF\n";
        assert_eq!(out, want);
    }

    #[test]
    fn clones_share_counts() {
        let h = LatencyHistogram::latency();
        h.clone().observe(Duration::from_micros(10));
        assert_eq!(h.count(), 1);
    }
}
