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
use crate::node::batch::result_from_wire;
use crate::node::error::NodeError;
use crate::node::query::RouteTaken;
use crate::proto::dht;
use futures_util::future::BoxFuture;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;

/// Queries one `ForwardBatch` call carries at most.
pub const MAX_BATCH_QUERIES: usize = 256;

/// `ForwardBatch` calls out to one owner at once: a call is out until the
/// owner has answered its first query (one of the owner's write rounds,
/// fsyncs included), and the queries that come meanwhile wait to leave
/// together. Measured: 1 and 2 do alike, and both well above 8 (nearly every
/// query alone), with 64 clients on one node of three.
const FORWARDS_OUT: usize = 2;

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
            let mut call = call;
            let mut waiting: Vec<Option<Pending<Self>>> = batch.into_iter().map(Some).collect();
            let (addr, mut client) = (call.addr.clone(), call.client.clone());
            let streamed = tokio::time::timeout(self.timeout, async {
                let mut answers = client.forward_batch(request).await?.into_inner();
                while let Some(a) = answers.message().await? {
                    // The owner works through the batch: the next one may
                    // leave.
                    call.free_slot();
                    let query = usize::try_from(a.index).ok();
                    let Some(p) = query.and_then(|i| waiting.get_mut(i)?.take()) else {
                        return Err(tonic::Status::internal(format!(
                            "answered query {} of {}, or twice",
                            a.index,
                            waiting.len()
                        )));
                    };
                    p.answer(result_from_wire(a.answer.unwrap_or_default()));
                }
                Ok(())
            })
            .await;
            // What is still unanswered fails as its own call would have.
            let failed = |p: Pending<Self>, e: NodeError| p.answer(Err(e));
            let left = waiting.into_iter().flatten();
            match streamed {
                Err(_) => {
                    call.forget();
                    let after = self.timeout;
                    left.for_each(|p| {
                        failed(
                            p,
                            NodeError::Timeout {
                                addr: addr.clone(),
                                after,
                            },
                        )
                    });
                }
                Ok(Err(status)) => left.for_each(|p| failed(p, peer_error(&addr, status.clone()))),
                Ok(Ok(())) => left.for_each(|p| {
                    let status =
                        tonic::Status::internal("the forwarded batch ended without its answer");
                    failed(p, peer_error(&addr, status));
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
            Unsent::Full(queued) => format!("{queued} forwarded queries wait for it already"),
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
        // Both queued before the sender first runs: they leave in one call.
        let slow = tokio::spawn(pipes.send(&peers, &to, get(b"k"), deadline, None));
        let fast = pipes.send(&peers, &to, get(b"other"), deadline, None);
        let answered = tokio::time::timeout(Duration::from_secs(3), fast).await;
        let (_, route) = answered
            .expect("answered while the read of k waits")
            .unwrap();
        assert_eq!(route.owner.map(|o| o.id), Some(Position(100)));
        assert_eq!(route.hops, 1);
        assert!(
            !slow.is_finished(),
            "the read of k still waits for its write"
        );
        slow.abort();
        // Not a graceful stop: that would wait for the read of k.
        served.abort();
        drop(stop);
    }
}
