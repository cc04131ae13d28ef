//! Simulated clients: each sends a random sequence of reads, writes and
//! deletes of a few keys to random nodes over gRPC, one at a time, and records
//! what it asked, what it got and when (virtual time) into a shared history.

use crate::linearizable::{Call, Operation, Return};
use crate::schedule::Rng;
use crustyring::client::NodeClient;
use crustyring::proto::dht::{self, dht_node_client::DhtNodeClient};
use crustyring::security::Credentials;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The port every simulated process listens on.
pub const PORT: u16 = 9000;
/// The keys clients use: few, so that operations on each key overlap.
pub const KEYS: [&str; 4] = ["apple", "banana", "cherry", "damson"];
/// How long a client waits for an answer before it counts the operation as
/// unknown (a write may still land) and moves on.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

/// What the clients of one run recorded.
pub type History = Rc<RefCell<Vec<Operation>>>;

/// A gRPC client of the node on `host`, over the simulated network.
pub fn client(host: &str) -> NodeClient {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{PORT}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_millis(500));
    let channel = crate::network::network().connect_lazy(&endpoint);
    DhtNodeClient::with_interceptor(channel, Credentials::default())
}

/// Virtual time since the simulation started, in microseconds. Every client
/// host starts with the simulation, so their clocks agree.
fn now() -> u64 {
    turmoil::elapsed().as_micros() as u64
}

/// One client: until `until`, picks a key, an operation and a node among
/// those `alive` and records the outcome in `history`.
pub async fn run_client(
    id: u32,
    seed: u64,
    alive: Rc<RefCell<Vec<String>>>,
    until: Duration,
    history: History,
) {
    let mut rng = Rng::new(seed ^ (u64::from(id) << 40));
    let mut written = 0u64;
    tokio::time::sleep(crate::schedule::CLIENTS_FROM).await;
    while turmoil::elapsed() < until {
        // A live node (one that has just crashed refuses: the client
        // tries elsewhere next time).
        let picked = {
            let alive = alive.borrow();
            (!alive.is_empty()).then(|| rng.pick(&alive).clone())
        };
        let Some(host) = picked else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let key = *rng.pick(&KEYS);
        let call = match rng.below(10) {
            0..=4 => Call::Read,
            5..=8 => {
                written += 1;
                Call::Write((u64::from(id) << 32) | written)
            }
            _ => Call::Delete,
        };
        let invoked = now();
        let ret = perform(&host, key, &call).await;
        history.borrow_mut().push(Operation {
            client: id,
            key: key.to_string(),
            call,
            ret,
            invoked,
            returned: now(),
        });
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
    }
}

/// Sends `call` on `key` to `host`: what came back, as the checker sees it.
pub async fn perform(host: &str, key: &str, call: &Call) -> Return {
    let (ty, value) = match call {
        Call::Read => (dht::OperationType::Get, None),
        Call::Write(v) => (dht::OperationType::Set, Some(v.to_string().into_bytes())),
        Call::Delete => (dht::OperationType::Delete, None),
    };
    let mut c = client(host);
    let asked = crustyring::client::query(&mut c, ty, key.as_bytes(), value.as_deref());
    let answer = match tokio::time::timeout(OPERATION_TIMEOUT, asked).await {
        Ok(Ok(answer)) => answer,
        // No answer, or an error status: a read tells nothing; a write may
        // have been applied (the node may have failed after it did).
        Ok(Err(_)) | Err(_) => return Return::Unknown,
    };
    match call {
        Call::Read => match (answer.error, answer.value) {
            (None, Some(v)) => match std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                Some(v) => Return::Read(Some(v)),
                None => panic!("{key} read as {v:?}, which no client wrote"),
            },
            (Some(e), _) if e == crustyring::node::KEY_NOT_PRESENT => Return::Read(None),
            _ => Return::Unknown,
        },
        Call::Write(_) | Call::Delete => match answer.error {
            None => Return::Done,
            Some(e) if e == crustyring::node::KEY_NOT_PRESENT => Return::Done,
            Some(_) => Return::Unknown,
        },
    }
}
