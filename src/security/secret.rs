//! Shared secrets (the cluster secret, the client token): checked when loaded so
//! that they can travel as HTTP/2 header values, never printed, and compared in
//! time that does not depend on where a guess first differs.

use axum::http::HeaderValue;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A secret: 16 to 4096 visible ASCII characters (so it fits in a header and
/// is not trivially guessed). Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

/// Why a secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is too short to resist guessing.
    #[error("the {what} is {len} characters long; it must be at least {min}")]
    TooShort {
        /// Which secret.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
    /// The secret is too long to travel as a header.
    #[error("the {what} is {len} characters long; it may be at most {max}")]
    TooLong {
        /// Which secret.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// The secret holds a character a header may not.
    #[error("the {what} may hold only visible ASCII characters (no spaces or control characters)")]
    BadCharacter {
        /// Which secret.
        what: &'static str,
    },
    /// The secret's file could not be read.
    #[error("could not read the {what} from {path}: {reason}")]
    Unreadable {
        /// Which secret.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Secret {
    /// The shortest secret accepted.
    pub const MIN_LEN: usize = 16;
    /// The longest secret accepted.
    pub const MAX_LEN: usize = 4096;

    /// `value` as the secret called `what` (named in errors), checked.
    pub fn new(what: &'static str, value: &str) -> Result<Self, SecretError> {
        let len = value.len();
        if len < Self::MIN_LEN {
            return Err(SecretError::TooShort {
                what,
                len,
                min: Self::MIN_LEN,
            });
        }
        if len > Self::MAX_LEN {
            return Err(SecretError::TooLong {
                what,
                len,
                max: Self::MAX_LEN,
            });
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::BadCharacter { what });
        }
        Ok(Self(value.into()))
    }

    /// The secret called `what` from the file at `path`, without the line
    /// break (or other white space) that editors leave around it.
    pub fn from_file(what: &'static str, path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::new(what, text.trim())
    }

    /// The secret given by value or by file (a flag pair), if either is.
    pub fn from_value_or_file(
        what: &'static str,
        value: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, SecretError> {
        match (value, file) {
            (Some(v), _) => Self::new(what, v).map(Some),
            (None, Some(path)) => Self::from_file(what, path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether `presented` is this secret. Both sides are hashed first, so the
    /// comparison takes the same time whatever and however long the guess is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented);
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// The secret as a header value, marked sensitive: HTTP/2 never adds it to
    /// a connection's header table, and `Debug` of the header hides it.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&self.0).expect("checked to be visible ASCII");
        value.set_sensitive(true);
        value
    }

    /// The secret after `prefix` (e.g. `Bearer `) as a sensitive header value.
    pub fn header_value_after(&self, prefix: &str) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.0))
            .expect("checked to be visible ASCII");
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_must_be_long_enough_and_fit_in_a_header() {
        assert!(Secret::new("cluster secret", "0123456789abcdef").is_ok());
        assert!(matches!(
            Secret::new("cluster secret", "short"),
            Err(SecretError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            Secret::new("client token", "with a space in it"),
            Err(SecretError::BadCharacter { .. })
        ));
        assert!(matches!(
            Secret::new("client token", &"x".repeat(4097)),
            Err(SecretError::TooLong { .. })
        ));
        let e = Secret::new("client token", "short")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client token") && e.contains("16"), "{e}");
    }

    #[test]
    fn only_the_secret_itself_matches() {
        let s = Secret::new("cluster secret", "0123456789abcdef").unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeF"));
        assert!(!s.matches(b"0123456789abcdef0"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::new("cluster secret", "0123456789abcdef").unwrap();
        assert!(!format!("{s:?}").contains("0123"));
        assert!(s.header_value().is_sensitive());
        assert_eq!(s.header_value_after("Bearer "), "Bearer 0123456789abcdef");
    }

    #[test]
    fn a_file_secret_loses_its_line_break() {
        let path = std::env::temp_dir().join(format!("crustyring-secret-{}", std::process::id()));
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let s = Secret::from_file("cluster secret", &path).unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        std::fs::remove_file(&path).unwrap();
        let e = Secret::from_file("cluster secret", &path).unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }));
    }
}
