//! The `dht.DhtNode` gRPC service: a thin shell that converts messages and calls
//! the node.

use super::wire::Link;
use crate::metrics::{Interface, Op, outcome_of_code};
use crate::node::query::{Answer, Outcome, Query};
use crate::node::{Node, NodeError};
use crate::proto::dht::{self, dht_node_server::DhtNode};
use crate::request_id::{BadRequestId, RequestId};
use crate::ring::{Arc as RingArc, Position};
use crate::store::bucket_count;
use futures_util::stream::FuturesUnordered;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The gRPC face of a [`Node`].
#[derive(Debug, Clone)]
pub struct DhtService {
    node: Arc<Node>,
}

/// The node's gRPC routes: `dht.DhtNode`, health, and reflection (v1 and v1alpha).
pub fn grpc_routes(
    node: Arc<Node>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> tonic::service::Routes {
    let dht = dht_server(node);
    crate::server::with_reflection(tonic::service::Routes::new(dht).add_service(health))
}

/// The `dht.DhtNode` service of `node`, with its message size limits.
pub fn dht_server(node: Arc<Node>) -> dht::dht_node_server::DhtNodeServer<DhtService> {
    let max = node.config().limits.max_message_bytes();
    dht::dht_node_server::DhtNodeServer::new(DhtService { node })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

/// A query's result, with the route it took and the request's ID in the
/// response metadata.
fn answer(answer: Answer, id: &RequestId) -> Response<dht::QueryResult> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    answer.route.write_metadata(&mut metadata);
    let headers: &mut axum::http::HeaderMap = metadata.as_mut();
    headers.insert(RequestId::HEADER_NAME, id.header_value());
    Response::from_parts(metadata, answer.into(), Default::default())
}

/// The request's ID: the caller's `x-request-id`, checked, or a new one (as
/// over HTTP: gRPC metadata are HTTP/2 headers).
fn request_id(metadata: &tonic::metadata::MetadataMap) -> Result<RequestId, BadRequestId> {
    let headers: &axum::http::HeaderMap = metadata.as_ref();
    RequestId::from_header(headers.get(RequestId::HEADER_NAME))
}

/// The interface a forwarded query (`ForwardQuery`, or one of a
/// `ForwardBatch`) counts under: a client's if it has not been forwarded
/// yet, a peer's otherwise (counted already where it entered the ring).
fn forward_interface(hops: u32) -> Interface {
    match hops {
        0 => Interface::Grpc,
        _ => Interface::Peer,
    }
}

/// What a query's wire type asks for, as metrics count it.
fn operation_label(ty: i32) -> Op {
    match dht::OperationType::try_from(ty) {
        Ok(dht::OperationType::Get) => Op::Get,
        Ok(dht::OperationType::Set) => Op::Set,
        Ok(dht::OperationType::Delete) => Op::Delete,
        Err(_) => Op::Other,
    }
}

impl DhtService {
    /// Answers `query` (or its validation error) as the request with the
    /// ID in `metadata`, counting it in the node's metrics under `operation`
    /// and `interface`, and logging it with its route.
    async fn answer_counted(
        &self,
        operation: Op,
        interface: Interface,
        metadata: &tonic::metadata::MetadataMap,
        query: Result<Query, NodeError>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        let (answered, id) =
            (self.answer_logged(operation, interface, request_id(metadata), query)).await;
        Ok(answer(answered?, &id))
    }

    /// Answers `query` (or its validation error) as the request `id` (or
    /// why its ID was refused), counting it and logging it as
    /// [`DhtService::answer_counted`] does; the ID it was logged under.
    async fn answer_logged(
        &self,
        operation: Op,
        interface: Interface,
        id: Result<RequestId, BadRequestId>,
        query: Result<Query, NodeError>,
    ) -> (Result<Answer, NodeError>, RequestId) {
        let started = Instant::now();
        let answered = match (query, &id) {
            (Ok(query), Ok(id)) => self.node.execute(query.with_request_id(id.clone())).await,
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(NodeError::BadRequestId(e.clone())),
        };
        let (outcome, hops) = match &answered {
            Ok(a) if a.outcome == Outcome::Absent => ("not_found", Some(a.route.hops)),
            Ok(a) => ("ok", Some(a.route.hops)),
            Err(e) => (outcome_of_code(e.code()), None),
        };
        let elapsed = started.elapsed();
        self.node
            .metrics()
            .request(operation, interface, outcome, elapsed, hops);
        let id = id.unwrap_or_else(|_| RequestId::generate());
        let owner = answered
            .as_ref()
            .ok()
            .and_then(|a| a.route.owner.as_ref().map(|o| o.addr.as_str()));
        crate::request_id::log_request(&id, operation, interface, outcome, elapsed, hops, owner);
        (answered, id)
    }
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<dht::KeyValueEntry, Status>> + Send>>;

#[tonic::async_trait]
impl DhtNode for DhtService {
    async fn query_dht(
        &self,
        request: Request<dht::Query>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        let (metadata, _, request) = request.into_parts();
        let operation = operation_label(request.ty);
        let query = Query::from_client(request, &self.node.config().limits);
        self.answer_counted(operation, Interface::Grpc, &metadata, query)
            .await
    }

    async fn forward_query(
        &self,
        request: Request<dht::EncodedQuery>,
    ) -> Result<Response<dht::QueryResult>, Status> {
        let (metadata, _, request) = request.into_parts();
        let operation = operation_label(request.ty);
        let interface = forward_interface(request.hops);
        let query = Query::from_forward(request, &self.node.config().limits);
        self.answer_counted(operation, interface, &metadata, query)
            .await
    }

    type ForwardBatchStream =
        Pin<Box<dyn Stream<Item = Result<dht::ForwardAnswer, Status>> + Send>>;

    async fn forward_batch(
        &self,
        request: Request<dht::BatchRequest>,
    ) -> Result<Response<Self::ForwardBatchStream>, Status> {
        let queries = request.into_inner().queries;
        let most = crate::node::rpc::forwards::MAX_BATCH_QUERIES;
        if queries.len() > most {
            return Err(Status::invalid_argument(format!(
                "a forwarded batch holds at most {most} queries; this one holds {}",
                queries.len()
            )));
        }
        let limits = self.node.config().limits;
        // Each as its own `ForwardQuery` would be (`rpc::forwards`), sent
        // back as soon as it is answered.
        let answers: FuturesUnordered<_> = (queries.into_iter().enumerate())
            .map(|(index, mut q)| {
                let service = self.clone();
                async move {
                    let operation = operation_label(q.ty);
                    let interface = forward_interface(q.hops);
                    let id = RequestId::from_text(q.request_id.take().as_deref());
                    let query = Query::from_forward(q, &limits);
                    let (answered, _) =
                        service.answer_logged(operation, interface, id, query).await;
                    Ok(dht::ForwardAnswer {
                        // At most `MAX_BATCH_QUERIES`.
                        index: index as u32,
                        answer: Some(super::queries::answer_to_wire(answered)),
                    })
                }
            })
            .collect();
        Ok(Response::new(Box::pin(answers)))
    }

    async fn register_as_neighbor(
        &self,
        request: Request<dht::NeighborRegisterInfo>,
    ) -> Result<Response<dht::PreviousNeighbors>, Status> {
        let (link, member) = super::wire::registration(request.into_inner())?;
        let neighbours = match link {
            // Run to completion even if the caller goes away: a join dropped
            // half-way would leave the arc fenced.
            Link::Next => {
                let node = self.node.clone();
                tokio::spawn(async move { node.accept_join(member).await })
                    .await
                    .map_err(|e| Status::internal(format!("join handler failed: {e}")))??
            }
            Link::Previous => self.node.accept_previous(member).await?,
        };
        Ok(Response::new(neighbours.into()))
    }

    type TransferKeysStream = EntryStream;

    async fn transfer_keys(
        &self,
        request: Request<dht::NodeId>,
    ) -> Result<Response<Self::TransferKeysStream>, Status> {
        let from = Position(request.into_inner().id);
        let view = self.node.view_snapshot();
        if !view.arc().contains(from) {
            return Err(Status::failed_precondition(format!(
                "position {from} is not in my arc [{}, {})",
                view.me.id, view.next.id
            )));
        }
        let entries = self
            .node
            .store
            .entries_in(RingArc::new(from, view.next.id))
            .map_err(|e| Status::internal(e.to_string()))?;
        // The original protocol knows no tombstones: stream live keys only.
        let live = entries.into_iter().filter(|e| e.value.is_some());
        let stream = tokio_stream::iter(live.map(|e| Ok(e.into())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn hand_off(
        &self,
        request: Request<Streaming<dht::HandOffChunk>>,
    ) -> Result<Response<dht::HandOffAck>, Status> {
        Ok(Response::new({
            // Run to completion even if the sender goes away (see above).
            let node = self.node.clone();
            let chunks = request.into_inner();
            tokio::spawn(async move { super::hand_off::receive(&node, chunks).await })
                .await
                .map_err(|e| Status::internal(format!("hand-off handler failed: {e}")))??
        }))
    }

    /// A node's view; asked by its `next` (`x-crusty-lease-for`), also a
    /// lease on that node's arc, granted (`x-crusty-lease-granted`) while
    /// this node's view links to it, unless a takeover wait runs (then
    /// `x-crusty-lease-after-ms` says when one may be had).
    async fn get_node_info(&self, request: Request<()>) -> Result<Response<dht::NodeInfo>, Status> {
        let asker = super::wire::lease_asked_for(request.metadata());
        let summary = self.node.summary();
        let mut response = Response::new((&summary).into());
        if let Some(asker) = asker
            && summary.next.id == asker
            && let Some(answer) = self.node.grant_lease(asker)
        {
            answer.write_metadata(response.metadata_mut());
        }
        Ok(response)
    }

    async fn replicate(
        &self,
        request: Request<dht::ReplicateRequest>,
    ) -> Result<Response<dht::ReplicateAck>, Status> {
        let requests = request
            .metadata()
            .get(RequestId::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let request = request.into_inner();
        Ok(Response::new(
            super::replicas::receive(&self.node, request, requests.as_deref()).await?,
        ))
    }

    async fn digest_range(
        &self,
        request: Request<dht::DigestRequest>,
    ) -> Result<Response<dht::DigestReply>, Status> {
        let request = request.into_inner();
        let arc = RingArc::new(Position(request.start), Position(request.end));
        let wanted = request.buckets as usize;
        if wanted == 0 || bucket_count(arc, wanted) != wanted {
            return Err(Status::invalid_argument(format!(
                "cannot split [{}, {}) into {wanted} buckets: ask for 1 to {} and at most one per position",
                arc.start,
                arc.end,
                bucket_count(arc, usize::MAX)
            )));
        }
        let buckets = self
            .node
            .store
            .digest(arc, wanted)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(dht::DigestReply {
            buckets: buckets.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_range(
        &self,
        request: Request<dht::ListRangeRequest>,
    ) -> Result<Response<dht::ListRangeReply>, Status> {
        Ok(Response::new(
            self.node
                .list_range(&request.into_inner().into())
                .await?
                .into(),
        ))
    }

    type ListKeysStream = Pin<Box<dyn Stream<Item = Result<dht::ListedKey, Status>> + Send>>;

    async fn list_keys(
        &self,
        request: Request<dht::ListKeysRequest>,
    ) -> Result<Response<Self::ListKeysStream>, Status> {
        let request = request.into_inner();
        let after = match request.cursor.as_str() {
            "" => None,
            text => Some(crate::node::Cursor::decode(text)?),
        };
        let max = self.node.config().limits.max_key_bytes;
        if request.prefix.len() > max {
            return Err(NodeError::BadListing(format!(
                "the prefix is {} bytes long; keys are at most {max} bytes",
                request.prefix.len()
            ))
            .into());
        }
        // Pages of up to 256 keys, each sent as soon as it is read; a client
        // that goes away ends the listing.
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut left = match request.limit {
                0 => usize::MAX,
                n => n as usize,
            };
            let mut page = crate::node::ListRequest {
                prefix: request.prefix,
                limit: 0,
                after,
                values: request.values,
            };
            while left > 0 {
                page.limit = left.min(256);
                let listed = match node.list(page.clone()).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for e in listed.entries {
                    let key = dht::ListedKey {
                        cursor: crate::node::Cursor::after(&e).encode(),
                        position: e.position.0,
                        version: e.version.token(),
                        value: if request.values { e.value } else { None },
                        key: e.key,
                    };
                    if tx.send(Ok(key)).await.is_err() {
                        return;
                    }
                    left -= 1;
                }
                match listed.next {
                    Some(next) => page.after = Some(next),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn batch(
        &self,
        request: Request<dht::BatchRequest>,
    ) -> Result<Response<dht::BatchReply>, Status> {
        Ok(Response::new(
            super::queries::accept_batch(&self.node, request.into_inner()).await?,
        ))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<dht::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<dht::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let watched =
            crate::node::Watched::checked(request.key, request.prefix, &self.node.config().limits)?;
        let since = crate::node::resume_after(request.since.as_deref())?;
        let changes = match (request.local, watched) {
            (true, watched) => self.node.watch_local(watched, since),
            (false, crate::node::Watched::Key(key)) => self.node.watch(key, since),
            (false, crate::node::Watched::Prefix(prefix)) => self.node.watch_prefix(prefix, since),
        };
        let events = tokio_stream::wrappers::ReceiverStream::new(changes).map(|change| {
            change
                .map(|e| crate::node::watch_event(&e))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(events)))
    }

    type ReadRangeStream = EntryStream;

    async fn read_range(
        &self,
        request: Request<dht::RangeRequest>,
    ) -> Result<Response<Self::ReadRangeStream>, Status> {
        let request = request.into_inner();
        let arc = RingArc::new(Position(request.start), Position(request.end));
        let entries = self
            .node
            .store
            .entries_in(arc)
            .map_err(|e| Status::internal(e.to_string()))?;
        let stream = tokio_stream::iter(entries.into_iter().map(|e| Ok(e.into())));
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Answer;
    use crate::lease::LeaseSettings;
    use crate::node::rpc::wire;
    use crate::ring::Member;
    use std::time::Duration;

    /// A probe of `GetNodeInfo` asking for a lease on the arc of `asker`.
    fn asking_for(asker: u64) -> Request<()> {
        let mut request = Request::new(());
        wire::ask_lease(request.metadata_mut(), Position(asker));
        request
    }

    /// A `prev` grants its `next` a lease; while a takeover wait runs it
    /// refuses, saying how long until one may be had (what the asker's early
    /// probe waits for); it says nothing of leases to a node it does not link
    /// to.
    #[tokio::test]
    async fn a_lease_request_is_granted_or_told_when_one_may_be_had() {
        let node = crate::node::serving_beside(
            Member::new(Position(100), "http://127.0.0.1:9"),
            Member::new(Position(50), "http://127.0.0.1:9"),
        );
        let service = DhtService { node: node.clone() };
        let answer = service.get_node_info(asking_for(50)).await.unwrap();
        assert_eq!(
            Answer::read_metadata(answer.metadata()),
            Some(Answer::Granted)
        );

        let now = std::time::Instant::now();
        node.update_leases(|l| {
            l.took_over(
                RingArc::new(Position(120), Position(50)),
                Position(120),
                now,
            )
        });
        let answer = service.get_node_info(asking_for(50)).await.unwrap();
        match Answer::read_metadata(answer.metadata()) {
            Some(Answer::After(wait)) => {
                let most = LeaseSettings::default().takeover_wait() + Duration::from_millis(1);
                assert!(wait > Duration::ZERO && wait <= most, "{wait:?}");
            }
            other => panic!("refused without saying when: {other:?}"),
        }

        let answer = service.get_node_info(asking_for(77)).await.unwrap();
        assert_eq!(Answer::read_metadata(answer.metadata()), None);
    }
}
