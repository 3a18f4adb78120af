//! Free space of the filesystem holding the store.

use std::path::Path;

use store_api::StoreError;

/// The percentage of blocks available to the process on the filesystem holding `root`.
pub(crate) fn percent_free(root: &Path) -> Result<f64, StoreError> {
    let stats = rustix::fs::statvfs(root)
        .map_err(|e| StoreError::io("reading free space (statvfs) of", root, e.into()))?;
    if stats.f_blocks == 0 {
        return Err(StoreError::backend(format!(
            "the filesystem holding {} reports a size of 0 blocks, so its free space is unknown",
            root.display()
        )));
    }
    // Precision loss is irrelevant at percent resolution.
    #[allow(clippy::cast_precision_loss)]
    let percent = stats.f_bavail as f64 * 100.0 / stats.f_blocks as f64;
    Ok(percent.clamp(0.0, 100.0))
}
