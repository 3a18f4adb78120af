//! Cache names to ZFS dataset names and back, and the ZFS name rules they must satisfy.
//!
//! A cache name is any UTF-8 string of 1 to 128 bytes without NUL. Its dataset (the cache's
//! *container*, `<root>/cache/<component>`) is named by [`escape`]:
//!
//! - `c-` followed by the name's bytes, where ASCII letters, digits, `-`, `_` and `.` stand for
//!   themselves and every other byte is written `:xx` (two lower-case hex digits). `:` is itself
//!   escaped, so decoding is unambiguous: the map is injective and [`unescape`] inverts it.
//!   Examples: `opam-archives` → `c-opam-archives`; `c:/windows/cache` →
//!   `c-c:3a:2fwindows:2fcache`; `-R` → `c--R`; `a@b` → `c-a:40b`.
//! - If that is longer than [`MAX_COMPONENT`] bytes (possible for long non-ASCII names), the
//!   component is `h-<first bytes of the escaped form>-<n>` instead ([`long_component`]), and the
//!   full escaped name is kept in the container's user property `zstore:name`. `n` is the first
//!   number not taken by another container, so two long names never share a container; the
//!   property makes it reversible. `c-` and `h-` components never collide with each other.

/// The longest container component the store creates, in bytes. With the store's other name
/// parts (see [`crate::layout`]) this keeps every dataset name within ZFS's 255-byte limit for
/// store roots up to [`crate::layout::MAX_ROOT_LEN`] bytes.
pub const MAX_COMPONENT: usize = 128;

/// How many bytes of the escaped form a long-name component keeps before `-<n>`.
pub const LONG_PREFIX: usize = 96;

/// The user property holding a cache's full escaped name on its container.
pub const NAME_PROPERTY: &str = "zstore:name";

fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The escaped form `c-...` of a cache name (see the module docs). Always ZFS-legal characters;
/// may exceed 128 bytes (`MAX_COMPONENT`).
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(2 + name.len() * 3);
    out.push_str("c-");
    for &b in name.as_bytes() {
        if kept(b) {
            out.push(char::from(b));
        } else {
            out.push(':');
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
    }
    out
}

/// Inverts [`escape`]: `None` if `s` is not something `escape` produces.
pub fn unescape(s: &str) -> Option<String> {
    let body = s.strip_prefix("c-")?;
    let mut bytes = Vec::with_capacity(body.len());
    let mut it = body.bytes();
    while let Some(b) = it.next() {
        if b == b':' {
            let hex = |d: u8| match d {
                b'0'..=b'9' => Some(d - b'0'),
                b'a'..=b'f' => Some(d - b'a' + 10),
                _ => None,
            };
            let hi = hex(it.next()?)?;
            let lo = hex(it.next()?)?;
            let v = (hi << 4) | lo;
            // `escape` never writes a kept byte in escaped form: refusing it keeps the
            // inverse exact (one spelling per name).
            if kept(v) {
                return None;
            }
            bytes.push(v);
        } else if kept(b) {
            bytes.push(b);
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// The container component for a name whose escaped form is too long: `h-<prefix>-<n>`.
pub fn long_component(escaped: &str, n: u64) -> String {
    let body = &escaped[2..];
    let mut cut = body.len().min(LONG_PREFIX);
    // Never split a `:xx` unit, so the prefix stays readable.
    while let Some(pos) = body[..cut].rfind(':') {
        if pos + 3 <= cut {
            break;
        }
        cut = pos;
    }
    format!("h-{}-{n}", &body[..cut])
}

/// Whether `c` may appear in a ZFS dataset or snapshot name component.
pub fn zfs_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | ' ')
}

/// Checks a full dataset name (`pool/a/b`, optionally `@snap`) against the ZFS rules: at most
/// 255 bytes; non-empty `/`-separated components of legal characters, none `.` or `..`; at
/// most one `@` with a legal non-empty snapshot part; a pool name starting with a letter.
pub fn zfs_name_ok(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let (ds, snap) = match name.split_once('@') {
        Some((d, s)) => (d, Some(s)),
        None => (name, None),
    };
    let component_ok =
        |c: &str| !c.is_empty() && c != "." && c != ".." && c.chars().all(zfs_char_ok);
    if !ds.split('/').all(component_ok) {
        return false;
    }
    if !ds.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return false;
    }
    snap.is_none_or(|s| !s.contains('@') && component_ok(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(escape("opam-archives"), "c-opam-archives");
        assert_eq!(escape("c:/windows/cache"), "c-c:3a:2fwindows:2fcache");
        assert_eq!(escape("-R"), "c--R");
        assert_eq!(escape("../x"), "c-..:2fx");
        assert_eq!(escape("a@b"), "c-a:40b");
        assert_eq!(escape("pool/other"), "c-pool:2fother");
        assert_eq!(escape("%20"), "c-:2520");
        assert_eq!(escape("é"), "c-:c3:a9");
        assert_eq!(unescape("c-a:40b").as_deref(), Some("a@b"));
        assert_eq!(unescape("c-:61"), None, "kept byte in escaped form");
        assert_eq!(unescape("c-"), None);
        assert_eq!(unescape("h-abc-0"), None);
        assert_eq!(unescape("c-a:4"), None);
    }

    #[test]
    fn long_components_fit_and_keep_units_whole() {
        let name = "é".repeat(64);
        let esc = escape(&name);
        assert!(esc.len() > MAX_COMPONENT);
        let c = long_component(&esc, 7);
        assert!(c.len() <= MAX_COMPONENT, "{}", c.len());
        assert!(c.ends_with("-7"));
        let body = c.trim_start_matches("h-").trim_end_matches("-7");
        assert!(body.len() % 3 == 0 && body.starts_with(":c3:a9"));
    }

    #[test]
    fn name_rules() {
        assert!(zfs_name_ok("tank/result/abc@snap"));
        assert!(zfs_name_ok("tank/cache/c-a:40b/g1@v1"));
        assert!(!zfs_name_ok("tank/a@b@c"));
        assert!(!zfs_name_ok("tank/../x"));
        assert!(!zfs_name_ok("tank//x"));
        assert!(!zfs_name_ok("tank/a%b"));
        assert!(!zfs_name_ok("1tank"));
        assert!(!zfs_name_ok(&format!("tank/{}", "x".repeat(251))));
    }

    fn cache_name() -> impl Strategy<Value = String> {
        // Any UTF-8 without NUL, 1..=128 bytes (the CacheName rules), biased towards the
        // characters that matter to ZFS.
        prop_oneof![
            "[^\\x00]{1,40}",
            "[-@/%:. a-zA-Z0-9]{1,128}",
            "[é漢\\u{1F600}]{1,32}",
        ]
        .prop_filter("CacheName rules", |s| {
            !s.is_empty() && s.len() <= store_api::CacheName::MAX_LEN
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn escape_round_trips_and_is_legal(name in cache_name()) {
            prop_assert!(store_api::CacheName::new(name.clone()).is_ok());
            let esc = escape(&name);
            prop_assert_eq!(unescape(&esc), Some(name.clone()));
            let component = if esc.len() > MAX_COMPONENT { long_component(&esc, u64::MAX) } else { esc };
            prop_assert!(component.len() <= MAX_COMPONENT);
            // The longest names the store derives from a container, under the longest root.
            let root = format!("p{}", "x".repeat(crate::layout::MAX_ROOT_LEN - 1));
            for full in crate::layout::cache_names_for_check(&root, &component) {
                prop_assert!(zfs_name_ok(&full), "{} ({} bytes)", full, full.len());
            }
        }

        #[test]
        fn escape_is_injective(a in cache_name(), b in cache_name()) {
            prop_assume!(a != b);
            prop_assert_ne!(escape(&a), escape(&b));
            // Long components are made distinct by the probe number; equal prefixes are
            // possible and handled there, so only the escaped forms must differ.
        }
    }
}
