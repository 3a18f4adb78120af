//! [`FakeZfs`]: an in-memory model of the `zfs`/`zpool` commands the store uses, for tests
//! that must run without a pool (and fast, and deterministically).
//!
//! It keeps datasets, snapshots, clones, user properties and mount state, answers with the
//! same exit codes and messages as the real tools, and keeps each filesystem's files in a
//! directory at its mountpoint under a temporary root (snapshots are copies). What it does
//! not model: read-only enforcement (a "read-only" mount is a flag), space accounting
//! beyond fixed numbers, and timing races. It behaves like zfs-fuse (`zfs version` fails,
//! clones come up mounted) or, with [`FakeZfs::openzfs`], like OpenZFS.
//!
//! It also counts the commands whose cost grows with the pool ([`FakeZfs::pool_walks`]), so
//! that a test can hold an operation to a cost that does not.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::runner::{Cmd, CmdOutput, Program, RunError, Runner};
use crate::state::lock;

#[derive(Clone, Debug)]
struct Ds {
    /// For a filesystem: the snapshot it was cloned from.
    origin: Option<String>,
    props: HashMap<String, String>,
    /// The mount options (`rw`, or what `zfs mount -o` gave) when mounted.
    mounted: Option<String>,
    /// Creation order (for promote).
    created: u64,
    defer_destroy: bool,
}

#[derive(Debug)]
struct Model {
    ds: BTreeMap<String, Ds>,
    clock: u64,
    /// See [`FakeZfs::pool_walks`].
    pool_walks: usize,
}

/// The fake (see the module docs). Create with [`FakeZfs::new`], pass as the store's runner.
#[derive(Debug)]
pub struct FakeZfs {
    dir: PathBuf,
    openzfs: bool,
    model: Mutex<Model>,
}

fn fail(msg: impl Into<String>) -> CmdOutput {
    let mut m = msg.into();
    m.push('\n');
    CmdOutput::failed(1, m)
}

fn is_snap(name: &str) -> bool {
    name.contains('@')
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let meta = std::fs::metadata(from)?;
    std::fs::set_permissions(to, meta.permissions())?;
    {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    }
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

impl FakeZfs {
    /// A fake behaving like zfs-fuse, with one pool `pool` whose root is mounted at
    /// `<dir>/<pool>`. `dir` should be an empty temporary directory.
    pub fn new(dir: impl Into<PathBuf>, pool: &str) -> Self {
        let dir = dir.into();
        let mut ds = BTreeMap::new();
        ds.insert(
            pool.to_owned(),
            Ds {
                origin: None,
                props: HashMap::new(),
                mounted: Some("rw".into()),
                created: 0,
                defer_destroy: false,
            },
        );
        let _ = std::fs::create_dir_all(dir.join(pool));
        Self {
            dir,
            openzfs: false,
            model: Mutex::new(Model {
                ds,
                clock: 1,
                pool_walks: 0,
            }),
        }
    }

    /// The same, behaving like OpenZFS 2.1 (`zfs version` works, `canmount=noauto` clones
    /// are not mounted, `zpool wait` exists).
    pub fn openzfs(dir: impl Into<PathBuf>, pool: &str) -> Self {
        Self {
            openzfs: true,
            ..Self::new(dir, pool)
        }
    }

    /// Where `name` is mounted (its directory).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn snap_dir(&self, snap: &str) -> PathBuf {
        self.dir.join(".snapshots").join(snap.replace('/', "%"))
    }

    /// How many commands so far would have walked every dataset in the pool on zfs-fuse
    /// (always 0 with [`FakeZfs::openzfs`]): a `zfs destroy` of a snapshot that has clones,
    /// or of a dataset with such a snapshot at or below it, whatever the flag. zfs-fuse's
    /// libzfs finds dependents by building a graph of the pool (`libzfs_graph.c`): a walk of
    /// the target's own subtree, and of the whole pool as soon as a snapshot there has
    /// clones. OpenZFS reads a snapshot's clones from the snapshot itself. What such a walk
    /// costs is measured in the [crate docs](crate#command-costs).
    pub fn pool_walks(&self) -> usize {
        lock(&self.model).pool_walks
    }

    /// Every dataset and snapshot, sorted.
    pub fn names(&self) -> Vec<String> {
        lock(&self.model).ds.keys().cloned().collect()
    }

    fn exec(&self, args: &[String]) -> CmdOutput {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut m = lock(&self.model);
        match a.as_slice() {
            ["version"] if self.openzfs => CmdOutput::ok("zfs-2.1.5-1\nzfs-kmod-2.1.5-1\n"),
            ["version"] => CmdOutput::failed(
                2,
                "unrecognized command 'version'\nusage: zfs command args ...\n",
            ),
            ["get", "-H", "-p", "-o", "property,value", props, "--", name] => {
                let Some(d) = m.ds.get(*name) else {
                    return fail(format!("cannot open '{name}': dataset does not exist"));
                };
                let mut out = String::new();
                for p in props.split(',') {
                    let v = match p {
                        "type" if is_snap(name) => "snapshot".to_owned(),
                        "type" => "filesystem".to_owned(),
                        "mountpoint" if is_snap(name) => "-".to_owned(),
                        "mountpoint" => self.mountpoint(name).to_string_lossy().into_owned(),
                        "origin" => d.origin.clone().unwrap_or_else(|| "-".into()),
                        "name" => (*name).to_owned(),
                        "used" => "1048576".into(),
                        "available" => "3145728".into(),
                        other => Self::prop(&m, name, other),
                    };
                    out.push_str(&format!("{p}\t{v}\n"));
                }
                CmdOutput::ok(out)
            }
            [
                "list",
                "-H",
                "-d",
                "1",
                "-t",
                "filesystem",
                "-o",
                "name,mountpoint",
                "--",
                root,
            ] => {
                if !m.ds.contains_key(*root) {
                    return fail(format!("cannot open '{root}': dataset does not exist"));
                }
                let mut out = String::new();
                for n in m.ds.keys() {
                    let child = n
                        .strip_prefix(&format!("{root}/"))
                        .is_some_and(|r| !r.contains('/') && !is_snap(r));
                    if n == root || child {
                        out.push_str(&format!("{n}\t{}\n", self.mountpoint(n).display()));
                    }
                }
                CmdOutput::ok(out)
            }
            [
                "list",
                "-H",
                "-r",
                "-t",
                "all",
                "-o",
                cols,
                "--",
                roots @ ..,
            ] => {
                let mut out = String::new();
                for root in roots {
                    if !m.ds.contains_key(*root) {
                        return fail(format!("cannot open '{root}': dataset does not exist"));
                    }
                    for (n, d) in &m.ds {
                        let inside = n == root
                            || n.starts_with(&format!("{root}/"))
                            || n.starts_with(&format!("{root}@"));
                        if !inside {
                            continue;
                        }
                        let row: Vec<String> = cols
                            .split(',')
                            .map(|c| match c {
                                "name" => n.clone(),
                                "origin" => d.origin.clone().unwrap_or_else(|| "-".into()),
                                p => Self::prop(&m, n, p),
                            })
                            .collect();
                        out.push_str(&row.join("\t"));
                        out.push('\n');
                    }
                }
                CmdOutput::ok(out)
            }
            ["create", rest @ ..] => {
                let (props, name) = match Self::opts(rest) {
                    Ok((p, [name])) => (p, *name),
                    _ => return CmdOutput::failed(2, "usage: create\n"),
                };
                if m.ds.contains_key(name) {
                    return fail(format!("cannot create '{name}': dataset already exists"));
                }
                let parent = name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                if !m.ds.contains_key(parent) {
                    return fail(format!("cannot create '{name}': parent does not exist"));
                }
                let canmount = props
                    .get("canmount")
                    .cloned()
                    .unwrap_or_else(|| "on".into());
                let _ = std::fs::create_dir_all(self.mountpoint(name));
                let created = m.clock;
                m.clock += 1;
                m.ds.insert(
                    name.to_owned(),
                    Ds {
                        origin: None,
                        mounted: (canmount == "on").then(|| "rw".into()),
                        props,
                        created,
                        defer_destroy: false,
                    },
                );
                CmdOutput::ok("")
            }
            ["clone", rest @ ..] => {
                let (props, snap, name) = match Self::opts(rest) {
                    Ok((p, [snap, name])) => (p, *snap, *name),
                    _ => return CmdOutput::failed(2, "usage: clone\n"),
                };
                if !m.ds.contains_key(snap) {
                    return fail(format!("cannot open '{snap}': dataset does not exist"));
                }
                if m.ds.contains_key(name) {
                    return fail(format!("cannot create '{name}': dataset already exists"));
                }
                if let Err(e) = copy_tree(&self.snap_dir(snap), &self.mountpoint(name)) {
                    return fail(format!("fake: copying {snap}: {e}"));
                }
                let canmount = props
                    .get("canmount")
                    .cloned()
                    .unwrap_or_else(|| "on".into());
                // zfs-fuse mounts every clone unless canmount=off; OpenZFS respects noauto.
                let mount = canmount == "on" || (!self.openzfs && canmount == "noauto");
                let created = m.clock;
                m.clock += 1;
                m.ds.insert(
                    name.to_owned(),
                    Ds {
                        origin: Some(snap.to_owned()),
                        mounted: mount.then(|| "rw".into()),
                        props,
                        created,
                        defer_destroy: false,
                    },
                );
                CmdOutput::ok("")
            }
            ["snapshot", "--", snap] => {
                let Some((fs, _)) = snap.split_once('@') else {
                    return CmdOutput::failed(2, "usage: snapshot\n");
                };
                if !m.ds.contains_key(fs) {
                    return fail(format!("cannot open '{fs}': dataset does not exist"));
                }
                if m.ds.contains_key(*snap) {
                    return fail(format!(
                        "cannot create snapshot '{snap}': dataset already exists"
                    ));
                }
                let _ = std::fs::remove_dir_all(self.snap_dir(snap));
                if let Err(e) = copy_tree(&self.mountpoint(fs), &self.snap_dir(snap)) {
                    return fail(format!("fake: snapshotting {fs}: {e}"));
                }
                let created = m.clock;
                m.clock += 1;
                m.ds.insert(
                    (*snap).to_owned(),
                    Ds {
                        origin: None,
                        props: HashMap::new(),
                        mounted: None,
                        created,
                        defer_destroy: false,
                    },
                );
                CmdOutput::ok("")
            }
            ["destroy", rest @ ..] => {
                let (flag, name) = match rest {
                    ["--", name] => (None, *name),
                    [flag, "--", name] => (Some(*flag), *name),
                    _ => return CmdOutput::failed(2, "usage: destroy\n"),
                };
                self.destroy(&mut m, name, flag)
            }
            ["promote", name] => self.promote(&mut m, name),
            ["set", kv, name] => {
                let Some((k, v)) = kv.split_once('=') else {
                    return CmdOutput::failed(2, "missing '=' for set\n");
                };
                match m.ds.get_mut(*name) {
                    Some(d) => {
                        d.props.insert(k.to_owned(), v.to_owned());
                        CmdOutput::ok("")
                    }
                    None => fail(format!("cannot open '{name}': dataset does not exist")),
                }
            }
            ["mount", rest @ ..] => {
                let (options, name) = match rest {
                    ["--", name] => ("rw", *name),
                    ["-o", options, "--", name] => (*options, *name),
                    _ => return CmdOutput::failed(2, "usage: mount\n"),
                };
                match m.ds.get_mut(name) {
                    None => fail(format!("cannot open '{name}': dataset does not exist")),
                    Some(d) if d.mounted.is_some() => {
                        fail(format!("cannot mount '{name}': filesystem already mounted"))
                    }
                    Some(d) => {
                        d.mounted = Some(options.to_owned());
                        CmdOutput::ok("")
                    }
                }
            }
            ["unmount", "--", name] => match m.ds.get_mut(*name) {
                None => fail(format!("cannot open '{name}': dataset does not exist")),
                Some(d) if d.mounted.is_none() => {
                    fail(format!("cannot unmount '{name}': not currently mounted"))
                }
                Some(d) => {
                    d.mounted = None;
                    CmdOutput::ok("")
                }
            },
            _ => CmdOutput::failed(2, format!("fake zfs: unsupported command {args:?}\n")),
        }
    }

    fn prop(m: &Model, name: &str, prop: &str) -> String {
        // User properties are inherited from the parent dataset (snapshots: from their fs).
        let mut cur = Some(name.to_owned());
        while let Some(n) = cur {
            if let Some(v) = m.ds.get(&n).and_then(|d| d.props.get(prop)) {
                return v.clone();
            }
            cur = if let Some((fs, _)) = n.split_once('@') {
                Some(fs.to_owned())
            } else {
                n.rsplit_once('/').map(|(p, _)| p.to_owned())
            };
        }
        "-".into()
    }

    #[allow(clippy::type_complexity)]
    fn opts<'a, 'b>(rest: &'b [&'a str]) -> Result<(HashMap<String, String>, &'b [&'a str]), ()> {
        let mut props = HashMap::new();
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                "-o" => {
                    let (k, v) = rest
                        .get(i + 1)
                        .and_then(|kv| kv.split_once('='))
                        .ok_or(())?;
                    props.insert(k.to_owned(), v.to_owned());
                    i += 2;
                }
                "--" => return Ok((props, &rest[i + 1..])),
                _ => return Err(()),
            }
        }
        Err(())
    }

    fn clones_of<'m>(m: &'m Model, snap: &str) -> Vec<&'m String> {
        m.ds.iter()
            .filter(|(_, d)| d.origin.as_deref() == Some(snap))
            .map(|(n, _)| n)
            .collect()
    }

    fn remove(&self, m: &mut Model, name: &str) {
        let origin = m.ds.remove(name).and_then(|d| d.origin);
        if is_snap(name) {
            let _ = std::fs::remove_dir_all(self.snap_dir(name));
        } else {
            let _ = std::fs::remove_dir_all(self.mountpoint(name));
        }
        // A deferred-destroy origin goes with its last clone.
        if let Some(o) = origin {
            if m.ds.get(&o).is_some_and(|d| d.defer_destroy) && Self::clones_of(m, &o).is_empty() {
                self.remove(m, &o);
            }
        }
    }

    fn destroy(&self, m: &mut Model, name: &str, flag: Option<&str>) -> CmdOutput {
        if !m.ds.contains_key(name) {
            let fs_exists = name
                .split_once('@')
                .is_some_and(|(fs, _)| m.ds.contains_key(fs));
            if self.openzfs && fs_exists {
                return fail("could not find any snapshots to destroy; check snapshot names.");
            }
            return fail(format!("cannot open '{name}': dataset does not exist"));
        }
        if !self.openzfs {
            let subtree = |n: &String| {
                n == name
                    || n.starts_with(&format!("{name}/"))
                    || n.starts_with(&format!("{name}@"))
            };
            if m.ds
                .keys()
                .any(|n| subtree(n) && is_snap(n) && !Self::clones_of(m, n).is_empty())
            {
                m.pool_walks += 1;
            }
        }
        // Everything this destroy removes: the name, plus descendants (-r, -R), plus clones
        // of any snapshot removed (-R), transitively.
        let mut doomed: Vec<String> = vec![name.to_owned()];
        if matches!(flag, Some("-r") | Some("-R")) && !is_snap(name) {
            doomed.extend(
                m.ds.keys()
                    .filter(|n| {
                        n.starts_with(&format!("{name}/")) || n.starts_with(&format!("{name}@"))
                    })
                    .cloned(),
            );
        }
        if flag == Some("-R") {
            let mut i = 0;
            while i < doomed.len() {
                let n = doomed[i].clone();
                for c in Self::clones_of(m, &n) {
                    if !doomed.contains(c) {
                        doomed.push(c.clone());
                        doomed.extend(
                            m.ds.keys()
                                .filter(|k| {
                                    k.starts_with(&format!("{c}/"))
                                        || k.starts_with(&format!("{c}@"))
                                })
                                .cloned(),
                        );
                    }
                }
                i += 1;
            }
        }
        if flag == Some("-d") && is_snap(name) {
            if Self::clones_of(m, name).is_empty() {
                self.remove(m, name);
            } else if let Some(d) = m.ds.get_mut(name) {
                d.defer_destroy = true;
            }
            return CmdOutput::ok("");
        }
        for n in &doomed {
            let outside: Vec<&String> = Self::clones_of(m, n)
                .into_iter()
                .filter(|c| !doomed.contains(c))
                .collect();
            if !outside.is_empty() {
                let what = if is_snap(n) { "snapshot" } else { "filesystem" };
                return fail(format!(
                    "cannot destroy '{n}': {what} has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                    outside
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            if !is_snap(n) {
                let kids: Vec<&String> =
                    m.ds.keys()
                        .filter(|k| {
                            (k.starts_with(&format!("{n}/")) || k.starts_with(&format!("{n}@")))
                                && !doomed.contains(k)
                        })
                        .collect();
                if !kids.is_empty() {
                    return fail(format!(
                        "cannot destroy '{n}': filesystem has children\nuse '-r' to destroy the following datasets:\n{}",
                        kids.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
            }
        }
        // Deepest first, snapshots after their clones.
        doomed.sort_by_key(|n| std::cmp::Reverse((n.matches('/').count(), !is_snap(n))));
        for n in doomed {
            if m.ds.contains_key(&n) {
                self.remove(m, &n);
            }
        }
        CmdOutput::ok("")
    }

    fn promote(&self, m: &mut Model, name: &str) -> CmdOutput {
        let Some(origin_snap) = m.ds.get(name).and_then(|d| d.origin.clone()) else {
            return if m.ds.contains_key(name) {
                fail(format!("cannot promote '{name}': not a cloned filesystem"))
            } else {
                fail(format!("cannot open '{name}': dataset does not exist"))
            };
        };
        let Some((origin_fs, _)) = origin_snap.split_once('@') else {
            return fail("fake: bad origin");
        };
        let origin_fs = origin_fs.to_owned();
        let point = m.ds[&origin_snap].created;
        let moving: Vec<String> =
            m.ds.iter()
                .filter(|(n, d)| n.starts_with(&format!("{origin_fs}@")) && d.created <= point)
                .map(|(n, _)| n.clone())
                .collect();
        for s in &moving {
            let new = format!("{name}@{}", s.split_once('@').map_or("", |(_, t)| t));
            if m.ds.contains_key(&new) {
                return fail(format!("cannot promote '{name}': snapshot name conflict"));
            }
        }
        let grand_origin = m.ds[&origin_fs].origin.clone();
        for s in moving {
            let new = format!("{name}@{}", s.split_once('@').map_or("", |(_, t)| t));
            if let Some(d) = m.ds.remove(&s) {
                m.ds.insert(new.clone(), d);
            }
            let _ = std::fs::rename(self.snap_dir(&s), self.snap_dir(&new));
            for d in m.ds.values_mut() {
                if d.origin.as_deref() == Some(s.as_str()) {
                    d.origin = Some(new.clone());
                }
            }
        }
        // The clone takes the origin's place: it inherits the grand-origin and the old origin
        // now hangs off the promoted clone (its origin was re-pointed in the loop above).
        if let Some(d) = m.ds.get_mut(name) {
            d.origin = grand_origin;
        }
        let tail = origin_snap.split_once('@').map_or("", |(_, t)| t);
        if let Some(d) = m.ds.get_mut(&origin_fs) {
            d.origin = Some(format!("{name}@{tail}"));
        }
        CmdOutput::ok("")
    }

    fn zpool(&self, args: &[String]) -> CmdOutput {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["wait", "-t", "free", "--", _] if self.openzfs => CmdOutput::ok(""),
            ["get", "-H", "-p", "-o", "value", "freeing", _] if self.openzfs => {
                CmdOutput::ok("0\n")
            }
            _ => CmdOutput::failed(2, "unrecognized command\n"),
        }
    }
}

#[async_trait]
impl Runner for FakeZfs {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        Ok(match cmd.program {
            Program::Zfs => self.exec(&cmd.args),
            Program::Zpool => self.zpool(&cmd.args),
        })
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        let m = lock(&self.model);
        let fstype = if self.openzfs { "zfs" } else { "fuse.zfs" };
        Ok(m.ds
            .iter()
            .filter_map(|(n, d)| {
                d.mounted.as_ref().map(|options| {
                    format!(
                        "{n} {} {fstype} {options},relatime 0 0\n",
                        self.mountpoint(n).display(),
                    )
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zfs(fake: &FakeZfs, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = fake.exec(&args);
        assert!(out.success(), "{args:?}: {out:?}");
    }

    /// The counter follows zfs-fuse's dependents graph: a destroy walks the pool when a
    /// snapshot at or below its target has clones, and never on OpenZFS.
    #[test]
    fn a_destroy_walks_the_pool_only_past_a_cloned_snapshot() {
        for openzfs in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let fake = if openzfs {
                FakeZfs::openzfs(dir.path(), "p")
            } else {
                FakeZfs::new(dir.path(), "p")
            };
            let walks = |n: usize| if openzfs { 0 } else { n };
            zfs(&fake, &["create", "-o", "canmount=noauto", "--", "p/a"]);
            zfs(&fake, &["snapshot", "--", "p/a@s"]);
            zfs(&fake, &["clone", "--", "p/a@s", "p/b"]);
            zfs(&fake, &["snapshot", "--", "p/b@t"]);
            zfs(&fake, &["create", "-o", "canmount=noauto", "--", "p/leaf"]);
            zfs(&fake, &["snapshot", "--", "p/leaf@s"]);
            zfs(&fake, &["destroy", "-r", "--", "p/leaf"]);
            zfs(&fake, &["destroy", "--", "p/b@t"]);
            assert_eq!(fake.pool_walks(), 0, "no clones below either");
            zfs(&fake, &["clone", "--", "p/a@s", "p/c"]);
            zfs(&fake, &["destroy", "--", "p/c"]);
            assert_eq!(fake.pool_walks(), 0, "a clone itself has none");
            zfs(&fake, &["destroy", "-R", "--", "p/a@s"]);
            assert_eq!(fake.pool_walks(), walks(1), "a snapshot with a clone");
            zfs(&fake, &["create", "-o", "canmount=noauto", "--", "p/d"]);
            zfs(&fake, &["snapshot", "--", "p/d@s"]);
            zfs(&fake, &["clone", "--", "p/d@s", "p/e"]);
            zfs(&fake, &["destroy", "-R", "--", "p/d"]);
            assert_eq!(fake.pool_walks(), walks(2), "a dataset above one");
        }
    }
}
