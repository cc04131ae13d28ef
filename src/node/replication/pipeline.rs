//! Pipelined, coalesced replica writes.
//!
//! Every write an owner makes goes to each of its replicas. Sent as one
//! `Replicate` call per write, a busy owner makes thousands of small calls a
//! second per replica. Here they go through the node's coalescing pipes
//! (`rpc::pipes`: one queue per replica, up to [`MAX_BATCH_ENTRIES`] entries
//! and one largest valid entry in bytes per call, several calls in flight),
//! and the receiver's group commit makes one fsync of each call, or of
//! several.
//!
//! Each write still gets its own answer (the replica's newer copy of its key, if
//! the replica held one), so the write path above (`replicate`) is unchanged:
//! the acknowledgement rule and the consistency model do not depend on how
//! writes were grouped on the way.

use crate::metrics::NodeMetrics;
use crate::node::query::Limits;
use crate::node::rpc::entries::{entries_from_wire, wire_size};
use crate::node::rpc::pipes::{Call, Carrier, Pending, Pipes, Unsent};
use crate::proto::dht;
use crate::request_id::RequestId;
use crate::store::Entry;
use axum::http::{HeaderMap, HeaderValue};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Entries one `Replicate` call carries at most.
pub const MAX_BATCH_ENTRIES: usize = 512;

/// What one replica said of one write: its newer copies of the key, if any
/// (empty: the write stands there), or why the write did not reach it.
pub type ReplicaAnswer = Result<Vec<Entry>, String>;

/// A queue and a sender per replica.
pub type ReplicaPipes = Pipes<Replicate>;

/// Makes the pipes of replica writes: calls bounded by `timeout`, batches by
/// `limits`, counted in `metrics`.
pub fn replica_pipes(limits: Limits, timeout: Duration, metrics: Arc<NodeMetrics>) -> ReplicaPipes {
    Pipes::new(Replicate {
        limits,
        timeout,
        metrics,
    })
}

/// `Replicate` calls, each carrying writes to one replica.
#[derive(Debug)]
pub struct Replicate {
    limits: Limits,
    timeout: Duration,
    metrics: Arc<NodeMetrics>,
}

impl Carrier for Replicate {
    type Item = Entry;
    type Answer = ReplicaAnswer;
    const MAX_BATCH: usize = MAX_BATCH_ENTRIES;
    const MAX_IN_FLIGHT: usize = 8;
    /// A write applied at the owner reaches its replicas even if its writer
    /// stopped waiting (its client went away): the sooner every copy holds
    /// it, the smaller the window in which a read could see it at the owner
    /// alone.
    const SENT_UNWAITED: bool = true;

    fn size(&self, entry: &Entry) -> usize {
        wire_size(entry)
    }

    fn budget(&self) -> usize {
        self.limits.max_entry_bytes()
    }

    fn deliver(self: Arc<Self>, call: Call, batch: Vec<Pending<Self>>) -> BoxFuture<'static, ()> {
        self.metrics.replicated(batch.len());
        let mut request = tonic::Request::new(dht::ReplicateRequest {
            entries: batch.iter().map(|p| p.item.clone().into()).collect(),
        });
        let ids: Vec<&RequestId> = batch.iter().filter_map(|p| p.request_id.as_ref()).collect();
        if let Ok(value) = HeaderValue::from_str(&RequestId::list(ids.into_iter())) {
            let metadata: &mut HeaderMap = request.metadata_mut().as_mut();
            metadata.insert(RequestId::HEADER_NAME, RequestId::never_indexed(value));
        }
        Box::pin(async move {
            let (addr, timeout) = (&call.addr, self.timeout);
            let mut client = call.client.clone();
            let outcome = tokio::time::timeout(timeout, client.replicate(request)).await;
            let answer = match outcome {
                Err(_) => {
                    call.forget();
                    Err(format!("{addr} did not answer within {timeout:?}"))
                }
                Ok(Err(status)) => Err(format!("{addr}: {}", status.message())),
                Ok(Ok(ack)) => newer_copies(ack.into_inner(), &self.limits)
                    .map_err(|e| format!("{addr} sent a bad entry back: {e}")),
            };
            drop(call);
            for p in batch {
                let own = own_answer(&answer, &p.item);
                p.answer(own);
            }
        })
    }

    fn unsent(&self, addr: &str, why: Unsent) -> ReplicaAnswer {
        Err(match why {
            Unsent::Expired => "its writer stopped waiting before it was sent".to_string(),
            Unsent::Full(queued) => {
                format!("{addr} is not keeping up: {queued} writes wait for it already")
            }
            Unsent::Stopped => "the replica sender stopped".to_string(),
            Unsent::NoChannel(reason) => reason,
        })
    }
}

/// The replica's newer copies, checked like every entry from a peer.
fn newer_copies(ack: dht::ReplicateAck, limits: &Limits) -> Result<Vec<Entry>, String> {
    entries_from_wire(ack.newer, limits).map_err(|s| s.message().to_string())
}

/// One write's answer, out of its call's: its own key's newer copies, or the
/// call's error.
fn own_answer(answer: &Result<Vec<Entry>, String>, entry: &Entry) -> ReplicaAnswer {
    match answer {
        Ok(newer) => Ok(newer
            .iter()
            .filter(|n| n.position == entry.position && n.key == entry.key)
            .cloned()
            .collect()),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::rpc::entries::test_entry as entry;
    use crate::store::Version;

    #[test]
    fn each_write_hears_only_of_its_own_key() {
        let newer = Entry {
            version: Version { micros: 9, node: 9 },
            ..entry(2, 3)
        };
        let answer = Ok(vec![newer.clone()]);
        assert_eq!(own_answer(&answer, &entry(1, 1)), Ok(vec![]));
        assert_eq!(own_answer(&answer, &entry(2, 1)), Ok(vec![newer]));
    }

    /// Unlike a forwarded query, a write whose writer went away still goes
    /// to the replica.
    #[test]
    fn a_write_goes_out_even_if_its_writer_stopped_waiting() {
        use crate::node::rpc::pipes::{take_batch, tests::pending};
        let carrier = Replicate {
            limits: Limits::default(),
            timeout: Duration::from_secs(1),
            metrics: Arc::new(NodeMetrics::new(None)),
        };
        let (unwaited, _) = pending::<Replicate>(entry(1, 1), None);
        let mut queue = std::collections::VecDeque::from([unwaited]);
        let batch = take_batch(&carrier, &mut queue, tokio::time::Instant::now(), "a");
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_failed_call_fails_every_write_it_carried() {
        let answer = Err("down".to_string());
        assert_eq!(own_answer(&answer, &entry(1, 1)), Err("down".into()));
        assert_eq!(own_answer(&answer, &entry(2, 1)), Err("down".into()));
    }
}
