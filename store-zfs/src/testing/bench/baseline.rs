//! The baseline: OBuilder's `Zfs_store` command sequences (its `build`, `result`, `delete`,
//! `cache` and cache release), re-issued command by command through the benchmark's runner,
//! so both stores are measured on the same pool the same way. The sequences are those of
//! OCurrent OBuilder's `lib/zfs_store.ml`, restated on each function below.
//!
//! OBuilder wants a whole pool; here its root is a dataset `R` (`<pool>/ob`) with its groups
//! `R/state`, `R/result`, `R/cache`, `R/cache-tmp`. Its `chown` processes are done in-process
//! (they are not `zfs` processes; this makes the baseline slightly faster, never slower).
//!
//! [`Dialect::Verbatim`] (OpenZFS) issues the exact commands. [`Dialect::ZfsFuse`] replaces
//! those that cannot run on zfs-fuse with the closest ones that do (zfs-fuse 0.7 has no
//! `zfs list -p`, and cannot rename a mounted or cloned-from dataset), listed in
//! [`ZFS_FUSE_SUBSTITUTIONS`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::zfs_cmd::Zfs;
use super::{BenchError, Result};

/// Which command set the baseline issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OBuilder's commands exactly (OpenZFS).
    Verbatim,
    /// The closest equivalents that run on zfs-fuse 0.7.
    ZfsFuse,
}

/// What [`Dialect::ZfsFuse`] changes, for the report.
pub const ZFS_FUSE_SUBSTITUTIONS: &[&str] = &[
    "existence checks: `zfs list -H DS` instead of `zfs list -p -H DS` (-p exits 2 on zfs-fuse, \
     which would make every check say 'missing')",
    "destroy: no -f (a lazy unmount that can wedge the zfs-fuse daemon); instead `zfs unmount` \
     of a mounted dataset, then `zfs destroy`, repeated on 'dataset is busy'",
    "clone_with_children: `zfs mount DS` after the clone tolerates 'already mounted' (zfs-fuse \
     mounts clones despite canmount=noauto; OBuilder would raise)",
    "cache release (publish): renames of mounted datasets fail with 'dataset is busy' on \
     zfs-fuse, and so does renaming `main` while a clone of `main@snap` is mounted; so: \
     unmount the released copy and every other copy out, unmount main, rename main away \
     (retried on busy), promote, destroy, `zfs rename -r` of the snapshot (a plain snapshot \
     rename remounts every clone), destroy -d, snapshot, rename the copy to main, mount main, \
     mount the other copies again: 10 commands + 2 per other copy, instead of 7",
    "result: the `.zfs/snapshot/snap` path does not exist and `zfs mount DS@snap` fails \
     (OBuilder ignores that failure, so the commands are the same)",
];

/// A copy of a cache handed out by [`Obuilder::cache`].
#[derive(Debug)]
pub struct ObLease {
    name: String,
    tmp: String,
    gen0: u64,
    /// Where the copy is mounted.
    pub path: PathBuf,
}

#[derive(Default)]
struct CacheRec {
    generation: u64,
    /// Copies out (OBuilder only counts them; the zfs-fuse dialect needs their names).
    out: Vec<String>,
}

/// OBuilder's ZFS store, as its commands.
pub struct Obuilder {
    zfs: Zfs,
    root: String,
    mountpoint: PathBuf,
    dialect: Dialect,
    next: AtomicU64,
    caches: Mutex<HashMap<String, CacheRec>>,
}

const SNAP: &str = "snap";

impl Obuilder {
    /// OBuilder's `create`: wipes `R/cache-tmp`, creates the groups that are missing and
    /// chowns them. `root` must exist and be mounted at `mountpoint` (groups inherit).
    pub async fn create(
        zfs: Zfs,
        root: &str,
        mountpoint: PathBuf,
        dialect: Dialect,
    ) -> Result<Self> {
        let this = Self {
            zfs,
            root: root.to_owned(),
            mountpoint,
            dialect,
            next: AtomicU64::new(0),
            caches: Mutex::new(HashMap::new()),
        };
        let tmp = this.ds("cache-tmp");
        if this.exists(&tmp).await? {
            this.destroy(&tmp, "-R").await?;
        }
        for g in ["state", "result", "cache", "cache-tmp"] {
            let ds = this.ds(g);
            if !this.exists(&ds).await? {
                this.zfs.check(&["create", "--", &ds]).await?;
            }
            this.chown(&this.path(g))?;
        }
        Ok(this)
    }

    fn ds(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn result_ds(id: &str) -> String {
        format!("result/{id}")
    }

    fn cache_rel(name: &str) -> String {
        // The bench's cache names need no escaping.
        format!("cache/c-{name}")
    }

    fn chown(&self, path: &std::path::Path) -> Result<()> {
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(|e| BenchError::io("chown", path, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheRec>> {
        self.caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Dataset.exists`: `zfs list -p -H DS`, true iff it printed something.
    async fn exists(&self, ds: &str) -> Result<bool> {
        let out = match self.dialect {
            Dialect::Verbatim => self.zfs.output(&["list", "-p", "-H", ds]).await?,
            Dialect::ZfsFuse => self.zfs.output(&["list", "-H", ds]).await?,
        };
        Ok(!out.stdout.trim().is_empty())
    }

    /// `zfs destroy [FLAG] -f -- DS` (zfs-fuse: unmount if mounted, then destroy without
    /// `-f`, repeated on "dataset is busy").
    async fn destroy(&self, ds: &str, flag: &str) -> Result<()> {
        let mut args = vec!["destroy"];
        if !flag.is_empty() {
            args.push(flag);
        }
        match self.dialect {
            Dialect::Verbatim => {
                args.extend(["-f", "--", ds]);
                self.zfs.check(&args).await?;
            }
            Dialect::ZfsFuse => {
                self.unmount_if_mounted(ds).await?;
                args.extend(["--", ds]);
                self.zfs.check_retry_busy(&args).await?;
            }
        }
        Ok(())
    }

    async fn unmount_if_mounted(&self, ds: &str) -> Result<()> {
        if !ds.contains('@') && self.zfs.is_mounted(ds).await? {
            self.zfs.check_retry_busy(&["unmount", "--", ds]).await?;
        }
        Ok(())
    }

    async fn mount_if_unmounted(&self, ds: &str) -> Result<()> {
        if !self.zfs.is_mounted(ds).await? {
            self.zfs.check_retry_busy(&["mount", "--", ds]).await?;
        }
        Ok(())
    }

    /// `zfs rename -- OLD NEW` of a filesystem (zfs-fuse: unmount first, retry on busy; the
    /// caller remounts).
    async fn rename_fs(&self, old: &str, new: &str) -> Result<()> {
        match self.dialect {
            Dialect::Verbatim => {
                self.zfs.check(&["rename", "--", old, new]).await?;
            }
            Dialect::ZfsFuse => {
                self.unmount_if_mounted(old).await?;
                self.zfs
                    .check_retry_busy(&["rename", "--", old, new])
                    .await?;
            }
        }
        Ok(())
    }

    /// `zfs get -pH mounted DS`: the third field is `yes`.
    async fn mounted(&self, ds: &str) -> Result<bool> {
        let out = self.zfs.output(&["get", "-pH", "mounted", ds]).await?;
        Ok(out.stdout.split_whitespace().nth(2) == Some("yes"))
    }

    /// OBuilder's `mount`: `zfs mount -- DS` unless mounted; failures are logged and ignored.
    async fn mount_ignoring_errors(&self, ds: &str) -> Result<()> {
        if !self.mounted(ds).await? {
            let out = self.zfs.output(&["mount", "--", ds]).await?;
            if !out.success() {
                tracing::debug!(ds, stderr = %out.stderr.trim(), "baseline: mount failed (ignored, as OBuilder does)");
            }
        }
        Ok(())
    }

    /// `build`: returns the directory the build function writes; call [`commit`] after it.
    ///
    /// [`commit`]: Self::commit
    pub async fn prepare(&self, base: Option<&str>, id: &str) -> Result<PathBuf> {
        let rel = Self::result_ds(id);
        let ds = self.ds(&rel);
        if self.exists(&ds).await? {
            self.destroy(&ds, "").await?;
        }
        match base {
            None => {
                self.zfs.check(&["create", "--", &ds]).await?;
                self.chown(&self.path(&rel))?;
            }
            Some(base) => {
                // clone_with_children
                let src = self.ds(&Self::result_ds(base));
                let snap = format!("{src}@{SNAP}");
                self.zfs
                    .check(&["clone", "-o", "canmount=noauto", "--", &snap, &ds])
                    .await?;
                let out = self.zfs.output(&["mount", &ds]).await?;
                let tolerated = self.dialect == Dialect::ZfsFuse
                    && out.stderr.contains("filesystem already mounted");
                if !out.success() && !tolerated {
                    return Err(super::zfs_cmd::failed(&["mount", &ds], &out));
                }
                let children = self
                    .zfs
                    .output(&["list", "-H", "-r", "-o", "name", &src])
                    .await?;
                let prefix = format!("{src}/");
                for child in children
                    .stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix))
                {
                    let from = format!("{src}/{child}@{SNAP}");
                    let to = format!("{ds}/{child}");
                    self.zfs
                        .check(&["clone", "-o", "mountpoint=none", "--", &from, &to])
                        .await?;
                }
            }
        }
        Ok(self.path(&rel))
    }

    /// The end of a successful `build`: `zfs snapshot -r -- DS@snap`.
    pub async fn commit(&self, id: &str) -> Result<()> {
        let snap = format!("{}@{SNAP}", self.ds(&Self::result_ds(id)));
        self.zfs.check(&["snapshot", "-r", "--", &snap]).await?;
        Ok(())
    }

    /// `result`: the snapshot path if `DS@snap` exists, mounting the dataset and the snapshot.
    pub async fn result(&self, id: &str) -> Result<Option<PathBuf>> {
        let rel = Self::result_ds(id);
        let ds = self.ds(&rel);
        let snap = format!("{ds}@{SNAP}");
        if !self.exists(&snap).await? {
            return Ok(None);
        }
        self.mount_ignoring_errors(&ds).await?;
        self.mount_ignoring_errors(&snap).await?;
        Ok(Some(self.path(&rel).join(".zfs/snapshot").join(SNAP)))
    }

    /// `delete`: `zfs destroy -R -f -- DS` if it exists.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let ds = self.ds(&Self::result_ds(id));
        if self.exists(&ds).await? {
            self.destroy(&ds, "-R").await?;
        }
        Ok(())
    }

    /// `cache`: a writable clone of `main@snap` in `cache-tmp` (creating the cache if needed).
    pub async fn cache(&self, name: &str) -> Result<ObLease> {
        let gen0 = self.lock().entry(name.to_owned()).or_default().generation;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tmp_rel = format!("cache-tmp/{n}-c-{name}");
        let tmp = self.ds(&tmp_rel);
        let main_rel = Self::cache_rel(name);
        let main = self.ds(&main_rel);
        if !self.exists(&main).await? {
            self.zfs.check(&["create", "--", &main]).await?;
        }
        let snap = format!("{main}@{SNAP}");
        if !self.exists(&snap).await? {
            self.chown(&self.path(&main_rel))?;
            self.zfs.check(&["snapshot", "-r", "--", &snap]).await?;
        }
        self.zfs.check(&["clone", "--", &snap, &tmp]).await?;
        if let Some(c) = self.lock().get_mut(name) {
            c.out.push(tmp.clone());
        }
        Ok(ObLease {
            name: name.to_owned(),
            tmp,
            gen0,
            path: self.path(&tmp_rel),
        })
    }

    /// The release function `cache` returned: publishes (the 7-step rename/promote dance) if
    /// the cache is still at the copy's generation, else destroys the copy. Returns whether
    /// it published.
    pub async fn release(&self, lease: ObLease) -> Result<bool> {
        let (publish, others) = {
            let mut caches = self.lock();
            let c = caches.entry(lease.name.clone()).or_default();
            c.out.retain(|t| *t != lease.tmp);
            let publish = c.generation == lease.gen0;
            if publish {
                c.generation += 1;
            }
            (publish, c.out.clone())
        };
        if !publish {
            self.destroy(&lease.tmp, "").await?;
            return Ok(false);
        }
        let main = self.ds(&Self::cache_rel(&lease.name));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let delete_me = self.ds(&format!("cache-tmp/{n}-c-{}", lease.name));
        let tmp = &lease.tmp;
        let old = format!("old-{}", lease.gen0);
        match self.dialect {
            Dialect::Verbatim => {
                self.zfs.check(&["rename", "--", &main, &delete_me]).await?;
                self.zfs.check(&["promote", tmp]).await?;
                self.destroy(&delete_me, "").await?;
                let (from, to) = (format!("{tmp}@{SNAP}"), format!("{tmp}@{old}"));
                self.zfs.check(&["rename", "--", &from, &to]).await?;
                self.zfs.check(&["destroy", "-d", "--", &to]).await?;
                let snap = format!("{tmp}@{SNAP}");
                self.zfs.check(&["snapshot", "-r", "--", &snap]).await?;
                self.zfs.check(&["rename", "--", tmp, &main]).await?;
            }
            Dialect::ZfsFuse => {
                // Every mounted clone of main's snapshots blocks renaming main.
                self.unmount_if_mounted(tmp).await?;
                for o in &others {
                    self.unmount_if_mounted(o).await?;
                }
                self.rename_fs(&main, &delete_me).await?;
                self.zfs.check(&["promote", tmp]).await?;
                self.destroy(&delete_me, "").await?;
                let (from, to) = (format!("{tmp}@{SNAP}"), format!("{tmp}@{old}"));
                self.zfs.check(&["rename", "-r", "--", &from, &to]).await?;
                self.zfs.check(&["destroy", "-d", "--", &to]).await?;
                let snap = format!("{tmp}@{SNAP}");
                self.zfs.check(&["snapshot", "-r", "--", &snap]).await?;
                self.rename_fs(tmp, &main).await?;
                self.mount_if_unmounted(&main).await?;
                for o in &others {
                    self.mount_if_unmounted(o).await?;
                }
            }
        }
        Ok(true)
    }

    /// `complete_deletes`: OBuilder sleeps 5 s ("pending changes are generally accounted for
    /// within a few seconds").
    pub async fn complete_deletes(&self) {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }

    /// The dataset of result `id` (for the set-up's filler results).
    pub fn result_dataset(&self, id: &str) -> String {
        self.ds(&Self::result_ds(id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use crate::{Cmd, CmdOutput, RunError, Runner};
    use async_trait::async_trait;

    use super::*;

    /// Answers like ZFS for a set of existing datasets, and records every command.
    #[derive(Default)]
    struct Script {
        existing: Mutex<HashSet<String>>,
        log: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Runner for Script {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            self.log.lock().expect("lock").push(cmd.to_string());
            let last = cmd.args.last().cloned().unwrap_or_default();
            let existing = self.existing.lock().expect("lock");
            Ok(match cmd.subcommand() {
                Some("list") if existing.contains(&last) => CmdOutput::ok(format!("{last}\n")),
                Some("list") => CmdOutput::failed(1, "dataset does not exist"),
                Some("get") => CmdOutput::ok(format!("{last}\tmounted\tno\t-\n")),
                _ => CmdOutput::ok(""),
            })
        }
        async fn mount_table(&self) -> std::io::Result<String> {
            Ok(String::new())
        }
    }

    fn take(s: &Script) -> Vec<String> {
        std::mem::take(&mut *s.log.lock().expect("lock"))
    }

    #[tokio::test]
    async fn verbatim_sequences_are_obuilders() {
        let script = Arc::new(Script::default());
        let tmp = tempfile::tempdir().expect("tempdir");
        for g in ["state", "result", "cache", "cache-tmp", "cache/c-x"] {
            std::fs::create_dir_all(tmp.path().join(g)).expect("mkdir");
        }
        let ob = Obuilder::create(
            Zfs::new(script.clone()),
            "p/ob",
            tmp.path().to_owned(),
            Dialect::Verbatim,
        )
        .await
        .expect("create");
        take(&script);
        script.existing.lock().expect("lock").extend(
            [
                "p/ob/result/a",
                "p/ob/result/a@snap",
                "p/ob/cache/c-x",
                "p/ob/cache/c-x@snap",
            ]
            .map(str::to_owned),
        );

        ob.prepare(Some("a"), "b").await.expect("prepare");
        ob.commit("b").await.expect("commit");
        assert_eq!(
            take(&script),
            [
                "zfs list -p -H p/ob/result/b",
                "zfs clone -o canmount=noauto -- p/ob/result/a@snap p/ob/result/b",
                "zfs mount p/ob/result/b",
                "zfs list -H -r -o name p/ob/result/a",
                "zfs snapshot -r -- p/ob/result/b@snap",
            ]
        );

        assert!(ob.result("a").await.expect("result").is_some());
        assert_eq!(
            take(&script),
            [
                "zfs list -p -H p/ob/result/a@snap",
                "zfs get -pH mounted p/ob/result/a",
                "zfs mount -- p/ob/result/a",
                "zfs get -pH mounted p/ob/result/a@snap",
                "zfs mount -- p/ob/result/a@snap",
            ]
        );

        let lease = ob.cache("x").await.expect("cache");
        assert_eq!(
            take(&script),
            [
                "zfs list -p -H p/ob/cache/c-x",
                "zfs list -p -H p/ob/cache/c-x@snap",
                "zfs clone -- p/ob/cache/c-x@snap p/ob/cache-tmp/0-c-x",
            ]
        );
        assert!(ob.release(lease).await.expect("release"));
        assert_eq!(
            take(&script),
            [
                "zfs rename -- p/ob/cache/c-x p/ob/cache-tmp/1-c-x",
                "zfs promote p/ob/cache-tmp/0-c-x",
                "zfs destroy -f -- p/ob/cache-tmp/1-c-x",
                "zfs rename -- p/ob/cache-tmp/0-c-x@snap p/ob/cache-tmp/0-c-x@old-0",
                "zfs destroy -d -- p/ob/cache-tmp/0-c-x@old-0",
                "zfs snapshot -r -- p/ob/cache-tmp/0-c-x@snap",
                "zfs rename -- p/ob/cache-tmp/0-c-x p/ob/cache/c-x",
            ]
        );

        ob.delete("a").await.expect("delete");
        assert_eq!(
            take(&script),
            [
                "zfs list -p -H p/ob/result/a",
                "zfs destroy -R -f -- p/ob/result/a",
            ]
        );
    }
}
