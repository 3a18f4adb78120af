#!/bin/bash
# Build the zstore test guest: Debian bookworm with linux-image-amd64 and an OpenZFS kernel module
# compiled by zfs-dkms for the *guest* kernel, booted later by `cargo xtask vm run` with
# qemu -kernel/-initrd.
#
# This script is embedded in the xtask binary; xtask writes it into a fresh build directory and
# runs it there as root. Its text is part of the image's cache key, so any edit here makes xtask
# build a new image. xtask, not this script, decides when a build is complete: it checks the
# outputs and renames the build directory into the cache (an interrupted build is never "valid").
#
# Inputs (environment, all set by xtask):
#   ZSTORE_VM_OUT         output directory (must exist, should be empty)
#   ZSTORE_VM_SUITE       Debian suite (bookworm)
#   ZSTORE_VM_MIRROR      Debian archive URI
#   ZSTORE_VM_SECURITY    Debian security archive URI
#   ZSTORE_VM_FREE_MB     free space to leave in the root file system (sparse, so nearly free)
#   ZSTORE_VM_KO_CACHE    optional directory of zfs modules built earlier, keyed
#                         <kernel-abi>/<zfs-deb-version>/; a hit skips headers, compiler and dkms
# Outputs in $ZSTORE_VM_OUT: vmlinuz, initrd.img, rootfs.img (raw ext4, no partition table),
#   kernel-version, zfs-version, build.log (everything the tools printed), steps.txt (timings).
#
# All mounts this script makes live in a private mount namespace (it re-executes itself under
# `unshare --mount`), so they vanish with the script even if it is killed with SIGKILL.
set -euo pipefail

if [ "${ZSTORE_VM_IN_NS:-}" != 1 ]; then
  export ZSTORE_VM_IN_NS=1
  exec unshare --mount --propagation private -- /bin/bash "$0" "$@"
fi

OUT=${ZSTORE_VM_OUT:?ZSTORE_VM_OUT not set}
SUITE=${ZSTORE_VM_SUITE:-bookworm}
MIRROR=${ZSTORE_VM_MIRROR:?ZSTORE_VM_MIRROR not set}
SECURITY=${ZSTORE_VM_SECURITY:?ZSTORE_VM_SECURITY not set}
FREE_MB=${ZSTORE_VM_FREE_MB:-3072}
KO_CACHE=${ZSTORE_VM_KO_CACHE:-}
ROOT=$OUT/rootfs
LOG=$OUT/build.log
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 LANG=C.UTF-8

[ "$(id -u)" = 0 ] || { echo "build-image: must run as root (debootstrap, chroot)" >&2; exit 1; }
[ -d "$OUT" ] || { echo "build-image: $OUT does not exist" >&2; exit 1; }
: > "$LOG"
: > "$OUT/steps.txt"

started=$SECONDS
last=$SECONDS
# step NAME: print progress and record how long the previous step took.
step_done() {
  printf '%-24s %5d s\n' "$1" $((SECONDS - last)) | tee -a "$OUT/steps.txt"
  last=$SECONDS
}
say() { echo "build-image: $*"; }
# run a logged command; on failure show the end of the log.
logged() {
  if ! "$@" >> "$LOG" 2>&1; then
    echo "build-image: failed: $*" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}
chroot_run() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}

# ------------------------------------------------------------------ 1. base system
say "debootstrap $SUITE from $MIRROR (minbase + contrib)"
logged debootstrap --variant=minbase --components=main,contrib --include=kmod \
  "$SUITE" "$ROOT" "$MIRROR"
step_done debootstrap

# ------------------------------------------------------------------ 2. apt, dpkg, initramfs policy
cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main contrib
deb $MIRROR $SUITE-updates main contrib
deb $SECURITY $SUITE-security main contrib
EOF
cat > "$ROOT/etc/apt/apt.conf.d/80zstore" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
echo force-unsafe-io > "$ROOT/etc/dpkg/dpkg.cfg.d/80zstore"
# No service may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
echo zstore-vm > "$ROOT/etc/hostname"
# The initramfs only has to find an ext4 root on a virtio disk.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$ROOT/etc/initramfs-tools/conf.d/zstore.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$ROOT/etc/initramfs-tools/modules"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
step_done configure

# ------------------------------------------------------------------ 3. kernel
logged chroot_run apt-get update
# The ABI that linux-image-amd64 depends on today, e.g. 6.1.0-41-amd64.
KVER=$(chroot_run apt-cache depends linux-image-amd64 \
  | sed -n 's/^ *Depends: linux-image-\([0-9].*\)$/\1/p' | head -n 1)
ZFS_DEB=$(chroot_run apt-cache policy zfs-dkms | sed -n 's/^ *Candidate: //p')
[ -n "$KVER" ] && [ -n "$ZFS_DEB" ] && [ "$ZFS_DEB" != "(none)" ] \
  || { echo "build-image: cannot resolve the kernel ABI or zfs-dkms (is contrib reachable?)" >&2; exit 1; }
ZFS_UPSTREAM=${ZFS_DEB%%-*}
echo "$KVER" > "$OUT/kernel-version"
echo "$ZFS_DEB" > "$OUT/zfs-version"
say "guest kernel $KVER, zfs-dkms $ZFS_DEB"

ko_dir=""
ko_hit=0
if [ -n "$KO_CACHE" ]; then
  ko_dir=$KO_CACHE/$KVER/$ZFS_DEB
  [ -f "$ko_dir/complete" ] && ko_hit=1
fi
if [ "$ko_hit" = 1 ]; then
  say "zfs modules cached in $ko_dir: no headers or compiler needed"
  logged chroot_run apt-get install -y "linux-image-$KVER"
else
  # Headers must be installed before zfs-dkms, in a separate apt run, or dkms finds no kernel to
  # build for (it builds for kernels whose headers are present when its postinst runs).
  logged chroot_run apt-get install -y "linux-image-$KVER" "linux-headers-$KVER"
fi
[ -f "$ROOT/boot/vmlinuz-$KVER" ] || { echo "build-image: kernel $KVER was not installed" >&2; exit 1; }
step_done kernel

# ------------------------------------------------------------------ 4. zfs
extra=$ROOT/lib/modules/$KVER/extra
mkdir -p "$extra"
if [ "$ko_hit" = 1 ]; then
  logged chroot_run apt-get install -y zfsutils-linux
  cp -a "$ko_dir/." "$extra/"
  rm -f "$extra/complete"
  step_done zfs-utils+cached-modules
else
  say "zfs-dkms: compiling the module for $KVER (the slow part, ~3-4 min on 2 cores)"
  logged chroot_run apt-get install -y zfs-dkms zfsutils-linux
  built=$ROOT/lib/modules/$KVER/updates/dkms
  if ! ls "$built"/zfs.ko* > /dev/null 2>&1; then
    say "dkms postinst built nothing for $KVER; running dkms install explicitly"
    logged chroot_run dkms install "zfs/$ZFS_UPSTREAM" -k "$KVER"
  fi
  ls "$built"/zfs.ko* > /dev/null 2>&1 || { echo "build-image: no zfs.ko after dkms" >&2; exit 1; }
  # Keep the modules outside dkms' tree so purging the toolchain below does not remove them.
  cp -a "$built/." "$extra/"
  if [ -n "$ko_dir" ]; then
    # Publish to the module cache atomically: a half-copied directory is never marked complete.
    mkdir -p "$KO_CACHE/$KVER"
    tmp=$(mktemp -d "$KO_CACHE/$KVER/.tmp.XXXXXX")
    cp -a "$built/." "$tmp/"
    touch "$tmp/complete"
    rm -rf "$ko_dir"
    mv -T "$tmp" "$ko_dir" || rm -rf "$tmp"
  fi
  # zfsutils-linux only recommends zfs-dkms, so the compiler and headers can go.
  purge=$(chroot_run dpkg-query -W -f='${binary:Package}\n' zfs-dkms dkms build-essential \
    'linux-headers-*' 'linux-kbuild-*' 'linux-compiler-gcc-*' 'gcc-12' 'cpp-12' 2> /dev/null || true)
  # shellcheck disable=SC2086 # one package per word
  logged chroot_run apt-get purge -y $purge
  logged chroot_run apt-get autoremove -y --purge
  step_done zfs-dkms-build
fi
chroot_run depmod -a "$KVER"
chroot_run modinfo -k "$KVER" -F version zfs > "$OUT/zfs-module-version"

# ------------------------------------------------------------------ 5. slim
# Keep only the kernel modules that a guest of ours loads, with their dependencies.
needed=$OUT/needed-modules
: > "$needed"
for m in zfs 9p 9pnet_virtio virtio_pci virtio_blk virtio_console ext4 loop; do
  chroot_run modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}' >> "$needed"
done
find "$ROOT/lib/modules/$KVER/kernel" -name '*.ko*' -printf "/lib/modules/$KVER/kernel/%P\n" \
  | sort > "$OUT/all-modules"
sort -u "$needed" -o "$needed"
comm -23 "$OUT/all-modules" "$needed" | while read -r ko; do rm -f "$ROOT$ko"; done
find "$ROOT/lib/modules/$KVER/kernel" -type d -empty -delete
chroot_run depmod -a "$KVER"
for m in zfs 9p 9pnet_virtio; do chroot_run modprobe -S "$KVER" --show-depends "$m" > /dev/null; done
rm -f "$OUT/all-modules"
chroot_run apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/lib/dkms \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* \
  "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log "$ROOT"/var/cache/debconf/*-old
step_done slim

# ------------------------------------------------------------------ 6. PID 1 stub
# The image's init only mounts the control share (virtio-9p tag "zstore-ctl") and hands over
# to the guest-init.sh that xtask puts there for each run, so guest logic can change without
# rebuilding the image. Without the share there is nothing to do: power off.
mkdir -p "$ROOT/mnt/zstore-ctl"
cat > "$ROOT/sbin/zstore-init" <<'EOF'
#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
# The initramfs has moved its /proc, /sys and /dev over; mount only what is missing.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
modprobe 9pnet_virtio && modprobe 9p \
  && mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 zstore-ctl /mnt/zstore-ctl \
  && [ -f /mnt/zstore-ctl/guest-init.sh ] \
  && exec /bin/bash /mnt/zstore-ctl/guest-init.sh
echo "zstore-init: no control share; powering off" > /dev/console
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
sleep 30
EOF
chmod 755 "$ROOT/sbin/zstore-init"
step_done init-stub

# ------------------------------------------------------------------ 7. kernel, initrd, rootfs.img
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"
umount "$ROOT/tmp" "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"
rm -rf "${ROOT:?}/boot"/*
used_mb=$(du -smx "$ROOT" | cut -f1)
size_mb=$((used_mb * 12 / 10 + FREE_MB))
logged mkfs.ext4 -q -F -L zstore-root -i 65536 -E lazy_itable_init=0,lazy_journal_init=0 \
  -d "$ROOT" "$OUT/rootfs.img" "${size_mb}M"
rm -rf "$ROOT"
step_done rootfs.img
printf '%-24s %5d s\n' total $((SECONDS - started)) | tee -a "$OUT/steps.txt"
say "done: root fs ${used_mb} MB used, image ${size_mb} MB (sparse)"
