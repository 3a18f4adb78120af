//! The qemu OpenZFS lane: a small Debian bookworm guest with zfs-dkms built for its kernel,
//! cached on the host ([`image`]), booted per run to execute one command against a real
//! OpenZFS pool ([`run`]).

pub mod image;
mod mirrors;
pub mod run;

pub use image::{BuildOptions, cache_root};
pub use run::{GUEST_CTL, GuestExit, VmSpec};

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::cli::VmOptions;
use crate::error::{EXIT_TIMEOUT, EXIT_VM_FAILED, Result, XtaskError};
use crate::leaks::{self, Footprint, LeakReport};
use crate::runner::Runner;

/// The one way xtask runs itself in the guest (`conformance`, `crash` and `bench` with
/// `--engine vm`): makes sure the image is built, copies this very executable into the
/// control directory (host and guest are both Debian bookworm, so it runs there), and returns
/// the image and a spec whose command is `xtask ARGS...`, with `RUST_LOG` passed on and the
/// `--vm-*` options applied. Callers add files, variables and fetches, then [`boot`] it.
///
/// # Errors
/// The image cannot be built, or this executable cannot be located.
pub async fn guest_xtask(
    runner: &Runner,
    cancel: &Cancel,
    vm: &VmOptions,
    args: impl IntoIterator<Item = OsString>,
) -> Result<(image::Image, VmSpec)> {
    let image = image::ensure(
        runner,
        cancel,
        BuildOptions {
            rebuild: vm.rebuild_image,
            no_module_cache: false,
        },
    )
    .await?;
    let exe = std::env::current_exe()
        .map_err(|e| XtaskError::io("locating xtask", "/proc/self/exe", e))?;
    let mut argv: Vec<OsString> = vec![PathBuf::from(GUEST_CTL).join("xtask").into()];
    argv.extend(args);
    let mut spec = VmSpec::new(argv);
    spec.files.push((exe, "xtask".into()));
    if let Ok(filter) = std::env::var("RUST_LOG") {
        spec.env.push(("RUST_LOG".into(), filter));
    }
    apply_options(&mut spec, vm);
    Ok((image, spec))
}

/// Sets the `--vm-*` options (memory, CPUs, time limits, verbosity) on `spec`.
pub fn apply_options(spec: &mut VmSpec, vm: &VmOptions) {
    spec.mem_mib = vm.vm_mem;
    if let Some(c) = vm.vm_cpus {
        spec.cpus = c;
    }
    spec.timeout = Duration::from_secs(vm.vm_timeout);
    spec.boot_timeout = Duration::from_secs(vm.vm_boot_timeout);
    spec.verbose = vm.vm_verbose;
}

/// Boots `image` to run `spec` ([`run::run`]), saying so first (`what` names the command);
/// then prints the guest's phases and checks the host for what the VM left (qemu, its
/// control directory). Every command with `--engine vm` boots its guest through this.
///
/// # Errors
/// qemu cannot be started or its control directory written.
pub async fn boot(
    runner: &Runner,
    cancel: &Cancel,
    image: &image::Image,
    spec: &VmSpec,
    what: &str,
) -> Result<(run::VmOutcome, LeakReport)> {
    eprintln!(
        "xtask: {what}: booting the OpenZFS guest (kernel {}, zfs {}; qemu TCG, so absolute \
         times are emulated; {} MiB, {} vCPU)",
        image.manifest.kernel, image.manifest.zfs, spec.mem_mib, spec.cpus
    );
    let outcome = run::run(runner, cancel, image, spec).await?;
    let ready = outcome.phases.get("ready").map_or_else(
        || "the guest never got ready".to_owned(),
        |s| format!("boot-to-ready {s:.1} s"),
    );
    eprintln!(
        "xtask: VM: {ready}; guest phases after qemu start: {}; VM wall time {:.1} s",
        outcome.phase_summary(),
        outcome.wall.as_secs_f64()
    );
    let leaks = leaks::check(&Footprint {
        qemu_marker: Some(outcome.marker.clone()),
        dirs: vec![PathBuf::from(&outcome.marker)],
        files: vec![PathBuf::from(&outcome.marker)],
        ..Footprint::default()
    })
    .await;
    leaks.print("host, VM");
    Ok((outcome, leaks))
}

impl GuestExit {
    /// Why the guest's command did not run to an exit status, and the exit status that
    /// calls for; `None` if it exited (whatever its status).
    pub fn failure(&self, vm: &VmOptions) -> Option<(String, u8)> {
        Some(match self {
            GuestExit::Exited(_) => return None,
            GuestExit::SetupFailed(why) => (format!("guest set-up failed: {why}"), EXIT_VM_FAILED),
            GuestExit::NoStatus(tail) => (
                format!("the VM ended without a status; console:\n{tail}"),
                EXIT_VM_FAILED,
            ),
            GuestExit::BootTimeout => (
                format!("the guest was not ready within {} s", vm.vm_boot_timeout),
                EXIT_TIMEOUT,
            ),
            GuestExit::Timeout => (
                format!("the VM exceeded --vm-timeout {} s", vm.vm_timeout),
                EXIT_TIMEOUT,
            ),
        })
    }
}
