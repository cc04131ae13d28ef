//! How a starting node finds the ring: through the registry (which assigns
//! its ID and names a first contact), through any member (a walk of the ring,
//! choosing the ID by the registry's rule locally), or as a new ring. Every
//! call goes through the node's [`Network`](crate::transport::Network), so a
//! simulation can run each way.

use crate::node::error::{JoinError, NodeError};
use crate::node::view::NodeState;
use crate::node::{NodeConfig, Peers};
use crate::proto::registry::{ConnectionAddr, registry_client::RegistryClient};
use crate::ring::{IdRule, Member, Position, predecessor};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

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
    /// The registry to heartbeat to, if any.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Discovery::Registry(r) => Some(r),
            Discovery::Join { registry, .. } | Discovery::NewRing { registry, .. } => {
                registry.as_deref()
            }
        }
    }
}

/// What discovery found: this node, its first contact in the ring (none if
/// it starts the ring), and how many times the registry had judged its ID
/// dead when it registered (verdicts on earlier processes; 0 without one).
pub(crate) struct Found {
    pub me: Member,
    pub contact: Option<Member>,
    pub verdicts: u64,
}

/// This node (at `addr`, resuming the ID `saved` if it has one) and its first
/// contact in the ring, as `discovery` says.
pub(crate) async fn discover(
    discovery: &Discovery,
    addr: &str,
    saved: Option<Position>,
    config: &NodeConfig,
) -> Result<Found, JoinError> {
    let (me, contact, verdicts) = match discovery {
        Discovery::Registry(registry) => register(registry, addr, saved, config).await?,
        Discovery::Join { contact, ids, .. } => {
            let (me, contact) = choose_by_walk(contact, ids, addr, saved, config).await?;
            (me, contact, 0)
        }
        Discovery::NewRing { ids, .. } => {
            let id = saved.unwrap_or_else(|| ids.choose(addr, &BTreeMap::<Position, ()>::new()));
            (Member::new(id, addr), None, 0)
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
    Ok(Found {
        me,
        contact,
        verdicts,
    })
}

/// Registers `addr` (with the ID it holds, if any) with the registry, retrying
/// while it is not up yet. Returns this node, its first contact, and the
/// verdicts on its ID so far (a count that does not parse counts as none).
async fn register(
    registry: &str,
    addr: &str,
    held: Option<Position>,
    config: &NodeConfig,
) -> Result<(Member, Option<Member>, u64), JoinError> {
    let failed = |reason: String| JoinError::Registry {
        addr: registry.to_string(),
        reason,
    };
    let credentials = crate::security::Credentials::member(&config.security, &config.tls);
    let endpoint = crate::node::rpc::peers::endpoint(registry, config.timeouts, &credentials)
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
    .map_err(failed)?;
    let verdicts = (info.metadata().get(crate::registry::VERDICTS))
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let info = info.into_inner();
    let me = Member::new(Position(info.id), addr);
    Ok((me, info.neighbor.map(Member::from), verdicts))
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
    let peers = Peers::of(config);
    let contact_member = Member::new(Position(0), contact);
    let walked = with_retries(config, config.join.timeout, || async {
        let first = peers.summary(&contact_member).await?;
        Ok(crate::node::walk(&peers, first, crate::node::WALK_LIMIT).await?)
    })
    .await
    .map_err(|reason| JoinError::RingWalk {
        contact: contact.to_string(),
        reason,
    })?;
    let members: BTreeMap<Position, Member> = walked
        .into_iter()
        .filter(|s| s.state == Some(NodeState::Serving))
        .map(|s| (s.me.id, s.me))
        .collect();
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

impl From<NodeError> for Failed {
    fn from(e: NodeError) -> Self {
        Failed::of_code(e.code(), e.to_string())
    }
}

impl Failed {
    /// A peer's or the registry's answer `status`, described by `reason`.
    fn from_status(status: &tonic::Status, reason: String) -> Self {
        Failed::of_code(status.code(), reason)
    }

    /// A failure answered with `code`: a refusal for want of credentials, or
    /// worth another try.
    fn of_code(code: tonic::Code, reason: String) -> Self {
        match code {
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
