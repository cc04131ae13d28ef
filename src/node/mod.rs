//! The DHT node: its view of the ring, routing and forwarding, joins and key
//! hand-off, and keeping replicas in step. Decisions live in `view` ([`View`]) as
//! pure functions; this module applies them to the store and the network.
//!
//! Modules, by concern:
//!
//! - `membership`: finding the ring, joining it (the arc handed over while it
//!   stays served), leaving it, and repairing it after failures;
//! - `replication`: the write path to the replicas, anti-entropy, catch-up,
//!   strays;
//! - `rpc`: the gRPC service, the channels to peers, wire checks and
//!   conversions, health; wire types stop there;
//! - the query path here: `query` (one key, routed and applied), `batch`
//!   (several, one call per owner), `listing` (pages of the ring's keys, each
//!   range asked of its owner), `watching` (a key's changes, following its
//!   owner), `routes` (the routing table's upkeep), `view` (the pure view of
//!   the ring), `error`;
//! - `fuzz` (tests only: hostile peer input, proptest).
//!
//! # Concurrency
//!
//! The view sits behind a `std` read-write lock that is never held across an
//! `.await`. A local query routes *and* applies under one read guard, so a view
//! change (which takes the write guard) never interleaves with a half-done query:
//! when a node sets a hand-off fence on an arc, every query already applied to that
//! arc has finished, and every later one waits for the hand-off to end.
//! Membership changes of a node (accepting a joiner) are serialised by an async
//! mutex, so two joiners into one arc are handled one after the other.

mod batch;
mod copy_hold;
mod error;
#[cfg(test)]
pub(crate) mod fuzz;
mod listing;
mod membership;
mod pending;
mod query;
mod replication;
mod routes;
mod rpc;
mod view;
mod watching;

pub use batch::MAX_BATCH;
pub use error::{JoinError, NodeError};
pub use listing::{Cursor, ListRequest, MAX_PAGE, Page};
pub use membership::discovery::Discovery;
pub(crate) use membership::discovery::discover;
pub use membership::join::JoinSettings;
pub use membership::maintain::MaintenanceSettings;
pub use query::{
    Answer, Condition, KEY_NOT_PRESENT, Limits, MAX_TTL, Operation, Outcome, Query, RouteTaken,
};
pub use replication::replicate::ReplicationSettings;
pub use rpc::peers::{PeerTimeouts, Peers};
pub use rpc::service::{DhtService, dht_server, grpc_routes};
pub use rpc::wire::watch_event;
pub use view::{JoinRefusal, NodeState, Route, View};
pub use watching::{WatchSettings, Watched, resume_after};

use crate::lease::Grant;
use crate::metrics::{NodeGauges, NodeMetrics};
use crate::ring::Member;
use crate::routing::{AfterFailure, AttemptSettings, Attempts, Failure, RoutingTable};
use crate::store::{Entry, Store, Version};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;

/// How long key counts for `GetNodeInfo` are reused while the arcs stay the same.
const COUNTS_MAX_AGE: Duration = Duration::from_secs(1);

/// Key counts of a node's own and replicated arcs, as last counted.
#[derive(Debug)]
struct KeyCounts {
    at: tokio::time::Instant,
    own: crate::ring::Arc,
    replicated: Vec<crate::ring::Arc>,
    owned: u64,
    replica: u64,
}

/// What applying a query locally gives: the outcome, the key's version and
/// expiry after it, and the entry a write wrote.
type Applied = (Outcome, Option<Version>, Option<u64>, Option<Entry>);

/// Locks over key positions, striped: an owner decides the writes to one key
/// one at a time, so that a condition (compare-and-set) checked before a write
/// still holds when it lands.
struct KeyLocks([std::sync::Mutex<()>; 64]);

impl KeyLocks {
    fn new() -> Self {
        Self(std::array::from_fn(|_| std::sync::Mutex::new(())))
    }

    fn lock(&self, position: crate::ring::Position) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (position.0 % self.0.len() as u64) as usize;
        self.0[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a node behaves: limits, timeouts and joining.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Size limits for keys and values.
    pub limits: Limits,
    /// Timeouts for talking to peers.
    pub timeouts: PeerTimeouts,
    /// How many times a query may be forwarded before it is given up on.
    pub max_hops: u32,
    /// How joining (and leaving) is paced.
    pub join: JoinSettings,
    /// How the node watches its neighbours and repairs the ring.
    pub maintenance: MaintenanceSettings,
    /// How many copies of each key are kept, and how they are kept in step.
    pub replication: ReplicationSettings,
    /// How much of its recent changes a node keeps for watches.
    pub watch: WatchSettings,
    /// The credentials peers and clients must present (none by default); the
    /// node presents them itself on its own calls.
    pub security: crate::security::Required,
    /// TLS on the node's port and on its calls (none by default).
    pub tls: crate::security::Tls,
    /// The most a peer may make this node hold in memory from one stream
    /// before it is applied (a leave or merge hand-off, a `ReadRange`
    /// answer), in bytes as on the wire (key, value and 48 bytes an entry).
    /// A stream over it is refused and changes nothing.
    pub max_peer_stream_bytes: usize,
    /// How the node's port limits what clients and peers may hold.
    pub serving: crate::server::ServeLimits,
    /// How the node opens connections to peers and the registry: TCP, or a
    /// simulated network.
    pub network: crate::transport::Network,
    /// Leases on ownership ([`crate::lease`]); `None`: an owner serves its
    /// arc whenever its view says it owns it.
    pub leases: Option<crate::lease::LeaseSettings>,
}

impl NodeConfig {
    /// Default [`NodeConfig::max_peer_stream_bytes`]: 256 MiB.
    pub const DEFAULT_MAX_PEER_STREAM_BYTES: usize = 256 << 20;
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            timeouts: PeerTimeouts {
                connect: Duration::from_secs(1),
                request: Duration::from_secs(5),
            },
            max_hops: 128,
            join: JoinSettings::default(),
            maintenance: MaintenanceSettings::default(),
            replication: ReplicationSettings::default(),
            watch: WatchSettings::default(),
            security: crate::security::Required::default(),
            tls: crate::security::Tls::default(),
            max_peer_stream_bytes: Self::DEFAULT_MAX_PEER_STREAM_BYTES,
            serving: crate::server::ServeLimits::default(),
            network: crate::transport::Network::default(),
            leases: Some(crate::lease::LeaseSettings::default()),
        }
    }
}

/// A node's own account of itself, as `GetNodeInfo` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    /// The node.
    pub me: Member,
    /// Its previous neighbour.
    pub prev: Member,
    /// Its next neighbour.
    pub next: Member,
    /// Its successor list: `next` and the backups after it.
    pub successors: Vec<Member>,
    /// The nodes before `prev`, nearest first.
    pub predecessors: Vec<Member>,
    /// Its state; `None` if it names one this build does not know (a newer
    /// peer's, say): alive, and not serving as far as this node can tell.
    pub state: Option<NodeState>,
    /// How many live keys it stores.
    pub keys: u64,
    /// Live keys in its own arc.
    pub owned_keys: u64,
    /// Live keys it holds as a replica of its successors' arcs.
    pub replica_keys: u64,
    /// Copies of each key it keeps (itself and its replicas).
    pub replication_factor: u32,
}

/// A DHT node: its view, its store, and its connections to peers.
pub struct Node {
    config: NodeConfig,
    view: RwLock<View>,
    /// Every member of the ring as last learned (`routes`): where queries go
    /// in one hop. A hint; the view decides what this node owns.
    routes: RwLock<RoutingTable>,
    /// Bumped on every view change, so queries waiting on a hand-off wake up.
    changes: watch::Sender<u64>,
    /// Wakes the maintenance loop to probe `prev` at once rather than at
    /// its next round: for a lease ([`crate::lease::Leases::ask_back`], or
    /// from a new `prev`, `accept_previous`), or for the predecessors a
    /// write's replica set lacks (`replicate`).
    prev_wanted: tokio::sync::Notify,
    /// Wakes the loop that asks the registry to judge the nodes this node
    /// declared dead (`judge_deaths`): a takeover awaits a verdict.
    verdicts_wanted: tokio::sync::Notify,
    /// Failed probes of `next` and `prev` in a row, counted by the
    /// maintenance loop's rounds; read by introductions too (a suspected
    /// `prev` passed over by the newcomer is replaced without another probe,
    /// [`crate::failure::introduced`]). Locked for a call at a time, never
    /// across an await, and never while the view's lock is held.
    detector: std::sync::Mutex<crate::failure::Detector>,
    /// Serialises this node's membership changes (accepting a joiner).
    membership: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    /// Notes the writes into an arc streaming to a joiner (`migration`).
    recorder: Arc<membership::migration::Recorder>,
    peers: Peers,
    /// Channels for the failure detector's probes only: a probe always
    /// tries to connect, and never queues behind other calls.
    probes: Peers,
    /// A queue per replica, so that concurrent writes share `Replicate` calls.
    pipes: replication::pipeline::ReplicaPipes,
    /// A queue per owner, so that concurrent forwards share `ForwardBatch`
    /// calls.
    forwards: rpc::forwards::ForwardPipes,
    health: tonic_health::server::HealthReporter,
    /// The arc and replicas this node last reconciled with: while they do not
    /// vouch for its current ones, reads also ask the replicas (`catch_up`).
    catch_up: std::sync::Mutex<crate::repair::CatchUp>,
    /// Key counts last reported by `summary` (see `key_counts`).
    counts: std::sync::Mutex<Option<KeyCounts>>,
    /// The lease on this node's arc, if leases are on (`config.leases`).
    leases: Option<std::sync::Mutex<crate::lease::Leases>>,
    /// The registry's address, if the node uses one (heartbeats, members):
    /// its channel is pooled with the peers' (`Peers::registry_client_made`),
    /// made once, and made afresh after a call on it timed out.
    registry: Option<String>,
    /// What the node counts, for `GET /metrics`.
    metrics: Arc<NodeMetrics>,
    /// Serialise the writes to each key (see [`KeyLocks`]).
    key_locks: KeyLocks,
    /// Writes applied here but not yet acknowledged (reads of their keys wait).
    pending: pending::PendingWrites,
    /// The changes this node applied lately, for watches (`watching`).
    change_log: watching::ChangeLog,
    /// Set when the node shuts down: streams that would never end (watches)
    /// end then.
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("view", &*self.view())
            .field("keys", &self.store.len())
            .finish()
    }
}

impl Node {
    /// A node that has not joined yet, with its health service reporter and the
    /// registry it heartbeats to (if any).
    pub fn new(
        me: Member,
        config: NodeConfig,
        store: Arc<dyn Store>,
        health: tonic_health::server::HealthReporter,
        registry: Option<String>,
    ) -> Self {
        let timeouts = config.timeouts;
        let detector = crate::failure::Detector::new(config.maintenance.misses);
        // With a registry, it judges deaths (`crate::registry::Verdicts`).
        let leases = config.leases.map(|s| {
            let leases = crate::lease::Leases::new(s);
            std::sync::Mutex::new(match registry {
                Some(_) => leases.judged_by_registry(me.id),
                None => leases,
            })
        });
        let credentials = crate::security::Credentials::member(&config.security, &config.tls);
        let recorder = Arc::new(membership::migration::Recorder::default());
        let metrics = Arc::new(NodeMetrics::new(store.commit_seconds()));
        Self {
            peers: Peers::of(&config),
            probes: Peers::probing(&config),
            forwards: rpc::forwards::forward_pipes(
                config.timeouts.request,
                config.limits.max_entry_bytes(),
            ),
            pipes: replication::pipeline::replica_pipes(
                config.limits,
                config.timeouts.request,
                metrics.clone(),
            ),
            metrics,
            key_locks: KeyLocks::new(),
            pending: pending::PendingWrites::default(),
            change_log: watching::ChangeLog::new(config.watch),
            closing: watch::channel(false).0,
            config,
            routes: RwLock::new(RoutingTable::new(me.clone())),
            view: RwLock::new(View::joining(me)),
            changes: watch::channel(0).0,
            prev_wanted: tokio::sync::Notify::new(),
            verdicts_wanted: tokio::sync::Notify::new(),
            detector: std::sync::Mutex::new(detector),
            membership: tokio::sync::Mutex::new(()),
            catch_up: std::sync::Mutex::new(crate::repair::CatchUp::default()),
            counts: std::sync::Mutex::new(None),
            leases,
            store: Arc::new(membership::migration::RecordedStore::new(
                store,
                recorder.clone(),
            )),
            recorder,
            health,
            registry: registry
                .filter(|addr| rpc::peers::endpoint(addr, timeouts, &credentials).is_ok()),
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This node.
    pub fn me(&self) -> Member {
        self.view().me.clone()
    }

    /// Why this node may not serve `position` of its arc now, if leases are
    /// on and say so (`alone`: the node is alone in its ring).
    fn unleased(
        &self,
        position: crate::ring::Position,
        alone: bool,
    ) -> Option<crate::lease::Serve> {
        self.unleased_arc(crate::ring::Arc::point(position), alone)
    }

    /// Whether this node owns `position` but may not serve it now (no lease,
    /// or an arc taken over still waiting).
    fn owns_unleased(&self, position: crate::ring::Position) -> bool {
        let view = self.view();
        view.state == NodeState::Serving
            && view.arc().contains(position)
            && self.unleased(position, view.alone()).is_some()
    }

    /// Waits until this node's arc is leased at `position` again, if it is
    /// not: `LeaseLapsed` if it is not by `deadline`.
    async fn leased_by(
        &self,
        position: crate::ring::Position,
        deadline: tokio::time::Instant,
    ) -> Result<(), NodeError> {
        loop {
            let mut changes = self.changes.subscribe();
            if self.unleased(position, self.view().alone()).is_none() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(NodeError::LeaseLapsed);
            }
        }
    }

    /// Whether this node owns `position` but was leased again after a gap
    /// and has not caught up with its `prev` (`catch_up`): its store alone
    /// may lack writes to it.
    fn owns_behind(&self, position: crate::ring::Position) -> bool {
        let view = self.view();
        view.state == NodeState::Serving
            && view.arc().contains(position)
            && self.after_lease_gap(&view)
    }

    /// [`Node::unleased`] for every position of `arc` (a listing's range).
    fn unleased_arc(&self, arc: crate::ring::Arc, alone: bool) -> Option<crate::lease::Serve> {
        let leases = self.leases.as_ref()?;
        let now = tokio::time::Instant::now().into_std();
        let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.serves_arc(arc, alone, now) {
            // Past what `next` confirmed, as without a lease: a probe of
            // `next` that confirms more wakes the waiting queries.
            crate::lease::Serve::Now if !alone && !leases.confirms(arc) => {
                Some(crate::lease::Serve::Unleased)
            }
            crate::lease::Serve::Now => None,
            other => Some(other),
        }
    }

    /// Notes how much of this node's arc its `next` confirmed (see
    /// [`crate::lease::Leases::next_probed`]), waking waiting queries if
    /// that changed.
    pub(super) fn next_confirmed(&self, confirmed: Option<crate::ring::Arc>) {
        self.change_leases(|l| l.next_probed(confirmed));
    }

    /// Runs `change` on the leases (if they are on), waking waiting queries
    /// if it says that changed.
    pub(super) fn change_leases(&self, change: impl FnOnce(&mut crate::lease::Leases) -> bool) {
        let changed = (self.leases.as_ref())
            .is_some_and(|l| change(&mut l.lock().unwrap_or_else(|e| e.into_inner())));
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// [`Node::change_leases`], if `next` is still this node's `next` (and
    /// it is not alone) while it runs: checked under the view's lock, so that
    /// no view change lands between the check and the change. What a probe
    /// of an earlier `next` confirmed must not replace what was noted for
    /// the `next` since (a joiner taken in confirms only up to itself).
    pub(super) fn change_confirmed_by(
        &self,
        next: &Member,
        change: impl FnOnce(&mut crate::lease::Leases) -> bool,
    ) {
        // The lock order is the view's, then the leases'.
        let view = self.view();
        if view.next == *next && !view.alone() {
            self.change_leases(change);
        }
    }

    /// Grants `to` a lease on its arc if it is this node's serving view's
    /// `next` (and leases are on), noting when: `None` if not asked of this
    /// node (or leases are off), else the grant or how long until one may
    /// be had.
    pub(in crate::node) fn grant_lease(
        &self,
        to: crate::ring::Position,
    ) -> Option<crate::lease::Answer> {
        let view = self.view();
        let links = view.next.id == to && view.next.id != view.me.id;
        let serving = matches!(view.state, NodeState::Serving | NodeState::Leaving);
        if self.leases.is_none() || !links || !serving {
            return None;
        }
        let now = tokio::time::Instant::now().into_std();
        let (mut answer, mut ask_back) = (None, false);
        self.with_leases(|l| {
            let grant = l.granting(to, now);
            ask_back = grant == Grant::Granted && l.ask_back(view.prev.id == to, now);
            answer = match grant {
                Grant::Granted => Some(crate::lease::Answer::Granted),
                Grant::NotBefore(at) => Some(crate::lease::Answer::After(
                    at.saturating_duration_since(now),
                )),
                Grant::Refused => None,
            };
        });
        if ask_back {
            self.prev_wanted.notify_one();
        }
        answer
    }

    /// Runs `change` on the leases, if they are on, and wakes the queries
    /// waiting for one (tests: the node notes grants in `probe_prev`, under
    /// the view's lock).
    #[cfg(test)]
    pub(super) fn update_leases(&self, change: impl FnOnce(&mut crate::lease::Leases)) {
        if self.leases.is_some() {
            self.with_leases(change);
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// This process registered when the registry had judged its ID dead
    /// `verdicts` times ([`crate::lease::Leases::registered`]).
    pub(crate) fn registered(&self, verdicts: u64) {
        self.with_leases(|l| l.registered(verdicts));
    }

    /// Runs `change` on the leases, if they are on, waking no one: for a
    /// change made together with a view change, inside `update_view` (the
    /// lock order is the view's, then the leases').
    pub(super) fn with_leases(&self, change: impl FnOnce(&mut crate::lease::Leases)) {
        if let Some(leases) = self.leases.as_ref() {
            change(&mut leases.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// A snapshot of the node's view.
    pub fn view_snapshot(&self) -> View {
        self.view().clone()
    }

    /// What the node counts.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// The node's metrics in the OpenMetrics text format, its gauges read now.
    pub fn metrics_text(&self) -> String {
        let view = self.view_snapshot();
        let (owned_keys, replica_keys) = match view.state {
            NodeState::Serving => self.key_counts(&view),
            _ => (0, 0),
        };
        self.metrics.encode(&NodeGauges {
            owned_keys,
            replica_keys,
            store_entries: self.key_count() as u64,
            ring_members: self.routes().len() as u64,
            state: view.state.as_str(),
        })
    }

    /// How many entries the local store holds.
    pub fn key_count(&self) -> usize {
        self.store.len()
    }

    /// This node's account of itself.
    pub fn summary(&self) -> NodeSummary {
        let view = self.view_snapshot();
        let factor = self.config.replication.factor;
        let serving = view.state == NodeState::Serving;
        let (owned, replica) = if serving {
            self.key_counts(&view)
        } else {
            (0, 0)
        };
        NodeSummary {
            successors: view.successors(),
            predecessors: view.predecessors.clone(),
            me: view.me,
            prev: view.prev,
            next: view.next,
            state: Some(view.state),
            keys: self.key_count() as u64,
            owned_keys: owned,
            replica_keys: replica,
            replication_factor: factor as u32,
        }
    }

    /// Live keys in this node's arc and in the arcs it replicates. Counting
    /// scans those arcs, and every probe of this node asks (`GetNodeInfo`), so
    /// the counts are reused for [`COUNTS_MAX_AGE`] while the arcs stay the same.
    fn key_counts(&self, view: &View) -> (u64, u64) {
        let own = view.arc();
        let replicated: Vec<crate::ring::Arc> = view
            .replica_arcs(self.config.replication.factor)
            .into_iter()
            .map(|(_, arc)| arc)
            .collect();
        let mut cached = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref().filter(|c| {
            c.own == own && c.replicated == replicated && c.at.elapsed() < COUNTS_MAX_AGE
        }) {
            return (c.owned, c.replica);
        }
        let owned = self.store.count_in(own) as u64;
        let replica = replicated
            .iter()
            .map(|a| self.store.count_in(*a) as u64)
            .sum();
        *cached = Some(KeyCounts {
            at: tokio::time::Instant::now(),
            own,
            replicated,
            owned,
            replica,
        });
        (owned, replica)
    }

    /// The ring as its nodes see it: this node's summary, then each next
    /// neighbour's own, until the walk comes back here (at most `limit` nodes).
    /// In ring order from the smallest ID.
    pub async fn walk_ring(&self, limit: usize) -> Result<Vec<NodeSummary>, NodeError> {
        walk(&self.peers, self.summary(), limit).await
    }

    /// A copy of every entry in the local store, in ring order.
    pub fn local_entries(&self) -> Result<Vec<crate::store::Entry>, NodeError> {
        Ok(self
            .store
            .entries_in(crate::ring::Arc::whole(crate::ring::Position(0)))?)
    }

    /// The failure detector's counts (see the field's docs).
    pub(in crate::node) fn detector(&self) -> std::sync::MutexGuard<'_, crate::failure::Detector> {
        self.detector.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> RwLockReadGuard<'_, View> {
        // Every view update is a plain assignment, so a poisoned lock still holds a
        // consistent view.
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the view under the write lock and wakes queries waiting on it.
    fn update_view<T>(&self, change: impl FnOnce(&mut View) -> T) -> T {
        let result = {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let next = view.next.id;
            let result = change(&mut view);
            // When the view links to a new next: a takeover's wait counts
            // from it (`crate::lease`).
            if view.next.id != next {
                let now = tokio::time::Instant::now().into_std();
                self.with_leases(|l| l.linked_to(view.next.id, now));
            }
            result
        };
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    /// Answers a query: locally if this node owns the key, else by forwarding it
    /// towards the owner. A next hop that cannot be reached (the request was not
    /// delivered), or for a read one whose connection failed mid-request (a
    /// read applies nothing), is retried along the repaired route, with
    /// backoff, for as long as failure detection takes (at most the request
    /// timeout); a write whose hop failed mid-request or timed out is not
    /// retried (it may have been applied). What is retried and when is
    /// [`Attempts`]' to decide.
    ///
    /// The next hop is the key's owner by the routing table while the query has
    /// been forwarded fewer than [`TABLE_HOPS`](crate::routing::TABLE_HOPS) times, and the ring walk's after.
    pub async fn execute(&self, query: Query) -> Result<Answer, NodeError> {
        let maintenance = self.config.maintenance;
        let settings = AttemptSettings::new(
            self.config.timeouts.request,
            maintenance.probe_interval,
            maintenance.misses,
        );
        let now = || tokio::time::Instant::now().into_std();
        let mut attempts = Attempts::new(settings, now());
        let deadline = tokio::time::Instant::from_std(attempts.deadline());
        loop {
            let mut changes = self.changes.subscribe();
            let mut unleased = None;
            let route = {
                let view = self.view();
                let table = self.routes();
                let mut route = view.route_by_table(
                    &table,
                    query.position,
                    query.hops,
                    attempts.clockwise_only(),
                );
                // Owned, but not to be served yet: wait for a lease, or for
                // the end of a takeover's wait.
                if route == Route::Local {
                    unleased = self.unleased(query.position, view.alone());
                    if unleased.is_some() {
                        route = Route::Wait;
                    }
                }
                match route {
                    Route::Local => {
                        // A write is in flight from before it applies until
                        // it is acknowledged or fails (`pending`).
                        let in_flight = (!matches!(query.op, Operation::Get))
                            .then(|| self.pending.begin(query.position));
                        Ok((
                            self.apply_local(&query, view.me.id.0)?,
                            // Only a read asks whether the owner is behind.
                            !matches!(query.op, Operation::Get) || self.caught_up(&view),
                            view.me.clone(),
                            in_flight,
                        ))
                    }
                    other => Err(other),
                }
            };
            let route = match route {
                // Applied under the view lock; acknowledged once durable here
                // and on the key's replicas.
                Ok(((outcome, version, expires, written), caught_up, me, _in_flight)) => {
                    tracing::trace!(
                        op = ?query.op, position = %query.position, ?version, ?outcome, caught_up,
                        "applied locally"
                    );
                    // A read that met writes not yet acknowledged waits for
                    // them to settle, then reads again (`pending`).
                    if matches!(query.op, Operation::Get)
                        && let Some(last) = self.pending.in_flight(query.position)
                        && attempts.wait_for_writes()
                    {
                        if !self.pending.settled(query.position, last, deadline).await {
                            return Err(NodeError::WriteInFlight(settings.stall));
                        }
                        continue;
                    }
                    let route = RouteTaken {
                        hops: query.hops,
                        owner: Some(me),
                    };
                    if let Some(entry) = written {
                        // Watchers hear of a write when it settles, as a read
                        // of its key sees it: acknowledged, failed (it is
                        // applied here all the same) or abandoned by its
                        // caller. Dropped before `_in_flight`.
                        let _settling = self.change_log.when_settled(entry.clone());
                        let newer = self
                            .replicate_write(entry, deadline, query.request_id.as_ref())
                            .await?;
                        // A replica held the key at a newer version that this
                        // owner does not know (a clock ahead of ours, or a
                        // write this owner missed): take it and write again,
                        // past it, so the acknowledged write is the one that
                        // wins. A newer version this owner holds already is
                        // its own later write, made after this one: this
                        // write stands, in its place in the key's history.
                        if let Some(newer) = newer
                            && attempts.rewrites_left()
                            && !self.holds_at_least(&newer)?
                        {
                            attempts.rewrite();
                            self.store.insert_all(vec![newer.clone()])?;
                            // Watchers hear of the copy taken, as reads may
                            // see it before the write made past it.
                            self.change_log.record(newer);
                            continue;
                        }
                        // Acknowledged only under a lease: once the lease
                        // has lapsed, `prev` may take the arc over (and grant
                        // the node after it a lease) before this write reached
                        // it. A node leased again (its neighbour failed and
                        // the new `prev` granted it) acknowledges it then.
                        self.leased_by(query.position, deadline).await?;
                    }
                    // An owner that is behind reads with its replicas.
                    if let (Operation::Get, Some(key), false) = (&query.op, &query.key, caught_up) {
                        let read = self.read_with_replicas(query.position, key);
                        let newest = match tokio::time::timeout_at(deadline, read).await {
                            Ok(Ok(newest)) => newest,
                            // `prev` did not answer (it may be leaving, or
                            // failing): ask again, as the ring repairs.
                            Ok(Err(
                                e @ (NodeError::Unreachable { .. }
                                | NodeError::Interrupted { .. }
                                | NodeError::Timeout { .. }
                                | NodeError::Peer(_)),
                            )) => match attempts.behind_read_failed(now()) {
                                AfterFailure::RetryAfter(wait) => {
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                AfterFailure::GiveUp => return Err(e),
                            },
                            Ok(Err(e)) => return Err(e),
                            Err(_) => {
                                return Err(NodeError::Timeout {
                                    addr: self.view().prev.addr.clone(),
                                    after: self.config.timeouts.request,
                                });
                            }
                        };
                        let version = newest.as_ref().map(|e| e.version);
                        let expires = newest.as_ref().and_then(|e| e.expires);
                        let outcome = newest
                            .and_then(|e| e.value)
                            .map_or(Outcome::Absent, Outcome::Value);
                        return Ok(Answer {
                            outcome,
                            route,
                            version,
                            expires,
                        });
                    }
                    return Ok(Answer {
                        outcome,
                        route,
                        version,
                        expires,
                    });
                }
                Err(route) => route,
            };
            match route {
                Route::Local => unreachable!("answered above"),
                // A node still joining answers once it has joined (or the
                // deadline passes): a client that reached it early is not
                // refused for being early.
                Route::NotServing => match self.state() {
                    NodeState::Joining => {
                        if tokio::time::timeout_at(deadline, changes.changed())
                            .await
                            .is_err()
                        {
                            return Err(NodeError::NotServing);
                        }
                    }
                    NodeState::Left => return Err(NodeError::NotServing),
                    // It joined since it routed: route again.
                    NodeState::Serving | NodeState::Leaving => {}
                },
                Route::Wait => {
                    let serves_from = match unleased {
                        Some(crate::lease::Serve::From(at)) => Some(at),
                        _ => None,
                    };
                    let wake = tokio::time::Instant::from_std(attempts.wait_until(serves_from));
                    if tokio::time::timeout_at(wake, changes.changed())
                        .await
                        .is_err()
                        && attempts.expired(now())
                    {
                        return Err(match unleased {
                            Some(_) => NodeError::Unleased(settings.stall),
                            None => NodeError::HandOffStalled(settings.stall),
                        });
                    }
                }
                Route::Forward(to) => {
                    if query.hops >= self.config.max_hops {
                        return Err(NodeError::TooManyHops { hops: query.hops });
                    }
                    self.metrics.forwarded();
                    // Sent with the other queries to `to` (`rpc::forwards`),
                    // given as long as its own call would be.
                    let forwarded = self.forwards.send(
                        &self.peers,
                        &to,
                        query.to_forward(),
                        tokio::time::Instant::now() + self.config.timeouts.request,
                        query.request_id.clone(),
                    );
                    match forwarded.await {
                        Ok((result, route)) => {
                            return Ok(Answer::from_result(result, &query.op, route));
                        }
                        Err(e) => {
                            let failure = match e {
                                NodeError::Unreachable { .. } => Failure::NotSent,
                                NodeError::Interrupted { .. } => Failure::Interrupted,
                                _ => Failure::Answered,
                            };
                            let read = matches!(query.op, Operation::Get);
                            let through_prev = to == self.view().prev;
                            match attempts.forward_failed(failure, read, through_prev, now()) {
                                AfterFailure::RetryAfter(wait) => {
                                    // Route around it until the next sweep says more.
                                    self.forget_route(&to);
                                    let _ = tokio::time::timeout(wait, changes.changed()).await;
                                }
                                AfterFailure::GiveUp => return Err(e),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether the store holds `entry`'s key at its version or a later one.
    fn holds_at_least(&self, entry: &Entry) -> Result<bool, NodeError> {
        let stored = self.store.entry(entry.position, &entry.key)?;
        Ok(stored.is_some_and(|e| e.version >= entry.version))
    }

    /// Applies a query this node owns to the local store. Called with the view read
    /// guard held, so no hand-off can start half-way through.
    /// `me` is this node's ID, the writer of the versions. Returns the outcome,
    /// the key's version after it, and, for a write, the entry written (for the
    /// replicas).
    fn apply_local(&self, query: &Query, me: u64) -> Result<Applied, NodeError> {
        let position = query.position;
        let key = match &query.key {
            Some(key) => key.clone(),
            // A position-only query (original ForwardQuery clients): it names
            // whichever entry sits at that position.
            None => match self.store.at_position(position)?.into_iter().next() {
                Some(entry) => entry.key,
                None => return Ok((Outcome::Absent, None, None, None)),
            },
        };
        if let Operation::Get = &query.op {
            return Ok(match self.store.get_versioned(position, &key)? {
                Some((value, version, expires)) => {
                    (Outcome::Value(value), Some(version), expires, None)
                }
                None => (Outcome::Absent, None, None, None),
            });
        }
        // Writes to one key are decided one at a time: a condition checked
        // here still holds when the write lands.
        let _key = self.key_locks.lock(position);
        if query.condition != Condition::Always {
            let current = self.store.entry(position, &key)?;
            let now = crate::store::now_micros();
            let current = current.filter(|e| e.is_live(now)).map(|e| e.version);
            if !query.condition.holds(current) {
                return Err(NodeError::PreconditionFailed { current });
            }
        }
        let (outcome, written) = match &query.op {
            Operation::Get => unreachable!("answered above"),
            Operation::Delete => {
                let written = self.store.delete(position, &key, me)?;
                (
                    written.previous.map_or(Outcome::Absent, Outcome::Value),
                    written.entry,
                )
            }
            Operation::Set(value) => {
                let expires = query
                    .ttl
                    .map(|ttl| crate::store::now_micros().saturating_add(ttl.as_micros() as u64));
                let written = self
                    .store
                    .set_expiring(position, key, value.clone(), me, expires)?;
                (
                    written.previous.map_or(Outcome::Created, Outcome::Value),
                    written.entry,
                )
            }
        };
        let version = written.value.is_some().then_some(written.version);
        Ok((outcome, version, written.expires, Some(written)))
    }
}

/// How many nodes a ring walk visits at most before it gives up.
pub const WALK_LIMIT: usize = 4096;

/// The ring as its nodes see it, from `first` (a node's own summary): each
/// next neighbour's summary in turn, asked through `peers`, until the walk
/// comes back to `first` (at most `limit` nodes). In ring order from the
/// smallest ID.
pub(crate) async fn walk(
    peers: &Peers,
    first: NodeSummary,
    limit: usize,
) -> Result<Vec<NodeSummary>, NodeError> {
    let start = first.me.id;
    let mut at = first.next.clone();
    let mut ring = vec![first];
    while at.id != start {
        if ring.iter().any(|s| s.me.id == at.id) {
            return Err(NodeError::RingWalk(format!(
                "the walk came back to {} without passing {}: the ring is being repaired, retry shortly",
                at.addr, ring[0].me.addr
            )));
        }
        if ring.len() >= limit {
            return Err(NodeError::RingWalk(format!(
                "the ring did not close after {limit} nodes"
            )));
        }
        let summary = peers.summary(&at).await?;
        at = summary.next.clone();
        ring.push(summary);
    }
    ring.sort_by_key(|s| s.me.id);
    Ok(ring)
}

/// Tests only: a node in memory, serving the arc from `me` to `other`, its
/// only neighbour on both sides, and holding no lease yet.
#[cfg(test)]
pub(crate) fn serving_beside(me: Member, other: Member) -> Arc<Node> {
    serving_beside_with(me, other, NodeConfig::default())
}

/// Tests only: [`serving_beside`] with `config`.
#[cfg(test)]
pub(crate) fn serving_beside_with(me: Member, other: Member, config: NodeConfig) -> Arc<Node> {
    let (health, _) = tonic_health::server::health_reporter();
    let store = Arc::new(crate::store::MemoryStore::new());
    let node = Arc::new(Node::new(me.clone(), config, store, health, None));
    node.update_view(|v| {
        *v = View::first(me);
        (v.prev, v.next) = (other.clone(), other);
    });
    // Its `next` knows it as its `prev`, as once it has probed it.
    node.next_confirmed(Some(node.view().arc()));
    // Caught up, as an owner is once it has reconciled with its replicas.
    let view = node.view_snapshot();
    let replicas = view.replicas(node.config.replication.factor);
    let mut catch_up = node.catch_up.lock().unwrap();
    let began = catch_up.begin();
    catch_up.reconciled(began, view.arc(), &replicas, (view.arc(), &replicas));
    drop(catch_up);
    node
}

/// Tests only: a node in memory without leases, owning the key `k`, whose
/// only neighbour and replica cannot be reached (a closed loopback port), so
/// that its writes are applied and never acknowledged.
#[cfg(test)]
pub(crate) fn owner_with_unreachable_replica() -> Arc<Node> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let replica = Member::new(
        crate::ring::Position(50),
        format!("http://{}", closed.local_addr().unwrap()),
    );
    drop(closed);
    let config = NodeConfig {
        leases: None,
        ..NodeConfig::default()
    };
    serving_beside_with(
        Member::new(crate::ring::Position(100), "http://127.0.0.1:9"),
        replica,
        config,
    )
}

/// Tests only: a write of `value` to `key` at `node`, started and in flight
/// (applied, not yet settled) when this returns: its task, and a flag raised
/// once it has answered.
#[cfg(test)]
pub(crate) async fn write_in_flight(
    node: &Arc<Node>,
    key: &[u8],
    value: &[u8],
) -> (
    tokio::task::JoinHandle<Result<Answer, NodeError>>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let set = Query::new(
        Operation::Set(value.to_vec()),
        key.to_vec(),
        &node.config().limits,
    )
    .expect("a valid write");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let write = tokio::spawn({
        let (node, done) = (node.clone(), done.clone());
        async move {
            let answer = node.execute(set).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            answer
        }
    });
    let position = crate::ring::key_position(key);
    while node.pending.in_flight(position).is_none() {
        tokio::task::yield_now().await;
    }
    (write, done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Arc as RingArc, Position};

    fn confirms(node: &Node, arc: RingArc) -> bool {
        let leases = node.leases.as_ref().expect("leases are on");
        leases.lock().unwrap().confirms(arc)
    }

    /// A probe of `next` answered after a joiner was taken in speaks of the
    /// old `next`: it must not widen the confirmation back over the
    /// joiner's arc (which the node would then serve, should it take the
    /// joiner's arc over).
    #[test]
    fn a_confirmation_probed_of_an_earlier_next_changes_nothing() {
        let old_next = Member::new(Position(200), "http://127.0.0.1:9");
        let node = serving_beside(
            Member::new(Position(100), "http://127.0.0.1:9"),
            old_next.clone(),
        );
        let joiner = Member::new(Position(150), "http://127.0.0.1:9");
        node.update_view(|v| {
            v.next = joiner.clone();
            node.with_leases(|l| {
                l.next_probed(Some(RingArc::new(Position(100), Position(150))));
            });
        });
        let probed = RingArc::new(Position(100), Position(200));
        node.change_confirmed_by(&old_next, |l| l.next_probed(Some(probed)));
        assert!(!confirms(&node, probed));
        assert!(confirms(&node, RingArc::new(Position(100), Position(150))));

        // The same confirmation, while `next` is the node it is about, holds.
        node.change_confirmed_by(&joiner, |l| l.next_probed(Some(probed)));
        assert!(confirms(&node, probed));
    }
}
