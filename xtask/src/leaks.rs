//! After a run: is anything it created still there? Pools, the zfs-fuse daemon it started,
//! qemu processes, loop devices, mounts and pool files are checked, each only by what marks it
//! as this run's (name, pid, path), so other people's pools and VMs on the machine never count.

use std::path::{Path, PathBuf};

use crate::procs;
use store_zfs::mounts::unescape;

/// What one run created, and so must be gone at the end.
#[derive(Clone, Debug, Default)]
pub struct Footprint {
    /// Pools the run created.
    pub pools: Vec<String>,
    /// Files the run created (pool vdevs, pool records).
    pub files: Vec<PathBuf>,
    /// A zfs-fuse daemon the run started.
    pub daemon: Option<u32>,
    /// A string that appears in the command line of every qemu the run started.
    pub qemu_marker: Option<String>,
    /// Directories under which any mount or loop-device backing file is the run's.
    pub dirs: Vec<PathBuf>,
}

/// What the leak check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeakReport {
    /// One line per thing left behind.
    pub leftovers: Vec<String>,
}

impl LeakReport {
    /// Whether nothing was left behind.
    pub fn clean(&self) -> bool {
        self.leftovers.is_empty()
    }

    /// Prints the result for humans (stderr).
    pub fn print(&self, scope: &str) {
        if self.clean() {
            eprintln!(
                "leak check ({scope}): clean: no pool, zfs-fuse daemon, qemu process, loop device, \
                 mount or pool file left by this run"
            );
        } else {
            eprintln!(
                "leak check ({scope}): {} leftover(s):",
                self.leftovers.len()
            );
            for l in &self.leftovers {
                eprintln!("  - {l}");
            }
        }
    }
}

/// Checks the machine for anything in `fp` that is still there.
pub async fn check(fp: &Footprint) -> LeakReport {
    let mut left = Vec::new();
    if !fp.pools.is_empty() && crate::prereq::find("zpool").is_some() {
        match store_zfs::testing::pool::imported(&*crate::pool::runner()).await {
            Ok(live) => left.extend(
                fp.pools
                    .iter()
                    .filter(|p| live.contains(p))
                    .map(|p| format!("pool {p} is still imported")),
            ),
            // With the daemon/module gone no pool can be imported; the files check below
            // still catches a pool that was never destroyed.
            Err(e) => tracing::debug!(error = %e, "leak check: zpool list failed"),
        }
    }
    left.extend(
        fp.files
            .iter()
            .filter(|f| f.exists())
            .map(|f| format!("file {} still exists", f.display())),
    );
    if let Some(pid) = fp.daemon {
        if procs::read(pid).is_some_and(|p| p.comm == "zfs-fuse") {
            left.push(format!(
                "zfs-fuse daemon pid {pid} (started by this run) is still running"
            ));
        }
    }
    if let Some(marker) = &fp.qemu_marker {
        left.extend(
            procs::all()
                .into_iter()
                .filter(|p| {
                    p.comm.starts_with("qemu-system")
                        && p.cmdline.iter().any(|a| a.contains(marker))
                })
                .map(|p| format!("qemu pid {} is still running", p.pid)),
        );
    }
    left.extend(
        loop_devices()
            .into_iter()
            .filter(|(_, backing)| under_any(backing, &fp.dirs))
            .map(|(dev, backing)| format!("loop device {dev} still backs {}", backing.display())),
    );
    left.extend(mounts().into_iter().filter_map(|(target, source)| {
        let ours = under_any(&target, &fp.dirs)
            || fp
                .pools
                .iter()
                .any(|p| source == *p || source.starts_with(&format!("{p}/")));
        ours.then(|| {
            format!(
                "mount {} (from {source}) is still mounted",
                target.display()
            )
        })
    }));
    LeakReport { leftovers: left }
}

fn under_any(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

/// `(device, backing file)` for every bound loop device.
fn loop_devices() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let dev = e.file_name().to_str()?.to_owned();
            if !dev.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((format!("/dev/{dev}"), PathBuf::from(backing.trim_end())))
        })
        .collect()
}

/// `(mount point, source)` for every mount xtask can see.
fn mounts() -> Vec<(PathBuf, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| text.lines().filter_map(parse_mountinfo_line).collect())
        .unwrap_or_default()
}

/// Field 5 is the mount point; after the " - " separator come fstype and source. Spaces and
/// other specials are octal-escaped (`\040`).
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let (pre, post) = line.split_once(" - ")?;
    let target = pre.split(' ').nth(4)?;
    let source = post.split(' ').nth(1)?;
    Some((PathBuf::from(unescape(target)), unescape(source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let line = "36 35 0:31 / /var/tmp/zstore\\040pools/mnt/zt-x1 rw,relatime shared:1 - fuse zt-x1/a rw";
        let (target, source) = parse_mountinfo_line(line).expect("parses");
        assert_eq!(target, PathBuf::from("/var/tmp/zstore pools/mnt/zt-x1"));
        assert_eq!(source, "zt-x1/a");
    }

    #[tokio::test]
    async fn empty_footprint_is_clean() {
        let report = check(&Footprint::default()).await;
        assert!(report.clean(), "{report:?}");
    }

    #[tokio::test]
    async fn a_leftover_file_is_reported() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        let fp = Footprint {
            files: vec![tmp.path().to_path_buf()],
            ..Footprint::default()
        };
        let report = check(&fp).await;
        assert_eq!(report.leftovers.len(), 1);
    }
}
