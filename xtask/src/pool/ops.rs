//! Creating, destroying, listing and inspecting file-backed test pools through `zpool`/`zfs`.
//! Only commands that behave the same on zfs-fuse 0.7 and OpenZFS 2.x are used (no `-p` on
//! list, no `-f` on destroy).

use std::path::PathBuf;

use super::{OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolName, PoolRecord};
use crate::error::{Result, XtaskError};
use crate::runner::{Cmd, Runner, failure};

/// Names of the imported pools. An engine without a daemon/module answers with an error.
pub async fn imported(runner: &Runner) -> Result<Vec<String>> {
    let out = runner
        .check(&Cmd::new("zpool").args(["list", "-H", "-o", "name"]))
        .await?;
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "no pools available")
        .map(str::to_owned)
        .collect())
}

/// Creates pool `name` on a sparse file of `size_bytes` in `dir`, mounted under `dir/mnt/`,
/// tagged with [`OWNER_PROPERTY`]. On failure, nothing it made is left behind.
pub async fn create(
    runner: &Runner,
    dir: &PoolDir,
    name: &PoolName,
    size_bytes: u64,
    engine: &str,
) -> Result<PoolRecord> {
    if dir.load(name)?.is_some() {
        return Err(XtaskError::Invalid(format!(
            "pool {name} is already recorded in {}; destroy it first",
            dir.root().display()
        )));
    }
    if imported(runner).await?.iter().any(|p| p == name.as_str()) {
        return Err(XtaskError::Invalid(format!(
            "a pool named {name} already exists"
        )));
    }
    let record = dir.new_record(name, size_bytes, engine);
    dir.save(&record)?;
    let made = make_pool(runner, &record).await;
    if let Err(e) = made {
        if let Err(cleanup) = dir.forget(name) {
            tracing::warn!(error = %cleanup, "cleanup after failed create");
        }
        return Err(e);
    }
    tracing::info!(pool = %name, vdev = %record.vdev.display(), "pool created");
    Ok(record)
}

async fn make_pool(runner: &Runner, record: &PoolRecord) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&record.vdev)
        .map_err(|e| XtaskError::io("creating the vdev file", &record.vdev, e))?;
    file.set_len(record.size_bytes)
        .map_err(|e| XtaskError::io("sizing the vdev file", &record.vdev, e))?;
    drop(file);
    std::fs::create_dir_all(&record.mountpoint)
        .map_err(|e| XtaskError::io("creating the mountpoint", &record.mountpoint, e))?;
    runner
        .check(
            &Cmd::new("zpool")
                .arg("create")
                .arg("-m")
                .arg(&record.mountpoint)
                .arg("-O")
                .arg(format!("{OWNER_PROPERTY}={OWNER_VALUE}"))
                .arg("--")
                .arg(&record.name)
                .arg(&record.vdev),
        )
        .await?;
    Ok(())
}

/// Whether pool `name` is imported.
pub async fn exists(runner: &Runner, name: &PoolName) -> Result<bool> {
    let out = runner
        .output(&Cmd::new("zpool").args(["list", "-H", "-o", "name", "--", name.as_str()]))
        .await?;
    Ok(out.success())
}

/// Destroys pool `name`, which xtask must have created (record in `dir` and, if imported, the
/// owner property on its root dataset). Retries briefly while zfs-fuse reports it busy.
pub async fn destroy(runner: &Runner, dir: &PoolDir, name: &PoolName) -> Result<()> {
    if dir.load(name)?.is_none() {
        return Err(XtaskError::Invalid(format!(
            "refusing to destroy {name}: xtask has no record of creating it in {}",
            dir.root().display()
        )));
    }
    if exists(runner, name).await? {
        let owner = property(runner, name.as_str(), OWNER_PROPERTY).await?;
        if owner != OWNER_VALUE {
            return Err(XtaskError::Invalid(format!(
                "refusing to destroy {name}: its {OWNER_PROPERTY} is {owner:?}, not {OWNER_VALUE:?}"
            )));
        }
        let cmd = Cmd::new("zpool").args(["destroy", "--", name.as_str()]);
        let mut delays = store_zfs::Backoff::TEARDOWN.delays();
        loop {
            let out = runner.output(&cmd).await?;
            if out.success() {
                break;
            }
            // zfs-fuse can report a pool busy for a moment after its datasets were unmounted.
            match delays.next() {
                Some(delay) if out.stderr.contains("busy") => tokio::time::sleep(delay).await,
                _ => return Err(failure(&cmd, &out)),
            }
        }
        tracing::info!(pool = %name, "pool destroyed");
    }
    dir.forget(name)
}

/// `zfs get -H -o value PROP -- DATASET`.
pub async fn property(runner: &Runner, dataset: &str, prop: &str) -> Result<String> {
    let out = runner
        .check(&Cmd::new("zfs").args(["get", "-H", "-o", "value", prop, "--", dataset]))
        .await?;
    Ok(out.stdout.trim().to_owned())
}

/// A pool xtask made, and what `zpool list` says about it now.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The record.
    pub record: PoolRecord,
    /// `Some([size, allocated, health])` if imported, `None` if not (stale record).
    pub live: Option<[String; 3]>,
}

/// The pools recorded in `dir`, with their live state. `Err` only if the directory cannot be
/// read; an unreachable engine shows every pool as not imported, with the reason.
pub async fn list(runner: &Runner, dir: &PoolDir) -> Result<(Vec<Listing>, Option<String>)> {
    let records = dir.records()?;
    let live = runner
        .check(&Cmd::new("zpool").args(["list", "-H", "-o", "name,size,allocated,health"]))
        .await;
    let (rows, problem) = match live {
        Ok(out) => (out.stdout, None),
        Err(e) => (String::new(), Some(e.to_string())),
    };
    let listings = records
        .into_iter()
        .map(|record| {
            let live = rows.lines().find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 4 && f[0] == record.name)
                    .then(|| [f[1].to_owned(), f[2].to_owned(), f[3].to_owned()])
            });
            Listing { record, live }
        })
        .collect();
    Ok((listings, problem))
}

/// Why pool `name` is not empty, or `None` if it holds nothing: no dataset or snapshot besides
/// its root, and no file in the root dataset's mountpoint.
pub async fn why_not_empty(runner: &Runner, name: &PoolName) -> Result<Option<String>> {
    let out = runner
        .check(&Cmd::new("zfs").args([
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            "-t",
            "all",
            "--",
            name.as_str(),
        ]))
        .await?;
    let others: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != name.as_str())
        .collect();
    if let Some(first) = others.first() {
        return Ok(Some(format!(
            "it has {} dataset(s)/snapshot(s) besides its root, e.g. {first}",
            others.len()
        )));
    }
    let mnt = PathBuf::from(property(runner, name.as_str(), "mountpoint").await?);
    if mnt.is_absolute() {
        if let Ok(mut entries) = std::fs::read_dir(&mnt) {
            if let Some(Ok(e)) = entries.next() {
                return Ok(Some(format!(
                    "its root dataset holds files, e.g. {}",
                    e.path().display()
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runner::scripted::ScriptedExec;

    fn setup() -> (Arc<ScriptedExec>, Runner, tempfile::TempDir, PoolDir) {
        let exec = Arc::new(ScriptedExec::default());
        let runner = Runner::with_exec(exec.clone());
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = PoolDir::resolve(Some(tmp.path()));
        (exec, runner, tmp, dir)
    }

    #[tokio::test]
    async fn create_runs_zpool_with_owner_tag_and_double_dash() {
        let (exec, runner, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "tank\n", "");
        exec.on(&["zpool", "create"], 0, "", "");
        let name = PoolName::new("zt-xunit").expect("valid");
        let rec = create(&runner, &dir, &name, 64 << 20, "zfs-fuse")
            .await
            .expect("create");
        let calls = exec.calls();
        let create_call = calls.last().expect("called");
        assert_eq!(
            create_call[..7],
            [
                "zpool",
                "create",
                "-m",
                &rec.mountpoint.to_string_lossy(),
                "-O",
                "org.zstore:created-by=zstore-xtask",
                "--"
            ]
        );
        assert_eq!(create_call[7..], ["zt-xunit", &*rec.vdev.to_string_lossy()]);
        assert_eq!(std::fs::metadata(&rec.vdev).expect("vdev").len(), 64 << 20);
        assert!(dir.load(&name).expect("load").is_some());
    }

    #[tokio::test]
    async fn failed_create_leaves_nothing() {
        let (exec, runner, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "", "");
        exec.on(
            &["zpool", "create"],
            1,
            "",
            "cannot create 'zt-xunit': no space",
        );
        let name = PoolName::new("zt-xunit").expect("valid");
        let err = create(&runner, &dir, &name, 64 << 20, "zfs-fuse")
            .await
            .expect_err("fails");
        assert!(err.to_string().contains("no space"), "{err}");
        assert!(dir.records().expect("records").is_empty());
        assert!(!dir.vdev(&name).exists());
    }

    #[tokio::test]
    async fn destroy_refuses_pools_it_did_not_make() {
        let (exec, runner, _tmp, dir) = setup();
        let name = PoolName::new("tank").expect("valid");
        let err = destroy(&runner, &dir, &name).await.expect_err("refused");
        assert!(err.to_string().contains("no record"), "{err}");
        assert!(exec.calls().is_empty(), "no command may run");

        // Recorded, but the live pool carries someone else's tag.
        dir.save(&dir.new_record(&name, 64 << 20, "zfs-fuse"))
            .expect("save");
        exec.on(&["zpool", "list"], 0, "tank\n", "");
        exec.on(&["zfs", "get"], 0, "-\n", "");
        let err = destroy(&runner, &dir, &name).await.expect_err("refused");
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(!exec.calls().iter().any(|c| c[1] == "destroy"));
    }

    #[tokio::test]
    async fn nonempty_pools_are_reported() {
        let (exec, runner, _tmp, _dir) = setup();
        let name = PoolName::new("tank").expect("valid");
        exec.on(&["zfs", "list"], 0, "tank\ntank/data\ntank/data@s\n", "");
        let why = why_not_empty(&runner, &name)
            .await
            .expect("ok")
            .expect("not empty");
        assert!(why.contains("2 dataset"), "{why}");

        exec.on(&["zfs", "list"], 0, "tank\n", "");
        exec.on(&["zfs", "get"], 0, "none\n", "");
        assert_eq!(why_not_empty(&runner, &name).await.expect("ok"), None);
    }
}
