//! [`StoreSpec`]: which backend to open, as a builder's configuration names it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A store chosen in configuration, written `scheme:location`.
///
/// | text | meaning |
/// |---|---|
/// | `zfs:tank` | the ZFS pool `tank` mounted at `/tank` |
/// | `zfs:/mnt/tank` | the pool `tank` mounted at `/mnt/tank` |
/// | `zfs:tank/zstore` | the dataset `tank/zstore` (a store below the pool root) |
/// | `fake:` | the in-process fake, in a fresh temporary directory |
/// | `fake:/var/tmp/fake-store` | the fake, rooted at that directory |
/// | `btrfs:/srv/store` (any other scheme) | [`StoreSpec::Other`], for third-party backends |
///
/// This crate only parses the text; opening the store is the backend crate's job. The text form
/// is used by `FromStr`, `Display` and serde, so a spec can sit in a TOML or JSON config file.
///
/// ```
/// use store_api::StoreSpec;
///
/// let spec: StoreSpec = "zfs:tank/zstore".parse()?;
/// assert_eq!(spec, StoreSpec::Zfs { location: "tank/zstore".into() });
/// assert_eq!(spec.to_string(), "zfs:tank/zstore");
/// # Ok::<(), store_api::StoreSpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreSpec {
    /// A ZFS store: a pool name (`tank`), a mount path (`/tank`) or a dataset (`tank/zstore`).
    Zfs {
        /// What followed `zfs:`; never empty.
        location: String,
    },
    /// The in-process fake (`store-fake`), in a temporary directory or at the given root.
    Fake {
        /// The root directory, or `None` for a fresh temporary directory.
        root: Option<PathBuf>,
    },
    /// A backend this crate does not know; its crate interprets `location`.
    Other {
        /// The part before the first `:`: lower-case ASCII letters, digits and `-`.
        scheme: String,
        /// The part after the first `:`.
        location: String,
    },
}

/// Why a string is not a valid [`StoreSpec`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreSpecError {
    /// There is no `:` separating scheme and location.
    #[error(
        "invalid store spec {0:?}: expected \"scheme:location\", e.g. \"zfs:tank\" or \"fake:\""
    )]
    MissingScheme(String),
    /// The scheme is empty or has characters other than lower-case letters, digits and `-`.
    #[error("invalid store spec {0:?}: the scheme must be lower-case letters, digits and '-'")]
    BadScheme(String),
    /// `zfs:` needs a pool, a mount path or a dataset.
    #[error("invalid store spec {0:?}: \"zfs:\" needs a pool, e.g. \"zfs:tank\"")]
    MissingLocation(String),
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, location) = s
            .split_once(':')
            .ok_or_else(|| StoreSpecError::MissingScheme(s.to_owned()))?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StoreSpecError::BadScheme(s.to_owned()));
        }
        Ok(match scheme {
            "zfs" if location.is_empty() => {
                return Err(StoreSpecError::MissingLocation(s.to_owned()));
            }
            "zfs" => StoreSpec::Zfs {
                location: location.to_owned(),
            },
            "fake" => StoreSpec::Fake {
                root: (!location.is_empty()).then(|| PathBuf::from(location)),
            },
            _ => StoreSpec::Other {
                scheme: scheme.to_owned(),
                location: location.to_owned(),
            },
        })
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Zfs { location } => write!(f, "zfs:{location}"),
            StoreSpec::Fake { root: None } => f.write_str("fake:"),
            StoreSpec::Fake { root: Some(root) } => write!(f, "fake:{}", root.display()),
            StoreSpec::Other { scheme, location } => write!(f, "{scheme}:{location}"),
        }
    }
}

impl Serialize for StoreSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StoreSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_schemes() {
        let cases = [
            (
                "zfs:tank",
                StoreSpec::Zfs {
                    location: "tank".into(),
                },
            ),
            (
                "zfs:/tank",
                StoreSpec::Zfs {
                    location: "/tank".into(),
                },
            ),
            (
                "zfs:tank/zstore",
                StoreSpec::Zfs {
                    location: "tank/zstore".into(),
                },
            ),
            ("fake:", StoreSpec::Fake { root: None }),
            (
                "fake:/tmp/x",
                StoreSpec::Fake {
                    root: Some("/tmp/x".into()),
                },
            ),
            (
                "btrfs:/srv/a:b",
                StoreSpec::Other {
                    scheme: "btrfs".into(),
                    location: "/srv/a:b".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            let spec: StoreSpec = text.parse().expect(text);
            assert_eq!(spec, expected, "{text}");
            assert_eq!(spec.to_string(), text, "Display inverts FromStr");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "tank".parse::<StoreSpec>(),
            Err(StoreSpecError::MissingScheme(_))
        ));
        assert!(matches!(
            ":tank".parse::<StoreSpec>(),
            Err(StoreSpecError::BadScheme(_))
        ));
        assert!(matches!(
            "ZFS:tank".parse::<StoreSpec>(),
            Err(StoreSpecError::BadScheme(_))
        ));
        assert!(matches!(
            "zfs:".parse::<StoreSpec>(),
            Err(StoreSpecError::MissingLocation(_))
        ));
    }

    #[test]
    fn serde_uses_text_form() {
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            store: StoreSpec,
        }
        let c: Config = serde_json::from_str(r#"{"store":"zfs:tank"}"#).expect("valid");
        assert_eq!(
            c.store,
            StoreSpec::Zfs {
                location: "tank".into()
            }
        );
        let bad = serde_json::from_str::<Config>(r#"{"store":"tank"}"#);
        assert!(
            bad.expect_err("no scheme")
                .to_string()
                .contains("scheme:location")
        );
    }
}
