//! ZFS test engines: which ZFS implementation a run uses, detection, and preparing it.
//!
//! - `kernel`: the OpenZFS kernel module on this host (`zfs version` works and `/dev/zfs`
//!   exists). Inside the project's qemu guest this is what runs.
//! - `zfs-fuse`: the userspace daemon from Debian's `zfs-fuse` package (pool version 23).
//! - `vm`: OpenZFS in a qemu guest (see [`crate::vm`]).
//! - `fake`: no ZFS at all; the suite runs against `store-fake` (plain directories).
//! - `auto`: kernel if available, else zfs-fuse (installed and started when possible).

mod detect;
pub mod zfs_fuse;

pub use detect::{detect_kernel_openzfs, zfs_fuse_installed};
pub use zfs_fuse::{ZfsFuseDaemon, running_daemons};

use store_zfs::Engine;

use crate::error::{Result, XtaskError};
use crate::prereq::{self, Need};
use crate::runner::Runner;

/// The `--engine` a user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// Kernel OpenZFS if present, else zfs-fuse (installed and started if needed).
    Auto,
    /// The host's OpenZFS kernel module.
    Kernel,
    /// The zfs-fuse userspace daemon.
    ZfsFuse,
    /// OpenZFS inside a qemu guest.
    Vm,
    /// No ZFS: the suite runs against store-fake (plain directories).
    Fake,
}

/// The programs the zfs-fuse engine needs.
pub const ZFS_FUSE_NEEDS: [Need; 3] = [
    Need {
        program: "zfs-fuse",
        package: "zfs-fuse",
    },
    Need {
        program: "zpool",
        package: "zfs-fuse",
    },
    Need {
        program: "zfs",
        package: "zfs-fuse",
    },
];

/// A local ZFS engine, ready for pools; [`LocalEngine::finish`] undoes what preparing it did.
#[derive(Debug)]
pub enum LocalEngine {
    /// Host OpenZFS; nothing to undo.
    Kernel {
        /// `zfs version`'s first line.
        version: String,
    },
    /// zfs-fuse, with the daemon xtask may have started.
    ZfsFuse {
        /// The daemon (started by this run or found running).
        daemon: ZfsFuseDaemon,
    },
}

impl LocalEngine {
    /// Which ZFS this is, as the store names it.
    pub fn kind(&self) -> Engine {
        match self {
            LocalEngine::Kernel { version } => Engine::OpenZfs {
                version: version.clone(),
            },
            LocalEngine::ZfsFuse { .. } => Engine::ZfsFuse,
        }
    }

    /// One line for humans: which engine, which version, whose daemon.
    pub fn describe(&self) -> String {
        match self {
            LocalEngine::Kernel { version } => format!("kernel OpenZFS ({version})"),
            LocalEngine::ZfsFuse { daemon } => format!("zfs-fuse ({})", daemon.describe()),
        }
    }

    /// The pid of a zfs-fuse daemon this run started, if any (for the leak check).
    pub fn started_daemon(&self) -> Option<u32> {
        match self {
            LocalEngine::ZfsFuse { daemon } => daemon.started_pid(),
            LocalEngine::Kernel { .. } => None,
        }
    }

    /// Undoes the preparation: stops a daemon this run started, unless `keep`.
    pub async fn finish(self, keep: bool) -> Result<()> {
        match self {
            LocalEngine::Kernel { .. } => Ok(()),
            LocalEngine::ZfsFuse { daemon } if keep => {
                if let Some(pid) = daemon.started_pid() {
                    eprintln!(
                        "xtask: --keep: leaving the zfs-fuse daemon this run started (pid {pid}) running"
                    );
                }
                Ok(())
            }
            LocalEngine::ZfsFuse { daemon } => daemon.stop().await,
        }
    }
}

/// Prepares the kernel OpenZFS engine, or says why it is not available.
pub async fn prepare_kernel() -> Result<LocalEngine> {
    match detect_kernel_openzfs().await {
        Ok(version) => Ok(LocalEngine::Kernel { version }),
        Err(why) => Err(XtaskError::Missing {
            what: format!("kernel OpenZFS is not available: {why}"),
            hint: "load the zfs module (Debian: apt-get install zfs-dkms zfsutils-linux from \
                   contrib, then modprobe zfs), or use --engine zfs-fuse / --engine vm"
                .into(),
        }),
    }
}

/// Prepares zfs-fuse: installs the package if missing (root only), starts a daemon if none runs.
pub async fn prepare_zfs_fuse(runner: &Runner) -> Result<LocalEngine> {
    let before = zfs_fuse::running_daemons();
    prereq::ensure(runner, &ZFS_FUSE_NEEDS, "the zfs-fuse engine").await?;
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err(XtaskError::Missing {
            what: "zfs-fuse needs /dev/fuse, which does not exist here".into(),
            hint: "load the fuse module (modprobe fuse) or give the container /dev/fuse; \
                   or use --engine vm"
                .into(),
        });
    }
    let daemon = ZfsFuseDaemon::ensure_running(runner, &before).await?;
    Ok(LocalEngine::ZfsFuse { daemon })
}

/// Resolves `auto` and the local choices to a prepared engine. `vm` and `fake` are not local
/// ZFS engines and are handled by the caller.
pub async fn prepare_local(runner: &Runner, choice: EngineChoice) -> Result<LocalEngine> {
    match choice {
        EngineChoice::Kernel => prepare_kernel().await,
        EngineChoice::ZfsFuse => prepare_zfs_fuse(runner).await,
        EngineChoice::Auto => {
            let kernel_why = match detect_kernel_openzfs().await {
                Ok(version) => return Ok(LocalEngine::Kernel { version }),
                Err(why) => why,
            };
            tracing::info!(reason = %kernel_why, "auto: no kernel OpenZFS, trying zfs-fuse");
            prepare_zfs_fuse(runner)
                .await
                .map_err(|e| XtaskError::Missing {
                    what: format!(
                        "no ZFS engine available: kernel OpenZFS: {kernel_why}; zfs-fuse: {e}"
                    ),
                    hint: "run as root so xtask can install and start zfs-fuse, or install it \
                       (apt-get install zfs-fuse; zfs-fuse -p /run/zfs-fuse.pid), or use \
                       --engine vm (qemu-system-x86 + debootstrap, root for the first image \
                       build) or --engine fake"
                        .into(),
                })
        }
        EngineChoice::Vm | EngineChoice::Fake => Err(XtaskError::Invalid(format!(
            "{choice:?} is not a local ZFS engine"
        ))),
    }
}
