//! Coalesced calls to peers: one queue and one sender per peer.
//!
//! Sent as one call each, the items of a busy node (its writes to a replica,
//! the queries it forwards to an owner) make thousands of small calls a
//! second per peer, and each costs more in framing, scheduling and wake-ups
//! (an HTTP/2 stream, tasks, syscalls, on both sides) than the item it
//! carries. Here each peer has one queue and one sender: an item joins the
//! queue, and the sender takes everything queued so far (up to
//! [`Carrier::MAX_BATCH`] items and [`Carrier::budget`] bytes; one larger
//! item goes alone) into one call. Up to [`Carrier::MAX_IN_FLIGHT`] calls are
//! out to a peer at once (a call is out until the peer has answered for it,
//! or for the first of its items: [`Call::free_slot`]); only while all of them are
//! out do items pile up, and then they leave together in the next call. At
//! low load an item leaves at once, alone, and from its caller's task: with no
//! call out to the peer, the queue and the sender are skipped (their two task
//! hops cost forwards 4 to 12% of their rate where nothing coalesced).
//!
//! Each item still gets its own answer ([`Pending::answer`]), so that the
//! callers do not depend on how items were grouped on the way. What a call
//! carries and how its reply answers each item is the [`Carrier`]'s:
//! `replication::pipeline` for replica writes, `rpc::forwards` for queries
//! forwarded to their owner.

use super::peers::Peers;
use crate::proto::dht::dht_node_client::DhtNodeClient;
use crate::request_id::RequestId;
use crate::ring::Member;
use crate::security::AuthChannel;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Peers with a queue before the queues start afresh (addresses come from
/// peers: keep the map bounded).
const MAX_PIPES: usize = 4096;

/// What one kind of coalesced call carries, and how its reply answers each
/// item.
pub trait Carrier: Send + Sync + Sized + 'static {
    /// What a caller queues.
    type Item: Send + 'static;
    /// What each caller is answered.
    type Answer: Send + 'static;
    /// Items one call carries at most.
    const MAX_BATCH: usize;
    /// Calls out to one peer at once at most.
    const MAX_IN_FLIGHT: usize;
    /// Items waiting for one peer at most: past that the peer is not keeping
    /// up, and an item is answered at once ([`Unsent::Full`]) rather than
    /// queued without bound.
    const MAX_QUEUED: usize = 4 * Self::MAX_IN_FLIGHT * Self::MAX_BATCH;
    /// Whether an item whose caller has gone is still sent.
    const SENT_UNWAITED: bool;

    /// An item's size on the wire.
    fn size(&self, item: &Self::Item) -> usize;
    /// How many bytes of items one call carries at most.
    fn budget(&self) -> usize;
    /// Makes `call`, carrying `batch` (at least one item), and answers every
    /// item of it, within a bounded time (a call left unanswered should
    /// [`Call::forget`] its channel); frees the call's slot
    /// ([`Call::free_slot`], or dropping it) once the peer has answered for
    /// the batch (or its first item).
    fn deliver(self: Arc<Self>, call: Call, batch: Vec<Pending<Self>>) -> BoxFuture<'static, ()>;
    /// The answer to an item that was not sent to `addr`.
    fn unsent(&self, addr: &str, why: Unsent) -> Self::Answer;
}

/// One call to a peer, for a [`Carrier`] to make.
pub struct Call {
    /// The peer's address.
    pub addr: String,
    /// A client on the peer's pooled channel.
    pub client: DhtNodeClient<AuthChannel>,
    /// The call's place among those out to the peer ([`Call::free_slot`]).
    slot: Option<OwnedSemaphorePermit>,
    made: u64,
    peers: Peers,
}

impl Call {
    /// A call to `addr` on its pooled channel, in the place `slot`; why no
    /// channel could be made, if none could.
    fn open(peers: &Peers, addr: &str, slot: OwnedSemaphorePermit) -> Result<Self, String> {
        let (client, made) = peers.client_made(addr).map_err(|e| e.to_string())?;
        Ok(Self {
            addr: addr.to_string(),
            client,
            slot: Some(slot),
            made,
            peers: peers.clone(),
        })
    }

    /// Frees the call's place among those out to the peer: the next batch
    /// may leave. (Dropping the call frees it too.)
    pub fn free_slot(&mut self) {
        self.slot = None;
    }

    /// Whether the call still holds its place ([`Call::free_slot`]).
    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }

    /// Drops the channel the call was made on, after it went unanswered:
    /// the next call connects afresh (a connection wedged after a partition
    /// would otherwise fail every call until HTTP/2's keep-alive noticed).
    pub fn forget(&self) {
        self.peers.forget(&self.addr, self.made);
    }
}

/// Why an item was not sent.
#[derive(Debug)]
pub enum Unsent {
    /// Its caller stopped waiting first (its deadline passed).
    Expired,
    /// [`Carrier::MAX_QUEUED`] items wait for the peer already.
    Full(usize),
    /// The sender stopped.
    Stopped,
    /// No channel to the peer could be made (why).
    NoChannel(String),
}

/// An item waiting to be sent.
pub struct Pending<C: Carrier> {
    /// The item.
    pub item: C::Item,
    reply: oneshot::Sender<C::Answer>,
    /// When its caller stops waiting: an item still queued then is not sent.
    deadline: Instant,
    /// The client request the item serves.
    pub request_id: Option<RequestId>,
}

impl<C: Carrier> Pending<C> {
    /// When its caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Answers the item's caller (gone, if it stopped waiting: fine).
    pub fn answer(self, answer: C::Answer) {
        let _ = self.reply.send(answer);
    }
}

/// A queue and a sender per peer, for the calls `C` makes.
pub struct Pipes<C: Carrier> {
    pipes: Mutex<BTreeMap<String, Pipe<C>>>,
    carrier: Arc<C>,
}

/// One peer's queue, and the places of the calls out to it (shared with its
/// sender).
struct Pipe<C: Carrier> {
    queue: mpsc::Sender<Pending<C>>,
    slots: Arc<Semaphore>,
}

impl<C: Carrier> Clone for Pipe<C> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            slots: self.slots.clone(),
        }
    }
}

impl<C: Carrier> std::fmt::Debug for Pipes<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Pipes")
            .field("peers", &pipes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<C: Carrier> Pipes<C> {
    /// No queues yet; calls made by `carrier`.
    pub fn new(carrier: C) -> Self {
        Self {
            pipes: Mutex::new(BTreeMap::new()),
            carrier: Arc::new(carrier),
        }
    }

    /// Queues `item` for the peer `to`, to be sent before `deadline` (or,
    /// with no call out to `to`, sends it at once); the future resolves with
    /// its answer. It borrows nothing, so it can
    /// outlive its caller (a write acknowledged once a quorum has answered).
    pub fn send(
        &self,
        peers: &Peers,
        to: &Member,
        item: C::Item,
        deadline: Instant,
        request_id: Option<RequestId>,
    ) -> impl Future<Output = C::Answer> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            item,
            reply,
            deadline,
            request_id,
        };
        let pipe = self.pipe(peers, &to.addr);
        // No call out to the peer: the item leaves at once, from here,
        // without the queue's and the sender's hops. (With a call out, it
        // queues, to leave with those that pile up behind.)
        let idle = pipe.slots.available_permits() == C::MAX_IN_FLIGHT;
        let slot = idle
            .then(|| pipe.slots.clone().try_acquire_owned().ok())
            .flatten();
        let delivery = match slot {
            Some(slot) => match Call::open(peers, &to.addr, slot) {
                Ok(call) => Ok(Some(self.carrier.clone().deliver(call, vec![pending]))),
                Err(reason) => Err(Unsent::NoChannel(reason)),
            },
            None => match pipe.queue.try_send(pending) {
                Ok(()) => Ok(None),
                Err(mpsc::error::TrySendError::Full(_)) => Err(Unsent::Full(C::MAX_QUEUED)),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Unsent::Stopped),
            },
        };
        let (carrier, addr) = (self.carrier.clone(), to.addr.clone());
        async move {
            match delivery {
                Err(why) => return carrier.unsent(&addr, why),
                // An item sent even if its caller goes away is sent apart.
                Ok(Some(delivery)) if C::SENT_UNWAITED => drop(tokio::spawn(delivery)),
                Ok(Some(delivery)) => delivery.await,
                Ok(None) => {}
            }
            match answer.await {
                Ok(answer) => answer,
                Err(_) => carrier.unsent(&addr, Unsent::Stopped),
            }
        }
    }

    /// The pipe to `addr`, its sender started on first use.
    fn pipe(&self, peers: &Peers, addr: &str) -> Pipe<C> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipe) = pipes.get(addr).filter(|p| !p.queue.is_closed()) {
            return pipe.clone();
        }
        if pipes.len() >= MAX_PIPES {
            pipes.clear();
        }
        let (queue, items) = mpsc::channel(C::MAX_QUEUED);
        let pipe = Pipe {
            queue,
            slots: Arc::new(Semaphore::new(C::MAX_IN_FLIGHT)),
        };
        let sender = Sender {
            addr: addr.to_string(),
            peers: peers.clone(),
            carrier: self.carrier.clone(),
            slots: pipe.slots.clone(),
        };
        tokio::spawn(sender.run(items));
        pipes.insert(addr.to_string(), pipe.clone());
        pipe
    }
}

/// The sender of one peer's queue.
struct Sender<C: Carrier> {
    addr: String,
    /// The pool it takes the peer's channel from for each batch: a channel
    /// whose call went unanswered is dropped from the pool, and the next
    /// batch connects afresh (a connection wedged after a partition would
    /// otherwise fail every call until HTTP/2's keep-alive noticed).
    peers: Peers,
    carrier: Arc<C>,
    /// The places of the calls out to the peer, shared with callers that
    /// send an item themselves when one is free.
    slots: Arc<Semaphore>,
}

impl<C: Carrier> Sender<C> {
    /// Sends batches until every handle to the queue is gone.
    async fn run(self, mut items: mpsc::Receiver<Pending<C>>) {
        let slots = self.slots.clone();
        let mut queue: VecDeque<Pending<C>> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match items.recv().await {
                    Some(p) => queue.push_back(p),
                    None => return,
                }
            }
            // While every call is out, items pile up in the channel: they
            // leave together once a slot frees.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            while queue.len() < C::MAX_BATCH {
                match items.try_recv() {
                    Ok(p) => queue.push_back(p),
                    Err(_) => break,
                }
            }
            let batch = take_batch(&*self.carrier, &mut queue, Instant::now(), &self.addr);
            if batch.is_empty() {
                continue;
            }
            match Call::open(&self.peers, &self.addr, slot) {
                Ok(call) => drop(tokio::spawn(self.carrier.clone().deliver(call, batch))),
                Err(reason) => {
                    for p in batch {
                        let why = Unsent::NoChannel(reason.clone());
                        p.answer(self.carrier.unsent(&self.addr, why));
                    }
                }
            }
        }
    }
}

/// The next batch off `queue`: at least one item, then as many as fit the
/// carrier's count and bytes, in queue order. Items whose deadline has passed
/// by `now` are answered as expired, not sent; those whose caller is gone are
/// dropped unless the carrier sends them all the same.
pub(in crate::node) fn take_batch<C: Carrier>(
    carrier: &C,
    queue: &mut VecDeque<Pending<C>>,
    now: Instant,
    addr: &str,
) -> Vec<Pending<C>> {
    let mut batch = Vec::new();
    let mut size = 0;
    while let Some(next) = queue.front() {
        // Its caller is gone: nothing waits for it.
        if !C::SENT_UNWAITED && next.reply.is_closed() {
            queue.pop_front();
            continue;
        }
        if next.deadline <= now {
            if let Some(expired) = queue.pop_front() {
                expired.answer(carrier.unsent(addr, Unsent::Expired));
            }
            continue;
        }
        let item_size = carrier.size(&next.item);
        if !batch.is_empty() && (batch.len() >= C::MAX_BATCH || size + item_size > carrier.budget())
        {
            break;
        }
        size += item_size;
        batch.extend(queue.pop_front());
    }
    batch
}

#[cfg(test)]
pub(in crate::node) mod tests {
    use super::*;
    use std::time::Duration;

    /// A carrier of numbers, each `size` bytes, at most three per call.
    pub struct Numbers;

    impl Carrier for Numbers {
        type Item = usize;
        type Answer = Result<usize, String>;
        const MAX_BATCH: usize = 3;
        const MAX_IN_FLIGHT: usize = 1;
        const SENT_UNWAITED: bool = false;

        fn size(&self, item: &usize) -> usize {
            *item
        }
        fn budget(&self) -> usize {
            100
        }
        fn deliver(self: Arc<Self>, _: Call, _: Vec<Pending<Self>>) -> BoxFuture<'static, ()> {
            unreachable!("not called")
        }
        fn unsent(&self, _: &str, why: Unsent) -> Self::Answer {
            Err(format!("{why:?}"))
        }
    }

    /// `item` queued with a deadline a minute away (or `deadline`), and the
    /// receiver of its answer.
    pub fn pending<C: Carrier>(
        item: C::Item,
        deadline: Option<Instant>,
    ) -> (Pending<C>, oneshot::Receiver<C::Answer>) {
        let (reply, answer) = oneshot::channel();
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let pending = Pending {
            item,
            reply,
            deadline,
            request_id: None,
        };
        (pending, answer)
    }

    fn sizes(batch: &[Pending<Numbers>]) -> Vec<usize> {
        batch.iter().map(|p| p.item).collect()
    }

    #[test]
    fn a_batch_takes_what_fits_in_order_and_always_one() {
        let (mut queue, _answers): (VecDeque<_>, Vec<_>) = [40, 50, 20, 1, 1, 1, 150, 1]
            .into_iter()
            .map(|n| pending::<Numbers>(n, None))
            .unzip();
        let now = Instant::now();
        // 40 + 50 fit in 100 bytes, 20 more do not.
        assert_eq!(sizes(&take_batch(&Numbers, &mut queue, now, "a")), [40, 50]);
        // Three at most.
        assert_eq!(
            sizes(&take_batch(&Numbers, &mut queue, now, "a")),
            [20, 1, 1]
        );
        assert_eq!(sizes(&take_batch(&Numbers, &mut queue, now, "a")), [1]);
        // One over the budget goes alone.
        assert_eq!(sizes(&take_batch(&Numbers, &mut queue, now, "a")), [150]);
        assert_eq!(sizes(&take_batch(&Numbers, &mut queue, now, "a")), [1]);
        assert!(take_batch(&Numbers, &mut queue, now, "a").is_empty());
    }

    #[test]
    fn items_past_their_deadline_are_answered_not_sent() {
        let (stale, stale_answer) = pending::<Numbers>(1, Some(Instant::now()));
        let (fresh, _fresh_answer) = pending::<Numbers>(2, None);
        let mut queue = VecDeque::from([stale, fresh]);
        let batch = take_batch(&Numbers, &mut queue, Instant::now(), "a");
        assert_eq!(sizes(&batch), [2]);
        assert_eq!(stale_answer.blocking_recv().unwrap(), Err("Expired".into()));
    }

    #[test]
    fn items_whose_caller_is_gone_are_not_sent() {
        let (gone, _) = pending::<Numbers>(1, None);
        let (waited, _answer) = pending::<Numbers>(2, None);
        let mut queue = VecDeque::from([gone, waited]);
        let batch = take_batch(&Numbers, &mut queue, Instant::now(), "a");
        assert_eq!(sizes(&batch), [2]);
    }
}
