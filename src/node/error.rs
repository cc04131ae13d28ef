//! The node layer's one error type, and its single mapping to gRPC `Status`.

use crate::ring::Position;
use crate::store::{StoreError, Version};
use std::time::Duration;
use tonic::{Code, Status};

/// Everything that can go wrong while a node serves a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The key is empty.
    #[error("the key is empty; a key must be 1 or more bytes")]
    EmptyKey,
    /// The key is over the limit.
    #[error("the key is {len} bytes long; the limit is {max} bytes (--max-key-bytes)")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is over the limit.
    #[error("the value is {len} bytes long; the limit is {max} bytes (--max-value-bytes)")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A Set came with no value.
    #[error("a Set query needs a value (field 3, `value`); an empty value is allowed")]
    MissingValue,
    /// The operation type is not one the protocol knows.
    #[error("unknown operation type {0}; expected Get (0), Delete (1) or Set (2)")]
    UnknownOperation(i32),
    /// A position-only ForwardQuery tried to write.
    #[error(
        "a ForwardQuery Set or conditional write needs the raw key (field 4, `raw_key`): a position alone names no single key"
    )]
    MissingRawKey,
    /// A ForwardQuery's raw key does not hash to its position.
    #[error("the raw key does not hash to position {position} (field 2, `key`)")]
    PositionMismatch {
        /// The position the request named.
        position: Position,
    },
    /// The request's `x-request-id` is not one we can carry.
    #[error(transparent)]
    BadRequestId(#[from] crate::request_id::BadRequestId),
    /// The query's condition (compare-and-set) is malformed.
    #[error("bad condition: {0}")]
    BadCondition(String),
    /// The query's condition did not hold: nothing was written.
    #[error("{}", precondition_failed(current))]
    PreconditionFailed {
        /// The key's version (`None`: absent).
        current: Option<Version>,
    },
    /// A batch that cannot be run.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A version (to resume a watch after) that is not one.
    #[error("bad version: {0}")]
    BadVersion(String),
    /// A time to live that cannot be.
    #[error("bad time to live: {0}")]
    BadTtl(String),
    /// A listing's cursor is not one a listing returned.
    #[error("bad cursor: {0}")]
    BadCursor(String),
    /// A listing asked for something it cannot have.
    #[error("bad listing: {0}")]
    BadListing(String),
    /// A range was asked of a node that does not own its start (a stale
    /// routing table).
    #[error("this node does not own position {position} (now); ask its owner")]
    NotOwner {
        /// The range's start.
        position: Position,
    },
    /// The query has been forwarded too often: the ring is changing or broken.
    #[error(
        "the query was forwarded {hops} times without reaching the owner; the ring may be changing, retry shortly"
    )]
    TooManyHops {
        /// Hops so far.
        hops: u32,
    },
    /// This node is not part of the ring (yet).
    #[error(
        "this node is not serving yet (it is joining the ring); retry shortly or ask another node"
    )]
    NotServing,
    /// A peer (the next hop, or a replica) could not be reached.
    #[error("node {addr} is unreachable: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// A peer (the next hop, or a replica) did not answer in time.
    #[error("node {addr} did not answer within {after:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
    /// A hand-off of this position's arc did not finish in time.
    #[error(
        "the key's arc is being handed to a joining node and the hand-off did not finish within {0:?}; retry"
    )]
    HandOffStalled(Duration),
    /// This node owns the key but holds no lease on its arc (it may have been
    /// cut off, and another node may be taking the arc over), or the arc is
    /// one it is taking over and the old owner's lease may not have lapsed.
    #[error(
        "this node holds no lease on the key's arc within {0:?} (it may be cut off from its neighbours, or taking the arc over from a failed one); retry"
    )]
    Unleased(Duration),
    /// A hand-off to a joiner stopped at the switch-over: this node may no
    /// longer hand the arc over (its lease lapsed while the arc streamed, or
    /// it is catching up after a lease gap). Nothing was handed over.
    #[error(
        "this node may no longer hand the arc over: its lease lapsed while the arc streamed, or it is catching up after a lease gap; nothing was handed over, the joiner retries"
    )]
    HandOverUnleased,
    /// The owner is catching up on its arc (it was leased again after a time
    /// without a lease, when another node may have written to it): a listing
    /// or a watch's state, which read its store alone, wait for that.
    #[error(
        "this node is catching up on writes to the key's arc after a time without a lease; retry"
    )]
    CatchingUp,
    /// The owner's lease lapsed before its replicas held a write, and was not
    /// granted again in time: the write is not acknowledged, since another
    /// node may take the arc over without it once the lease has lapsed.
    #[error(
        "this node's lease on the key's arc lapsed before the write was acknowledged, and was not granted again in time (it may be cut off from its neighbours); the write is applied here and may still take effect; retry to be sure"
    )]
    LeaseLapsed,
    /// A node leaving (or gone) takes no replica writes: it would be counted
    /// as a copy it will not keep.
    #[error("this node is {0}; it takes no replicas")]
    TakesNoReplicas(&'static str),
    /// A read met a write to its key that is applied at the owner but not
    /// yet acknowledged, and it did not settle in time.
    #[error("a write to this key is still being replicated and did not finish within {0:?}; retry")]
    WriteInFlight(Duration),
    /// A write did not reach enough replicas in time. It is applied on
    /// `copies` nodes and may still spread to the rest (anti-entropy).
    #[error(
        "the write is durable on {copies} of the {needed} copies it needs within the request timeout; last replica error: {reason}. It may still be applied; retry to be sure"
    )]
    ReplicationIncomplete {
        /// Copies known durable (this node's included).
        copies: usize,
        /// Copies the write quorum asks for.
        needed: usize,
        /// The last replica's failure.
        reason: String,
    },
    /// Walking the ring failed (a broken link or a malformed answer).
    #[error("could not walk the ring: {0}")]
    RingWalk(String),
    /// A peer answered with an error status, passed on as it was.
    #[error("{0}")]
    Peer(Status),
    /// The connection to a peer failed after the request went out: it may
    /// have been applied there.
    #[error(
        "the connection to {addr} failed during the request (it may have been applied): {reason}"
    )]
    Interrupted {
        /// The peer's address.
        addr: String,
        /// What the transport said.
        reason: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NodeError {
    /// The gRPC code this error answers with (a peer's status keeps its own).
    /// The one classification of node errors: HTTP statuses derive from it too.
    pub fn code(&self) -> Code {
        match self {
            NodeError::EmptyKey
            | NodeError::KeyTooLong { .. }
            | NodeError::ValueTooLarge { .. }
            | NodeError::MissingValue
            | NodeError::UnknownOperation(_)
            | NodeError::MissingRawKey
            | NodeError::PositionMismatch { .. }
            | NodeError::BadRequestId(_)
            | NodeError::BadCondition(_)
            | NodeError::BadCursor(_)
            | NodeError::BadTtl(_)
            | NodeError::BadVersion(_)
            | NodeError::BadBatch(_)
            | NodeError::BadListing(_) => Code::InvalidArgument,
            NodeError::PreconditionFailed { .. } => Code::FailedPrecondition,
            NodeError::TooManyHops { .. }
            | NodeError::NotServing
            | NodeError::NotOwner { .. }
            | NodeError::Unreachable { .. }
            | NodeError::Interrupted { .. }
            | NodeError::HandOffStalled(_)
            | NodeError::Unleased(_)
            | NodeError::HandOverUnleased
            | NodeError::LeaseLapsed
            | NodeError::CatchingUp
            | NodeError::WriteInFlight(_)
            | NodeError::TakesNoReplicas(_)
            | NodeError::ReplicationIncomplete { .. }
            | NodeError::RingWalk(_) => Code::Unavailable,
            NodeError::Timeout { .. } => Code::DeadlineExceeded,
            NodeError::Peer(status) => status.code(),
            NodeError::Store(_) => Code::Internal,
        }
    }
}

fn precondition_failed(current: &Option<Version>) -> String {
    match current {
        Some(v) => format!(
            "the condition does not hold: the key's version is {}; nothing was written",
            v.token()
        ),
        None => "the condition does not hold: the key is absent; nothing was written".into(),
    }
}

impl NodeError {
    /// The metadata key a failed condition's current version travels under.
    pub const VERSION: &'static str = "x-crusty-version";

    /// The failed condition a peer's status reports, if it reports one.
    pub fn from_peer_status(status: Status) -> NodeError {
        if status.code() == Code::FailedPrecondition
            && status.metadata().get(Self::VERSION).is_some()
        {
            let current = status
                .metadata()
                .get(Self::VERSION)
                .and_then(|v| v.to_str().ok())
                .and_then(Version::from_token);
            return NodeError::PreconditionFailed { current };
        }
        NodeError::Peer(status)
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Peer(status) => status,
            NodeError::PreconditionFailed { current } => {
                let mut status =
                    Status::new(Code::FailedPrecondition, precondition_failed(&current));
                // "-": absent (metadata cannot be empty-valued portably).
                let token = current.map_or_else(|| "-".to_string(), |v| v.token());
                if let Ok(value) = token.parse() {
                    status.metadata_mut().insert(NodeError::VERSION, value);
                }
                status
            }
            e => Status::new(e.code(), e.to_string()),
        }
    }
}

/// Why a node could not join the ring.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The registry could not be reached or refused the node.
    #[error("registry at {addr} failed: {reason}")]
    Registry {
        /// The registry's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Joining through a member, the ring's members could not be learnt from it.
    #[error("could not walk the ring from {contact} to choose an ID: {reason}")]
    RingWalk {
        /// The member given to join through.
        contact: String,
        /// What went wrong.
        reason: String,
    },
    /// Another member already holds this node's ID.
    #[error("ring ID {id} is already held by {holder}")]
    IdTaken {
        /// The ID.
        id: Position,
        /// The holder's address.
        holder: String,
    },
    /// No member accepted the node in time.
    #[error("could not join the ring within {after:?}; last attempt: {last}")]
    TimedOut {
        /// How long the node tried.
        after: Duration,
        /// What the last attempt said.
        last: String,
    },
    /// The node's listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The node's store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}
