//! Coalesced forwards: the queries a node forwards to one owner go through
//! the node's coalescing pipes (`pipes`), many to a `ForwardBatch` call as
//! they pile up, instead of one `ForwardQuery` call each. A node that takes
//! a client's load through one entry point (a load balancer, a browser)
//! forwards most of it: (N-1)/N of the keys. The owner answers, counts and
//! logs each query as its own `ForwardQuery` (request ID included), and each
//! caller gets the result or failure its own call would have had: the query
//! path and its retries (`routing::Attempts`) do not change. A call that
//! fails as a whole fails each query it carried as that call would have
//! failed one query's (not sent: tried again; timed out: it may have been
//! applied).

use super::peers::peer_error;
use super::pipes::{Call, Carrier, Pending, Pipes, Unsent};
use crate::node::error::NodeError;
use crate::node::query::RouteTaken;
use crate::node::rpc::queries::result_from_wire;
use crate::proto::dht::{self, dht_node_client::DhtNodeClient};
use crate::request_id::RequestId;
use crate::security::AuthChannel;
use futures_util::future::BoxFuture;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Queries one `ForwardBatch` call carries at most.
pub const MAX_BATCH_QUERIES: usize = 256;

/// `ForwardBatch` calls out to one owner at once: a call is out until the
/// owner has answered its first query (one of the owner's write rounds,
/// fsyncs included), and the queries that come meanwhile wait to leave
/// together. Measured: 1 and 2 do alike, and both well above 8 (nearly every
/// query alone), with 64 clients on one node of three.
const FORWARDS_OUT: usize = 2;

/// How long a call holds its place among those out to the owner while no
/// answer has come: under load the first answer comes sooner (one write
/// round at the owner); slow queries (a read waiting for a write in flight,
/// an arc in a takeover's wait) do not hold up the calls behind them longer.
const SLOT_HOLD: Duration = Duration::from_millis(20);

/// How a `ForwardBatch` call broke.
enum Broke {
    /// The owner refused it (or it could not be made): nothing was run.
    Refused(tonic::Status),
    /// It broke while the owner ran its queries.
    Midway(tonic::Status),
}

/// Sends one query as a `ForwardQuery` (to a peer that predates
/// `ForwardBatch`), answering its caller as the call goes, by `until`.
async fn forward_one(
    mut client: DhtNodeClient<AuthChannel>,
    addr: String,
    p: Pending<ForwardBatch>,
    until: Instant,
) {
    let mut request = tonic::Request::new(p.item.clone());
    if let Some(id) = &p.request_id {
        let metadata: &mut axum::http::HeaderMap = request.metadata_mut().as_mut();
        metadata.insert(RequestId::HEADER_NAME, id.header_value());
    }
    let hops = p.item.hops;
    // Taken before the call: once it has timed out, nothing is left.
    let after = until.saturating_duration_since(Instant::now());
    let answer = match tokio::time::timeout_at(until, client.forward_query(request)).await {
        Err(_) => Err(NodeError::Timeout { addr, after }),
        Ok(Err(status)) => Err(peer_error(&addr, status)),
        Ok(Ok(response)) => {
            // A peer that reports no route was one hop.
            let route = RouteTaken::read_metadata(response.metadata());
            let route = route.unwrap_or(RouteTaken { hops, owner: None });
            Ok((response.into_inner(), route))
        }
    };
    p.answer(answer);
}

/// A forwarded query's result and the route it took, or why it failed.
pub type Forwarded = Result<(dht::QueryResult, RouteTaken), NodeError>;

/// A queue and a sender per owner.
pub type ForwardPipes = Pipes<ForwardBatch>;

/// Makes the pipes of forwarded queries: calls bounded by `timeout`, and by
/// `budget` bytes of queries.
pub fn forward_pipes(timeout: Duration, budget: usize) -> ForwardPipes {
    Pipes::new(ForwardBatch { timeout, budget })
}

/// `ForwardBatch` calls, each carrying queries to one owner.
#[derive(Debug)]
pub struct ForwardBatch {
    timeout: Duration,
    budget: usize,
}

impl Carrier for ForwardBatch {
    type Item = dht::EncodedQuery;
    type Answer = Forwarded;
    const MAX_BATCH: usize = MAX_BATCH_QUERIES;
    const MAX_IN_FLIGHT: usize = FORWARDS_OUT;
    /// A query whose client went away is not run.
    const SENT_UNWAITED: bool = false;

    fn size(&self, query: &dht::EncodedQuery) -> usize {
        query.encoded_len()
    }

    fn budget(&self) -> usize {
        self.budget
    }

    fn deliver(self: Arc<Self>, call: Call, batch: Vec<Pending<Self>>) -> BoxFuture<'static, ()> {
        let queries = batch
            .iter()
            .map(|p| dht::EncodedQuery {
                request_id: p.request_id.as_ref().map(|id| id.as_str().to_string()),
                ..p.item.clone()
            })
            .collect();
        let request = dht::BatchRequest { queries };
        Box::pin(async move {
            // As long as the last query's own call would have had.
            let until = batch.iter().map(Pending::deadline).max();
            let until = until.unwrap_or_else(|| Instant::now() + self.timeout);
            // Taken before the call: what a timeout reports it waited.
            let after = until.saturating_duration_since(Instant::now());
            let mut call = call;
            let mut waiting: Vec<Option<Pending<Self>>> = batch.into_iter().map(Some).collect();
            let (addr, mut client) = (call.addr.clone(), call.client.clone());
            let streamed = tokio::time::timeout_at(until, async {
                let mut answers = match client.forward_batch(request).await {
                    Ok(answers) => answers.into_inner(),
                    Err(status) => return Err(Broke::Refused(status)),
                };
                let hold = tokio::time::sleep(SLOT_HOLD);
                tokio::pin!(hold);
                loop {
                    let answer = tokio::select! {
                        answer = answers.message() => answer.map_err(Broke::Midway)?,
                        // A slow first answer holds up no later call.
                        () = &mut hold, if call.holds_slot() => {
                            call.free_slot();
                            continue;
                        }
                    };
                    let Some(a) = answer else {
                        return Ok(());
                    };
                    // The owner works through the batch: the next one may
                    // leave.
                    call.free_slot();
                    let query = usize::try_from(a.index).ok();
                    let Some(p) = query.and_then(|i| waiting.get_mut(i)?.take()) else {
                        let status = tonic::Status::internal(format!(
                            "answered query {} of {}, or twice",
                            a.index,
                            waiting.len()
                        ));
                        return Err(Broke::Midway(status));
                    };
                    p.answer(result_from_wire(a.answer.unwrap_or_default()));
                }
            })
            .await;
            // What is still unanswered fails as its own call would have.
            let left = waiting.into_iter().flatten();
            match streamed {
                Err(_) => {
                    call.forget();
                    left.for_each(|p| {
                        let addr = addr.clone();
                        p.answer(Err(NodeError::Timeout { addr, after }));
                    });
                }
                // A peer that predates `ForwardBatch`: one `ForwardQuery` each.
                Ok(Err(Broke::Refused(status))) if status.code() == tonic::Code::Unimplemented => {
                    for p in left {
                        let client = call.client.clone();
                        tokio::spawn(forward_one(client, addr.clone(), p, until));
                    }
                }
                Ok(Err(Broke::Refused(status))) => {
                    left.for_each(|p| p.answer(Err(peer_error(&addr, status.clone()))));
                }
                // The owner had the queries: they may have been applied.
                Ok(Err(Broke::Midway(status))) => left.for_each(|p| {
                    let reason = status.message().to_string();
                    let addr = addr.clone();
                    p.answer(Err(NodeError::Interrupted { addr, reason }));
                }),
                Ok(Ok(())) => left.for_each(|p| {
                    let reason = "the forwarded batch ended without its answer".to_string();
                    let addr = addr.clone();
                    p.answer(Err(NodeError::Interrupted { addr, reason }));
                }),
            }
        })
    }

    fn unsent(&self, addr: &str, why: Unsent) -> Forwarded {
        let reason = match why {
            // It waited a whole request timeout for its turn.
            Unsent::Expired => {
                return Err(NodeError::Timeout {
                    addr: addr.to_string(),
                    after: self.timeout,
                });
            }
            // Alive but busy: not a reason to route round it.
            Unsent::Full(queued) => {
                return Err(NodeError::Peer(tonic::Status::unavailable(format!(
                    "{addr} is not keeping up: {queued} forwarded queries wait for it already"
                ))));
            }
            Unsent::Stopped => "the forwarding sender stopped".to_string(),
            Unsent::NoChannel(reason) => reason,
        };
        Err(NodeError::Unreachable {
            addr: addr.to_string(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::rpc::peers::Peers;
    use crate::node::{Operation, Query};
    use crate::ring::{Member, Position};

    /// A slow query holds up no other query of its batch: the owner streams
    /// each answer back as soon as it is made.
    #[tokio::test]
    async fn each_query_of_a_batch_is_answered_as_soon_as_it_is_ready() {
        let owner = crate::node::owner_with_unreachable_replica();
        // A write to `k` applied and never acknowledged: a read of `k` waits
        // for it to settle.
        let (_write, _) = crate::node::write_in_flight(&owner, b"k", b"v").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = Member::new(
            Position(100),
            format!("http://{}", listener.local_addr().unwrap()),
        );
        let routes = crate::server::Routes::from(axum::Router::new())
            .with_direct_grpc(crate::node::dht_server(owner.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(crate::server::serve(
            listener,
            routes,
            crate::server::Serving::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let config = owner.config();
        let (peers, pipes) = (
            Peers::of(config),
            forward_pipes(Duration::from_secs(30), 1 << 20),
        );
        let get = |key: &[u8]| {
            let query = Query::new(Operation::Get, key.to_vec(), &config.limits).unwrap();
            query.to_forward()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // The first leaves at once (no call is out); the rest queue before
        // the sender first runs, and leave together in one call.
        let slow: Vec<_> = (0..3)
            .map(|_| tokio::spawn(pipes.send(&peers, &to, get(b"k"), deadline, None)))
            .collect();
        let fast = pipes.send(&peers, &to, get(b"other"), deadline, None);
        let answered = tokio::time::timeout(Duration::from_secs(3), fast).await;
        let (_, route) = answered
            .expect("answered while the reads of k wait")
            .unwrap();
        assert_eq!(route.owner.map(|o| o.id), Some(Position(100)));
        assert_eq!(route.hops, 1);
        assert!(
            slow.iter().all(|s| !s.is_finished()),
            "the reads of k still wait for its write"
        );
        slow.iter().for_each(tokio::task::JoinHandle::abort);
        // Not a graceful stop: that would wait for the read of k.
        served.abort();
        drop(stop);
    }
}
