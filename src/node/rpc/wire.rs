//! The node's domain types in their wire forms:
//!
//! - a node's summary as `NodeInfo`;
//! - a change as a `WatchEvent`, and the request for a member's own changes;
//! - a listing's range ask and reply (`ListRange`);
//! - `RegisterAsNeighbor`: the request offering a member as `prev` or
//!   `next`, the neighbours answered, why a newcomer was not linked as a
//!   status, and how a joiner reads its contact's refusal (with, in binary
//!   metadata, the member to ask instead);
//! - as metadata, the route a query took, and a lease asked of `prev` and
//!   its answer.
//!
//! Here, at the edge, rather than in [`crate::proto`], so that the generated
//! code depends on nothing above the ring.

use super::entries::entries_from_wire;
use crate::joining::Reply;
use crate::lease;
use crate::node::listing::{RangeAsk, RangeReply};
use crate::node::query::Limits;
use crate::node::view::{JoinRefusal, LinkError, Neighbours, NodeState};
use crate::node::{NodeSummary, RouteTaken, Watched};
use crate::proto::{dht, registry};
use crate::ring::{Member, Position, key_position};
use crate::store::{Entry, Version, now_micros};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use std::cell::RefCell;
use std::time::Duration;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

impl RouteTaken {
    /// [`RouteTaken::HOPS`] as a header name, parsed once.
    pub const HOPS_HEADER: HeaderName = HeaderName::from_static(RouteTaken::HOPS);
    /// [`RouteTaken::OWNER`] as a header name, parsed once.
    pub const OWNER_HEADER: HeaderName = HeaderName::from_static(RouteTaken::OWNER);
    /// [`RouteTaken::OWNER_ID`] as a header name, parsed once.
    pub const OWNER_ID_HEADER: HeaderName = HeaderName::from_static(RouteTaken::OWNER_ID);

    /// Writes the route into a response's metadata.
    pub fn write_metadata(&self, metadata: &mut MetadataMap) {
        self.write_headers(metadata.as_mut());
    }

    /// Writes the route into a response's headers: an HTTP answer's, or a
    /// gRPC answer's metadata (which are its HTTP/2 headers).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(Self::HOPS_HEADER, HeaderValue::from(self.hops));
        if let Some(owner) = &self.owner {
            let (addr, id) = owner_values(owner);
            if let Some(addr) = addr {
                headers.insert(Self::OWNER_HEADER, addr);
            }
            headers.insert(Self::OWNER_ID_HEADER, id);
        }
    }

    /// The route a peer's response reports, if it reports one (peers of the
    /// original protocol do not; malformed values count as absent).
    pub fn read_metadata(metadata: &MetadataMap) -> Option<Self> {
        let headers: &HeaderMap = metadata.as_ref();
        let text = |key: &HeaderName| headers.get(key).and_then(|v| v.to_str().ok());
        let hops = text(&Self::HOPS_HEADER)?.parse().ok()?;
        let owner = match (text(&Self::OWNER_HEADER), text(&Self::OWNER_ID_HEADER)) {
            (Some(addr), Some(id)) => u64::from_str_radix(id, 16)
                .ok()
                .map(|id| Member::new(Position(id), addr)),
            _ => None,
        };
        Some(Self { hops, owner })
    }
}

/// `owner`'s address (if it makes a header value) and ID as header values,
/// made once per owner and thread and cloned after (a reference count): an
/// answer's owner is one of a ring's few nodes, and copying its address and
/// writing its ID in hex for every answer cost a tenth of an HTTP GET's
/// instructions. At most [`OWNERS_KEPT`] owners are kept per thread.
fn owner_values(owner: &Member) -> (Option<HeaderValue>, HeaderValue) {
    type Made = (Member, Option<HeaderValue>, HeaderValue);
    thread_local! {
        static MADE: RefCell<Vec<Made>> = const { RefCell::new(Vec::new()) };
    }
    MADE.with_borrow_mut(|made| {
        if let Some((_, addr, id)) = made.iter().find(|(m, ..)| m == owner) {
            return (addr.clone(), id.clone());
        }
        let addr = HeaderValue::from_str(&owner.addr).ok();
        let id = HeaderValue::try_from(owner.id.to_hex()).expect("hex digits make a header value");
        if made.len() == OWNERS_KEPT {
            made.clear();
        }
        made.push((owner.clone(), addr.clone(), id.clone()));
        (addr, id)
    })
}

/// How many owners' header values [`owner_values`] keeps per thread.
const OWNERS_KEPT: usize = 64;

/// How a summary whose state this build does not know names it again.
const UNKNOWN_STATE: &str = "unknown";

impl From<&NodeSummary> for dht::NodeInfo {
    fn from(s: &NodeSummary) -> Self {
        Self {
            node: Some((&s.me).into()),
            prev: Some((&s.prev).into()),
            next: Some((&s.next).into()),
            state: s.state.map_or(UNKNOWN_STATE, NodeState::as_str).to_string(),
            keys: s.keys,
            successors: s.successors.iter().map(Into::into).collect(),
            predecessors: s.predecessors.iter().map(Into::into).collect(),
            owned_keys: s.owned_keys,
            replica_keys: s.replica_keys,
            replication_factor: s.replication_factor,
        }
    }
}

impl TryFrom<dht::NodeInfo> for NodeSummary {
    type Error = String;

    fn try_from(info: dht::NodeInfo) -> Result<Self, String> {
        let member = |n: Option<registry::Node>, what: &str| {
            n.map(Member::from)
                .ok_or_else(|| format!("a node's info lacks its {what}"))
        };
        Ok(Self {
            me: member(info.node, "own address")?,
            prev: member(info.prev, "previous neighbour")?,
            next: member(info.next, "next neighbour")?,
            successors: info.successors.into_iter().map(Member::from).collect(),
            predecessors: info.predecessors.into_iter().map(Member::from).collect(),
            state: info.state.parse().ok(),
            keys: info.keys,
            owned_keys: info.owned_keys,
            replica_keys: info.replica_keys,
            replication_factor: info.replication_factor,
        })
    }
}

/// A change as a `WatchEvent`.
pub fn watch_event(e: &Entry) -> dht::WatchEvent {
    let now = now_micros();
    dht::WatchEvent {
        key: e.key.clone(),
        deleted: e.value.is_none(),
        value: e.value.clone(),
        version: e.version.token(),
        ttl_ms: e.expires.map(|at| at.saturating_sub(now).div_ceil(1000)),
    }
}

/// The change a peer's event describes; `None` if its version does not
/// parse.
pub(in crate::node) fn entry_of_event(ev: dht::WatchEvent) -> Option<Entry> {
    let now = now_micros();
    Some(Entry {
        position: key_position(&ev.key),
        version: Version::from_token(&ev.version)?,
        value: if ev.deleted {
            None
        } else {
            ev.value.or(Some(Vec::new()))
        },
        expires: ev
            .ttl_ms
            .map(|ms| now.saturating_add(ms.saturating_mul(1000))),
        key: ev.key,
    })
}

/// The request for `member`'s own changes of what `watched` follows after
/// `since` (`Watch { local: true }`).
pub(in crate::node) fn local_watch_request(
    watched: &Watched,
    since: Option<Version>,
) -> dht::WatchRequest {
    let (key, prefix) = match watched {
        Watched::Key(key) => (key.clone(), None),
        Watched::Prefix(prefix) => (Vec::new(), Some(prefix.clone())),
    };
    dht::WatchRequest {
        key,
        prefix,
        since: since.map(|v| v.token()),
        local: true,
    }
}

impl From<dht::ListRangeRequest> for RangeAsk {
    fn from(r: dht::ListRangeRequest) -> Self {
        Self {
            start: r.start,
            end: r.end,
            after_key: r.after_key,
            prefix: r.prefix,
            limit: r.limit,
            values: r.values,
        }
    }
}

impl From<&RangeAsk> for dht::ListRangeRequest {
    fn from(a: &RangeAsk) -> Self {
        Self {
            start: a.start,
            end: a.end,
            after_key: a.after_key.clone(),
            prefix: a.prefix.clone(),
            limit: a.limit,
            values: a.values,
        }
    }
}

impl From<RangeReply> for dht::ListRangeReply {
    fn from(r: RangeReply) -> Self {
        Self {
            entries: r.entries.into_iter().map(Into::into).collect(),
            covered_end: r.covered_end,
            more: r.more,
        }
    }
}

/// A range owner's reply, its entries checked against `limits` as any
/// peer's are (whether it answers the ask is `listing::check_reply`'s).
pub(in crate::node) fn range_reply_from_wire(
    reply: dht::ListRangeReply,
    limits: &Limits,
) -> Result<RangeReply, Status> {
    Ok(RangeReply {
        entries: entries_from_wire(reply.entries, limits)?,
        covered_end: reply.covered_end,
        more: reply.more,
    })
}

/// Metadata a probe of `prev` carries: the prober's ID, asking for a lease
/// on its arc (`crate::lease`).
pub const LEASE_FOR: &str = "x-crusty-lease-for";
/// Metadata of an answer that granted the lease asked for.
pub const LEASE_GRANTED: &str = "x-crusty-lease-granted";
/// Metadata of an answer that refused it while a takeover wait runs
/// ([`lease::Grant::NotBefore`]): in how many milliseconds one may be had.
pub const LEASE_AFTER_MS: &str = "x-crusty-lease-after-ms";

/// The longest [`LEASE_AFTER_MS`] a prober heeds: a peer that names more
/// (a takeover wait is about a lease length) is ignored, and the rounds ask.
/// (A `prev` that always names 0 gets probed every early-probe gap, no
/// more: `crate::failure::EarlyProbes`.)
const MAX_LEASE_AFTER: Duration = Duration::from_secs(3600);

/// Asks, in a probe's metadata, for a lease on the arc of the node at `id`.
pub fn ask_lease(metadata: &mut MetadataMap, id: Position) {
    metadata.insert(LEASE_FOR, id.0.into());
}

/// Whose arc a probe asks a lease on, if it asks for one (a value that does
/// not parse asks nothing).
pub fn lease_asked_for(metadata: &MetadataMap) -> Option<Position> {
    let id = metadata.get(LEASE_FOR)?.to_str().ok()?.parse().ok()?;
    Some(Position(id))
}

impl lease::Answer {
    /// Writes the answer into a response's metadata.
    pub fn write_metadata(self, metadata: &mut MetadataMap) {
        match self {
            Self::Granted => {
                metadata.insert(LEASE_GRANTED, MetadataValue::from_static("1"));
            }
            Self::After(wait) => {
                // Rounded up: asked again a little late rather than early.
                let ms = wait.as_micros().div_ceil(1000) as u64;
                metadata.insert(LEASE_AFTER_MS, ms.into());
            }
        }
    }

    /// Reads it from a response's metadata: `None` if it carries neither,
    /// or a wait that does not parse or exceeds an hour (`MAX_LEASE_AFTER`).
    pub fn read_metadata(metadata: &MetadataMap) -> Option<Self> {
        if metadata.contains_key(LEASE_GRANTED) {
            return Some(Self::Granted);
        }
        let ms: u64 = metadata.get(LEASE_AFTER_MS)?.to_str().ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
            .filter(|wait| *wait <= MAX_LEASE_AFTER)
            .map(Self::After)
    }
}

/// What a heartbeat's answer says of this node's root lease
/// (`crate::registry::Verdicts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootAnswer {
    /// A root lease of this length.
    Granted(Duration),
    /// None: the registry judged this node dead this many times.
    Dead(u64),
    /// A value that does not parse, or a length over an hour: ignored (not
    /// taken for a registry of an earlier version, which sends neither).
    Unreadable,
}

/// A heartbeat of `me`, saying it heard of `seen` verdicts on itself.
pub fn heartbeat(me: &Member, seen: u64) -> tonic::Request<registry::Node> {
    let mut request = tonic::Request::new(registry::Node::from(me));
    (request.metadata_mut()).insert(crate::registry::VERDICTS_SEEN, seen.into());
    request
}

/// What a heartbeat's answer says of the root lease: `None` if it carries
/// neither header (a registry of an earlier version).
pub fn root_answer(metadata: &MetadataMap) -> Option<RootAnswer> {
    let number = |name: &str| -> Option<Option<u64>> {
        let value = metadata.get(name)?;
        Some(value.to_str().ok().and_then(|v| v.parse().ok()))
    };
    if let Some(count) = number(crate::registry::VERDICTS) {
        return Some(count.map_or(RootAnswer::Unreadable, RootAnswer::Dead));
    }
    let length = number(crate::registry::ROOT_LEASE_MS)?;
    Some(
        length
            .map(Duration::from_millis)
            .filter(|length| *length <= MAX_LEASE_AFTER)
            .map_or(RootAnswer::Unreadable, RootAnswer::Granted),
    )
}

impl From<Neighbours> for dht::PreviousNeighbors {
    fn from(n: Neighbours) -> Self {
        Self {
            prev: Some((&n.prev).into()),
            next: Some((&n.next).into()),
        }
    }
}

impl From<LinkError> for Status {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Join { refusal, joiner } => refusal.into_status(&joiner),
            LinkError::HandOff { joiner, error } => Status::unavailable(format!(
                "could not hand the arc over to {}: {error}",
                joiner.addr
            )),
            LinkError::NotPrevious(why) => Status::failed_precondition(why),
        }
    }
}

/// What a `RegisterAsNeighbor` asks the receiver to take the member as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Its previous neighbour (an introduction).
    Previous,
    /// Its next neighbour (a join).
    Next,
}

/// The `RegisterAsNeighbor` request that offers `member` as the receiver's
/// `link` neighbour.
pub fn register_as(link: Link, member: &Member) -> dht::NeighborRegisterInfo {
    let ty = match link {
        Link::Previous => dht::NeighborType::Previous,
        Link::Next => dht::NeighborType::Next,
    };
    dht::NeighborRegisterInfo {
        ty: ty as i32,
        id: member.id.0,
        addr: member.addr.clone(),
    }
}

/// What a `RegisterAsNeighbor` request offers: the member, and as which
/// neighbour. A type or address that names nothing is `INVALID_ARGUMENT`.
pub fn registration(info: dht::NeighborRegisterInfo) -> Result<(Link, Member), Status> {
    let link = match dht::NeighborType::try_from(info.ty) {
        Ok(dht::NeighborType::Previous) => Link::Previous,
        Ok(dht::NeighborType::Next) => Link::Next,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown neighbour type {}; expected Previous (0) or Next (1)",
                info.ty
            )));
        }
    };
    if info.addr.is_empty() {
        return Err(Status::invalid_argument("the neighbour's address is empty"));
    }
    Ok((link, Member::new(Position(info.id), info.addr)))
}

/// A joiner's reading of the status its contact refused it with (what
/// [`JoinRefusal::into_status`] wrote, or any other failure).
pub fn join_reply(status: &Status) -> Reply {
    let reason = status.message().to_string();
    match status.code() {
        tonic::Code::FailedPrecondition => Reply::NotMine {
            towards: JoinRefusal::towards(status),
            reason,
        },
        tonic::Code::AlreadyExists => Reply::IdTaken { holder: reason },
        _ => Reply::Failed { reason },
    }
}

/// The binary metadata key of a refused join's hint (where the joiner should
/// ask next): a `registry.Node` in protobuf, base64 on the wire as gRPC
/// carries every `-bin` key.
pub const TOWARDS_METADATA: &str = "crustyring-towards-bin";

impl JoinRefusal {
    /// The refusal as the status a joiner gets (`RegisterAsNeighbor{Next}`),
    /// `joiner` being the member that asked.
    pub fn into_status(self, joiner: &Member) -> Status {
        match self {
            Self::NotServing => Status::unavailable("this node is not serving yet; retry shortly"),
            Self::Unleased => Status::unavailable(
                "this node may not serve the arc the joiner would take now (no lease from its \
                 previous neighbour, part of the arc taken over from a failed node whose lease \
                 may still run, not confirmed by its next neighbour, or catching up after a \
                 lease gap); retry shortly",
            ),
            Self::Taken { holder } => Status::already_exists(format!(
                "ring ID {} is already held by {}",
                joiner.id, holder.addr
            )),
            Self::NotMyArc { towards } => {
                let mut status = Status::failed_precondition(format!(
                    "ID {} is not in my arc; ask {}",
                    joiner.id, towards.addr
                ));
                let hint = registry::Node::from(&towards).encode_to_vec();
                (status.metadata_mut())
                    .insert_bin(TOWARDS_METADATA, MetadataValue::from_bytes(&hint));
                status
            }
        }
    }

    /// The member a refusal ([`JoinRefusal::NotMyArc`]) names to ask instead:
    /// `None` without a hint, or with one that does not decode as a member
    /// with an address.
    pub fn towards(status: &Status) -> Option<Member> {
        let hint = status
            .metadata()
            .get_bin(TOWARDS_METADATA)?
            .to_bytes()
            .ok()?;
        let node = registry::Node::decode(hint).ok()?;
        (!node.addr.is_empty()).then(|| Member::from(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_joiner_reads_the_member_to_ask_instead() {
        let joiner = Member::new(Position(150), "http://127.0.0.1:7150");
        let towards = Member::new(Position(u64::MAX), "http://[::1]:7001");
        let status = JoinRefusal::NotMyArc {
            towards: towards.clone(),
        }
        .into_status(&joiner);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(JoinRefusal::towards(&status), Some(towards));
        // The other refusals name no one.
        let holder = Member::new(Position(150), "http://127.0.0.1:7151");
        for refusal in [
            JoinRefusal::NotServing,
            JoinRefusal::Unleased,
            JoinRefusal::Taken { holder },
        ] {
            assert_eq!(JoinRefusal::towards(&refusal.into_status(&joiner)), None);
        }
    }

    #[test]
    fn each_refusal_reads_back_as_the_reply_the_joiner_acts_on() {
        let joiner = Member::new(Position(150), "http://127.0.0.1:7150");
        let towards = Member::new(Position(200), "http://127.0.0.1:7200");
        let reply = |refusal: JoinRefusal| join_reply(&refusal.into_status(&joiner));
        assert!(matches!(
            reply(JoinRefusal::NotMyArc { towards: towards.clone() }),
            Reply::NotMine { towards: Some(t), .. } if t == towards
        ));
        let holder = Member::new(Position(150), "http://127.0.0.1:7151");
        assert!(matches!(
            reply(JoinRefusal::Taken { holder }),
            Reply::IdTaken { holder } if holder.contains("7151")
        ));
        for refusal in [JoinRefusal::NotServing, JoinRefusal::Unleased] {
            assert!(matches!(reply(refusal), Reply::Failed { .. }));
        }
        let request = register_as(Link::Next, &joiner);
        assert_eq!(
            (request.ty, request.id, request.addr.as_str()),
            (dht::NeighborType::Next as i32, 150, "http://127.0.0.1:7150")
        );
        for link in [Link::Previous, Link::Next] {
            let offered = registration(register_as(link, &joiner)).unwrap();
            assert_eq!(offered, (link, joiner.clone()));
        }
        let unknown = dht::NeighborRegisterInfo {
            ty: 7,
            ..request.clone()
        };
        assert_eq!(
            registration(unknown).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let nowhere = dht::NeighborRegisterInfo {
            addr: String::new(),
            ..request
        };
        assert_eq!(
            registration(nowhere).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn a_newcomer_not_linked_in_is_told_why_with_the_code_it_acts_on() {
        let joiner = Member::new(Position(150), "http://127.0.0.1:7150");
        let status = |e: LinkError| Status::from(e);
        let unleased = status(LinkError::Join {
            refusal: JoinRefusal::Unleased,
            joiner: joiner.clone(),
        });
        assert_eq!(unleased.code(), tonic::Code::Unavailable);
        assert!(unleased.message().contains("may not serve the arc"));
        let handed = status(LinkError::HandOff {
            joiner: joiner.clone(),
            error: crate::node::NodeError::NotServing,
        });
        assert_eq!(handed.code(), tonic::Code::Unavailable);
        assert!(
            handed
                .message()
                .starts_with("could not hand the arc over to http://127.0.0.1:7150")
        );
        let not_prev = status(LinkError::NotPrevious("not between".into()));
        assert_eq!(
            (not_prev.code(), not_prev.message()),
            (tonic::Code::FailedPrecondition, "not between")
        );
        let neighbours = Neighbours {
            prev: Member::new(Position(1), "http://a"),
            next: Member::new(Position(2), "http://b"),
        };
        let answer = dht::PreviousNeighbors::from(neighbours.clone());
        assert_eq!(answer.prev.map(Member::from), Some(neighbours.prev));
        assert_eq!(answer.next.map(Member::from), Some(neighbours.next));
    }

    #[test]
    fn a_range_ask_and_its_reply_cross_the_wire_unchanged() {
        let ask = RangeAsk {
            start: 5,
            end: u64::MAX,
            after_key: Some(b"k".to_vec()),
            prefix: b"p".to_vec(),
            limit: 7,
            values: true,
        };
        assert_eq!(RangeAsk::from(dht::ListRangeRequest::from(&ask)), ask);
        let key = b"pk".to_vec();
        let entry = Entry {
            position: key_position(&key),
            key,
            value: Some(b"v".to_vec()),
            version: Version { micros: 9, node: 3 },
            expires: None,
        };
        let reply = RangeReply {
            entries: vec![entry],
            covered_end: 77,
            more: true,
        };
        let back = range_reply_from_wire(reply.clone().into(), &Limits::default()).unwrap();
        assert_eq!(back, reply);
        // A peer's entry that fails the checks fails the reply.
        let mut bad = dht::ListRangeReply::from(reply);
        bad.entries[0].raw_key = Some(b"not the key at its position".to_vec());
        assert!(range_reply_from_wire(bad, &Limits::default()).is_err());
    }

    #[test]
    fn a_hint_that_is_no_member_names_no_one() {
        let hint = |bytes: &[u8]| {
            let mut status = Status::failed_precondition("not my arc");
            (status.metadata_mut()).insert_bin(TOWARDS_METADATA, MetadataValue::from_bytes(bytes));
            JoinRefusal::towards(&status)
        };
        // Not protobuf (a truncated varint), and a node without an address.
        assert_eq!(hint(&[0x08, 0xff]), None);
        assert_eq!(
            hint(
                &registry::Node {
                    id: 7,
                    addr: String::new()
                }
                .encode_to_vec()
            ),
            None
        );
        // The text form of earlier builds, under its old key, is not read.
        let mut status = Status::failed_precondition("not my arc");
        (status.metadata_mut()).insert(
            "crustyring-towards",
            "7@http://127.0.0.1:1".parse().unwrap(),
        );
        assert_eq!(JoinRefusal::towards(&status), None);
    }

    fn written(route: &RouteTaken) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        route.write_metadata(&mut metadata);
        metadata
    }

    #[test]
    fn a_route_reads_back_as_it_was_written_every_time() {
        let route = RouteTaken {
            hops: 1,
            owner: Some(Member::new(Position(0xab), "http://127.0.0.1:7001")),
        };
        // The second answer for the same owner takes the kept header values.
        for _ in 0..2 {
            let metadata = written(&route);
            assert_eq!(RouteTaken::read_metadata(&metadata), Some(route.clone()));
            assert_eq!(
                metadata.get(RouteTaken::OWNER_ID).unwrap(),
                "00000000000000ab"
            );
        }
        let other = RouteTaken {
            hops: 0,
            owner: Some(Member::new(Position(0xab), "http://127.0.0.1:7002")),
        };
        assert_eq!(RouteTaken::read_metadata(&written(&other)), Some(other));
    }

    #[test]
    fn an_owner_whose_address_is_no_header_value_is_named_by_id_alone() {
        let route = RouteTaken {
            hops: 2,
            owner: Some(Member::new(Position(7), "bad\naddress")),
        };
        let metadata = written(&route);
        assert!(metadata.get(RouteTaken::OWNER).is_none());
        assert_eq!(
            metadata.get(RouteTaken::OWNER_ID).unwrap(),
            "0000000000000007"
        );
        // Without the owner's address, the route reports no owner.
        assert_eq!(
            RouteTaken::read_metadata(&metadata),
            Some(RouteTaken {
                hops: 2,
                owner: None
            })
        );
    }

    #[test]
    fn more_owners_than_are_kept_are_all_named_rightly() {
        for n in 0..(OWNERS_KEPT as u64 * 2 + 3) {
            let route = RouteTaken {
                hops: 0,
                owner: Some(Member::new(Position(n), format!("http://10.0.0.1:{n}"))),
            };
            assert_eq!(RouteTaken::read_metadata(&written(&route)), Some(route));
        }
    }

    fn read(pairs: &[(&'static str, &str)]) -> Option<lease::Answer> {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.insert(*key, value.parse().expect("an ASCII value"));
        }
        lease::Answer::read_metadata(&metadata)
    }

    #[test]
    fn a_lease_answer_reads_back_as_written() {
        for answer in [
            lease::Answer::Granted,
            lease::Answer::After(Duration::from_millis(1_250)),
        ] {
            let mut metadata = MetadataMap::new();
            answer.write_metadata(&mut metadata);
            assert_eq!(lease::Answer::read_metadata(&metadata), Some(answer));
        }
    }

    #[test]
    fn a_wait_is_rounded_up_to_the_millisecond() {
        let mut metadata = MetadataMap::new();
        lease::Answer::After(Duration::from_micros(1_001)).write_metadata(&mut metadata);
        assert_eq!(
            lease::Answer::read_metadata(&metadata),
            Some(lease::Answer::After(Duration::from_millis(2)))
        );
    }

    #[test]
    fn a_wait_that_does_not_parse_or_is_absurd_is_ignored() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[(LEASE_AFTER_MS, "soon")]), None);
        assert_eq!(read(&[(LEASE_AFTER_MS, "-5")]), None);
        assert_eq!(read(&[(LEASE_AFTER_MS, "18446744073709551615")]), None);
        assert_eq!(read(&[(LEASE_AFTER_MS, "3600001")]), None);
        assert_eq!(
            read(&[(LEASE_AFTER_MS, "3600000")]),
            Some(lease::Answer::After(MAX_LEASE_AFTER))
        );
        assert_eq!(
            read(&[(LEASE_GRANTED, "1"), (LEASE_AFTER_MS, "5")]),
            Some(lease::Answer::Granted),
            "a grant is a grant"
        );
    }

    #[test]
    fn a_lease_is_asked_for_by_id_and_anything_else_asks_nothing() {
        let mut metadata = MetadataMap::new();
        ask_lease(&mut metadata, Position(u64::MAX));
        assert_eq!(lease_asked_for(&metadata), Some(Position(u64::MAX)));
        for bad in ["", "-1", "0x10", "18446744073709551616"] {
            metadata.insert(LEASE_FOR, bad.parse().unwrap());
            assert_eq!(lease_asked_for(&metadata), None, "{bad:?}");
        }
        assert_eq!(lease_asked_for(&MetadataMap::new()), None);
    }

    #[test]
    fn a_heartbeat_answer_grants_a_root_lease_or_reports_verdicts() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut metadata = MetadataMap::new();
            for (name, value) in pairs {
                metadata.insert(*name, MetadataValue::from_static(value));
            }
            root_answer(&metadata)
        };
        let (root, verdicts) = (crate::registry::ROOT_LEASE_MS, crate::registry::VERDICTS);
        assert_eq!(
            with(&[(root, "2000")]),
            Some(RootAnswer::Granted(Duration::from_secs(2)))
        );
        assert_eq!(with(&[(verdicts, "3")]), Some(RootAnswer::Dead(3)));
        assert_eq!(
            with(&[(root, "2000"), (verdicts, "3")]),
            Some(RootAnswer::Dead(3)),
            "a verdict wins"
        );
        assert_eq!(with(&[]), None, "a registry of an earlier version");
        for bad in ["", "x", "-1", "3600001", "99999999999999999999"] {
            assert_eq!(
                with(&[(root, bad)]),
                Some(RootAnswer::Unreadable),
                "{bad:?}"
            );
        }
        assert_eq!(with(&[(verdicts, "many")]), Some(RootAnswer::Unreadable));
        let request = heartbeat(&Member::new(Position(7), "http://n:1"), 4);
        let seen = request.metadata().get(crate::registry::VERDICTS_SEEN);
        assert_eq!(seen.and_then(|v| v.to_str().ok()), Some("4"));
        assert_eq!(request.get_ref().id, 7);
    }
}
