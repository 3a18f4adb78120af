//! The zfs-fuse daemon: use one that runs, or start one and remember that this run did, so that
//! exactly that one (and never someone else's) is stopped at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::error::{Result, XtaskError};
use crate::procs;
use crate::runner::{Cmd, Runner};
use store_zfs::mounts::unescape;

/// Where a daemon started by xtask writes its pid.
pub const PIDFILE: &str = "/run/zstore/zfs-fuse.pid";
/// How long a starting daemon may take to answer `zpool list`.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM (4 s measured with 150 mounts).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Pids of running zfs-fuse daemons.
pub fn running_daemons() -> Vec<u32> {
    procs::by_comm("zfs-fuse")
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

/// A zfs-fuse daemon this run uses.
#[derive(Debug)]
pub struct ZfsFuseDaemon {
    pid: u32,
    started_by_us: bool,
}

impl ZfsFuseDaemon {
    /// Uses the running daemon, or starts one. `before` lists the daemons that ran before this
    /// run installed anything: a daemon that appeared since (Debian's postinst starts one when
    /// it can) counts as started by this run.
    pub async fn ensure_running(runner: &Runner, before: &[u32]) -> Result<Self> {
        let now = running_daemons();
        let daemon = if let Some(&pid) = now.first() {
            let started_by_us = !before.contains(&pid);
            if started_by_us {
                eprintln!(
                    "xtask: the zfs-fuse package started a daemon (pid {pid}); it will be stopped at the end"
                );
            }
            ZfsFuseDaemon { pid, started_by_us }
        } else {
            Self::start(runner).await?
        };
        daemon.wait_ready(runner).await?;
        Ok(daemon)
    }

    async fn start(runner: &Runner) -> Result<Self> {
        if !procs::is_root() {
            return Err(XtaskError::Missing {
                what: "no zfs-fuse daemon is running, and starting one needs root".into(),
                hint: "run as root, or start it: sudo zfs-fuse -p /run/zfs-fuse.pid".into(),
            });
        }
        for dir in ["/run/zfs", "/var/lock/zfs", "/run/zstore"] {
            std::fs::create_dir_all(dir).map_err(|e| XtaskError::io("creating", dir, e))?;
        }
        let _ = std::fs::remove_file(PIDFILE);
        // --no-kstat-mount: no /zfs-kstat mount to leave behind. The daemon forks into the
        // background; the command returns once it has.
        runner
            .check(&Cmd::new("zfs-fuse").args(["--pidfile", PIDFILE, "--no-kstat-mount"]))
            .await?;
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(PIDFILE)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(XtaskError::Timeout {
                    what: format!("zfs-fuse to write {PIDFILE}"),
                    secs: 10,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("xtask: started zfs-fuse daemon (pid {pid}); it will be stopped at the end");
        Ok(ZfsFuseDaemon {
            pid,
            started_by_us: true,
        })
    }

    async fn wait_ready(&self, runner: &Runner) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = runner
                .output(&Cmd::new("zpool").args(["list", "-H", "-o", "name"]))
                .await?;
            if out.success() {
                return Ok(());
            }
            if !procs::alive(self.pid) {
                return Err(XtaskError::Missing {
                    what: format!(
                        "the zfs-fuse daemon (pid {}) exited: {}",
                        self.pid,
                        out.stderr.trim()
                    ),
                    hint: "run `zfs-fuse --no-daemon` by hand to see why".into(),
                });
            }
            if start.elapsed() > READY_LIMIT {
                return Err(XtaskError::Timeout {
                    what: format!("zfs-fuse (pid {}) to answer `zpool list`", self.pid),
                    secs: READY_LIMIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's pid if this run started it.
    pub fn started_pid(&self) -> Option<u32> {
        self.started_by_us.then_some(self.pid)
    }

    /// For messages.
    pub fn describe(&self) -> String {
        if self.started_by_us {
            format!("daemon pid {}, started by this run", self.pid)
        } else {
            format!("daemon pid {}, already running", self.pid)
        }
    }

    /// Stops the daemon if this run started it; leaves anyone else's alone. SIGTERM lets it
    /// unmount cleanly; SIGKILL only if it has not exited after a minute.
    pub async fn stop(self) -> Result<()> {
        if !self.started_by_us {
            return Ok(());
        }
        tracing::info!(
            pid = self.pid,
            "stopping the zfs-fuse daemon this run started"
        );
        procs::signal(self.pid, Signal::TERM);
        let gone = procs::wait_gone(self.pid, STOP_LIMIT).await;
        if !gone {
            procs::signal(self.pid, Signal::KILL);
            procs::wait_gone(self.pid, Duration::from_secs(5)).await;
        }
        if Path::new(PIDFILE).exists() {
            let _ = std::fs::remove_file(PIDFILE);
        }
        if gone {
            eprintln!(
                "xtask: stopped the zfs-fuse daemon this run started (pid {})",
                self.pid
            );
            Ok(())
        } else {
            Err(XtaskError::Timeout {
                what: format!(
                    "zfs-fuse (pid {}) to exit after SIGTERM; sent SIGKILL",
                    self.pid
                ),
                secs: STOP_LIMIT.as_secs(),
            })
        }
    }
}

/// How long a `stat` of a zfs-fuse mountpoint may take before the daemon counts as wedged.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// The zfs-fuse mountpoints in the mount table (`fuse.zfs`), deepest last.
fn fuse_mountpoints() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"fuse.zfs")).then(|| f.get(1).map(|m| unescape(m)))?
        })
        .collect()
}

/// The first zfs-fuse mountpoint whose `stat` does not answer within [`ANSWER_LIMIT`]: the
/// daemon's FUSE side is wedged (its CLI socket may still answer). A stat blocked in the
/// kernel stays blocked in a detached thread. "Transport endpoint is not connected" (a mount
/// left by a dead daemon) answers at once and is not a wedge.
pub fn wedged_mount() -> Option<String> {
    let mounts = fuse_mountpoints();
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = mounts.clone();
    std::thread::spawn(move || {
        for m in probe {
            let _ = std::fs::metadata(&m);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    (0..mounts.len())
        .find(|_| rx.recv_timeout(ANSWER_LIMIT).is_err())
        .map(|answered| mounts[answered].clone())
}

/// If a zfs-fuse daemon runs but its mounts do not answer, kills it (SIGKILL: a wedged
/// daemon does not exit on SIGTERM), detaches its mounts (`umount -l` on mounts whose
/// daemon is gone only drops dead FUSE connections), and says so. The next step starts a
/// fresh daemon; the wedged daemon's pools come back with it only if they were in its
/// cache file. Returns whether it had to.
pub async fn recover_if_wedged(runner: &Runner) -> Result<bool> {
    let daemons = running_daemons();
    if daemons.is_empty() {
        return Ok(false);
    }
    let Some(mount) = wedged_mount() else {
        return Ok(false);
    };
    eprintln!(
        "xtask: the zfs-fuse daemon (pid {}) is wedged ({mount} does not answer within {} s); \
         killing it and detaching its mounts",
        daemons
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        ANSWER_LIMIT.as_secs()
    );
    for &pid in &daemons {
        procs::signal(pid, Signal::KILL);
        procs::wait_gone(pid, Duration::from_secs(10)).await;
    }
    let mut mounts = fuse_mountpoints();
    mounts.reverse();
    for m in mounts {
        let out = runner
            .output(&Cmd::new("umount").args(["-l", "--", &m]))
            .await?;
        if !out.success() {
            eprintln!("xtask: umount -l {m}: {}", out.stderr.trim());
        }
    }
    let _ = std::fs::remove_file(PIDFILE);
    Ok(true)
}
