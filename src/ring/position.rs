//! Ring positions and the hashing rules that place keys and nodes on the ring.

use sha2::{Digest, Sha256};
use std::fmt;

/// A point on the ring: `0 ..= 2^64-1`, wrapping from `u64::MAX` back to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Clockwise distance from `self` to `to`: how far one walks in the direction of
    /// increasing IDs, wrapping past `u64::MAX`.
    pub fn distance_to(self, to: Position) -> u64 {
        to.0.wrapping_sub(self.0)
    }

    /// The position as 16 lower-case hex digits.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// First 8 bytes, big-endian, of SHA-256 of `bytes`.
fn sha256_prefix(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

/// The position of a key: SHA-256 of the key's bytes, first 8 bytes big-endian.
pub fn key_position(key: &[u8]) -> Position {
    Position(sha256_prefix(key))
}

/// The ID of a node: SHA-256 of its address, a salt and an attempt counter (bumped
/// by the registry only if two addresses ever collide).
pub fn node_position(addr: &str, salt: &str, attempt: u32) -> Position {
    let mut input = Vec::with_capacity(addr.len() + salt.len() + 5);
    input.extend_from_slice(addr.as_bytes());
    input.push(0);
    input.extend_from_slice(salt.as_bytes());
    if attempt > 0 {
        input.extend_from_slice(&attempt.to_be_bytes());
    }
    Position(sha256_prefix(&input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_position_is_the_big_endian_sha256_prefix() {
        // SHA-256("1") = 6b86b273ff34fce1...
        assert_eq!(key_position(b"1"), Position(0x6b86b273ff34fce1));
    }

    #[test]
    fn distance_wraps_past_the_top() {
        assert_eq!(Position(u64::MAX).distance_to(Position(0)), 1);
        assert_eq!(Position(5).distance_to(Position(5)), 0);
        assert_eq!(Position(6).distance_to(Position(5)), u64::MAX);
    }

    #[test]
    fn node_ids_depend_on_address_and_salt() {
        let a = node_position("http://127.0.0.1:50001", "s", 0);
        assert_eq!(a, node_position("http://127.0.0.1:50001", "s", 0));
        assert_ne!(a, node_position("http://127.0.0.1:50002", "s", 0));
        assert_ne!(a, node_position("http://127.0.0.1:50001", "t", 0));
        assert_ne!(a, node_position("http://127.0.0.1:50001", "s", 1));
    }
}
