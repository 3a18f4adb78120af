//! Free space: `df` and `complete_deletes`.

use std::time::Duration;

use store_api::StoreError;

use crate::runner::Cmd;
use crate::state::Shared;

/// The pool the store lives in.
fn pool(inner: &Shared) -> &str {
    inner
        .layout
        .root
        .split('/')
        .next()
        .unwrap_or(&inner.layout.root)
}

/// Percent of the pool's usable space that is free: `available / (used + available)` of the
/// pool's root dataset, in exact bytes (`zfs get -H -p`, which both engines support; zfs-fuse
/// has no `zpool list -p`). Any failure to read or parse is an error, never a made-up figure.
pub async fn df(inner: &Shared) -> Result<f64, StoreError> {
    let pool = pool(inner);
    let props = inner
        .zfs
        .get(pool, &["used", "available"])
        .await?
        .ok_or_else(|| StoreError::backend(format!("pool {pool} has disappeared")))?;
    let num = |name: &str| {
        props
            .iter()
            .find(|(p, _)| p == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .ok_or_else(|| {
                StoreError::backend(format!(
                    "cannot read the {name} space of pool {pool} (got {props:?})"
                ))
            })
    };
    let (used, avail) = (num("used")?, num("available")?);
    let total = used.saturating_add(avail);
    if total == 0 {
        return Err(StoreError::backend(format!(
            "pool {pool} reports no space at all"
        )));
    }
    Ok(100.0 * avail as f64 / total as f64)
}

/// How long `complete_deletes` polls `freeing` before giving up.
pub const FREEING_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until the pool has no pending frees.
///
/// - zfs-fuse (pool version 23) frees synchronously in `zfs destroy`: nothing to wait for.
/// - OpenZFS: `zpool wait -t free POOL` (OpenZFS 2.0+). Where `zpool wait` does not exist
///   (0.8), polls `zpool get -H -p -o value freeing POOL` until it reads 0.
pub async fn complete_deletes(inner: &Shared) -> Result<(), StoreError> {
    if inner.engine.is_zfs_fuse() {
        return Ok(());
    }
    let pool = pool(inner).to_owned();
    let wait = Cmd::zpool(["wait", "-t", "free", "--", &pool]);
    let out = inner.zfs.output(&wait).await?;
    if out.success() {
        return Ok(());
    }
    if !(out.status == Some(2) && out.stderr.contains("unrecognized command")) {
        return Err(StoreError::Command(store_api::CommandFailure {
            argv: wait.argv(),
            status: out.status,
            stderr: out.stderr,
        }));
    }
    let poll = Cmd::zpool(["get", "-H", "-p", "-o", "value", "freeing", &pool]);
    let start = tokio::time::Instant::now();
    loop {
        let value = inner.zfs.run(&poll).await?;
        let freeing: u64 = value.trim().parse().map_err(|_| {
            StoreError::backend(format!("cannot parse `freeing` of pool {pool}: {value:?}"))
        })?;
        if freeing == 0 {
            return Ok(());
        }
        if start.elapsed() > FREEING_TIMEOUT {
            return Err(StoreError::backend(format!(
                "pool {pool} still has {freeing} bytes to free after {FREEING_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
