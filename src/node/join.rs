//! Joining the ring, from both sides.
//!
//! # Protocol
//!
//! 1. The joiner `J` registers with the registry, which chooses its ID (or records
//!    the one `J` saved with its data) and names the registered member with the
//!    closest smaller ID as a first contact (none for the first member, which then
//!    serves the whole ring alone). Joining through a member instead (`--join`),
//!    `J` walks the ring from it and applies the registry's rule itself
//!    ([`crate::ring::balance`]), its predecessor being the first contact.
//! 2. `J` starts serving its port (state `joining`: it owns nothing yet) and sends
//!    `RegisterAsNeighbor{ty: Next, J}` to the contact: "take me as your next".
//! 3. The contact `P` takes its membership lock (one join into its arc at a time)
//!    and checks that `J` falls strictly inside its arc `[P, N)`. If not, it refuses
//!    with `FAILED_PRECONDITION` and names, in the `crustyring-towards` metadata,
//!    the neighbour closer to `J`'s predecessor; `J` asks that one. A contact that
//!    is itself still joining answers `UNAVAILABLE`, and `J` retries with backoff,
//!    falling back to the other registered members.
//! 4. `P` streams the arc `[J, N)` to `J` (`HandOff`) while it keeps serving it,
//!    the first message naming `J`'s neighbours `{prev: P, next: N}`, then
//!    batches of entries bounded in bytes; `J` stores them as they come. Then `P`
//!    fences the arc (local queries into it wait) and sends the writes made into
//!    it meanwhile (`migration`). `J` links in and starts serving; only then does
//!    it acknowledge.
//! 5. `P` sets `next = J`, lifts the fence (waiting queries now route to `J`),
//!    drops the arc's entries and tells `N` that its previous neighbour is `J`.
//!
//! Every key is therefore served by exactly one node at every moment a query can
//! observe it: before step 5 by `P` (the fence stops changes while `J` takes the
//! last writes), after it by `J`. If
//! the hand-off fails, `P` lifts the fence and keeps the arc; `J` tries again.
//! Joins into different arcs touch different nodes' `next` links and proceed in
//! parallel; joins into one arc are serialised by its owner.

use super::error::{JoinError, NodeError};
use super::handoff::HandOffHeader;
use super::view::{JoinRefusal, NodeState, View};
use super::{Node, NodeConfig};
use crate::metrics::HandOff;
use crate::proto::dht::{self, NeighborType};
use crate::proto::registry::{ConnectionAddr, registry_client::RegistryClient};
use crate::ring::{IdRule, Member, Position, predecessor};
use crate::store::Store;
use crate::transport::Listener;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

/// The metadata key naming where a refused joiner should ask next.
pub const TOWARDS_METADATA: &str = "crustyring-towards";

/// How joining is paced.
#[derive(Debug, Clone, Copy)]
pub struct JoinSettings {
    /// How long a node keeps trying to join before it gives up.
    pub timeout: Duration,
    /// The first retry delay; it doubles up to one second.
    pub retry_delay: Duration,
}

impl Default for JoinSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retry_delay: Duration::from_millis(20),
        }
    }
}

/// How a node finds the ring.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Register with the registry at this address: it assigns the ID and names a
    /// first contact. The node heartbeats to it while serving.
    Registry(String),
    /// Join through the node at `contact` (any member), choosing the ID locally by
    /// `ids` among the members a walk of the ring finds; heartbeat to `registry` if
    /// one is given.
    Join {
        /// Any member of the ring.
        contact: String,
        /// How to choose the ID (as the registry would, with the same salt and
        /// choices).
        ids: IdRule,
        /// A registry to heartbeat to, if any.
        registry: Option<String>,
    },
    /// Start a new ring alone, with the ID `ids` gives a first member; heartbeat
    /// to `registry` if one is given.
    NewRing {
        /// How to choose the ID.
        ids: IdRule,
        /// A registry to heartbeat to, if any.
        registry: Option<String>,
    },
}

impl Discovery {
    fn registry(&self) -> Option<&str> {
        match self {
            Discovery::Registry(r) => Some(r),
            Discovery::Join { registry, .. } | Discovery::NewRing { registry, .. } => {
                registry.as_deref()
            }
        }
    }
}

/// A node that has joined the ring and is serving its listener.
#[derive(Debug)]
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// The server task; it ends when the shutdown future resolves.
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts a node on `listener`, advertising `http://{host}:{port}` (`https` with
/// TLS on): finds the
/// ring as `discovery` says, serves the listener, joins, and starts ring
/// maintenance. Returns once the node serves its arc. The server and maintenance
/// stop when `shutdown` resolves (call [`Node::leave`] first for a graceful leave).
pub async fn start<L: Listener>(
    listener: L,
    host: &str,
    discovery: Discovery,
    config: NodeConfig,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, JoinError> {
    let scheme = config.tls.scheme();
    let addr = format!("{scheme}://{host}:{}", listener.port()?);
    // A node restarted from its data keeps its ID, and says so.
    let saved = store.identity().map(|m| m.id);
    let (me, contact) = match &discovery {
        Discovery::Registry(registry) => register(registry, &addr, saved, &config).await?,
        Discovery::Join { contact, ids, .. } => {
            choose_by_walk(contact, ids, &addr, saved, &config).await?
        }
        Discovery::NewRing { ids, .. } => {
            let id = saved.unwrap_or_else(|| ids.choose(&addr, &BTreeMap::<Position, ()>::new()));
            (Member::new(id, &addr), None)
        }
    };
    // A registry that predates saved IDs assigns another: the saved one wins.
    let me = match saved {
        Some(saved) if saved != me.id => {
            tracing::info!(id = %saved, "resuming the saved ring position");
            Member::new(saved, me.addr)
        }
        _ => me,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    let registry = discovery.registry().map(str::to_string);
    let node = Arc::new(Node::new(me, config, store, health, registry));
    // Not serving until joined; `report_health` keeps it in step from here.
    node.publish_health().await;
    let grpc = super::grpc_routes(node.clone(), health_service).into_axum_router();
    let router = crate::gateway::app(grpc, node.clone());
    let (stop, stopped) = watch::channel(false);
    let serving = crate::server::Serving {
        limits: node.config().serving,
        required: node.config().security.clone(),
        tls: node.config().tls.clone(),
    };
    let server = tokio::spawn(crate::server::serve(
        listener,
        router,
        serving,
        wait_for(stopped.clone()),
    ));
    let closing = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Endless streams (watches) end first, so the server's graceful
        // shutdown does not wait for them.
        closing.close_streams();
        let _ = stop.send(true);
    });
    tokio::spawn(node.clone().report_health(stopped.clone()));
    match contact {
        None => node.become_alone().await,
        Some(contact) => node.join(contact).await?,
    }
    // Serving, as this returns: probes need not race the reporter.
    node.publish_health().await;
    node.store.save_identity(&node.me())?;
    node.store.sync_point().await?;
    tokio::spawn(node.clone().anti_entropy(stopped.clone()));
    tokio::spawn(node.clone().refresh_routes(stopped.clone()));
    tokio::spawn(node.clone().maintain(stopped));
    Ok(RunningNode { node, server })
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Registers `addr` (with the ID it holds, if any) with the registry, retrying
/// while it is not up yet. Returns this node and its first contact.
async fn register(
    registry: &str,
    addr: &str,
    held: Option<Position>,
    config: &NodeConfig,
) -> Result<(Member, Option<Member>), JoinError> {
    let failed = |reason: String| JoinError::Registry {
        addr: registry.to_string(),
        reason,
    };
    let credentials = crate::security::Credentials::member(&config.security, &config.tls);
    let endpoint = super::peers::endpoint(registry, config.timeouts, &credentials)
        .map_err(|e| failed(e.to_string()))?;
    let info = with_retries(config, config.timeouts.request, || async {
        let channel = (config.network.connect(&endpoint).await).map_err(|e| e.to_string())?;
        RegistryClient::with_interceptor(channel, credentials.clone())
            .register_node(ConnectionAddr {
                addr: addr.to_string(),
                id: held.map(|id| id.0),
            })
            .await
            .map_err(|s| Failed::from_status(&s, s.message().to_string()))
    })
    .await
    .map_err(failed)?
    .into_inner();
    let me = Member::new(Position(info.id), addr);
    Ok((me, info.neighbor.map(Member::from)))
}

/// Joining through a member: walks the ring from `contact` to learn its serving
/// members, and takes the ID the registry's rule `ids` gives among them (or the
/// `held` one). Returns this node and its predecessor among them, the first
/// contact (the given one if the ring is empty of serving members).
async fn choose_by_walk(
    contact: &str,
    ids: &IdRule,
    addr: &str,
    held: Option<Position>,
    config: &NodeConfig,
) -> Result<(Member, Option<Member>), JoinError> {
    let members = with_retries(config, config.join.timeout, || async {
        crate::client::serving_members(
            contact,
            &crate::security::Credentials::member(&config.security, &config.tls),
        )
        .await
        .map_err(|e| match &e {
            crate::client::ClientError::Status(s) => Failed::from_status(s, e.to_string()),
            _ => Failed::Transient(e.to_string()),
        })
    })
    .await
    .map_err(|reason| JoinError::RingWalk {
        contact: contact.to_string(),
        reason,
    })?;
    let id = held.unwrap_or_else(|| ids.choose(addr, &members));
    // Without a known predecessor the contact's ID is not known; only its
    // address is used.
    let first =
        predecessor(&members, id).map_or_else(|| Member::new(id, contact), |(_, m)| m.clone());
    Ok((Member::new(id, addr), Some(first)))
}

/// Why an attempt to reach the ring failed, and whether trying again can help.
enum Failed {
    /// Not up yet, unreachable, busy: worth another try.
    Transient(String),
    /// Refused for want of credentials: the same again would be refused too.
    Refused(String),
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Failed::Transient(reason)
    }
}

impl Failed {
    /// A peer's or the registry's answer `status`, described by `reason`.
    fn from_status(status: &tonic::Status, reason: String) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Failed::Refused(reason),
            _ => Failed::Transient(reason),
        }
    }
}

/// Runs `attempt` (each try bounded by `limit`) until it succeeds, backing off
/// from the join retry delay, doubling up to a second, for at most the join
/// timeout. The last failure's reason if it never does; a refusal (missing or
/// wrong credentials) at once, since trying again cannot change it.
async fn with_retries<T, F, Fut>(
    config: &NodeConfig,
    limit: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failed>>,
{
    let deadline = tokio::time::Instant::now() + config.join.timeout;
    let mut delay = config.join.retry_delay;
    loop {
        let reason = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failed::Refused(reason))) => return Err(reason),
            Ok(Err(Failed::Transient(reason))) => reason,
            Err(_) => "no answer in time".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(reason);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

impl Node {
    /// Starts a ring of one: this node owns every position.
    async fn become_alone(&self) {
        let me = self.me();
        self.update_view(|v| *v = View::first(me));
        tracing::info!(id = %self.me().id, "serving the whole ring alone");
    }

    /// Joins through `contact`, following refusals towards this node's predecessor
    /// and falling back to the registry's other members while contacts are not ready.
    async fn join(&self, contact: Member) -> Result<(), JoinError> {
        let me = self.me();
        let settings = self.config.join;
        let deadline = tokio::time::Instant::now() + settings.timeout;
        let mut target = contact;
        let mut delay = settings.retry_delay;
        let mut fallbacks: Vec<Member> = Vec::new();
        let mut last = String::new();
        loop {
            if self.view().state == NodeState::Serving {
                let view = self.view_snapshot();
                tracing::info!(id = %me.id, prev = %view.prev.addr, next = %view.next.addr, "joined the ring");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(JoinError::TimedOut {
                    after: settings.timeout,
                    last,
                });
            }
            let request = dht::NeighborRegisterInfo {
                ty: NeighborType::Next as i32,
                id: me.id.0,
                addr: me.addr.clone(),
            };
            let client = self.peers.client(&target.addr);
            let attempt = async move {
                client?
                    .register_as_neighbor(request)
                    .await
                    .map_err(NodeError::Peer)
            };
            // The contact streams the arc to us within this call: allow it the
            // hand-off's time on top of one request's.
            let limit = self.config.timeouts.request * 2;
            let outcome = tokio::time::timeout(limit, attempt).await;
            let status = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err(NodeError::Peer(status))) => status,
                Ok(Err(other)) => Status::unavailable(other.to_string()),
                Err(_) => Status::deadline_exceeded("no answer in time"),
            };
            if self.view().state == NodeState::Serving {
                continue;
            }
            last = format!("{}: {}", target.addr, status.message());
            match status.code() {
                tonic::Code::FailedPrecondition => {
                    if let Some(towards) = towards(&status) {
                        target = towards;
                        continue;
                    }
                }
                tonic::Code::AlreadyExists => {
                    return Err(JoinError::IdTaken {
                        id: me.id,
                        holder: status.message().to_string(),
                    });
                }
                _ => {}
            }
            tracing::debug!(contact = %target.addr, %last, "join attempt refused; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            if fallbacks.is_empty() {
                fallbacks = self.members_by_closeness().await;
                // The contact is gone and no other member is alive (a whole ring
                // restarting): if the registry now names no contact, this node
                // starts the ring again.
                if fallbacks.is_empty() && self.registry_names_no_contact().await {
                    self.become_alone().await;
                    continue;
                }
            }
            if let Some(next) = fallbacks.pop() {
                target = next;
            }
        }
    }

    /// Whether the registry, asked again, says this node is the first member.
    async fn registry_names_no_contact(&self) -> bool {
        let Some(mut registry) = self.registry_client() else {
            return false;
        };
        let me = self.me();
        let ask = registry.register_node(ConnectionAddr {
            addr: me.addr,
            id: Some(me.id.0),
        });
        match tokio::time::timeout(self.config.timeouts.request, ask).await {
            Ok(Ok(info)) => info.into_inner().neighbor.is_none(),
            _ => false,
        }
    }

    /// The registry's members other than this node, the farthest first (so that
    /// popping yields the closest predecessor first).
    async fn members_by_closeness(&self) -> Vec<Member> {
        let me = self.me();
        let mut members: Vec<Member> = self
            .registry_members()
            .await
            .into_iter()
            .filter(|m| m.id != me.id)
            .collect();
        // Counter-clockwise distance from us: the predecessor is the closest.
        members.sort_by_key(|m| std::cmp::Reverse(m.id.distance_to(me.id)));
        members
    }

    /// The predecessor's side of a join: hands the arc `[joiner, next)` to the
    /// joiner and links it in. See the module docs for the steps.
    pub(super) async fn accept_join(
        &self,
        joiner: Member,
    ) -> Result<dht::PreviousNeighbors, Status> {
        let _membership = self.membership.lock().await;
        // The arc stays served while it streams (`migration`): the fence goes
        // up only for the switch-over.
        let (arc, me, prev, old_next) = {
            let view = self.view();
            let arc = view
                .check_join(joiner.id)
                .map_err(|refusal| refusal_status(refusal, &joiner))?;
            (arc, view.me.clone(), view.prev.clone(), view.next.clone())
        };
        let header = HandOffHeader {
            from: me.clone(),
            prev: Some(me.clone()),
            next: old_next.clone(),
            merge: false,
            backups: self.view().backups.clone(),
            // The joiner's predecessors are this node's replicas' chain.
            predecessors: self.view().replicas(usize::MAX),
        };
        let handed = self.stream_join(&joiner, header, arc).await;
        // Before taking the arc back after a timeout, ask the joiner: or both
        // would own it.
        let handed = self
            .settle_timeout(handed, &joiner, |info| {
                info.prev.as_ref().is_some_and(|p| p.id == me.id.0)
            })
            .await;
        if let Ok(n) = &handed {
            self.metrics.handoff(true, HandOff::Join, *n);
        }
        if let Err(e) = handed {
            self.update_view(|view| view.handoff = None);
            tracing::warn!(joiner = %joiner.addr, error = %e, "hand-off failed; keeping the arc");
            return Err(Status::unavailable(format!(
                "could not hand the arc over to {}: {e}",
                joiner.addr
            )));
        }
        let length = self.config.maintenance.successors;
        self.update_view(|view| {
            if view.alone() {
                view.prev = joiner.clone();
            }
            let after = view.successors();
            view.next = joiner.clone();
            view.adopt_successors(&after, length);
            view.handoff = None;
        });
        self.learn_route(joiner.clone());
        if self.config.replication.factor > 1 {
            // This node is now the joiner's nearest replica: the copy stays.
            tracing::info!(joiner = %joiner.addr, "handed arc to joiner; keeping it as its replica");
        } else {
            match self.drop_arc(arc).await {
                Ok(n) => tracing::info!(joiner = %joiner.addr, keys = n, "handed arc to joiner"),
                Err(e) => tracing::error!(error = %e, "could not drop a handed-off arc"),
            }
        }
        if old_next != me {
            self.introduce(&joiner, &old_next).await;
        }
        Ok(dht::PreviousNeighbors {
            prev: Some((&prev).into()),
            next: Some((&old_next).into()),
        })
    }
}

fn refusal_status(refusal: JoinRefusal, joiner: &Member) -> Status {
    match refusal {
        JoinRefusal::NotServing => {
            Status::unavailable("this node is not serving yet; retry shortly")
        }
        JoinRefusal::Taken { holder } => Status::already_exists(format!(
            "ring ID {} is already held by {}",
            joiner.id, holder.addr
        )),
        JoinRefusal::NotMyArc { towards } => {
            let mut status = Status::failed_precondition(format!(
                "ID {} is not in my arc; ask {}",
                joiner.id, towards.addr
            ));
            let value = format!("{}@{}", towards.id.0, towards.addr);
            if let Ok(v) = value.parse() {
                status.metadata_mut().insert(TOWARDS_METADATA, v);
            }
            status
        }
    }
}

fn towards(status: &Status) -> Option<Member> {
    let value = status.metadata().get(TOWARDS_METADATA)?.to_str().ok()?;
    let (id, addr) = value.split_once('@')?;
    Some(Member::new(Position(id.parse().ok()?), addr))
}
