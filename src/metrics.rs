//! Prometheus metrics: what a node and a registry count, served at `GET /metrics`
//! in the OpenMetrics text format (`prometheus-client`).
//!
//! Each node and each registry owns its own metrics registry rather than sharing a
//! process-wide one: a local cluster (and every test) runs several nodes in one
//! process, and each must report its own counts. Counters and histograms are
//! updated where things happen; gauges that describe state (keys held, ring
//! members, the node's state) are read when scraped, so they cannot drift.
//!
//! Names follow the Prometheus conventions: `crustyring_` first, `_total` on
//! counters, base units (`_seconds`). Labels have few, fixed values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The media type of [`NodeMetrics::encode`] and [`RegistryMetrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets for latencies: 50 µs doubling to about 6.5 s (past the default
/// request timeout of 5 s).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Buckets for forwards per request: one hop is the norm, two a stale table,
/// more a ring walk.
fn hops_histogram() -> Histogram {
    Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
}

/// The door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interface {
    /// gRPC `QueryDht`, or `ForwardQuery` from a client (not yet forwarded).
    Grpc,
    /// The HTTP gateway's `/keys/{key}`.
    Http,
    /// `ForwardQuery` from another node: a request counted already where it
    /// entered the ring.
    Peer,
}

impl Interface {
    const ALL: [Interface; 3] = [Interface::Grpc, Interface::Http, Interface::Peer];

    /// The label's value: `grpc`, `http` or `peer`.
    pub fn label(self) -> &'static str {
        match self {
            Interface::Grpc => "grpc",
            Interface::Http => "http",
            Interface::Peer => "peer",
        }
    }
}

/// How a request ended, as a label: `ok`, `not_found`, or the gRPC code's name
/// in snake case (`invalid_argument`, `unavailable`, `deadline_exceeded`, ...).
pub fn outcome_of_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::NotFound => "not_found",
        Code::InvalidArgument | Code::OutOfRange => "invalid_argument",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Cancelled => "cancelled",
        Code::Unauthenticated | Code::PermissionDenied => "denied",
        _ => "internal",
    }
}

/// The same for an HTTP status.
pub fn outcome_of_status(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        404 => "not_found",
        401 | 403 => "denied",
        412 => "failed_precondition",
        400..=499 => "invalid_argument",
        503 => "unavailable",
        504 => "deadline_exceeded",
        _ => "internal",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    interface: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    interface: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InterfaceLabels {
    interface: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ArcLabels {
    arc: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandOffLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NeighbourLabels {
    neighbour: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Why entries moved between nodes in a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// An arc went to (or came from) a joining node.
    Join,
    /// A leaving node's arc went to (or came to) its predecessor.
    Leave,
    /// A repair merge: entries of an arc taken over by mistake, given back.
    Merge,
}

impl HandOff {
    fn label(self) -> &'static str {
        match self {
            HandOff::Join => "join",
            HandOff::Leave => "leave",
            HandOff::Merge => "merge",
        }
    }
}

/// The state a node reports for itself (`crustyring_node_state`).
pub const NODE_STATES: [&str; 4] = ["joining", "serving", "leaving", "left"];

/// Gauges read when a node is scraped.
#[derive(Debug, Clone, Default)]
pub struct NodeGauges {
    /// Live keys in the node's own arc.
    pub owned_keys: u64,
    /// Live keys held as a replica of other nodes' arcs.
    pub replica_keys: u64,
    /// Entries in the store, tombstones and every arc included.
    pub store_entries: u64,
    /// Members in the node's routing table (itself included).
    pub ring_members: u64,
    /// The node's state, one of [`NODE_STATES`].
    pub state: &'static str,
}

/// What a key request asked for (the `operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A read.
    Get,
    /// A write.
    Set,
    /// A delete.
    Delete,
    /// None of those (a request that named no valid operation).
    Other,
}

impl Op {
    const ALL: [Op; 4] = [Op::Get, Op::Set, Op::Delete, Op::Other];

    /// The label's value: `get`, `set`, `delete` or `other`.
    pub fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Other => "other",
        }
    }
}

/// The series every answered key request of one operation and interface
/// touches, resolved once: the key path does not hash labels or take the
/// families' locks (and the series exist, at 0, from the start).
#[derive(Debug)]
struct Hot {
    latency: Histogram,
    hops: Histogram,
    ok: Counter,
    not_found: Counter,
}

/// A node's metrics.
#[derive(Debug)]
pub struct NodeMetrics {
    /// By operation, then interface (see [`Op::ALL`], [`Interface::ALL`]).
    hot: Vec<Hot>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    forwards: Counter,
    keys: Family<ArcLabels, Gauge>,
    store_entries: Gauge,
    ring_members: Gauge,
    state: Family<StateLabels, Gauge>,
    handoffs: Family<HandOffLabels, Counter>,
    handoff_entries: Family<HandOffLabels, Counter>,
    repaired: Family<DirectionLabels, Counter>,
    probe_failures: Family<NeighbourLabels, Counter>,
    neighbour_failures: Family<NeighbourLabels, Counter>,
    replicate_batches: Counter,
    replicate_entries: Counter,
    batch_calls: Counter,
}

impl NodeMetrics {
    /// A node's metrics; `commits` is its store's commit-latency histogram, if
    /// the store commits to disk.
    pub fn new(commits: Option<Histogram>) -> Self {
        let mut registry = Registry::with_prefix("crustyring");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Key requests answered, by operation (get, set, delete), interface (grpc, http; peer: forwarded here by another node) and outcome",
            requests.clone(),
        );
        let latency: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time to answer a key request, from its arrival to the answer, forwards and replica writes included",
            Unit::Seconds,
            latency.clone(),
        );
        let hops: Family<InterfaceLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(hops_histogram);
        registry.register(
            "request_forwards",
            "Forwards each answered request took after entering the ring (0: the node asked owned the key)",
            hops.clone(),
        );
        let forwards = Counter::default();
        registry.register(
            "forwards",
            "Requests this node forwarded to another node",
            forwards.clone(),
        );
        let keys = Family::<ArcLabels, Gauge>::default();
        registry.register(
            "keys",
            "Live keys this node holds: arc=owned for its own arc, arc=replica for the arcs it replicates",
            keys.clone(),
        );
        let store_entries = Gauge::default();
        registry.register(
            "store_entries",
            "Entries in the local store, tombstones included",
            store_entries.clone(),
        );
        let ring_members = Gauge::default();
        registry.register(
            "ring_members",
            "Members of the ring in this node's routing table, itself included",
            ring_members.clone(),
        );
        let state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "node_state",
            "1 for the state this node is in (joining, serving, leaving, left), 0 for the others",
            state.clone(),
        );
        let handoffs = Family::<HandOffLabels, Counter>::default();
        registry.register(
            "handoffs",
            "Hand-offs of an arc completed, by direction (sent, received) and reason (join, leave, merge)",
            handoffs.clone(),
        );
        let handoff_entries = Family::<HandOffLabels, Counter>::default();
        registry.register(
            "handoff_entries",
            "Entries moved by completed hand-offs, by direction and reason",
            handoff_entries.clone(),
        );
        let repaired = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "anti_entropy_entries",
            "Entries anti-entropy repaired: direction=taken from an owner into this replica, given from this node to a replica",
            repaired.clone(),
        );
        let probe_failures = Family::<NeighbourLabels, Counter>::default();
        registry.register(
            "probe_failures",
            "Probes of a neighbour (next, prev) that got no answer: suspicions",
            probe_failures.clone(),
        );
        let neighbour_failures = Family::<NeighbourLabels, Counter>::default();
        registry.register(
            "neighbour_failures",
            "Neighbours (next, prev) declared dead after missed probes",
            neighbour_failures.clone(),
        );
        let replicate_batches = Counter::default();
        registry.register(
            "replicate_batches",
            "Replicate calls sent to replicas (each carries a batch of writes)",
            replicate_batches.clone(),
        );
        let replicate_entries = Counter::default();
        registry.register(
            "replicate_entries",
            "Writes sent to replicas in Replicate calls",
            replicate_entries.clone(),
        );
        let batch_calls = Counter::default();
        registry.register(
            "batch_calls",
            "Batch calls this node sent to owners, each carrying the queries of one batch that owner owns",
            batch_calls.clone(),
        );
        if let Some(commits) = commits {
            registry.register_with_unit(
                "store_commit_duration",
                "Time of one store commit (a group of writes and its fsync)",
                Unit::Seconds,
                commits,
            );
        }
        let hot = Op::ALL
            .iter()
            .flat_map(|op| Interface::ALL.map(|i| (op.label(), i.label())))
            .map(|(operation, interface)| {
                let counter = |outcome| {
                    requests.get_or_create_owned(&RequestLabels {
                        operation,
                        interface,
                        outcome,
                    })
                };
                Hot {
                    latency: latency.get_or_create_owned(&OperationLabels {
                        operation,
                        interface,
                    }),
                    hops: hops.get_or_create_owned(&InterfaceLabels { interface }),
                    ok: counter("ok"),
                    not_found: counter("not_found"),
                }
            })
            .collect();
        Self {
            hot,
            registry,
            requests,
            forwards,
            keys,
            store_entries,
            ring_members,
            state,
            handoffs,
            handoff_entries,
            repaired,
            probe_failures,
            neighbour_failures,
            replicate_batches,
            replicate_entries,
            batch_calls,
        }
    }

    /// Counts one answered key request; `hops` is the route's forwards, when
    /// the request got that far.
    pub fn request(
        &self,
        op: Op,
        interface: Interface,
        outcome: &'static str,
        elapsed: Duration,
        hops: Option<u32>,
    ) {
        let hot = &self.hot[op as usize * Interface::ALL.len() + interface as usize];
        match outcome {
            "ok" => hot.ok.inc(),
            "not_found" => hot.not_found.inc(),
            _ => self
                .requests
                .get_or_create(&RequestLabels {
                    operation: op.label(),
                    interface: interface.label(),
                    outcome,
                })
                .inc(),
        };
        hot.latency.observe(elapsed.as_secs_f64());
        if let Some(hops) = hops {
            hot.hops.observe(f64::from(hops));
        }
    }

    /// Counts a request this node forwarded.
    pub fn forwarded(&self) {
        self.forwards.inc();
    }

    /// Counts a completed hand-off of `entries` entries.
    pub fn handoff(&self, sent: bool, reason: HandOff, entries: u64) {
        let labels = HandOffLabels {
            direction: if sent { "sent" } else { "received" },
            reason: reason.label(),
        };
        self.handoffs.get_or_create(&labels).inc();
        self.handoff_entries.get_or_create(&labels).inc_by(entries);
    }

    /// Counts entries anti-entropy moved: `taken` into this replica, `given`
    /// by this node to a replica.
    pub fn repaired(&self, taken: u64, given: u64) {
        for (direction, n) in [("taken", taken), ("given", given)] {
            if n > 0 {
                self.repaired
                    .get_or_create(&DirectionLabels { direction })
                    .inc_by(n);
            }
        }
    }

    /// Counts a probe of the `next` (or previous) neighbour that failed.
    pub fn probe_failed(&self, next: bool) {
        self.probe_failures
            .get_or_create(&NeighbourLabels {
                neighbour: neighbour(next),
            })
            .inc();
    }

    /// Counts the `next` (or previous) neighbour declared dead.
    pub fn neighbour_failed(&self, next: bool) {
        self.neighbour_failures
            .get_or_create(&NeighbourLabels {
                neighbour: neighbour(next),
            })
            .inc();
    }

    /// Counts a `Batch` call sent to an owner.
    pub fn batch_sent(&self) {
        self.batch_calls.inc();
    }

    /// Counts a `Replicate` call carrying `entries` writes.
    pub fn replicated(&self, entries: usize) {
        self.replicate_batches.inc();
        self.replicate_entries.inc_by(entries as u64);
    }

    /// The metrics in the OpenMetrics text format, with the gauges set to
    /// `gauges`.
    pub fn encode(&self, gauges: &NodeGauges) -> String {
        self.keys
            .get_or_create(&ArcLabels { arc: "owned" })
            .set(clamp(gauges.owned_keys));
        self.keys
            .get_or_create(&ArcLabels { arc: "replica" })
            .set(clamp(gauges.replica_keys));
        self.store_entries.set(clamp(gauges.store_entries));
        self.ring_members.set(clamp(gauges.ring_members));
        for state in NODE_STATES {
            self.state
                .get_or_create(&StateLabels { state })
                .set(i64::from(state == gauges.state));
        }
        encode(&self.registry)
    }
}

/// A registry's metrics.
#[derive(Debug)]
pub struct RegistryMetrics {
    registry: Registry,
    requests: Family<RegistryRequestLabels, Counter>,
    members: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RegistryRequestLabels {
    method: &'static str,
    outcome: &'static str,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("crustyring_registry");
        let requests = Family::<RegistryRequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Registry calls answered, by method (RegisterNode, GetConnectedNodes, Heartbeat, Deregister, JudgeDead) and outcome",
            requests.clone(),
        );
        let members = Gauge::default();
        registry.register(
            "members",
            "Live members: registered and heard from within the time-to-live",
            members.clone(),
        );
        Self {
            registry,
            requests,
            members,
        }
    }
}

impl RegistryMetrics {
    /// Counts one registry call.
    pub fn request(&self, method: &'static str, code: tonic::Code) {
        self.requests
            .get_or_create(&RegistryRequestLabels {
                method,
                outcome: outcome_of_code(code),
            })
            .inc();
    }

    /// The metrics in the OpenMetrics text format, with `members` live members.
    pub fn encode(&self, members: usize) -> String {
        self.members.set(clamp(members as u64));
        encode(&self.registry)
    }
}

fn neighbour(next: bool) -> &'static str {
    if next { "next" } else { "prev" }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn requests_are_counted_by_operation_interface_and_outcome() {
        let m = NodeMetrics::new(None);
        m.request(
            Op::Get,
            Interface::Http,
            "ok",
            Duration::from_micros(300),
            Some(1),
        );
        m.request(
            Op::Get,
            Interface::Http,
            "ok",
            Duration::from_millis(2),
            Some(0),
        );
        m.request(
            Op::Set,
            Interface::Grpc,
            "unavailable",
            Duration::from_secs(5),
            None,
        );
        let text = m.encode(&NodeGauges {
            state: "serving",
            ..NodeGauges::default()
        });
        let ok = r#"crustyring_requests_total{operation="get",interface="http",outcome="ok"}"#;
        assert_eq!(sample(&text, ok), Some(2.0));
        let failed =
            r#"crustyring_requests_total{operation="set",interface="grpc",outcome="unavailable"}"#;
        assert_eq!(sample(&text, failed), Some(1.0));
        let count =
            r#"crustyring_request_duration_seconds_count{operation="get",interface="http"}"#;
        assert_eq!(sample(&text, count), Some(2.0));
        let hops = r#"crustyring_request_forwards_bucket{le="0.0",interface="http"}"#;
        assert_eq!(sample(&text, hops), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, r#"crustyring_node_state{state="serving"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"crustyring_node_state{state="joining"}"#),
            Some(0.0)
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_series_each_request_touches_are_found_by_declaration_order() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        for (i, interface) in Interface::ALL.iter().enumerate() {
            assert_eq!(*interface as usize, i);
        }
        let m = NodeMetrics::new(None);
        m.request(Op::Delete, Interface::Peer, "ok", Duration::ZERO, Some(1));
        let text = m.encode(&NodeGauges {
            state: "serving",
            ..NodeGauges::default()
        });
        let series =
            r#"crustyring_requests_total{operation="delete",interface="peer",outcome="ok"} 1"#;
        assert!(text.lines().any(|l| l == series), "{text}");
    }

    #[test]
    fn outcomes_name_the_failure_class() {
        assert_eq!(outcome_of_code(tonic::Code::Ok), "ok");
        assert_eq!(outcome_of_code(tonic::Code::OutOfRange), "invalid_argument");
        assert_eq!(
            outcome_of_status(axum::http::StatusCode::NOT_FOUND),
            "not_found"
        );
        assert_eq!(
            outcome_of_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE),
            "invalid_argument"
        );
        assert_eq!(
            outcome_of_status(axum::http::StatusCode::GATEWAY_TIMEOUT),
            "deadline_exceeded"
        );
    }
}
