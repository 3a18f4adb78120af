//! Pool names and sizes, validated before they reach a command line.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use super::PoolError;

/// Default prefix of generated pool names; `ZSTORE_POOL_PREFIX` or xtask's `--prefix`
/// override it.
pub const DEFAULT_PREFIX: &str = "zstore-";

/// A ZFS pool name that is safe on every command line: starts with a letter, then letters,
/// digits, `_`, `-`, `.`; at most 64 bytes; not a vdev keyword ZFS reserves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

impl PoolName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`PoolError::Invalid`], saying which rule `name` breaks.
    pub fn new(name: &str) -> Result<Self, PoolError> {
        let bad = |why: &str| PoolError::Invalid(format!("invalid pool name {name:?}: {why}"));
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
        // The first byte is an ASCII letter, so slicing after it is on a char boundary.
        if reserved.iter().any(|r| name.starts_with(r))
            || (name.starts_with('c') && name[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(bad("reserved by ZFS (vdev keyword or c<digit>)"));
        }
        Ok(PoolName(name.to_owned()))
    }

    /// A fresh name: `prefix` plus 8 hex digits hashed from the pid, the clock and
    /// `attempt`. Unlikely to collide, not guaranteed: callers still check that it is unused
    /// ([`fresh_name`](super::fresh_name) does).
    ///
    /// # Errors
    /// [`PoolError::Invalid`] if `prefix` makes the name invalid (it must start with a
    /// letter and not with a vdev keyword).
    pub fn unique(prefix: &str, attempt: u32) -> Result<Self, PoolError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        // std's randomly keyed SipHash: no hash crate needed, and two processes started at
        // the same nanosecond with the same pid (containers) still get different keys.
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        h.write_u32(attempt);
        let suffix = h.finish() & 0xffff_ffff;
        PoolName::new(&format!("{prefix}{suffix:08x}"))
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
    type Err = PoolError;
    fn from_str(s: &str) -> Result<Self, PoolError> {
        PoolName::new(s)
    }
}

/// Parses a size such as `2G`, `512M`, `1T` or a plain byte count (binary units). Pools need
/// at least 64 MiB.
///
/// # Errors
/// [`PoolError::Invalid`] for a malformed size, one that overflows, or one under 64 MiB.
pub fn parse_size(text: &str) -> Result<u64, PoolError> {
    let bad = || PoolError::Invalid(format!("invalid size {text:?}: expected e.g. 2G, 512M, 1T"));
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
        return Err(PoolError::Invalid(format!(
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
        assert!(
            a.as_str()[4..].bytes().all(|c| c.is_ascii_hexdigit()),
            "{a}"
        );
        assert!(
            PoolName::unique("1x", 0).is_err(),
            "the prefix is validated"
        );
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
