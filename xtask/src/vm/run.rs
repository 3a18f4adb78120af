//! Booting the guest image with qemu (TCG, direct kernel boot) and running one command in it.
//!
//! The host and the guest talk through a per-run control directory shared over virtio-9p (see
//! `vm/guest-init.sh` for the protocol): xtask writes the command there, the guest streams the
//! command's output and phase events back, then writes the exit status and powers off.
//!
//! qemu never outlives the run: it is killed on timeout, on SIGINT/SIGTERM/SIGHUP (via
//! [`Cancel`]), when its handle is dropped (`kill_on_drop`), and, should xtask itself be killed
//! with SIGKILL, by the kernel (`setpriv --pdeathsig KILL`). It runs in its own process group so
//! that a terminal's Ctrl-C reaches xtask, which then stops it in order.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::image::Image;
use crate::cancel::Cancel;
use crate::error::{Result, XtaskError};
use crate::prereq::{self, Need};
use crate::runner::{Cmd, Runner};
use store_zfs::testing::pool::PoolName;

/// The per-run guest init (not part of the image, so it can change without a rebuild).
pub const GUEST_INIT: &str = include_str!("../../vm/guest-init.sh");

/// Programs booting the guest needs on the host.
pub const RUN_NEEDS: [Need; 2] = [
    Need {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    Need {
        program: "setpriv",
        package: "util-linux",
    },
];

/// What to run in the guest, and how.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Limit for the whole VM, boot included.
    pub timeout: Duration,
    /// Limit from qemu start until the guest reports "ready" (module loaded, pool created).
    pub boot_timeout: Duration,
    /// A host directory mounted at the same path in the guest.
    pub share: Option<PathBuf>,
    /// Working directory of the command (default: the share, else `/root`).
    pub workdir: Option<PathBuf>,
    /// A pool for the guest init to create first (`$POOL`), with its size (`2G`).
    pub pool: Option<(PoolName, String)>,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// The command.
    pub argv: Vec<OsString>,
    /// Host files copied into the control directory, by name; the guest sees them under
    /// `/mnt/zstore-ctl/<name>`.
    pub files: Vec<(PathBuf, String)>,
    /// Control-directory files to bring back after the run (e.g. a JSON report).
    pub fetch: Vec<String>,
    /// Also print guest phase events and show the kernel console on failure.
    pub verbose: bool,
}

impl VmSpec {
    /// A spec with the defaults: 2 GiB, up to 2 vCPUs, 30 min limit, 3 min to boot.
    pub fn new(argv: Vec<OsString>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2) as u32);
        VmSpec {
            mem_mib: 2048,
            cpus,
            timeout: Duration::from_secs(30 * 60),
            boot_timeout: Duration::from_secs(180),
            share: None,
            workdir: None,
            pool: None,
            env: Vec::new(),
            argv,
            files: Vec::new(),
            fetch: Vec::new(),
            verbose: false,
        }
    }
}

/// Where the guest mounts the control directory.
pub const GUEST_CTL: &str = "/mnt/zstore-ctl";

/// How the guest run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The command ran and exited with this status.
    Exited(i32),
    /// The guest set-up (mounts, modprobe, zpool create) failed; the reason.
    SetupFailed(String),
    /// qemu ended without a status (crash, kernel panic); the console tail.
    NoStatus(String),
    /// The guest was not ready within the boot timeout.
    BootTimeout,
    /// The whole run exceeded its timeout.
    Timeout,
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct VmOutcome {
    /// How it ended.
    pub exit: GuestExit,
    /// Guest phase events: name → seconds since qemu start (host clock).
    pub phases: BTreeMap<String, f64>,
    /// qemu start to qemu exit.
    pub wall: Duration,
    /// The files named in [`VmSpec::fetch`] that the guest wrote.
    pub fetched: BTreeMap<String, Vec<u8>>,
    /// The marker in qemu's command line (for the leak check): the control directory.
    pub marker: String,
}

impl VmOutcome {
    /// The guest phases in time order, e.g. `init 6.5 s, mounted 7.0 s, ready 10.9 s`
    /// (seconds since qemu start, host clock).
    pub fn phase_summary(&self) -> String {
        let mut p: Vec<(&String, &f64)> = self.phases.iter().collect();
        p.sort_by(|a, b| a.1.total_cmp(b.1));
        p.iter()
            .map(|(n, s)| format!("{n} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Boots `image`, runs `spec` in it, streams the command's output to stdout, and returns how it
/// ended. `Err` only for host-side failures and [`XtaskError::Interrupted`].
pub async fn run(
    runner: &Runner,
    cancel: &Cancel,
    image: &Image,
    spec: &VmSpec,
) -> Result<VmOutcome> {
    prereq::ensure(runner, &RUN_NEEDS, "running the VM").await?;
    remove_stale_control_dirs(&std::env::temp_dir());
    let ctl = tempfile::Builder::new()
        .prefix("zstore-vm-")
        .tempdir()
        .map_err(|e| {
            XtaskError::io("creating the VM control directory", std::env::temp_dir(), e)
        })?;
    let ctl_path = ctl.path().to_path_buf();
    write_control(&ctl_path, spec)?;
    let owner = ctl_path.join(OWNER_FILE);
    std::fs::write(&owner, std::process::id().to_string())
        .map_err(|e| XtaskError::io("writing", owner, e))?;
    let marker = ctl_path.to_string_lossy().into_owned();
    let qemu = qemu_command(image, spec, &ctl_path)?;
    let stderr_file = std::fs::File::create(ctl_path.join("qemu.stderr"))
        .map_err(|e| XtaskError::io("creating", ctl_path.join("qemu.stderr"), e))?;

    let started = Instant::now();
    let mut child = runner.spawn(&qemu, |c| {
        c.process_group(0).stdout(Stdio::null()).stderr(stderr_file);
    })?;
    let mut output = Tail::new(ctl_path.join("output"));
    let mut events = Tail::new(ctl_path.join("events"));
    let mut phases = BTreeMap::new();
    let mut stdout = std::io::stdout();
    let mut limit_hit = None;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.map_err(|e| XtaskError::io("waiting for qemu", &ctl_path, e))?,
            () = cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(XtaskError::Interrupted);
            }
            () = tokio::time::sleep(Duration::from_millis(150)) => {}
        }
        pump(&mut output, &mut stdout);
        record_events(&mut events, &mut phases, started, spec.verbose);
        let elapsed = started.elapsed();
        let reason = if elapsed > spec.timeout {
            Some(GuestExit::Timeout)
        } else if elapsed > spec.boot_timeout && !phases.contains_key("ready") {
            Some(GuestExit::BootTimeout)
        } else {
            None
        };
        if let Some(r) = reason {
            tracing::warn!(?r, secs = elapsed.as_secs(), "killing qemu");
            let _ = child.kill().await;
            limit_hit = Some(r);
            break child
                .wait()
                .await
                .map_err(|e| XtaskError::io("waiting for qemu", &ctl_path, e))?;
        }
    };
    let wall = started.elapsed();
    pump(&mut output, &mut stdout);
    record_events(&mut events, &mut phases, started, spec.verbose);
    tracing::info!(%status, secs = wall.as_secs_f64(), "qemu exited");

    let exit = match limit_hit {
        Some(r) => r,
        None => guest_exit(&ctl_path),
    };
    if spec.verbose || !matches!(exit, GuestExit::Exited(_)) {
        show_console(&ctl_path);
    }
    let fetched = spec
        .fetch
        .iter()
        .filter_map(|f| std::fs::read(ctl_path.join(f)).ok().map(|b| (f.clone(), b)))
        .collect();
    drop(ctl);
    Ok(VmOutcome {
        exit,
        phases,
        wall,
        fetched,
        marker,
    })
}

/// In each control directory: the pid of the xtask that made it.
const OWNER_FILE: &str = "xtask.pid";

/// Removes control directories left by an xtask that was killed with SIGKILL (its qemu died
/// with it through the parent-death signal, but nothing removed the directory).
fn remove_stale_control_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_ctl = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("zstore-vm-"));
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let (true, Some(pid)) = (is_ctl, owner) {
            if !crate::procs::alive(pid) {
                tracing::info!(dir = %path.display(), pid, "removing a stale VM control directory");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

fn guest_exit(ctl: &Path) -> GuestExit {
    let status = std::fs::read_to_string(ctl.join("status")).ok();
    match status.as_deref().map(str::trim).map(str::parse::<i32>) {
        Some(Ok(125)) | None if ctl.join("setup-error").exists() => GuestExit::SetupFailed(
            std::fs::read_to_string(ctl.join("setup-error"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        Some(Ok(code)) => GuestExit::Exited(code),
        _ => GuestExit::NoStatus(console_tail(ctl, 30)),
    }
}

fn console_tail(ctl: &Path, lines: usize) -> String {
    let mut text = std::fs::read_to_string(ctl.join("console.log")).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(ctl.join("qemu.stderr")).unwrap_or_default());
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn show_console(ctl: &Path) {
    let tail = console_tail(ctl, 30);
    if !tail.trim().is_empty() {
        eprintln!("--- guest console (last lines) ---\n{tail}\n---");
    }
}

/// Writes the command, environment, settings, guest init and extra files for the guest.
fn write_control(ctl: &Path, spec: &VmSpec) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let p = ctl.join(name);
        std::fs::write(&p, bytes).map_err(|e| XtaskError::io("writing", p, e))
    };
    if spec.argv.is_empty() {
        return Err(XtaskError::Invalid("no command to run in the VM".into()));
    }
    write("guest-init.sh", GUEST_INIT.as_bytes())?;
    write(
        "argv",
        &nul_join(spec.argv.iter().map(|a| a.as_encoded_bytes()))?,
    )?;
    for (k, _) in &spec.env {
        let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(XtaskError::Invalid(format!(
                "invalid environment variable name {k:?}"
            )));
        }
    }
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    write("env", &nul_join(env.iter().map(String::as_bytes))?)?;
    if let Some(share) = &spec.share {
        write("share-path", share.as_os_str().as_encoded_bytes())?;
    }
    if let Some(w) = spec.workdir.as_ref().or(spec.share.as_ref()) {
        write("workdir", w.as_os_str().as_encoded_bytes())?;
    }
    if let Some((pool, size)) = &spec.pool {
        store_zfs::testing::pool::parse_size(size)?;
        write("pool", pool.as_str().as_bytes())?;
        write("pool-size", size.as_bytes())?;
    }
    for (src, name) in &spec.files {
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return Err(XtaskError::Invalid(format!(
                "bad control file name {name:?}"
            )));
        }
        let dest = ctl.join(name);
        std::fs::copy(src, &dest)
            .map_err(|e| XtaskError::io("copying into the VM control directory", src, e))?;
    }
    Ok(())
}

/// Joins with NUL separators; a NUL inside an item cannot be passed and is an error.
fn nul_join<'a>(items: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for item in items {
        if item.contains(&0) {
            return Err(XtaskError::Invalid(
                "an argument contains a NUL byte".into(),
            ));
        }
        out.extend_from_slice(item);
        out.push(0);
    }
    Ok(out)
}

/// qemu's `-opt key=value,...` syntax: a comma inside a value is written twice.
fn qemu_value(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn qemu_command(image: &Image, spec: &VmSpec, ctl: &Path) -> Result<Cmd> {
    let qemu = prereq::find("qemu-system-x86_64").ok_or_else(|| XtaskError::Missing {
        what: "qemu-system-x86_64 is not installed".into(),
        hint: "apt-get install qemu-system-x86".into(),
    })?;
    // 9p "passthrough" keeps guest-root file ownership on the host but needs root; "none"
    // works for anyone.
    let security = if crate::procs::is_root() {
        "passthrough"
    } else {
        "none"
    };
    let mut cmd = Cmd::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(qemu)
        .args([
            "-name",
            "zstore-vm",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-monitor", "none", "-machine", "pc"])
        // qemu64, not max: TCG emulates every extension max offers (AVX and the rest, which the
        // guest kernel and the zfs module then use), and each costs more emulated than the
        // plain x86-64 code it replaces. Measured on the 2-core CI machine: boot to ready
        // 12.7 s against 22.4 s, zfs create/snapshot/clone/destroy 213/131/209/113 ms against
        // 328/210/302/161 ms.
        .args(["-accel", "tcg,thread=multi", "-cpu", "qemu64"])
        .arg("-m")
        .arg(spec.mem_mib.to_string())
        .arg("-smp")
        .arg(spec.cpus.to_string())
        .arg("-kernel")
        .arg(image.file("vmlinuz"))
        .arg("-initrd")
        .arg(image.file("initrd.img"))
        .arg("-append")
        .arg(
            "console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/sbin/zstore-init panic=-1 \
             quiet loglevel=3 mitigations=off nowatchdog tsc=reliable",
        )
        // snapshot=on: writes go to a temporary overlay; the cached image is never modified.
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on,cache=unsafe",
            qemu_value(&image.file("rootfs.img"))
        ))
        .arg("-fsdev")
        .arg(format!(
            "local,id=ctl,path={},security_model=none",
            qemu_value(ctl)
        ))
        .args(["-device", "virtio-9p-pci,fsdev=ctl,mount_tag=zstore-ctl"])
        .arg("-serial")
        .arg(format!("file:{}", qemu_value(&ctl.join("console.log"))));
    if let Some(share) = &spec.share {
        if !share.is_absolute() || !share.is_dir() {
            return Err(XtaskError::Invalid(format!(
                "--share must be an existing absolute directory: {}",
                share.display()
            )));
        }
        cmd = cmd
            .arg("-fsdev")
            .arg(format!(
                "local,id=share,path={},security_model={security}",
                qemu_value(share)
            ))
            .args([
                "-device",
                "virtio-9p-pci,fsdev=share,mount_tag=zstore-share",
            ]);
    }
    Ok(cmd)
}

/// Follows a file the guest appends to.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Bytes appended since the last call.
    fn read_new(&mut self) -> Vec<u8> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            self.offset += buf.len() as u64;
        }
        buf
    }

    /// Complete lines appended since the last call.
    fn read_lines(&mut self) -> Vec<String> {
        let new = self.read_new();
        self.partial.extend_from_slice(&new);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn pump(tail: &mut Tail, out: &mut impl Write) {
    let new = tail.read_new();
    if !new.is_empty() {
        let _ = out.write_all(&new);
        let _ = out.flush();
    }
}

fn record_events(
    tail: &mut Tail,
    phases: &mut BTreeMap<String, f64>,
    started: Instant,
    verbose: bool,
) {
    for line in tail.read_lines() {
        let mut words = line.split_whitespace();
        let (Some(phase), uptime) = (words.next(), words.next()) else {
            continue;
        };
        let at = started.elapsed().as_secs_f64();
        tracing::info!(phase, host_secs = at, guest_uptime = uptime, "guest phase");
        if verbose {
            eprintln!(
                "vm: {phase:<10} {at:6.1} s after qemu start (guest uptime {})",
                uptime.unwrap_or("?")
            );
        }
        phases.entry(phase.to_owned()).or_insert(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_files_carry_argv_and_env_without_quoting() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut spec = VmSpec::new(vec!["sh".into(), "-c".into(), "echo 'a b'; exit 3".into()]);
        spec.env = vec![("ZSTORE_X".into(), "a b=c".into())];
        spec.pool = Some((PoolName::new("zt-xvm").expect("valid"), "1G".into()));
        write_control(tmp.path(), &spec).expect("write");
        assert_eq!(
            std::fs::read(tmp.path().join("argv")).expect("argv"),
            b"sh\0-c\0echo 'a b'; exit 3\0"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("env")).expect("env"),
            b"ZSTORE_X=a b=c\0"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("pool")).expect("pool"),
            "zt-xvm"
        );
        assert!(tmp.path().join("guest-init.sh").exists());
    }

    #[test]
    fn rejects_bad_env_names_and_nul_bytes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut spec = VmSpec::new(vec!["true".into()]);
        spec.env = vec![("A;B".into(), "x".into())];
        assert!(write_control(tmp.path(), &spec).is_err());
        let spec = VmSpec::new(vec!["a\0b".into()]);
        assert!(write_control(tmp.path(), &spec).is_err());
    }

    #[test]
    fn guest_exit_reads_status_and_setup_errors() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(matches!(guest_exit(tmp.path()), GuestExit::NoStatus(_)));
        std::fs::write(tmp.path().join("status"), "7\n").expect("write");
        assert_eq!(guest_exit(tmp.path()), GuestExit::Exited(7));
        std::fs::write(tmp.path().join("status"), "125\n").expect("write");
        std::fs::write(tmp.path().join("setup-error"), "modprobe zfs\n").expect("write");
        assert_eq!(
            guest_exit(tmp.path()),
            GuestExit::SetupFailed("modprobe zfs".into())
        );
    }

    #[test]
    fn tail_returns_only_complete_lines() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("events");
        let mut t = Tail::new(p.clone());
        assert!(t.read_lines().is_empty());
        std::fs::write(&p, "init 1.0\nmoun").expect("write");
        assert_eq!(t.read_lines(), ["init 1.0"]);
        std::fs::write(&p, "init 1.0\nmounted 2.0\n").expect("write");
        assert_eq!(t.read_lines(), ["mounted 2.0"]);
    }

    #[test]
    fn stale_control_dirs_of_dead_owners_are_removed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let live = tmp.path().join("zstore-vm-live");
        let dead = tmp.path().join("zstore-vm-dead");
        let other = tmp.path().join("unrelated");
        for d in [&live, &dead, &other] {
            std::fs::create_dir(d).expect("mkdir");
        }
        std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).expect("write");
        // pid_max is at most 2^22, so this pid cannot exist.
        std::fs::write(dead.join(OWNER_FILE), "4294967295").expect("write");
        std::fs::write(other.join(OWNER_FILE), "4294967295").expect("write");
        remove_stale_control_dirs(tmp.path());
        assert!(live.exists() && other.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn commas_are_doubled_for_qemu() {
        assert_eq!(qemu_value(Path::new("/a,b/c")), "/a,,b/c");
    }
}
