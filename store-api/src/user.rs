//! [`User`]: the owner given to a new cache.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name_error::{NameError, NameErrorReason, NameKind};

/// A numeric Unix user and group: the owner of a new cache's top directory.
///
/// `u32::MAX` is rejected for both ids, because `chown(2)` reads it as "leave unchanged".
/// The text form is `uid:gid` (`"1000:1000"`), used by `FromStr`, `Display` and serde.
///
/// ```
/// use store_api::User;
///
/// let user: User = "1000:100".parse()?;
/// assert_eq!((user.uid(), user.gid()), (1000, 100));
/// assert!("root".parse::<User>().is_err());
/// # Ok::<(), store_api::NameError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct User {
    uid: u32,
    gid: u32,
}

impl User {
    /// `root:root` (0:0).
    pub const ROOT: User = User { uid: 0, gid: 0 };

    /// Validates and wraps a uid and gid.
    ///
    /// # Errors
    /// A [`NameError`] if either is `u32::MAX`.
    pub fn new(uid: u32, gid: u32) -> Result<Self, NameError> {
        if uid == u32::MAX || gid == u32::MAX {
            return Err(NameError::new(
                NameKind::User,
                &format!("{uid}:{gid}"),
                NameErrorReason::BadUser {
                    detail: "4294967295 means \"no change\" to chown and cannot own a cache",
                },
            ));
        }
        Ok(Self { uid, gid })
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }
}

impl FromStr for User {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail| NameError::new(NameKind::User, s, NameErrorReason::BadUser { detail });
        let (uid, gid) = s
            .split_once(':')
            .ok_or_else(|| bad("expected \"uid:gid\", e.g. \"1000:1000\""))?;
        let number = |part: &str, what| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(what));
            }
            part.parse::<u32>().map_err(|_| bad(what))
        };
        let uid = number(uid, "the uid is not a decimal number below 4294967296")?;
        let gid = number(gid, "the gid is not a decimal number below 4294967296")?;
        Self::new(uid, gid)
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl Serialize for User {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uid_gid() {
        let u: User = "123:456".parse().expect("valid");
        assert_eq!((u.uid(), u.gid()), (123, 456));
        assert_eq!(u.to_string(), "123:456");
    }

    #[test]
    fn rejects_malformed() {
        for (input, expect) in [
            ("", "uid:gid"),
            ("root", "uid:gid"),
            ("1000", "uid:gid"),
            (":1", "uid"),
            ("1:", "gid"),
            ("-1:0", "uid"),
            ("+1:0", "uid"),
            ("1:0x10", "gid"),
            ("99999999999:0", "uid"),
            ("4294967295:0", "no change"),
        ] {
            let msg = input.parse::<User>().expect_err(input).to_string();
            assert!(msg.contains(expect), "{input:?}: {msg}");
            assert!(msg.starts_with("invalid user"), "{msg}");
        }
    }
}
