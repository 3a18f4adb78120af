//! Pool names and sizes, validated before they reach a command line.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Result, XtaskError};

/// Default prefix of generated pool names; `ZSTORE_POOL_PREFIX` or `--prefix` override it.
pub const DEFAULT_PREFIX: &str = "zstore-";

/// A ZFS pool name that is safe on every command line: starts with a letter, then letters,
/// digits, `_`, `-`, `.`; at most 64 bytes; not a vdev keyword ZFS reserves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| XtaskError::Invalid(format!("invalid pool name {name:?}: {why}"));
        let first = name.chars().next().ok_or_else(|| bad("empty"))?;
        if !first.is_ascii_alphabetic() {
            return Err(bad("must start with a letter"));
        }
        if name.len() > 64 {
            return Err(bad("longer than 64 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(bad("only letters, digits, '_', '-' and '.' are allowed"));
        }
        let reserved = [
            "mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup",
        ];
        if reserved.iter().any(|r| name.starts_with(r))
            || (name.starts_with('c') && name[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(bad("reserved by ZFS (vdev keyword or c<digit>)"));
        }
        Ok(PoolName(name.to_owned()))
    }

    /// A fresh name: `prefix` plus 8 hex digits from the pid, the clock and a counter. Callers
    /// still check that it is unused.
    pub fn unique(prefix: &str, attempt: u32) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(std::process::id().to_le_bytes());
        h.update(nanos.to_le_bytes());
        h.update(attempt.to_le_bytes());
        let digest = h.finalize();
        let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        PoolName::new(&format!("{prefix}{suffix}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PoolName {
    type Err = XtaskError;
    fn from_str(s: &str) -> Result<Self> {
        PoolName::new(s)
    }
}

/// Parses a size such as `2G`, `512M`, `1T` or a plain byte count (binary units). Pools need
/// at least 64 MiB.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || XtaskError::Invalid(format!("invalid size {text:?}: expected e.g. 2G, 512M, 1T"));
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 64 << 20 {
        return Err(XtaskError::Invalid(format!(
            "size {text:?} is too small: ZFS needs at least 64M per vdev"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["zt-xabc", "tank", "zstore-0123abcd", "a.b_c-d"] {
            assert_eq!(PoolName::new(ok).expect(ok).as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_could_be_misread() {
        for bad in [
            "", "-f", "1pool", "a b", "a/b", "mirror1", "c0t0", "log", "x\n", "é",
        ] {
            assert!(PoolName::new(bad).is_err(), "{bad:?}");
        }
        assert!(PoolName::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let a = PoolName::unique("zt-x", 0).expect("valid");
        let b = PoolName::unique("zt-x", 1).expect("valid");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("zt-x") && a.as_str().len() == 12);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").expect("2G"), 2 << 30);
        assert_eq!(parse_size("512m").expect("512m"), 512 << 20);
        assert_eq!(parse_size("67108864").expect("bytes"), 64 << 20);
        for bad in ["", "G", "2X", "1M", "-1G", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
