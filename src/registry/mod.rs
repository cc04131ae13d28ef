//! The registry: assigns node IDs and refers joiners to a first contact, and
//! judges deaths.
//!
//! Queries never go through it. Nodes join through it, heartbeat to it (each
//! answer a root lease, [`verdicts`]), and ask it to judge a neighbour dead
//! before taking its arc over: while it is unreachable, a ring without
//! failures serves on, but no failure is repaired, and the outage around a
//! failed node spreads round the ring as leases lapse.

mod membership;
pub mod replay;
pub mod verdicts;

pub use membership::{Liveness, Membership, Registration, Relearning};
pub use verdicts::{Kept, Root, Verdict, Verdicts};

use crate::metrics::RegistryMetrics;
use crate::proto::registry::{self as pb, registry_server::Registry};
use crate::ring::{IdRule, Member, Position};
use crate::transport::Listener;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Now, as the runtime's clock says: real time in production, virtual time in
/// a paused or simulated runtime (so that liveness deadlines follow it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The default salt mixed into node IDs.
pub const DEFAULT_SALT: &str = "crustyring";

/// The `registry.Registry` gRPC service.
#[derive(Debug, Clone)]
pub struct RegistryService {
    membership: Arc<Mutex<Membership>>,
    verdicts: Arc<Mutex<Verdicts>>,
    /// Where the counts of verdicts are kept, if anywhere ([`verdicts::save`]).
    verdicts_file: Option<std::path::PathBuf>,
    metrics: Arc<RegistryMetrics>,
}

/// Heartbeat metadata: how many times the node heard the registry judged it
/// dead (absent: none).
pub const VERDICTS_SEEN: &str = "x-crusty-verdicts-seen";
/// A heartbeat's answer: a root lease of this many milliseconds.
pub const ROOT_LEASE_MS: &str = "x-crusty-root-lease-ms";
/// A heartbeat's answer: no root lease; the registry judged the node dead
/// this many times.
pub const VERDICTS: &str = "x-crusty-verdicts";

impl RegistryService {
    /// A registry with no members, choosing IDs by `ids`, granting root
    /// leases as `roots` says.
    pub fn new(ids: IdRule, liveness: Liveness, roots: crate::lease::LeaseSettings) -> Self {
        Self {
            membership: Arc::new(Mutex::new(Membership::new(ids, liveness, now()))),
            verdicts: Arc::new(Mutex::new(Verdicts::new(roots, now()))),
            verdicts_file: None,
            metrics: Arc::default(),
        }
    }

    /// Keeps what it must about verdicts in `path` ([`verdicts::Kept`]),
    /// starting from what it holds, and notes this registry's root lease
    /// length there before granting any.
    pub fn keeping_verdicts_in(mut self, path: std::path::PathBuf) -> std::io::Result<Self> {
        {
            let mut verdicts = self.verdicts();
            verdicts.restore(verdicts::load(&path)?);
            verdicts::save(&path, &verdicts.kept())?;
        }
        self.verdicts_file = Some(path);
        Ok(self)
    }

    fn verdicts(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.verdicts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps what `verdicts` holds before `call` is answered, if `call`
    /// changed it (it has more [`Verdicts::changes`] than `before`):
    /// `UNAVAILABLE` if it cannot. A call that changed nothing is answered
    /// whether earlier changes could be kept or not (no verdict is answered
    /// before they are): else one failed write would refuse every heartbeat.
    fn keep_if_changed(
        &self,
        verdicts: &mut Verdicts,
        call: &str,
        before: u64,
    ) -> Result<(), Status> {
        if verdicts.changes() == before {
            return Ok(());
        }
        self.keep(verdicts, call)
    }

    /// Keeps what `verdicts` holds if it changed ([`Verdicts::unsaved`]),
    /// before `call` is answered: `UNAVAILABLE` if it cannot (the next call
    /// tries again, and no verdict is answered before it succeeds).
    fn keep(&self, verdicts: &mut Verdicts, call: &str) -> Result<(), Status> {
        let (true, Some(path)) = (verdicts.unsaved(), &self.verdicts_file) else {
            return Ok(());
        };
        if let Err(e) = verdicts::save(path, &verdicts.kept()) {
            tracing::error!(error = %e, path = %path.display(), call, "cannot keep the verdicts");
            return Err(Status::unavailable(format!(
                "cannot keep what the registry knows of verdicts: {e}"
            )));
        }
        verdicts.saved();
        Ok(())
    }

    /// The registry's metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        let members = self.membership().members(now()).len();
        self.metrics.encode(members)
    }

    /// `answer`, counted as a call of `method`.
    fn counted<T>(&self, method: &'static str, answer: Result<T, Status>) -> Result<T, Status> {
        let code = answer
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.request(method, code);
        answer
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A member's address must be an `http://` or `https://` URL: it is handed to
/// joiners as their contact.
fn check_addr(addr: &str) -> Result<(), Status> {
    if let Err(e) = addr.parse::<tonic::transport::Uri>() {
        return Err(Status::invalid_argument(format!(
            "`addr` must be a URL such as http://127.0.0.1:50001: {e}"
        )));
    }
    if !addr.starts_with("http://") && !addr.starts_with("https://") {
        return Err(Status::invalid_argument(
            "`addr` must start with http:// or https://, e.g. http://127.0.0.1:50001",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register_node(
        &self,
        request: Request<pb::ConnectionAddr>,
    ) -> Result<Response<pb::RegisterInfo>, Status> {
        let pb::ConnectionAddr { addr, id } = request.into_inner();
        let answer = check_addr(&addr).and_then(|()| {
            let registration = self
                .membership()
                .register(&addr, id.map(Position), now())
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut verdicts = self.verdicts();
            let before = verdicts.changes();
            verdicts.registered(registration.id, now());
            // Known before it is answered, if new (`Verdicts::unsaved`).
            self.keep_if_changed(&mut verdicts, "RegisterNode", before)?;
            Ok((verdicts.count_of(registration.id), registration))
        });
        let (count, registration) = self.counted("RegisterNode", answer)?;
        tracing::info!(%addr, id = %registration.id, "registered node");
        let mut response = Response::new(pb::RegisterInfo {
            id: registration.id.0,
            neighbor: registration.contact.as_ref().map(Into::into),
        });
        // The verdicts on this ID so far concern earlier processes.
        response.metadata_mut().insert(VERDICTS, count.into());
        Ok(response)
    }

    async fn get_connected_nodes(&self, _: Request<()>) -> Result<Response<pb::Nodes>, Status> {
        let nodes = self
            .membership()
            .members(now())
            .iter()
            .map(Into::into)
            .collect();
        self.counted("GetConnectedNodes", Ok(Response::new(pb::Nodes { nodes })))
    }

    /// Notes the member alive, and grants it a root lease unless it was
    /// judged dead since it last heard so ([`Verdicts::heartbeat`]). A
    /// count of verdicts seen that does not parse counts as none.
    async fn heartbeat(&self, request: Request<pb::Node>) -> Result<Response<()>, Status> {
        let seen = (request.metadata().get(VERDICTS_SEEN))
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let node = request.into_inner();
        let answer = check_addr(&node.addr).and_then(|()| {
            let (id, now) = (Position(node.id), now());
            self.membership()
                .heartbeat(&Member::new(id, node.addr), now);
            let mut response = Response::new(());
            let root = {
                let mut verdicts = self.verdicts();
                let before = verdicts.changes();
                let root = verdicts.heartbeat(id, seen, now);
                // A node not known before (it joined through a member) is
                // kept before it is answered.
                self.keep_if_changed(&mut verdicts, "Heartbeat", before)?;
                root
            };
            let (name, value) = match root {
                Root::Granted(length) => (
                    ROOT_LEASE_MS,
                    u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                ),
                Root::Dead(count) => (VERDICTS, count),
            };
            response.metadata_mut().insert(name, value.into());
            Ok(response)
        });
        self.counted("Heartbeat", answer)
    }

    /// Judges the members in the asked arc ([`Verdicts::judge`]), keeping
    /// the counts before answering that they are dead.
    async fn judge_dead(
        &self,
        request: Request<pb::DeathQuestion>,
    ) -> Result<Response<pb::DeathVerdict>, Status> {
        let question = request.into_inner();
        let arc = crate::ring::Arc::new(Position(question.from), Position(question.to));
        let verdict = {
            let mut verdicts = self.verdicts();
            let verdict = verdicts.judge(arc, question.asker.map(Position), now());
            // Kept before it is answered.
            if let Err(e) = self.keep(&mut verdicts, "JudgeDead") {
                return self.counted("JudgeDead", Err(e));
            }
            verdict
        };
        let answer = match verdict {
            Verdict::Dead { others } => {
                tracing::info!(from = %arc.start, to = %arc.end, others, "judged dead");
                pb::DeathVerdict {
                    dead: true,
                    retry_after_ms: 0,
                    others,
                }
            }
            Verdict::NotBefore(after) => pb::DeathVerdict {
                dead: false,
                retry_after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                others: 0,
            },
        };
        self.counted("JudgeDead", Ok(Response::new(answer)))
    }

    async fn deregister(&self, request: Request<pb::Node>) -> Result<Response<()>, Status> {
        let node = request.into_inner();
        tracing::info!(addr = %node.addr, id = %Position(node.id), "node left");
        self.membership()
            .deregister(&Member::new(Position(node.id), node.addr));
        let mut verdicts = self.verdicts();
        let before = verdicts.changes();
        verdicts.deregistered(Position(node.id));
        // Forgotten for good if it can be kept (else with the next verdict).
        let _ = self.keep_if_changed(&mut verdicts, "Deregister", before);
        drop(verdicts);
        self.counted("Deregister", Ok(Response::new(())))
    }
}

/// How a registry runs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// How node IDs are chosen: the salt and the number of candidates.
    pub ids: IdRule,
    /// Liveness judgement.
    pub liveness: Liveness,
    /// The cluster secret nodes must present, if any (a client token is not
    /// used: a registry serves nodes only).
    pub security: crate::security::Required,
    /// TLS on the registry's port (none by default).
    pub tls: crate::security::Tls,
    /// Root leases: their length, and the drift bound its verdicts allow
    /// for ([`Verdicts`]).
    pub roots: crate::lease::LeaseSettings,
    /// Where the counts of verdicts are kept (a file in the registry's data
    /// directory), if anywhere: a registry that restarts without them could
    /// grant a node judged dead root leases again.
    pub verdicts_file: Option<std::path::PathBuf>,
}

impl RegistryConfig {
    /// Default time-to-live of a member without heartbeats.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3);

    /// A registry that knows it starts a new ring: no relearning window.
    pub fn fresh(ids: IdRule) -> Self {
        Self {
            ids,
            liveness: Liveness {
                ttl: Self::DEFAULT_TTL,
                relearn: Duration::ZERO,
            },
            security: crate::security::Required::default(),
            tls: crate::security::Tls::default(),
            roots: crate::lease::LeaseSettings::default(),
            verdicts_file: None,
        }
    }
}

/// The file whose presence in a registry's data directory says it has run
/// before.
const STARTED_MARKER: &str = "registry-started";

/// Whether the registry keeping its state in `dir` has run before, marking
/// that it has from now on. A registry that has run before may be restarting
/// under a live ring, so it relearns the members before naming a first one; one
/// starting for the first time knows there is no ring yet and names the first
/// node at once.
pub fn has_run_before(dir: &std::path::Path) -> std::io::Result<bool> {
    let marker = dir.join(STARTED_MARKER);
    if marker.exists() {
        return Ok(true);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        &marker,
        b"this registry has started before: it relearns members on start\n",
    )?;
    Ok(false)
}

/// Serves a registry on `listener` (with health and reflection) until `shutdown`
/// resolves.
pub async fn serve<L: Listener>(
    listener: L,
    config: RegistryConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::registry_server::RegistryServer<RegistryService>>()
        .await;
    let mut service = RegistryService::new(config.ids, config.liveness, config.roots);
    if let Some(path) = config.verdicts_file {
        service = service.keeping_verdicts_in(path)?;
    }
    let routes =
        tonic::service::Routes::new(pb::registry_server::RegistryServer::new(service.clone()))
            .add_service(health_service);
    let router = crate::server::with_reflection(routes)
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        crate::metrics::CONTENT_TYPE,
                    )],
                    service.metrics_text(),
                )
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        );
    let serving = crate::server::Serving {
        required: config.security,
        tls: config.tls,
        ..crate::server::Serving::default()
    };
    crate::server::serve(listener, router, serving, shutdown).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_registry_knows_whether_it_has_run_before() {
        let dir = std::env::temp_dir().join(format!("crustyring-life-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!super::has_run_before(&dir).unwrap(), "a first start");
        assert!(super::has_run_before(&dir).unwrap(), "a restart");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A registry restarted from its verdicts file judges the nodes the
    /// last one knew, though it has heard nothing from them: the arc waits
    /// for each (`Verdicts`). Without the file it knows only the node asked
    /// about.
    #[tokio::test(start_paused = true)]
    async fn a_restarted_registry_judges_the_nodes_the_last_one_knew() {
        use super::{Liveness, RegistryService, pb};
        use crate::proto::registry::registry_server::Registry;
        use std::time::Duration;
        use tonic::Request;
        let dir = std::env::temp_dir().join(format!("crustyring-known-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("verdicts");
        let registry = |file: Option<&std::path::Path>| {
            let service = RegistryService::new(
                crate::ring::IdRule::new(super::DEFAULT_SALT, 1),
                Liveness {
                    ttl: Duration::from_secs(3),
                    relearn: Duration::ZERO,
                },
                crate::lease::LeaseSettings::default(),
            );
            match file {
                Some(path) => service.keeping_verdicts_in(path.to_path_buf()).unwrap(),
                None => service,
            }
        };
        let first = registry(Some(&path));
        let mut ids = Vec::new();
        for addr in ["http://a:1", "http://b:1"] {
            let asked = Request::new(pb::ConnectionAddr {
                addr: addr.into(),
                id: None,
            });
            ids.push(first.register_node(asked).await.unwrap().into_inner().id);
        }
        drop(first);
        // The whole ring from the first node, asked by no node.
        let question = || {
            Request::new(pb::DeathQuestion {
                from: ids[0],
                to: ids[0],
                asker: None,
            })
        };
        let (again, forgetful) = (registry(Some(&path)), registry(None));
        tokio::time::advance(Duration::from_secs(10)).await;
        let verdict = again.judge_dead(question()).await.unwrap().into_inner();
        assert!(verdict.dead);
        assert_eq!(verdict.others, 1, "the other node is judged too");
        let verdict = forgetful.judge_dead(question()).await.unwrap().into_inner();
        assert_eq!((verdict.dead, verdict.others), (true, 0));

        // Its file cannot be written any more: a new node, or a verdict, is
        // refused (it could not be kept); a heartbeat of a node it knows,
        // which changes nothing, is still answered.
        std::fs::remove_dir_all(&dir).unwrap();
        let asked = Request::new(pb::ConnectionAddr {
            addr: "http://c:1".into(),
            id: None,
        });
        let refused = again.register_node(asked).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        let beat = Request::new(pb::Node {
            id: ids[1],
            addr: "http://b:1".into(),
        });
        assert!(
            again.heartbeat(beat).await.is_ok(),
            "a known node's heartbeat"
        );
        let refused = again.judge_dead(question()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }
}

/// Hostile registry messages, fuzzed like the node's (`node::fuzz`): any
/// `RegisterNode`, `Heartbeat` or `Deregister` decoded from arbitrary bytes is
/// taken or refused as the service does, and the table stays one address per
/// ID, each a URL.
#[cfg(test)]
mod fuzz {
    use super::{Membership, check_addr, pb};
    use crate::ring::{IdRule, Member, Position};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use prost::Message;
    use std::time::{Duration, Instant};

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        #[test]
        fn any_registry_messages_keep_the_table_sound(
            messages in vec((0..3u8, vec(any::<u8>(), 0..40)), 0..12),
            addrs in vec("(http://)?[a-z0-9.:]{0,12}", 1..4),
        ) {
            let now = Instant::now();
            let liveness = super::Liveness {
                ttl: Duration::from_secs(60),
                relearn: Duration::ZERO,
            };
            let mut table = Membership::new(IdRule::new("s", 4), liveness, now);
            for (i, (kind, bytes)) in messages.into_iter().enumerate() {
                // Half from arbitrary bytes, half near-valid.
                let addr = addrs[i % addrs.len()].clone();
                match kind {
                    0 => {
                        let m = pb::ConnectionAddr::decode(bytes.as_slice())
                            .unwrap_or(pb::ConnectionAddr { addr, id: None });
                        let Ok(()) = check_addr(&m.addr) else { continue };
                        let r = table.register(&m.addr, m.id.map(Position), now).unwrap();
                        let members = table.members(now);
                        let holder = members.iter().find(|x| x.id == r.id);
                        prop_assert!(holder.is_some(), "{:?} not recorded", r);
                        prop_assert!(r.contact.as_ref().is_none_or(|c| c.addr != m.addr));
                    }
                    1 => {
                        let id = bytes.len() as u64;
                        let n = pb::Node::decode(bytes.as_slice()).unwrap_or(pb::Node { id, addr });
                        if check_addr(&n.addr).is_ok() {
                            table.heartbeat(&Member::from(n), now);
                        }
                    }
                    _ => {
                        let n = pb::Node::decode(bytes.as_slice())
                            .unwrap_or(pb::Node { id: 0, addr });
                        table.deregister(&Member::from(n));
                    }
                }
                let members = table.members(now);
                prop_assert!(members.windows(2).all(|w| w[0].id < w[1].id));
                prop_assert!(members.iter().all(|m| check_addr(&m.addr).is_ok()));
            }
        }
    }
}
