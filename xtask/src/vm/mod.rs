//! The qemu OpenZFS lane: a small Debian bookworm guest with zfs-dkms built for its kernel,
//! cached on the host ([`image`]), booted per run to execute one command against a real
//! OpenZFS pool ([`run`]).

pub mod image;
mod mirrors;
pub mod run;

pub use image::{BuildOptions, cache_root};
pub use run::{GUEST_CTL, GuestExit, VmSpec};
