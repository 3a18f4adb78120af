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
use crate::error::{Result, XtaskError};
use crate::runner::Runner;

/// The one way xtask runs itself in the guest (`conformance`, `crash` and `bench` with
/// `--engine vm`): makes sure the image is built, copies this very executable into the
/// control directory (host and guest are both Debian bookworm, so it runs there), and returns
/// the image and a spec whose command is `xtask ARGS...`, with `RUST_LOG` passed on and the
/// `--vm-*` options applied. Callers add files, variables and fetches, then
/// [`run::run`] it.
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
