//! Telling the ZFS implementations apart.

use crate::prereq;
use crate::runner::{Cmd, Runner};

/// `Ok(version line)` if the host has working kernel OpenZFS: `zfs version` exits 0 and
/// `/dev/zfs` exists. `Err(reason)` otherwise. zfs-fuse's `zfs` has no `version` command (it
/// exits 2), which is how the two are told apart.
pub async fn detect_kernel_openzfs(runner: &Runner) -> Result<String, String> {
    if prereq::find("zfs").is_none() {
        return Err("no `zfs` command installed".into());
    }
    let out = runner
        .output(&Cmd::new("zfs").arg("version"))
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        let first = out.stderr.lines().next().unwrap_or("").trim();
        return Err(format!(
            "`zfs version` failed ({}{}), so this `zfs` is not OpenZFS 2.x (zfs-fuse's has no \
             version command)",
            out.status,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        ));
    }
    if !std::path::Path::new("/dev/zfs").exists() {
        return Err("`zfs version` works but /dev/zfs does not exist (module not loaded?)".into());
    }
    Ok(out.stdout.lines().next().unwrap_or("").trim().to_owned())
}

/// Whether the zfs-fuse daemon binary is installed.
pub fn zfs_fuse_installed() -> bool {
    prereq::find("zfs-fuse").is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runner::scripted::ScriptedExec;

    #[tokio::test]
    async fn zfs_fuse_version_exit_2_is_not_kernel() {
        if prereq::find("zfs").is_none() {
            return; // detection needs a `zfs` binary to exist; nothing to check here
        }
        let exec = Arc::new(ScriptedExec::default());
        exec.on(
            &["zfs", "version"],
            2,
            "",
            "unrecognized command 'version'\nusage: ...",
        );
        let why = detect_kernel_openzfs(&Runner::with_exec(exec))
            .await
            .expect_err("not kernel");
        assert!(why.contains("unrecognized command"), "{why}");
    }
}
