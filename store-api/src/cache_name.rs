//! [`CacheName`]: the validated name of a cache.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name_error::{NameError, NameErrorReason, NameKind};

/// The name of a cache, chosen by the builder: `opam-archives`, `c:/windows/cache`,
/// `/root/.cache/go-build`.
///
/// Unlike an [`Id`](crate::Id), a cache name may hold almost anything: any non-empty UTF-8
/// string of at most [`CacheName::MAX_LEN`] bytes without NUL. Names such as `-R`, `../x`,
/// `a/b`, `a@b`, `%`, names with spaces and non-ASCII names are all **valid**; a backend that
/// needs restricted names (a file name, a ZFS dataset name) must escape them so that
///
/// - two different names never share storage (the escaping is injective), and
/// - the real name can be recovered (listing shows real names);
///
/// and no cache name ever reaches a command line where it could be read as an option or as
/// another dataset.
///
/// Rejected: the empty string, strings longer than [`CacheName::MAX_LEN`] bytes, and strings
/// containing NUL (which no path, argument vector or ZFS property can carry).
///
/// ```
/// use store_api::CacheName;
///
/// let name: CacheName = "c:/windows/cache".parse()?;
/// assert_eq!(name.as_str(), "c:/windows/cache");
/// assert!(CacheName::new("").is_err());
/// # Ok::<(), store_api::NameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheName(String);

impl CacheName {
    /// The longest cache name accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `s` and wraps it.
    ///
    /// # Errors
    /// A [`NameError`] if `s` is empty, longer than [`CacheName::MAX_LEN`] bytes, or contains NUL.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        let err = |reason| Err(NameError::new(NameKind::CacheName, &s, reason));
        if s.is_empty() {
            return err(NameErrorReason::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return err(NameErrorReason::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(offset) = s.find('\0') {
            return err(NameErrorReason::ForbiddenChar { c: '\0', offset });
        }
        Ok(Self(s))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name, returning the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for CacheName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for CacheName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for CacheName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for CacheName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheName({:?})", self.0)
    }
}

impl Serialize for CacheName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CacheName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_that_backends_must_escape() {
        for ok in [
            "opam-archives",
            "c:/windows/cache",
            "-R",
            "../x",
            "a/b",
            "a@b",
            "%",
            "%20",
            "a b",
            " leading space",
            "tab\there",
            "new\nline",
            "pool/other",
            "..",
            "café",
            "キャッシュ",
        ] {
            let name = CacheName::new(ok).expect(ok);
            assert_eq!(name.as_str(), ok, "a cache name is kept exactly as given");
        }
        assert!(CacheName::new("x".repeat(CacheName::MAX_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty() {
        let msg = CacheName::new("").expect_err("empty").to_string();
        assert!(msg.contains("cache name") && msg.contains("empty"), "{msg}");
    }

    #[test]
    fn rejects_nul() {
        let msg = CacheName::new("a\0b").expect_err("NUL").to_string();
        assert!(msg.contains("'\\0' at byte 1"), "{msg}");
    }

    #[test]
    fn rejects_huge_input() {
        let err = CacheName::new("é".repeat(5 * 1024)).expect_err("10 KB");
        let msg = err.to_string();
        assert!(msg.contains("10240 bytes"), "{msg}");
        assert!(
            msg.contains(&format!("at most {}", CacheName::MAX_LEN)),
            "{msg}"
        );
        assert!(msg.len() < 300, "{msg}");
        assert!(CacheName::new("x".repeat(CacheName::MAX_LEN + 1)).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let name = CacheName::new("a b/c").expect("valid");
        let json = serde_json::to_string(&name).expect("serialize");
        let back: CacheName = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, name);
        assert!(serde_json::from_str::<CacheName>("\"\"").is_err());
    }
}
