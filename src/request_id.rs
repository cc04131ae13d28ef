//! Request IDs (`x-request-id`): one per client request, taken from the client
//! when it sends one, made up otherwise; carried on every forward and replica
//! write the request causes, echoed in the answer, and logged with its route, so
//! that one request can be followed through the logs of every node it touched.

use crate::metrics::{Interface, Op};
use axum::http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where this process's generated IDs start: a random value.
static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

thread_local! {
    /// The next ID's number on this thread, when a simulation numbers them
    /// ([`RequestId::number_this_thread`]): the process's count otherwise.
    static THREAD_NEXT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// A request's ID: 1 to [`RequestId::MAX_LEN`] visible ASCII characters, no
/// commas (a replica write carries the IDs of its batch as a comma-separated
/// list). Held as the header value it travels as: a client's shares its
/// request's header bytes, and echoing it copies nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

/// Why a client's request ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequestId {
    /// The ID is empty.
    #[error("the x-request-id header is empty")]
    Empty,
    /// The ID is too long.
    #[error("the x-request-id header is {0} bytes long; the limit is 128")]
    TooLong(usize),
    /// The ID holds a character it may not.
    #[error("the x-request-id header may hold only visible ASCII characters other than a comma")]
    BadCharacter,
}

impl RequestId {
    /// The header (and gRPC metadata key) an ID travels under.
    pub const HEADER: &'static str = "x-request-id";
    /// [`RequestId::HEADER`] as a header name, parsed once (a `&str` name is
    /// parsed and validated on every use).
    pub const HEADER_NAME: axum::http::HeaderName =
        axum::http::HeaderName::from_static(Self::HEADER);
    /// The longest ID accepted, in bytes.
    pub const MAX_LEN: usize = 128;
    /// How many IDs a replica write names at most: a batch of more writes
    /// names its first ones and how many more it carried.
    pub const MAX_LISTED: usize = 32;

    /// A client's ID, checked.
    pub fn parse(id: &str) -> Result<Self, BadRequestId> {
        Self::check(id.as_bytes())?;
        HeaderValue::from_str(id)
            .map(Self)
            .map_err(|_| BadRequestId::BadCharacter)
    }

    fn check(id: &[u8]) -> Result<(), BadRequestId> {
        if id.is_empty() {
            return Err(BadRequestId::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(BadRequestId::TooLong(id.len()));
        }
        if !id.iter().all(|b| b.is_ascii_graphic() && *b != b',') {
            return Err(BadRequestId::BadCharacter);
        }
        Ok(())
    }

    /// Numbers the IDs generated on this thread from now on 0, 1, 2, ...
    /// (before the multiplier below), apart from the process's count: for a
    /// simulation, which runs every host of one run on one thread, so that a
    /// run replays exactly (an ID's digits set the size of the headers that
    /// carry it) even while other runs generate IDs in the same process. IDs
    /// so numbered are unique only among themselves.
    pub fn number_this_thread() {
        THREAD_NEXT.set(Some(0));
    }

    /// A new ID, unique within this process and, with a random start per
    /// process, very likely across processes: 16 hex digits.
    pub fn generate() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let numbered = THREAD_NEXT.with(|next| {
            let n = next.get()?;
            next.set(Some(n.wrapping_add(1)));
            Some(n)
        });
        let (start, n) = match numbered {
            Some(n) => (0, n),
            None => {
                let start = *START.get_or_init(|| {
                    use std::hash::{BuildHasher, Hasher};
                    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                    h.write_u32(std::process::id());
                    h.finish()
                });
                (start, NEXT.fetch_add(1, Ordering::Relaxed))
            }
        };
        // An odd multiplier is a bijection: consecutive IDs do not look alike.
        let id = start.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits: [u8; 16] = std::array::from_fn(|i| HEX[((id >> (60 - 4 * i)) & 0xf) as usize]);
        Self(HeaderValue::from_bytes(&digits).expect("hex digits make a header value"))
    }

    /// The client's ID if it sent one (checked), else a new one.
    pub fn from_header(value: Option<&HeaderValue>) -> Result<Self, BadRequestId> {
        match value {
            None => Ok(Self::generate()),
            Some(v) => {
                Self::check(v.as_bytes())?;
                Ok(Self(v.clone()))
            }
        }
    }

    /// The ID a peer sent as text (a query's in a `ForwardBatch`), checked
    /// as a header's is, or a new one if it sent none.
    pub fn from_text(text: Option<&str>) -> Result<Self, BadRequestId> {
        let Some(text) = text else {
            return Ok(Self::generate());
        };
        Self::check(text.as_bytes())?;
        // Visible ASCII, checked: a valid header value.
        let value = HeaderValue::from_str(text).map_err(|_| BadRequestId::BadCharacter)?;
        Ok(Self(value))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        // Checked to be visible ASCII when made.
        self.0.to_str().unwrap_or_default()
    }

    /// The ID as a header value, marked never to be indexed by HPACK: every
    /// ID is new, so adding each to an HTTP/2 connection's header table only
    /// evicts the entries worth keeping, and the encoder compared each answer's
    /// ID with every one already in the table (8% of a node's time under load).
    pub fn header_value(&self) -> HeaderValue {
        Self::never_indexed(self.0.clone())
    }

    /// `value` marked never to be indexed by HPACK (see
    /// [`RequestId::header_value`]); for the lists a replica write carries.
    pub fn never_indexed(mut value: HeaderValue) -> HeaderValue {
        value.set_sensitive(true);
        value
    }

    /// The IDs of a batch as one header value: comma-separated, at most
    /// [`RequestId::MAX_LISTED`] of them, then `+N` for the N not listed.
    pub fn list<'a>(ids: impl ExactSizeIterator<Item = &'a RequestId>) -> String {
        let total = ids.len();
        let mut out: Vec<&str> = ids.take(Self::MAX_LISTED).map(RequestId::as_str).collect();
        let more = total - out.len();
        let tail = format!("+{more}");
        if more > 0 {
            out.push(&tail);
        }
        out.join(",")
    }
}

/// Logs an answered request with its ID and route: at `debug` (every request,
/// with `RUST_LOG=crustyring=debug`), or at `info` when the node failed it
/// (unavailable, timed out, internal), so failures show at the default level.
pub fn log_request(
    id: &RequestId,
    operation: Op,
    interface: Interface,
    outcome: &'static str,
    elapsed: Duration,
    hops: Option<u32>,
    owner: Option<&str>,
) {
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                $level,
                request_id = %id,
                operation = operation.label(),
                interface = interface.label(),
                outcome,
                hops,
                owner,
                elapsed_us = elapsed.as_micros() as u64,
                "answered"
            )
        };
    }
    match outcome {
        "ok" | "not_found" | "invalid_argument" | "failed_precondition" => {
            at!(tracing::Level::DEBUG)
        }
        _ => at!(tracing::Level::INFO),
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulation numbers its thread's IDs from 0, again at each run,
    /// whatever other threads generate meanwhile; other threads keep the
    /// process's count.
    #[test]
    fn ids_numbered_on_a_thread_start_again_and_leave_other_threads_alone() {
        let numbered = || {
            RequestId::number_this_thread();
            let ids: Vec<String> = (0..3)
                .map(|_| RequestId::generate().as_str().to_string())
                .collect();
            ids
        };
        let first = numbered();
        assert_eq!(first[0], "0000000000000000");
        assert_eq!(first[1], "9e3779b97f4a7c15");
        let elsewhere = std::thread::spawn(|| RequestId::generate().as_str().to_string())
            .join()
            .unwrap();
        assert!(!first.contains(&elsewhere), "{elsewhere} is in {first:?}");
        assert_eq!(numbered(), first);
    }

    /// A forwarded query's ID arrives as text in a peer's message: checked
    /// as a header is, and made up if absent.
    #[test]
    fn an_id_sent_as_text_is_checked_like_a_header() {
        assert_eq!(
            RequestId::from_text(Some("abc-1")).unwrap().as_str(),
            "abc-1"
        );
        assert_eq!(RequestId::from_text(None).unwrap().as_str().len(), 16);
        assert_eq!(RequestId::from_text(Some("")), Err(BadRequestId::Empty));
        assert_eq!(
            RequestId::from_text(Some("a b")),
            Err(BadRequestId::BadCharacter)
        );
        assert_eq!(
            RequestId::from_text(Some("é")),
            Err(BadRequestId::BadCharacter)
        );
        let long = "x".repeat(200);
        assert_eq!(
            RequestId::from_text(Some(&long)),
            Err(BadRequestId::TooLong(200))
        );
    }

    #[test]
    fn a_client_id_is_kept_when_it_is_printable_and_short() {
        assert_eq!(
            RequestId::parse("abc-123_x.y").unwrap().as_str(),
            "abc-123_x.y"
        );
        assert_eq!(RequestId::parse(""), Err(BadRequestId::Empty));
        assert_eq!(
            RequestId::parse(&"a".repeat(129)),
            Err(BadRequestId::TooLong(129))
        );
        assert_eq!(RequestId::parse("a b"), Err(BadRequestId::BadCharacter));
        assert_eq!(RequestId::parse("a,b"), Err(BadRequestId::BadCharacter));
        let bad = HeaderValue::from_bytes(&[0xff, 0x41]).unwrap();
        assert_eq!(
            RequestId::from_header(Some(&bad)),
            Err(BadRequestId::BadCharacter)
        );
    }

    #[test]
    fn generated_ids_differ_and_parse() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(RequestId::parse(a.as_str()), Ok(a));
        assert!(RequestId::from_header(None).is_ok());
    }

    #[test]
    fn ids_travel_as_headers_that_http2_never_indexes() {
        let id = RequestId::generate();
        assert!(id.header_value().is_sensitive());
        let client = RequestId::from_header(Some(&HeaderValue::from_static("abc"))).unwrap();
        assert!(client.header_value().is_sensitive());
        assert_eq!(client.header_value(), "abc");
    }

    #[test]
    fn a_batch_lists_its_first_ids_and_counts_the_rest() {
        let ids: Vec<RequestId> = (0..40)
            .map(|i| RequestId::parse(&format!("r{i}")).unwrap())
            .collect();
        assert_eq!(RequestId::list(ids[..2].iter()), "r0,r1");
        let listed = RequestId::list(ids.iter());
        assert!(listed.starts_with("r0,r1,"));
        assert!(listed.ends_with(",r31,+8"), "{listed}");
    }
}
