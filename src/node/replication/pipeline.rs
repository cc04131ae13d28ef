//! Pipelined, coalesced replica writes.
//!
//! Every write an owner makes goes to each of its replicas. Sent as one
//! `Replicate` call per write, a busy owner makes thousands of small calls a
//! second per replica, and each costs more in framing, scheduling and
//! wake-ups than the entry it carries. Here each replica has one queue and one
//! sender: a write joins the queue, and the sender takes everything queued so
//! far (up to [`MAX_BATCH_ENTRIES`] entries and one largest valid entry in
//! bytes) into one call. Up to [`MAX_IN_FLIGHT`] calls are in flight to a
//! replica at once, so a batch never waits for the previous one to be answered
//! (a single batch in flight was tried before, and serialised what HTTP/2 ran in
//! parallel); only while all of them are out do writes pile up, and then they
//! leave together in the next call. At low load a write leaves at once, alone.
//! The receiver's group commit then makes one fsync of each call, or of several.
//!
//! Each write still gets its own answer (the replica's newer copy of its key, if
//! the replica held one), so the write path above (`replicate`) is unchanged:
//! the acknowledgement rule and the consistency model do not depend on how
//! writes were grouped on the way.

use crate::metrics::NodeMetrics;
use crate::node::query::Limits;
use crate::node::rpc::entries::{entry_from_wire, wire_size};
use crate::node::rpc::peers::Peers;
use crate::proto::dht;
use crate::request_id::RequestId;
use crate::ring::Member;
use crate::store::Entry;
use axum::http::{HeaderMap, HeaderValue};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Entries one `Replicate` call carries at most.
pub const MAX_BATCH_ENTRIES: usize = 512;
/// `Replicate` calls in flight to one replica at most.
pub const MAX_IN_FLIGHT: usize = 8;
/// Replicas with a queue before the queues start afresh (addresses come from
/// peers: keep the map bounded).
const MAX_PIPES: usize = 4096;
/// Writes waiting for one replica at most: past that the replica is not keeping
/// up, and a write fails at once for it rather than queue without bound.
pub const MAX_QUEUED: usize = 4 * MAX_IN_FLIGHT * MAX_BATCH_ENTRIES;

/// What one replica said of one write: its newer copies of the key, if any
/// (empty: the write stands there), or why the write did not reach it.
pub type ReplicaAnswer = Result<Vec<Entry>, String>;

/// A write waiting to be sent to a replica.
struct Pending {
    entry: Entry,
    reply: oneshot::Sender<ReplicaAnswer>,
    /// When its writer stops waiting: a write still queued then is not sent.
    deadline: Instant,
    /// The client request the write serves.
    request_id: Option<RequestId>,
}

/// A queue and a sender per replica.
#[derive(Debug)]
pub struct ReplicaPipes {
    pipes: Mutex<BTreeMap<String, mpsc::Sender<Pending>>>,
    limits: Limits,
    timeout: Duration,
    metrics: Arc<NodeMetrics>,
}

impl ReplicaPipes {
    /// No queues yet; calls are bounded by `timeout`, batches by `limits`,
    /// and counted in `metrics`.
    pub fn new(limits: Limits, timeout: Duration, metrics: Arc<NodeMetrics>) -> Self {
        Self {
            pipes: Mutex::new(BTreeMap::new()),
            limits,
            timeout,
            metrics,
        }
    }

    /// Queues `entry` for the replica `to`, to be sent before `deadline`; the
    /// future resolves with that replica's answer for this entry. It borrows
    /// nothing, so it can outlive its caller (a write acknowledged once a
    /// quorum has answered).
    pub fn send(
        &self,
        peers: &Peers,
        to: &Member,
        entry: Entry,
        deadline: Instant,
        request_id: Option<RequestId>,
    ) -> impl Future<Output = ReplicaAnswer> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            entry,
            reply,
            deadline,
            request_id,
        };
        let queued = self.queue(peers, &to.addr).and_then(|queue| {
            queue.try_send(pending).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => format!(
                    "{} is not keeping up: {MAX_QUEUED} writes wait for it already",
                    to.addr
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    format!("the queue to {} is closed", to.addr)
                }
            })
        });
        async move {
            queued?;
            answer
                .await
                .unwrap_or_else(|_| Err("the replica sender stopped".to_string()))
        }
    }

    /// The queue to `addr`, its sender started on first use.
    fn queue(&self, peers: &Peers, addr: &str) -> Result<mpsc::Sender<Pending>, String> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = pipes.get(addr).filter(|q| !q.is_closed()) {
            return Ok(queue.clone());
        }
        if pipes.len() >= MAX_PIPES {
            pipes.clear();
        }
        let (queue, writes) = mpsc::channel(MAX_QUEUED);
        let sender = Sender {
            addr: addr.to_string(),
            peers: peers.clone(),
            limits: self.limits,
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        };
        tokio::spawn(sender.run(writes));
        pipes.insert(addr.to_string(), queue.clone());
        Ok(queue)
    }
}

/// The sender of one replica's queue.
struct Sender {
    addr: String,
    /// The pool it takes the replica's channel from for each batch: a
    /// channel whose call went unanswered is dropped from the pool, and the
    /// next batch connects afresh (a connection wedged after a partition
    /// would otherwise fail every write until HTTP/2's keep-alive noticed).
    peers: Peers,
    limits: Limits,
    timeout: Duration,
    metrics: Arc<NodeMetrics>,
}

impl Sender {
    /// Sends batches until every handle to the queue is gone.
    async fn run(self, mut writes: mpsc::Receiver<Pending>) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let budget = self.limits.max_entry_bytes();
        loop {
            if queue.is_empty() {
                match writes.recv().await {
                    Some(p) => queue.push_back(p),
                    None => return,
                }
            }
            // While every call is out, writes pile up in the channel: they
            // leave together once a slot frees.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            while queue.len() < MAX_BATCH_ENTRIES {
                match writes.try_recv() {
                    Ok(p) => queue.push_back(p),
                    Err(_) => break,
                }
            }
            let batch = take_batch(&mut queue, budget, MAX_BATCH_ENTRIES, Instant::now());
            if batch.is_empty() {
                continue;
            }
            let (mut client, made) = match self.peers.client_made(&self.addr) {
                Ok(client) => client,
                Err(e) => {
                    settle(batch, Err(e.to_string()));
                    continue;
                }
            };
            self.metrics.replicated(batch.len());
            let (addr, limits, timeout) = (self.addr.clone(), self.limits, self.timeout);
            let peers = self.peers.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(dht::ReplicateRequest {
                    entries: batch.iter().map(|p| p.entry.clone().into()).collect(),
                });
                let ids: Vec<&RequestId> =
                    batch.iter().filter_map(|p| p.request_id.as_ref()).collect();
                if let Ok(value) = HeaderValue::from_str(&RequestId::list(ids.into_iter())) {
                    let metadata: &mut HeaderMap = request.metadata_mut().as_mut();
                    metadata.insert(RequestId::HEADER_NAME, RequestId::never_indexed(value));
                }
                let outcome = tokio::time::timeout(timeout, client.replicate(request)).await;
                drop(slot);
                let answer = match outcome {
                    Err(_) => {
                        peers.forget(&addr, made);
                        Err(format!("{addr} did not answer within {timeout:?}"))
                    }
                    Ok(Err(status)) => Err(format!("{addr}: {}", status.message())),
                    Ok(Ok(ack)) => newer_copies(ack.into_inner(), &limits)
                        .map_err(|e| format!("{addr} sent a bad entry back: {e}")),
                };
                settle(batch, answer);
            });
        }
    }
}

/// The next batch off `queue`: at least one write, then as many as fit
/// `max_count` entries and `budget` bytes, in queue order. Writes whose
/// deadline has passed by `now` are answered as expired, not sent.
fn take_batch(
    queue: &mut VecDeque<Pending>,
    budget: usize,
    max_count: usize,
    now: Instant,
) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut size = 0;
    while let Some(next) = queue.front() {
        if next.deadline <= now {
            if let Some(expired) = queue.pop_front() {
                let _ = expired
                    .reply
                    .send(Err("its writer stopped waiting before it was sent".into()));
            }
            continue;
        }
        let entry_size = wire_size(&next.entry);
        if !batch.is_empty() && (batch.len() >= max_count || size + entry_size > budget) {
            break;
        }
        size += entry_size;
        batch.extend(queue.pop_front());
    }
    batch
}

/// The replica's newer copies, checked like every entry from a peer.
fn newer_copies(ack: dht::ReplicateAck, limits: &Limits) -> Result<Vec<Entry>, String> {
    ack.newer
        .into_iter()
        .map(|e| entry_from_wire(e, limits).map_err(|s| s.message().to_string()))
        .collect()
}

/// Answers each write of a batch: its own key's newer copies, or the error.
fn settle(batch: Vec<Pending>, answer: Result<Vec<Entry>, String>) {
    for p in batch {
        let mine = answer.as_ref().map(|newer| {
            newer
                .iter()
                .filter(|n| n.position == p.entry.position && n.key == p.entry.key)
                .cloned()
                .collect()
        });
        // A writer that stopped waiting (its deadline passed) is fine.
        let _ = p.reply.send(mine.map_err(Clone::clone));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::rpc::entries::test_entry as entry;
    use crate::store::Version;

    fn pending(e: Entry) -> (Pending, oneshot::Receiver<ReplicaAnswer>) {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(60);
        (
            Pending {
                entry: e,
                reply,
                deadline,
                request_id: None,
            },
            answer,
        )
    }

    #[test]
    fn a_batch_takes_what_fits_in_order_and_always_one() {
        let mut queue: VecDeque<Pending> = (0..5).map(|i| pending(entry(i, 51)).0).collect();
        // 100 bytes each on the wire: two fit in 200.
        let first = take_batch(&mut queue, 200, 10, Instant::now());
        assert_eq!(
            first.iter().map(|p| p.entry.key[0]).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(take_batch(&mut queue, 10_000, 2, Instant::now()).len(), 2);
        assert_eq!(
            take_batch(&mut queue, 10, 10, Instant::now()).len(),
            1,
            "one over the budget goes alone"
        );
        assert!(take_batch(&mut queue, 10, 10, Instant::now()).is_empty());
    }

    #[test]
    fn writes_past_their_deadline_are_answered_not_sent() {
        let (mut stale, stale_answer) = pending(entry(1, 1));
        stale.deadline = Instant::now();
        let (fresh, _fresh_answer) = pending(entry(2, 1));
        let mut queue = VecDeque::from([stale, fresh]);
        let batch = take_batch(&mut queue, 10_000, 10, Instant::now());
        assert_eq!(
            batch.iter().map(|p| p.entry.key[0]).collect::<Vec<_>>(),
            [2]
        );
        assert!(stale_answer.blocking_recv().unwrap().is_err());
    }

    #[test]
    fn each_write_hears_only_of_its_own_key() {
        let (a, a_answer) = pending(entry(1, 1));
        let (b, b_answer) = pending(entry(2, 1));
        let newer = Entry {
            version: Version { micros: 9, node: 9 },
            ..entry(2, 3)
        };
        settle(vec![a, b], Ok(vec![newer.clone()]));
        assert_eq!(a_answer.blocking_recv().unwrap(), Ok(vec![]));
        assert_eq!(b_answer.blocking_recv().unwrap(), Ok(vec![newer]));
    }

    #[test]
    fn a_failed_call_fails_every_write_it_carried() {
        let (a, a_answer) = pending(entry(1, 1));
        let (b, b_answer) = pending(entry(2, 1));
        settle(vec![a, b], Err("down".into()));
        assert_eq!(a_answer.blocking_recv().unwrap(), Err("down".into()));
        assert_eq!(b_answer.blocking_recv().unwrap(), Err("down".into()));
    }
}
