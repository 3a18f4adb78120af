//! [`RunPool`]: the pool one `conformance`, `crash` or `bench` run works on, on a prepared
//! local engine, and the one way it is given back.

use std::path::PathBuf;

use store_zfs::testing::pool::{self, PoolDir, PoolName, PoolRecord};

use super::PoolArgs;
use crate::engine::{self, EngineChoice, LocalEngine};
use crate::error::{Result, XtaskError};
use crate::leaks::{self, Footprint, LeakReport};
use crate::runner::Runner;

/// A local engine prepared for a run and the pool the run uses: a fresh one it created, or
/// an operator's (`--pool`). [`finish`](RunPool::finish) destroys a created pool, undoes the
/// engine preparation and checks the machine for what the run left.
#[derive(Debug)]
pub struct RunPool {
    /// The engine.
    pub engine: LocalEngine,
    /// The pool.
    pub name: PoolName,
    /// Where its root dataset is mounted.
    pub mountpoint: PathBuf,
    created: Option<(PoolDir, PoolRecord)>,
}

impl RunPool {
    /// Prepares engine `choice` and creates a pool under `args`; `what` names the command in
    /// messages. On failure the engine preparation is undone.
    ///
    /// # Errors
    /// The engine cannot be prepared, or the pool cannot be made.
    pub async fn fresh(
        runner: &Runner,
        choice: EngineChoice,
        args: &PoolArgs,
        what: &str,
    ) -> Result<Self> {
        let engine = engine::prepare_local(runner, choice).await?;
        eprintln!("xtask: {what}: engine: {}", engine.describe());
        let created = async {
            let (dir, size) = (args.dir(), args.bytes()?);
            let zfs = super::runner();
            let name = pool::fresh_name(&*zfs, &dir, &args.prefix()).await?;
            let record = pool::create(&*zfs, &dir, &name, size, &engine.kind().to_string()).await?;
            Ok::<_, XtaskError>((dir, name, record))
        }
        .await;
        match created {
            Ok((dir, name, record)) => {
                eprintln!(
                    "xtask: {what}: pool {name} mounted at {}",
                    record.mountpoint.display()
                );
                Ok(Self {
                    engine,
                    name,
                    mountpoint: record.mountpoint.clone(),
                    created: Some((dir, record)),
                })
            }
            Err(e) => {
                let _ = engine.finish(false).await;
                Err(e)
            }
        }
    }

    /// Prepares engine `choice` for the operator's pool `name`, which must exist, be
    /// mounted and (unless `allow_nonempty`) hold nothing. It is never destroyed.
    ///
    /// # Errors
    /// The engine cannot be prepared, or the pool is missing, unmounted or in use.
    pub async fn existing(
        runner: &Runner,
        choice: EngineChoice,
        name: &PoolName,
        allow_nonempty: bool,
    ) -> Result<Self> {
        let engine = engine::prepare_local(runner, choice).await?;
        eprintln!("xtask: engine: {}", engine.describe());
        match existing_mountpoint(name, allow_nonempty).await {
            Ok(mountpoint) => {
                eprintln!("xtask: pool {name} mounted at {}", mountpoint.display());
                Ok(Self {
                    engine,
                    name: name.clone(),
                    mountpoint,
                    created: None,
                })
            }
            Err(e) => {
                let _ = engine.finish(false).await;
                Err(e)
            }
        }
    }

    /// Destroys the pool if this run created it (with `keep`: keeps it and says how to
    /// remove it), undoes the engine preparation, and (without `keep`) checks the machine for
    /// what the run left, printing the report. The report, or `None` with `keep`.
    ///
    /// # Errors
    /// The pool or the engine could not be cleaned up (the other is still tried).
    pub async fn finish(self, keep: bool) -> Result<Option<LeakReport>> {
        let mut fp = Footprint {
            daemon: self.engine.started_daemon(),
            ..Footprint::default()
        };
        let destroyed = match &self.created {
            Some((_, record)) if keep => {
                eprintln!(
                    "xtask: --keep: pool {} kept (vdev {}); remove it with: cargo xtask pool \
                     destroy {}",
                    record.name,
                    record.vdev.display(),
                    record.name
                );
                Ok(())
            }
            Some((dir, record)) => {
                fp.pools.push(record.name.clone());
                fp.files
                    .extend([record.vdev.clone(), dir.record_path(&self.name)]);
                fp.dirs.push(record.mountpoint.clone());
                pool::destroy(&*super::runner(), dir, &self.name)
                    .await
                    .map_err(XtaskError::from)
            }
            None => Ok(()),
        };
        let finished = self.engine.finish(keep).await;
        destroyed?;
        finished?;
        if keep {
            eprintln!("xtask: --keep: leak check skipped");
            return Ok(None);
        }
        let report = leaks::check(&fp).await;
        report.print(if std::env::var_os("ZSTORE_VM").is_some() {
            "guest"
        } else {
            "host"
        });
        Ok(Some(report))
    }
}

/// The mountpoint of the operator-given pool `name`, after checking that it exists and
/// (unless allowed) holds nothing.
async fn existing_mountpoint(name: &PoolName, allow_nonempty: bool) -> Result<PathBuf> {
    let zfs = super::runner();
    if !pool::exists(&*zfs, name).await? {
        return Err(XtaskError::Invalid(format!("--pool {name}: no such pool")));
    }
    if !allow_nonempty {
        if let Some(why) = pool::why_not_empty(&*zfs, name).await? {
            return Err(XtaskError::Invalid(format!(
                "--pool {name} already holds data ({why}); the suite would write into it. \
                 Use an empty pool, or pass --allow-nonempty"
            )));
        }
    }
    let mnt = pool::property(&*zfs, name.as_str(), "mountpoint").await?;
    if !mnt.starts_with('/') {
        return Err(XtaskError::Invalid(format!(
            "--pool {name} is not mounted (mountpoint={mnt})"
        )));
    }
    Ok(mnt.into())
}
