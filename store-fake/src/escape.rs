//! Cache names to file names and back.
//!
//! A [`CacheName`] may hold `/`, `..`, `%`, a leading `-`, spaces or any other UTF-8, so it is
//! never used as a path component as is. It is encoded as base32hex (RFC 4648, no padding):
//! the alphabet `0-9A-V` is safe in any file name, cannot start with `-` or `.`, and the
//! encoding is injective and reversible. A name of [`CacheName::MAX_LEN`] (128) bytes becomes
//! 205 characters, inside the usual 255-byte file name limit (hex would need 256).

use data_encoding::BASE32HEX_NOPAD;
use store_api::CacheName;

/// The file name that stores cache `name`.
pub(crate) fn escape_cache_name(name: &CacheName) -> String {
    BASE32HEX_NOPAD.encode(name.as_str().as_bytes())
}

/// The cache name stored under `file_name`, or `None` if no cache name escapes to it.
pub(crate) fn unescape_cache_name(file_name: &str) -> Option<CacheName> {
    let bytes = BASE32HEX_NOPAD.decode(file_name.as_bytes()).ok()?;
    let name = CacheName::new(String::from_utf8(bytes).ok()?).ok()?;
    // Reject non-canonical encodings so that one name has exactly one file name.
    (escape_cache_name(&name) == file_name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> CacheName {
        CacheName::new(s).expect("valid cache name")
    }

    #[test]
    fn awkward_names_become_plain_file_names() {
        for raw in [
            "-R",
            "../x",
            "..",
            ".",
            "a/b",
            "%",
            "%20",
            "a b",
            "c:/windows/cache",
            "café",
            "キャッシュ",
        ] {
            let escaped = escape_cache_name(&name(raw));
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'V').contains(&b)),
                "{raw:?} -> {escaped:?}"
            );
            assert_eq!(unescape_cache_name(&escaped), Some(name(raw)));
        }
    }

    #[test]
    fn longest_name_fits_in_a_file_name() {
        let longest = name(&"é".repeat(CacheName::MAX_LEN / 2));
        assert!(escape_cache_name(&longest).len() <= 255);
    }

    #[test]
    fn rejects_file_names_that_are_not_escapes() {
        for junk in ["", "lock", "v0", "0", "a", "ZZ", "CO======"] {
            assert_eq!(unescape_cache_name(junk), None, "{junk:?}");
        }
    }

    proptest! {
        #[test]
        fn escaping_is_injective_and_reversible(a in "[^\0]{1,30}", b in "[^\0]{1,30}") {
            let (na, nb) = (name(&a), name(&b));
            let (ea, eb) = (escape_cache_name(&na), escape_cache_name(&nb));
            prop_assert_eq!(a == b, ea == eb);
            prop_assert_eq!(unescape_cache_name(&ea), Some(na));
        }
    }
}
