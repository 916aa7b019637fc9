//! The metric handles of one snapshot: per service and per target group,
//! built once per push and looked up by id on the request path, so that
//! counting a request formats no label and allocates nothing once its
//! series exists.
//!
//! A series is created (and so appears in `/metrics`) with the first
//! request that counts in it: a service nobody calls adds no lines. A
//! push keeps the handles of services and target groups whose labels did
//! not change, so their series stay warm.
//!
//! Labels name services and target groups by **name**. Two of a kind with
//! the same name in one snapshot (possible across accounts) are told apart
//! as `name (id)`, so that no two series share a label set.

use super::histogram::LatencyHistogram;
use crate::error::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use trellis_config::{Action, Snapshot};

/// `code_class` values by index: none (no response head was sent), then
/// the status classes.
pub(crate) const CLASSES: [&str; 6] = ["", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index in [`CLASSES`] of a status code (600–999 count as 5xx).
pub(crate) fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5)
}

/// What the `reason` label says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReasonLabel {
    /// The target answered (or a 2xx fixed response): `""`.
    None,
    /// The proxy answered with this error (its `x-trellis-error`).
    Proxy(Reason),
    /// A rule's fixed response that is not a 2xx: `fixed_response`.
    Fixed,
    /// The client went away before the response head: `client_closed`.
    ClientClosed,
}

/// Number of distinct `reason` values.
pub(crate) const REASONS: usize = Reason::ALL.len() + 3;

impl ReasonLabel {
    /// Its index, in `0..REASONS`.
    pub(crate) fn index(self) -> usize {
        match self {
            ReasonLabel::None => 0,
            ReasonLabel::Proxy(r) => 1 + Reason::ALL.iter().position(|x| *x == r).unwrap_or(0),
            ReasonLabel::Fixed => REASONS - 2,
            ReasonLabel::ClientClosed => REASONS - 1,
        }
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReasonLabel::None => "",
            ReasonLabel::Proxy(r) => r.as_str(),
            ReasonLabel::Fixed => "fixed_response",
            ReasonLabel::ClientClosed => "client_closed",
        }
    }

    /// The value of an index (the inverse of [`ReasonLabel::index`]).
    #[cfg(test)]
    fn of_index(i: usize) -> Self {
        match i {
            0 => ReasonLabel::None,
            i if i == REASONS - 2 => ReasonLabel::Fixed,
            i if i == REASONS - 1 => ReasonLabel::ClientClosed,
            i => Reason::ALL
                .get(i - 1)
                .map_or(ReasonLabel::None, |r| ReasonLabel::Proxy(*r)),
        }
    }
}

/// `trellis_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub service: Arc<str>,
    pub target_group: Arc<str>,
    pub code_class: &'static str,
    pub reason: &'static str,
}

/// `trellis_inbound_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InboundLabels {
    pub code_class: &'static str,
    pub reason: &'static str,
}

/// `trellis_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceClassLabels {
    pub service: Arc<str>,
    pub code_class: &'static str,
}

/// Families by service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub service: Arc<str>,
}

/// Families by target group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupLabels {
    pub target_group: Arc<str>,
}

/// Families by data listener.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub listener: &'static str,
}

type HistogramFamily<L> = Family<L, LatencyHistogram, fn() -> LatencyHistogram>;

/// The families the request path counts into (registered once).
#[derive(Debug)]
pub(crate) struct Families {
    pub requests: Family<RequestLabels, Counter>,
    pub inbound_requests: Family<InboundLabels, Counter>,
    pub request_duration: HistogramFamily<ServiceClassLabels>,
    pub upstream_duration: HistogramFamily<GroupLabels>,
    pub request_bytes: Family<ServiceLabels, Counter>,
    pub response_bytes: Family<ServiceLabels, Counter>,
    pub rate_limited: Family<ServiceLabels, Counter>,
    /// Inbound requests by class and reason, created on first use.
    pub inbound_cells: Cells,
}

impl Default for Families {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            inbound_requests: Family::default(),
            request_duration: Family::new_with_constructor(LatencyHistogram::latency),
            upstream_duration: Family::new_with_constructor(LatencyHistogram::latency),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            rate_limited: Family::default(),
            inbound_cells: Cells::default(),
        }
    }
}

impl Families {
    /// The inbound request counter of `class` and `reason`.
    pub(crate) fn inbound(&self, class: usize, reason: ReasonLabel) -> &Counter {
        self.inbound_cells.get(class, reason, || {
            self.inbound_requests.get_or_create_owned(&InboundLabels {
                code_class: CLASSES[class],
                reason: reason.as_str(),
            })
        })
    }
}

/// One counter per (class, reason), each created on first use; the table
/// itself is allocated on first use too.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    table: OnceLock<Box<[OnceLock<Counter>]>>,
}

impl Cells {
    fn get(&self, class: usize, reason: ReasonLabel, make: impl FnOnce() -> Counter) -> &Counter {
        let table = self.table.get_or_init(|| {
            (0..CLASSES.len() * REASONS)
                .map(|_| OnceLock::new())
                .collect()
        });
        // Both indices are in range; the clamp makes that plain (the
        // table is never empty).
        let i = class.min(CLASSES.len() - 1) * REASONS + reason.index();
        table[i.min(table.len() - 1)].get_or_init(make)
    }

    /// The (class, reason) pairs counted so far, for tests.
    #[cfg(test)]
    fn used(&self) -> Vec<(&'static str, &'static str, u64)> {
        let Some(t) = self.table.get() else {
            return Vec::new();
        };
        t.iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.get()?;
                Some((
                    CLASSES[i / REASONS],
                    ReasonLabel::of_index(i % REASONS).as_str(),
                    c.get(),
                ))
            })
            .collect()
    }
}

/// Request counters of one (service, target group) pair.
#[derive(Debug)]
pub(crate) struct PairCells {
    service: Arc<str>,
    target_group: Arc<str>,
    cells: Cells,
}

impl PairCells {
    fn new(service: Arc<str>, target_group: Arc<str>) -> Self {
        Self {
            service,
            target_group,
            cells: Cells::default(),
        }
    }

    /// The request counter of `class` and `reason`.
    pub(crate) fn counter(&self, f: &Families, class: usize, reason: ReasonLabel) -> &Counter {
        self.cells.get(class, reason, || {
            f.requests.get_or_create_owned(&RequestLabels {
                service: Arc::clone(&self.service),
                target_group: Arc::clone(&self.target_group),
                code_class: CLASSES[class],
                reason: reason.as_str(),
            })
        })
    }
}

/// One target group's handles.
#[derive(Debug)]
pub(crate) struct GroupMeters {
    pub label: Arc<str>,
    upstream: OnceLock<LatencyHistogram>,
}

impl GroupMeters {
    fn new(label: Arc<str>) -> Self {
        Self {
            label,
            upstream: OnceLock::new(),
        }
    }

    /// `trellis_upstream_duration_seconds` of this group.
    pub(crate) fn upstream(&self, f: &Families) -> &LatencyHistogram {
        self.upstream.get_or_init(|| {
            f.upstream_duration.get_or_create_owned(&GroupLabels {
                target_group: Arc::clone(&self.label),
            })
        })
    }
}

/// One target group a service forwards to.
#[derive(Debug)]
pub(crate) struct ServiceGroup {
    /// Target group id.
    pub id: Box<str>,
    pub group: Arc<GroupMeters>,
    pub requests: PairCells,
}

/// One service's handles. The service `""` holds requests the proxy
/// answered before it knew their service.
#[derive(Debug)]
pub(crate) struct ServiceMeters {
    pub label: Arc<str>,
    /// Requests that reached no target group.
    pub ungrouped: PairCells,
    /// The groups its rules forward to.
    pub groups: Box<[ServiceGroup]>,
    durations: [OnceLock<LatencyHistogram>; CLASSES.len()],
    request_bytes: OnceLock<Counter>,
    response_bytes: OnceLock<Counter>,
    rate_limited: OnceLock<Counter>,
}

impl ServiceMeters {
    fn new(label: Arc<str>, groups: Box<[ServiceGroup]>) -> Self {
        Self {
            ungrouped: PairCells::new(Arc::clone(&label), "".into()),
            label,
            groups,
            durations: Default::default(),
            request_bytes: OnceLock::new(),
            response_bytes: OnceLock::new(),
            rate_limited: OnceLock::new(),
        }
    }

    /// The service of requests answered before routing.
    pub(crate) fn unrouted() -> Self {
        Self::new("".into(), Box::new([]))
    }

    /// `trellis_request_duration_seconds` of this service and `class`.
    pub(crate) fn duration(&self, f: &Families, class: usize) -> &LatencyHistogram {
        let class = class.min(CLASSES.len() - 1);
        self.durations[class].get_or_init(|| {
            f.request_duration.get_or_create_owned(&ServiceClassLabels {
                service: Arc::clone(&self.label),
                code_class: CLASSES[class],
            })
        })
    }

    fn by_service<'a>(
        &self,
        cell: &'a OnceLock<Counter>,
        family: &Family<ServiceLabels, Counter>,
    ) -> &'a Counter {
        cell.get_or_init(|| {
            family.get_or_create_owned(&ServiceLabels {
                service: Arc::clone(&self.label),
            })
        })
    }

    /// `trellis_request_bytes_total` of this service.
    pub(crate) fn request_bytes(&self, f: &Families) -> &Counter {
        self.by_service(&self.request_bytes, &f.request_bytes)
    }

    /// `trellis_response_bytes_total` of this service.
    pub(crate) fn response_bytes(&self, f: &Families) -> &Counter {
        self.by_service(&self.response_bytes, &f.response_bytes)
    }

    /// `trellis_rate_limited_total` of this service.
    pub(crate) fn rate_limited(&self, f: &Families) -> &Counter {
        self.by_service(&self.rate_limited, &f.rate_limited)
    }

    /// Index in [`ServiceMeters::groups`] of a target group id.
    pub(crate) fn group_index(&self, id: &str) -> Option<usize> {
        self.groups.iter().position(|g| &*g.id == id)
    }

    /// Whether `other` has the same labels (so this one can stand for it).
    fn same_labels(&self, label: &str, groups: &[(&str, &Arc<str>)]) -> bool {
        &*self.label == label
            && self.groups.len() == groups.len()
            && self
                .groups
                .iter()
                .zip(groups)
                .all(|(g, (id, l))| &*g.id == *id && g.group.label == **l)
    }
}

/// The handles of one snapshot.
#[derive(Debug)]
pub(crate) struct View {
    pub families: Arc<Families>,
    services: HashMap<Box<str>, Arc<ServiceMeters>>,
    groups: HashMap<Box<str>, Arc<GroupMeters>>,
    /// Requests answered before their service was known.
    pub unrouted: Arc<ServiceMeters>,
}

impl View {
    /// A view with no services (before the first snapshot).
    pub(crate) fn empty(families: Arc<Families>, unrouted: Arc<ServiceMeters>) -> Self {
        Self {
            families,
            services: HashMap::new(),
            groups: HashMap::new(),
            unrouted,
        }
    }

    /// The handles of `snapshot`, reusing those of `old` whose labels are
    /// unchanged.
    pub(crate) fn build(snapshot: &Snapshot, old: &View) -> Self {
        let group_labels = unique_labels(
            snapshot
                .target_groups
                .iter()
                .map(|g| (g.id.as_str(), g.name.as_str())),
        );
        let service_labels = unique_labels(
            snapshot
                .services
                .iter()
                .map(|s| (s.id.as_str(), s.name.as_str())),
        );
        let mut groups: HashMap<Box<str>, Arc<GroupMeters>> = HashMap::new();
        for (id, label) in &group_labels {
            let meters = match old.groups.get(*id) {
                Some(g) if g.label == *label => Arc::clone(g),
                _ => Arc::new(GroupMeters::new(Arc::clone(label))),
            };
            groups.insert((*id).into(), meters);
        }
        let mut services = HashMap::new();
        for svc in &snapshot.services {
            let Some(label) = service_labels.get(svc.id.as_str()) else {
                continue;
            };
            let forwards: Vec<(&str, &Arc<str>)> = forwarded_groups(svc)
                .into_iter()
                .filter_map(|id| group_labels.get(id).map(|l| (id, l)))
                .collect();
            let meters = match old.services.get(svc.id.as_str()) {
                Some(s) if s.same_labels(label, &forwards) => Arc::clone(s),
                _ => {
                    let list = forwards
                        .iter()
                        .filter_map(|(id, l)| {
                            let group = groups.get(*id)?;
                            Some(ServiceGroup {
                                id: (*id).into(),
                                group: Arc::clone(group),
                                requests: PairCells::new(Arc::clone(label), Arc::clone(l)),
                            })
                        })
                        .collect();
                    Arc::new(ServiceMeters::new(Arc::clone(label), list))
                }
            };
            services.insert(svc.id.as_str().into(), meters);
        }
        Self {
            families: Arc::clone(&old.families),
            services,
            groups,
            unrouted: Arc::clone(&old.unrouted),
        }
    }

    /// A service's handles, by id.
    pub(crate) fn service(&self, id: &str) -> Option<&Arc<ServiceMeters>> {
        self.services.get(id)
    }

    /// A target group's handles, by id.
    pub(crate) fn group(&self, id: &str) -> Option<&Arc<GroupMeters>> {
        self.groups.get(id)
    }

    /// A target group's label, by id.
    pub(crate) fn group_label(&self, id: &str) -> Option<&Arc<str>> {
        self.groups.get(id).map(|g| &g.label)
    }
}

/// Label of each `(id, name)`: the name, or `name (id)` when another of
/// the same kind has the same name.
fn unique_labels<'a>(
    items: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> HashMap<&'a str, Arc<str>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, name) in items.clone() {
        *seen.entry(name).or_default() += 1;
    }
    items
        .map(|(id, name)| {
            let label: Arc<str> = if seen.get(name).copied().unwrap_or(0) > 1 {
                format!("{name} ({id})").into()
            } else {
                name.into()
            };
            (id, label)
        })
        .collect()
}

/// Ids of the target groups a service's rules forward to, first use first.
fn forwarded_groups(svc: &trellis_config::SnapshotService) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for l in &svc.listeners {
        let actions = std::iter::once(&l.default_action).chain(l.rules.iter().map(|r| &r.action));
        for a in actions {
            if let Action::Forward(f) = a {
                for w in &f.target_groups {
                    if !out.contains(&w.target_group.as_str()) {
                        out.push(&w.target_group);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let class = |s| CLASSES[class_index(s)];
        assert_eq!(class(101), "1xx");
        assert_eq!(class(200), "2xx");
        assert_eq!(class(308), "3xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(599), "5xx");
        assert_eq!(class(999), "5xx");
        assert_eq!(CLASSES[0], "", "no response head");
    }

    #[test]
    fn every_reason_has_its_own_index_and_label() {
        let mut all = vec![
            ReasonLabel::None,
            ReasonLabel::Fixed,
            ReasonLabel::ClientClosed,
        ];
        all.extend(Reason::ALL.iter().map(|r| ReasonLabel::Proxy(*r)));
        let mut idx: Vec<usize> = all.iter().map(|r| r.index()).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..REASONS).collect::<Vec<_>>());
        for r in &all {
            assert_eq!(ReasonLabel::of_index(r.index()), *r);
        }
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), REASONS);
        assert_eq!(ReasonLabel::Proxy(Reason::NoService).as_str(), "no_service");
    }

    #[test]
    fn cells_create_a_series_once_and_only_when_used() {
        let f = Families::default();
        let pair = PairCells::new("api".into(), "api-v1".into());
        assert!(pair.cells.used().is_empty());
        for _ in 0..3 {
            pair.counter(&f, 2, ReasonLabel::None).inc();
        }
        pair.counter(&f, 5, ReasonLabel::Proxy(Reason::UpstreamConnectFailed))
            .inc();
        let mut used = pair.cells.used();
        used.sort_unstable();
        assert_eq!(
            used,
            [("2xx", "", 3), ("5xx", "upstream_connect_failed", 1)]
        );
        let series = f.requests.get_or_create_owned(&RequestLabels {
            service: "api".into(),
            target_group: "api-v1".into(),
            code_class: "2xx",
            reason: "",
        });
        assert_eq!(series.get(), 3, "the cell is the family's series");
    }

    #[test]
    fn duplicate_names_are_told_apart_by_id() {
        let labels = unique_labels([("tg-1", "api"), ("tg-2", "api"), ("tg-3", "web")].into_iter());
        assert_eq!(&*labels["tg-1"], "api (tg-1)");
        assert_eq!(&*labels["tg-2"], "api (tg-2)");
        assert_eq!(&*labels["tg-3"], "web");
    }
}
