//! [`Id`]: the validated key of a build result.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name_error::{NameError, NameErrorReason, NameKind};

/// The key of a build result, chosen by the builder (in practice a hex digest).
///
/// An `Id` is validated when it is made, so every `Id` a store receives is safe to use as a
/// file name, a ZFS dataset name component, or a command-line argument:
///
/// - non-empty, at most [`Id::MAX_LEN`] bytes;
/// - only ASCII letters, digits, `-`, `_` and `.`;
/// - not starting with `-` (it could be read as an option) or `.` (`.`, `..` and hidden names).
///
/// Anything else is rejected with a [`NameError`] that says what is wrong; parsing never panics.
///
/// ```
/// use store_api::Id;
///
/// let id: Id = "3f2a9c".parse()?;
/// assert_eq!(id.as_str(), "3f2a9c");
///
/// let err = Id::new("../etc").unwrap_err();
/// assert!(err.to_string().contains("'/' at byte 2"), "{err}");
/// let err = Id::new(".hidden").unwrap_err();
/// assert!(err.to_string().contains("must not start with '.'"), "{err}");
/// # Ok::<(), store_api::NameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    /// The longest id accepted, in bytes: a SHA-256 hex digest. Kept small so that
    /// `<pool>/<dataset>/result/<id>@<snapshot>` stays well inside ZFS's 255-byte name limit.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` and wraps it.
    ///
    /// # Errors
    /// A [`NameError`] naming the first problem found (empty, too long, a forbidden character
    /// and its position, or a forbidden first character).
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        validate(&s)?;
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id, returning the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate(s: &str) -> Result<(), NameError> {
    let err = |reason| Err(NameError::new(NameKind::Id, s, reason));
    if s.is_empty() {
        return err(NameErrorReason::Empty);
    }
    if s.len() > Id::MAX_LEN {
        return err(NameErrorReason::TooLong {
            len: s.len(),
            max: Id::MAX_LEN,
        });
    }
    if let Some((offset, c)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return err(NameErrorReason::ForbiddenChar { c, offset });
    }
    match s.as_bytes()[0] {
        b'-' | b'.' => err(NameErrorReason::ForbiddenFirstChar {
            c: char::from(s.as_bytes()[0]),
        }),
        _ => Ok(()),
    }
}

impl FromStr for Id {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Id {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Id {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({:?})", self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(input: &str, expect_in_message: &str) {
        let err = Id::new(input).expect_err(input);
        let msg = err.to_string();
        assert!(
            msg.contains(expect_in_message),
            "error for {input:?} should mention {expect_in_message:?}, got: {msg}"
        );
        assert_eq!(err.kind(), NameKind::Id);
    }

    #[test]
    fn accepts_digests_and_simple_names() {
        for ok in [
            "a",
            "base",
            "sub-1",
            "a_b.c",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(Id::new(ok).expect(ok).as_str(), ok);
        }
        let longest = "a".repeat(Id::MAX_LEN);
        assert!(Id::new(longest).is_ok());
    }

    #[test]
    fn rejects_empty() {
        rejected("", "empty");
    }

    #[test]
    fn rejects_option_lookalikes() {
        rejected("-R", "must not start with '-'");
        rejected("--", "must not start with '-'");
    }

    #[test]
    fn rejects_path_traversal_and_separators() {
        rejected("../x", "'/' at byte 2");
        rejected("..", "must not start with '.'");
        rejected(".hidden", "must not start with '.'");
        rejected("a/b", "'/' at byte 1");
    }

    #[test]
    fn rejects_zfs_specials() {
        rejected("a@b", "'@' at byte 1");
        rejected("%", "'%' at byte 0");
        rejected("a#b", "'#' at byte 1");
        rejected("pool/other", "'/' at byte 4");
    }

    #[test]
    fn rejects_control_and_whitespace() {
        rejected("a\0b", "'\\0' at byte 1");
        rejected(" a", "' ' at byte 0");
        rejected("a b", "' ' at byte 1");
        rejected("a\tb", "'\\t' at byte 1");
        rejected("a\n", "'\\n' at byte 1");
    }

    #[test]
    fn rejects_huge_input_without_echoing_it_all() {
        let huge = "a".repeat(10 * 1024);
        let err = Id::new(huge).expect_err("10 KB id");
        let msg = err.to_string();
        assert!(msg.contains("10240 bytes"), "{msg}");
        assert!(msg.contains(&format!("at most {}", Id::MAX_LEN)), "{msg}");
        assert!(
            msg.len() < 300,
            "error message should be short: {} bytes",
            msg.len()
        );
    }

    #[test]
    fn rejects_non_ascii() {
        rejected("café", "'é' at byte 3");
        rejected("ид", "'и' at byte 0");
    }

    #[test]
    fn serde_round_trip_validates() {
        let id = Id::new("abc").expect("valid");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, "\"abc\"");
        let back: Id = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
        let bad: Result<Id, _> = serde_json::from_str("\"a/b\"");
        let msg = bad.expect_err("a/b must not deserialize").to_string();
        assert!(msg.contains("'/'"), "{msg}");
    }
}
