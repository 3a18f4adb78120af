//! Reading the kernel mount table: which datasets are really mounted, where, and whether
//! read-only. This is the ground truth on both engines (zfs-fuse's `mounted` property can lie
//! after a daemon crash, and `readonly` does not say how a dataset is mounted). Public so that
//! tools around the store (test pools, leak checks, benchmarks) read it the same way.

use std::collections::HashMap;
use std::path::PathBuf;

/// One mounted ZFS dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mountpoint.
    pub path: PathBuf,
    /// Mounted read-only (`ro` option).
    pub read_only: bool,
    /// Mounted `nosuid` and `nodev`: setuid files and device nodes are inert through it.
    pub inert: bool,
}

impl Mount {
    /// Whether this is a mount the way the store mounts results: read-only and inert (a
    /// plain `ro` mount, from an older version or by hand, is not).
    pub fn is_result_mount(&self) -> bool {
        self.read_only && self.inert
    }

    /// Whether it is mounted as asked: a result mount, or read-write.
    pub fn is_as(&self, read_only: bool) -> bool {
        match read_only {
            true => self.is_result_mount(),
            false => !self.read_only,
        }
    }
}

/// Undoes the octal escapes (`\ooo`, digits 0–7) that `/proc/mounts` and
/// `/proc/self/mountinfo` use for space, tab, newline and backslash. The bytes are decoded as
/// UTF-8 afterwards, so escaped non-ASCII names come back whole; anything else (`\x`,
/// `\089`) is kept as it is. The one copy of this in the workspace.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ZFS mounts (`zfs` or `fuse.zfs`) in a `/proc/mounts` text, by dataset name. If a
/// dataset appears more than once, the last (topmost) mount wins.
pub fn parse(table: &str) -> HashMap<String, Mount> {
    let mut out = HashMap::new();
    for line in table.lines() {
        let mut f = line.split(' ');
        let (Some(dev), Some(path), Some(fstype), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if fstype != "zfs" && fstype != "fuse.zfs" {
            continue;
        }
        out.insert(
            unescape(dev),
            Mount {
                path: PathBuf::from(unescape(path)),
                read_only: opts.split(',').any(|o| o == "ro"),
                inert: opts.split(',').any(|o| o == "nosuid")
                    && opts.split(',').any(|o| o == "nodev"),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zfs_mounts_only() {
        let t = "proc /proc proc rw 0 0\n\
                 p/r/a /p/r/a fuse.zfs ro,nosuid,nodev,relatime 0 0\n\
                 p/r/b /p/r/b fuse.zfs ro,relatime 0 0\n\
                 p/c/c-a:20b/g1 /p/c/c-a:20b/g1 zfs rw,xattr 0 0\n\
                 p/sp /p/with\\040space fuse.zfs rw 0 0\n";
        let m = parse(t);
        assert_eq!(m.len(), 4);
        assert!(m["p/r/a"].is_result_mount() && m["p/r/a"].is_as(true));
        assert!(m["p/r/b"].read_only && !m["p/r/b"].is_result_mount());
        assert!(!m["p/r/b"].is_as(true) && !m["p/r/b"].is_as(false));
        assert!(!m["p/c/c-a:20b/g1"].read_only);
        assert_eq!(m["p/sp"].path, PathBuf::from("/p/with space"));
    }

    #[test]
    fn only_octal_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/odd\x"), r"/odd\x");
        assert_eq!(unescape(r"/not\089"), r"/not\089");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        assert_eq!(unescape(r"/caf\303\251"), "/café");
    }
}
