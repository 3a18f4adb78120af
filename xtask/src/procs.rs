//! Processes, read from `/proc` (no `ps`/`pgrep` needed), and signals sent to them.

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// A running process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its process id.
    pub pid: u32,
    /// Its `comm` (the executable name, truncated by the kernel to 15 bytes).
    pub comm: String,
    /// Its command line (empty for kernel threads and zombies).
    pub cmdline: Vec<String>,
}

/// Every live (non-zombie) process that can be read.
pub fn all() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect()
}

/// The process `pid`, if it exists and is not a zombie.
pub fn read(pid: u32) -> Option<ProcInfo> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Format: "pid (comm) S ...": comm may contain spaces and parentheses, the state follows
    // the last ')'.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    let comm = std::fs::read_to_string(dir.join("comm"))
        .ok()?
        .trim_end()
        .to_owned();
    let cmdline = std::fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(ProcInfo { pid, comm, cmdline })
}

/// Live processes whose `comm` is exactly `comm`.
pub fn by_comm(comm: &str) -> Vec<ProcInfo> {
    all().into_iter().filter(|p| p.comm == comm).collect()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    read(pid).is_some()
}

/// Sends `signal` to `pid`. Errors (already gone, not permitted) are logged, not returned:
/// callers check [`alive`] afterwards.
pub fn signal(pid: u32, signal: Signal) {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(p, signal) {
        tracing::debug!(pid, ?signal, error = %e, "kill failed");
    }
}

/// Sends `signal` to every process in process group `pgid`.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Some(p) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(p, signal) {
        tracing::debug!(pgid, ?signal, error = %e, "killpg failed");
    }
}

/// Waits until `pid` is gone; `false` if it still lives after `limit`.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_itself() {
        let me = read(std::process::id()).expect("own process is readable");
        assert!(!me.comm.is_empty());
        assert!(!me.cmdline.is_empty());
        assert!(all().iter().any(|p| p.pid == me.pid));
    }
}
