//! The guest image: built once by `vm/build-image.sh`, cached under
//! `~/.cache/zstore/vm-<key>/` where `<key>` hashes everything that goes into it.
//!
//! Atomicity: a build runs in `vm-<key>.tmp-<pid>/`; only when the script succeeded and its
//! outputs check out does xtask write `manifest.json` and rename the directory to `vm-<key>`.
//! A directory named `vm-<key>` with a manifest is therefore always a complete image; an
//! interrupted build leaves at most a `.tmp-<pid>` directory, removed by the next build once
//! that pid is gone. Two concurrent builds of the same key both finish; the second rename
//! loses and its copy is discarded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mirrors::{self, Mirrors};
use crate::cancel::Cancel;
use crate::error::{Result, XtaskError};
use crate::prereq::{self, Need};
use crate::procs;
use crate::runner::{Cmd, Runner};

/// The image build script (its text is part of the cache key).
pub const BUILD_SCRIPT: &str = include_str!("../../vm/build-image.sh");
/// Bump when the meaning of a cached image changes without the script changing.
const FORMAT: u32 = 1;
/// Debian suite of the guest; the host must be able to run binaries built for it.
pub const SUITE: &str = "bookworm";
/// Free space left in the guest's root file system, for file-backed pools (sparse).
const FREE_MB: u32 = 3072;
/// Files every image has.
const FILES: [&str; 3] = ["vmlinuz", "initrd.img", "rootfs.img"];

/// Programs the image build needs on the host.
pub const BUILD_NEEDS: [Need; 3] = [
    Need {
        program: "debootstrap",
        package: "debootstrap",
    },
    Need {
        program: "mkfs.ext4",
        package: "e2fsprogs",
    },
    Need {
        program: "unshare",
        package: "util-linux",
    },
];

/// Everything an image is made from; its hash names the cache directory.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInputs {
    format: u32,
    suite: &'static str,
    arch: &'static str,
    mirror: String,
    security_mirror: String,
    free_mb: u32,
    script_sha256: String,
}

impl ImageInputs {
    /// The inputs for this host (mirrors from the environment or the host's apt sources).
    pub fn for_host() -> Result<Self> {
        let Mirrors { main, security } = mirrors::resolve()?;
        Ok(ImageInputs {
            format: FORMAT,
            suite: SUITE,
            arch: std::env::consts::ARCH,
            mirror: main,
            security_mirror: security,
            free_mb: FREE_MB,
            script_sha256: hex(&Sha256::digest(BUILD_SCRIPT.as_bytes())),
        })
    }

    /// The cache key: the first 16 hex digits of the SHA-256 of the inputs' JSON form.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&json))[..16].to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Written last into a finished image directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cache key.
    pub key: String,
    /// Guest kernel ABI, e.g. `6.1.0-41-amd64`.
    pub kernel: String,
    /// The zfs-dkms package version in the guest.
    pub zfs: String,
    /// Seconds the build took.
    pub build_secs: u64,
    /// `(file, size in bytes)` for each image file.
    pub files: Vec<(String, u64)>,
}

/// A complete, cached image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// Path of one of the image files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Where xtask caches things: `ZSTORE_CACHE_DIR`, else `$XDG_CACHE_HOME/zstore`, else
/// `~/.cache/zstore`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ZSTORE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("zstore");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("zstore")
}

/// The cached image for `inputs`, if a complete one exists.
pub fn cached(inputs: &ImageInputs) -> Option<Image> {
    let key = inputs.key();
    let dir = cache_root().join(format!("vm-{key}"));
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
    if manifest.key != key {
        return None;
    }
    let intact = manifest
        .files
        .iter()
        .all(|(name, size)| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == *size));
    intact.then_some(Image { dir, manifest })
}

/// Options for [`ensure`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    /// Build even if a cached image exists (it is replaced atomically).
    pub rebuild: bool,
    /// Do not reuse or save compiled zfs modules (`<cache>/zfs-ko`), e.g. to time a build
    /// from scratch.
    pub no_module_cache: bool,
}

/// Returns the cached image for this host, building it first if needed (root only).
pub async fn ensure(runner: &Runner, cancel: &Cancel, opts: BuildOptions) -> Result<Image> {
    let inputs = ImageInputs::for_host()?;
    if !opts.rebuild {
        if let Some(image) = cached(&inputs) {
            tracing::info!(dir = %image.dir.display(), "using cached VM image");
            return Ok(image);
        }
    }
    build(runner, cancel, &inputs, opts).await
}

async fn build(
    runner: &Runner,
    cancel: &Cancel,
    inputs: &ImageInputs,
    opts: BuildOptions,
) -> Result<Image> {
    if !procs::is_root() {
        return Err(XtaskError::Missing {
            what: format!(
                "the VM image is not built yet (expected in {}), and building it needs root \
                 (debootstrap, chroot)",
                cache_root().display()
            ),
            hint: "run once as root: cargo xtask vm build".into(),
        });
    }
    prereq::ensure(runner, &BUILD_NEEDS, "building the VM image").await?;
    let key = inputs.key();
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(|e| XtaskError::io("creating", &root, e))?;
    remove_stale_builds(&root, &key);
    let tmp = root.join(format!("vm-{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| XtaskError::io("creating", &tmp, e))?;
    let guard = RemoveOnDrop(tmp.clone());
    let script = tmp.join("build-image.sh");
    std::fs::write(&script, BUILD_SCRIPT).map_err(|e| XtaskError::io("writing", &script, e))?;

    eprintln!(
        "xtask: building the VM image (Debian {SUITE} + zfs-dkms; a few minutes) in {}",
        tmp.display()
    );
    let started = Instant::now();
    let mut cmd = Cmd::new("bash")
        .arg(&script)
        .env("ZSTORE_VM_OUT", &tmp)
        .env("ZSTORE_VM_SUITE", SUITE)
        .env("ZSTORE_VM_MIRROR", &inputs.mirror)
        .env("ZSTORE_VM_SECURITY", &inputs.security_mirror)
        .env("ZSTORE_VM_FREE_MB", inputs.free_mb.to_string());
    if !opts.no_module_cache {
        cmd = cmd.env("ZSTORE_VM_KO_CACHE", root.join("zfs-ko"));
    }
    // Its own process group, so a stop reaches debootstrap/apt/dkms too, not just bash.
    let mut child = runner.spawn(&cmd, |c| {
        c.process_group(0)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    })?;
    let pgid = child.id();
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| XtaskError::io("waiting for", &script, e))?,
        () = cancel.cancelled() => {
            if let Some(pgid) = pgid {
                stop_group(pgid).await;
            }
            let _ = child.kill().await;
            return Err(XtaskError::Interrupted);
        }
    };
    if !status.success() {
        let log = root.join(format!("vm-{key}.failed-build.log"));
        let _ = std::fs::copy(tmp.join("build.log"), &log);
        return Err(XtaskError::VmFailed(format!(
            "image build failed ({status}); full log: {}",
            log.display()
        )));
    }
    let read = |f: &str| {
        std::fs::read_to_string(tmp.join(f))
            .map(|s| s.trim().to_owned())
            .map_err(|e| XtaskError::io("reading build output", tmp.join(f), e))
    };
    let mut files = Vec::new();
    for f in FILES {
        let p = tmp.join(f);
        let len = std::fs::metadata(&p)
            .map_err(|e| XtaskError::io("build output missing", &p, e))?
            .len();
        if len == 0 {
            return Err(XtaskError::VmFailed(format!("build produced an empty {f}")));
        }
        files.push((f.to_owned(), len));
    }
    let manifest = Manifest {
        key: key.clone(),
        kernel: read("kernel-version")?,
        zfs: read("zfs-version")?,
        build_secs: started.elapsed().as_secs(),
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| XtaskError::Invalid(format!("encoding manifest: {e}")))?;
    let mpath = tmp.join("manifest.json");
    std::fs::write(&mpath, text).map_err(|e| XtaskError::io("writing", &mpath, e))?;
    publish(&tmp, &root.join(format!("vm-{key}")))?;
    drop(guard);
    let image =
        cached(inputs).ok_or_else(|| XtaskError::VmFailed("image vanished after build".into()))?;
    eprintln!(
        "xtask: VM image ready in {} s: kernel {}, zfs {} ({})",
        manifest.build_secs,
        image.manifest.kernel,
        image.manifest.zfs,
        image.dir.display()
    );
    Ok(image)
}

/// Moves a finished build into place; an older image of the same key is replaced.
fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let old = dest.with_extension(format!("old-{}", std::process::id()));
    let had_old = dest.exists();
    if had_old {
        std::fs::rename(dest, &old).map_err(|e| XtaskError::io("moving aside", dest, e))?;
    }
    let moved = std::fs::rename(tmp, dest);
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    match moved {
        Ok(()) => Ok(()),
        // A concurrent build of the same key won the race; its image is just as good.
        Err(_) if dest.join("manifest.json").exists() => Ok(()),
        Err(e) => Err(XtaskError::io("publishing the image", dest, e)),
    }
}

/// SIGTERM to the whole build (the script's trap-free design relies on its private mount
/// namespace for cleanup), then SIGKILL if it lingers.
async fn stop_group(pgid: u32) {
    procs::signal_group(pgid, Signal::TERM);
    if !procs::wait_gone(pgid, Duration::from_secs(15)).await {
        procs::signal_group(pgid, Signal::KILL);
    }
}

/// Removes `vm-<key>.tmp-<pid>` directories of builds whose process is gone.
fn remove_stale_builds(root: &Path, key: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("vm-{key}.tmp-");
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !procs::alive(pid) || pid == std::process::id() {
            tracing::info!(dir = %e.path().display(), "removing an interrupted image build");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes a directory tree when dropped (unless it was renamed away first).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(mirror: &str) -> ImageInputs {
        ImageInputs {
            format: FORMAT,
            suite: SUITE,
            arch: "x86_64",
            mirror: mirror.into(),
            security_mirror: format!("{mirror}-security"),
            free_mb: FREE_MB,
            script_sha256: hex(&Sha256::digest(BUILD_SCRIPT.as_bytes())),
        }
    }

    #[test]
    fn key_depends_on_every_input() {
        let a = inputs("http://a.example/debian");
        assert_eq!(a.key(), inputs("http://a.example/debian").key());
        assert_ne!(a.key(), inputs("http://b.example/debian").key());
        let mut c = a.clone();
        c.script_sha256 = "0".into();
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key().len(), 16);
    }

    #[test]
    fn publish_replaces_and_tolerates_a_lost_race() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dest = tmp.path().join("vm-k");
        for round in 0..2 {
            let build = tmp.path().join(format!("vm-k.tmp-{round}"));
            std::fs::create_dir(&build).expect("mkdir");
            std::fs::write(build.join("manifest.json"), round.to_string()).expect("write");
            publish(&build, &dest).expect("publish");
            assert_eq!(
                std::fs::read_to_string(dest.join("manifest.json")).expect("read"),
                round.to_string()
            );
            assert!(!build.exists());
        }
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(leftovers.len(), 1, "only vm-k remains");
    }
}
