//! Telling the ZFS implementations apart.

use std::sync::Arc;

use crate::prereq;

/// `Ok(version line)` if the host has working kernel OpenZFS: [`store_zfs::Engine::detect`]
/// says OpenZFS and `/dev/zfs` exists. `Err(reason)` otherwise.
pub async fn detect_kernel_openzfs() -> Result<String, String> {
    if prereq::find("zfs").is_none() {
        return Err("no `zfs` command installed".into());
    }
    match store_zfs::Engine::detect(Arc::new(store_zfs::SystemRunner)).await {
        Ok(store_zfs::Engine::OpenZfs { version }) => {
            if std::path::Path::new("/dev/zfs").exists() {
                Ok(version)
            } else {
                Err("`zfs version` works but /dev/zfs does not exist (module not loaded?)".into())
            }
        }
        Ok(other) => Err(format!("this `zfs` is {other}, not OpenZFS 2.x")),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the zfs-fuse daemon binary is installed.
pub fn zfs_fuse_installed() -> bool {
    prereq::find("zfs-fuse").is_some()
}
