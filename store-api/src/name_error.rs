//! [`NameError`]: why a string is not a valid [`Id`](crate::Id), [`CacheName`](crate::CacheName)
//! or [`User`](crate::User).

use std::fmt;

/// Which kind of name was being parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A build id ([`Id`](crate::Id)).
    Id,
    /// A cache name ([`CacheName`](crate::CacheName)).
    CacheName,
    /// A user ([`User`](crate::User)), written `uid:gid`.
    User,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Id => "build id",
            NameKind::CacheName => "cache name",
            NameKind::User => "user",
        })
    }
}

/// What is wrong with a rejected name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameErrorReason {
    /// The string is empty.
    Empty,
    /// The string is longer than the kind allows.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum allowed, in bytes.
        max: usize,
    },
    /// A character that the kind never allows, at this byte offset.
    ForbiddenChar {
        /// The character.
        c: char,
        /// Its byte offset in the input.
        offset: usize,
    },
    /// A character that is allowed, but not as the first one.
    ForbiddenFirstChar {
        /// The character.
        c: char,
    },
    /// A user string that is not `uid:gid` with two decimal numbers below 2³²−1.
    BadUser {
        /// What part is wrong.
        detail: &'static str,
    },
}

impl fmt::Display for NameErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameErrorReason::Empty => f.write_str("it is empty"),
            NameErrorReason::TooLong { len, max } => {
                write!(f, "it is {len} bytes long, at most {max} are allowed")
            }
            NameErrorReason::ForbiddenChar { c, offset } => write!(
                f,
                "it contains '{}' at byte {offset}, which is not allowed",
                c.escape_debug()
            ),
            NameErrorReason::ForbiddenFirstChar { c } => {
                write!(f, "it must not start with '{}'", c.escape_debug())
            }
            NameErrorReason::BadUser { detail } => f.write_str(detail),
        }
    }
}

/// A string was rejected as an [`Id`](crate::Id), [`CacheName`](crate::CacheName) or
/// [`User`](crate::User).
///
/// The message names the kind, shows the start of the input (escaped, at most
/// [`NameError::PREVIEW_CHARS`] characters, so a 10 KB input does not flood a log) and says what
/// is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {preview}: {reason}{hint}", hint = self.hint())]
pub struct NameError {
    kind: NameKind,
    preview: String,
    reason: NameErrorReason,
}

impl NameError {
    /// How many characters of the rejected input the message shows.
    pub const PREVIEW_CHARS: usize = 40;

    pub(crate) fn new(kind: NameKind, input: &str, reason: NameErrorReason) -> Self {
        let mut preview = String::from("\"");
        for c in input.chars().take(Self::PREVIEW_CHARS) {
            preview.extend(c.escape_debug());
        }
        if input.chars().nth(Self::PREVIEW_CHARS).is_some() {
            preview.push_str("\"…");
        } else {
            preview.push('"');
        }
        Self {
            kind,
            preview,
            reason,
        }
    }

    /// The kind of name that was being parsed.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &NameErrorReason {
        &self.reason
    }

    fn hint(&self) -> &'static str {
        match (self.kind, &self.reason) {
            (NameKind::Id, NameErrorReason::ForbiddenChar { .. }) => {
                " (allowed: ASCII letters, digits, '-', '_', '.')"
            }
            _ => "",
        }
    }
}
