//! Names that the mappings a backend author is likely to write would merge: percent-style
//! escaping that leaves `%` alone, `/` turned into `_`, case folding, truncation to a length
//! limit, dropping trailing dots or spaces (as Windows and some filesystems do), Unicode
//! normalization. A backend whose name-to-storage mapping is not injective makes two of a
//! group share storage; the scenarios and the generated sequences draw these names and check
//! that each keeps its own contents.

use store_api::{CacheName, Id};

use crate::broken::Defect;

/// The collision groups the name scenarios use (see [`cache_groups`] and [`id_groups`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameGroups {
    pub caches: Vec<Vec<String>>,
    pub ids: Vec<Vec<String>>,
}

impl NameGroups {
    /// Every group: what the suite uses.
    pub fn all() -> Self {
        NameGroups {
            caches: cache_groups(),
            ids: id_groups(),
        }
    }

    /// Only the groups in which `defect`'s name mapping gives two names one storage name:
    /// the smallest run of the name scenarios that still meets the defect.
    pub fn merged_by(defect: Defect) -> Self {
        fn merged<T: Ord>(group: &[String], seen: impl Fn(&str) -> Option<T>) -> bool {
            let mapped: std::collections::BTreeSet<T> =
                group.iter().filter_map(|n| seen(n)).collect();
            mapped.len() < group.len()
        }
        let all = NameGroups::all();
        NameGroups {
            caches: all
                .caches
                .into_iter()
                .filter(|g| {
                    merged(g, |n| {
                        CacheName::new(n)
                            .ok()
                            .map(|n| defect.cache_name_seen(&n).as_str().to_owned())
                    })
                })
                .collect(),
            ids: all
                .ids
                .into_iter()
                .filter(|g| {
                    merged(g, |i| {
                        Id::new(i)
                            .ok()
                            .map(|i| defect.id_seen(&i).as_str().to_owned())
                    })
                })
                .collect(),
        }
    }

    /// Whether no group is left (the defect merges no names).
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty() && self.ids.is_empty()
    }
}

/// Groups of cache names, each merged by at least one naive mapping; every name is valid.
pub(crate) fn cache_groups() -> Vec<Vec<String>> {
    let long = |tail: &str| format!("{}{tail}", "x".repeat(CacheName::MAX_LEN - tail.len()));
    [
        // Percent-style escaping of `/` that leaves `%` alone, either case; `/` -> `_`.
        &["a/b", "a%2fb", "a%2Fb", "a_b", "a_2fb"][..],
        &[
            "c:/windows/cache",
            "c%3a%2fwindows%2fcache",
            "c-%3a-windows-cache",
        ],
        // Case folding.
        &["opam", "Opam", "OPAM"],
        // Trailing dots and spaces dropped.
        &["c", "c.", "c..", "c ", "c. "],
        // Unicode normalization (NFC against NFD) and percent-encoding of UTF-8.
        &["café", "cafe\u{301}", "caf%c3%a9"],
        // Names a shell or an option parser would misread, and `%` itself.
        &["-R", "..", "%", "%25", "\n1", "\u{a1}", " leading space"],
    ]
    .iter()
    .map(|g| g.iter().map(|s| (*s).to_owned()).collect())
    // Truncation to a length limit: the longest names, equal up to their last bytes.
    .chain([vec![
        long(""),
        long("y"),
        long("yz"),
        "x".repeat(CacheName::MAX_LEN / 2),
    ]])
    .collect()
}

/// Groups of ids, each merged by at least one naive mapping; every id is valid.
pub(crate) fn id_groups() -> Vec<Vec<String>> {
    let long = |tail: &str| format!("{}{tail}", "i".repeat(Id::MAX_LEN - tail.len()));
    [
        // Case folding.
        &["x", "X"][..],
        // Punctuation mapped to one character.
        &["a.b", "a_b", "a-b"],
        // Trailing dots dropped.
        &["t", "t.", "t.."],
    ]
    .iter()
    .map(|g| g.iter().map(|s| (*s).to_owned()).collect())
    // Truncation.
    .chain([vec![long(""), long("j"), "i".repeat(Id::MAX_LEN / 2)]])
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::broken::Defect;

    #[test]
    fn every_name_is_valid_and_appears_once() {
        let caches: Vec<String> = cache_groups().concat();
        for c in &caches {
            CacheName::new(c.as_str()).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
        assert_eq!(caches.iter().collect::<BTreeSet<_>>().len(), caches.len());
        let ids: Vec<String> = id_groups().concat();
        for i in &ids {
            Id::new(i.as_str()).unwrap_or_else(|e| panic!("{i:?}: {e}"));
        }
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    }

    #[test]
    fn each_name_defect_merges_some_group_and_no_other_defect_does() {
        // (defect, merges cache names, merges ids)
        let cases = [
            (Defect::LossyCacheNameEscaping, true, false),
            (Defect::CacheNameSlashToUnderscore, true, false),
            (Defect::CacheNameCaseFolded, true, false),
            (Defect::CacheNameTruncated, true, false),
            (Defect::CacheNameTrailingDotsDropped, true, false),
            (Defect::CacheNameUnicodeNormalized, true, false),
            (Defect::IdCaseFolded, false, true),
            (Defect::IdPunctuationFolded, false, true),
            (Defect::PublishesStaleRelease, false, false),
            (Defect::DeleteTakesChildren, false, false),
        ];
        for (defect, caches, ids) in cases {
            let groups = NameGroups::merged_by(defect);
            assert_eq!(
                (!groups.caches.is_empty(), !groups.ids.is_empty()),
                (caches, ids),
                "{defect:?}: {groups:?}"
            );
            assert!(groups.caches.len() < cache_groups().len() || !caches);
        }
        // Case folding meets the case group, and the escaped slashes of either case.
        let folded = NameGroups::merged_by(Defect::CacheNameCaseFolded).caches;
        assert!(folded.iter().any(|g| g.contains(&"Opam".to_owned())));
    }
}
