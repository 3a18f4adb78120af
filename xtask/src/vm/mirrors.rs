//! Which Debian archive the guest image is built from: `ZSTORE_VM_MIRROR` /
//! `ZSTORE_VM_SECURITY_MIRROR` if set, else what the host's own apt sources use (so the image
//! builds wherever the host's apt works, and no archive host is hard-coded here).

use std::path::Path;

use crate::error::{Result, XtaskError};

/// The archive URIs for the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors {
    /// The main archive (`.../debian`).
    pub main: String,
    /// The security archive (`.../debian-security`).
    pub security: String,
}

/// Resolves the mirrors from the environment or `/etc/apt`.
pub fn resolve() -> Result<Mirrors> {
    let env_main = std::env::var("ZSTORE_VM_MIRROR")
        .ok()
        .filter(|s| !s.is_empty());
    let env_sec = std::env::var("ZSTORE_VM_SECURITY_MIRROR")
        .ok()
        .filter(|s| !s.is_empty());
    let host = host_uris(Path::new("/etc/apt"));
    let main = env_main
        .or_else(|| host.iter().find(|u| !u.contains("-security")).cloned())
        .ok_or_else(|| XtaskError::Missing {
            what: "no Debian archive found in the host's apt sources for the guest image".into(),
            hint: "set ZSTORE_VM_MIRROR to a Debian archive URI (and ZSTORE_VM_SECURITY_MIRROR)"
                .into(),
        })?;
    let security = env_sec
        .or_else(|| host.iter().find(|u| u.contains("-security")).cloned())
        .unwrap_or_else(|| format!("{}-security", main.trim_end_matches('/')));
    Ok(Mirrors { main, security })
}

/// Archive URIs named by the apt sources under `etc_apt`, in file order, without duplicates.
/// Reads both the one-line (`sources.list`, `*.list`) and the deb822 (`*.sources`) formats.
pub fn host_uris(etc_apt: &Path) -> Vec<String> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut uris: Vec<String> = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        let found = if name.ends_with(".sources") {
            deb822_uris(&text)
        } else if name.ends_with(".list") {
            one_line_uris(&text)
        } else {
            Vec::new()
        };
        for u in found {
            if !uris.contains(&u) {
                uris.push(u);
            }
        }
    }
    uris
}

fn one_line_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next()? != "deb" {
                return None;
            }
            let mut w = words.next()?;
            if w.starts_with('[') {
                // skip "[opt=val ...]"
                while !w.ends_with(']') {
                    w = words.next()?;
                }
                w = words.next()?;
            }
            Some(w.to_owned())
        })
        .collect()
}

fn deb822_uris(text: &str) -> Vec<String> {
    // Stanzas are separated by blank lines; only "Types: deb" stanzas name binary archives.
    text.split("\n\n")
        .filter(|stanza| {
            stanza.lines().any(|l| {
                l.strip_prefix("Types:")
                    .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
            })
        })
        .flat_map(|stanza| {
            stanza
                .lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .flat_map(|u| u.split_whitespace().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(
            tmp.path().join("sources.list"),
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n\
             deb-src http://src.example/debian bookworm main\n",
        )
        .expect("write");
        std::fs::create_dir(tmp.path().join("sources.list.d")).expect("mkdir");
        std::fs::write(
            tmp.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\n\n\
             Types: deb\nURIs: http://a.example/debian-security\nSuites: bookworm-security\n",
        )
        .expect("write");
        assert_eq!(
            host_uris(tmp.path()),
            [
                "http://mirror.example/debian",
                "http://a.example/debian",
                "http://a.example/debian-security"
            ]
        );
    }
}
