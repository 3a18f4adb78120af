#!/bin/bash
# zstore guest init: PID 1 of the qemu guest, exec'd by the image's /sbin/zstore-init once the
# control share (virtio-9p tag "zstore-ctl") is mounted at /mnt/zstore-ctl.
#
# xtask writes this file into the control directory for every run (it is not part of the image),
# together with:
#   argv        the command to run, NUL-separated (never parsed by a shell)
#   env         VAR=VALUE entries to export, NUL-separated (names checked by xtask)
#   workdir     directory to run the command in (default /root)
#   share-path  if present: mount the virtio-9p tag "zstore-share" there
#   pool, pool-size  if present: create that pool on a sparse file of that size first
# It reports back in the same directory:
#   events      "<phase> <guest uptime in s>" lines (init, mounted, zfs-loaded, ready, done)
#   output      the command's stdout and stderr (the host streams it while the guest runs)
#   status      the command's exit status, written last and atomically; 125 = set-up failed
#   setup-error why the set-up failed, if it did
set -u
CTL=/mnt/zstore-ctl
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8

event() { echo "$1 $(cut -d' ' -f1 /proc/uptime)" >> "$CTL/events"; }
power_off() {
  sync
  echo 1 > /proc/sys/kernel/sysrq
  echo o > /proc/sysrq-trigger
  sleep 60
}
finish() {
  echo "$1" > "$CTL/status.tmp" && mv "$CTL/status.tmp" "$CTL/status"
  power_off
}
fail() {
  echo "zstore-vm: set-up failed: $*" | tee -a "$CTL/setup-error" > /dev/console
  finish 125
}

event init
mount -o remount,rw / || fail "remounting / read-write"
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
hostname zstore-vm

if [ -f "$CTL/share-path" ]; then
  share=$(cat "$CTL/share-path")
  mkdir -p "$share" || fail "creating $share"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 zstore-share "$share" \
    || fail "mounting the shared directory on $share"
fi
event mounted

modprobe zfs || fail "modprobe zfs"
event zfs-loaded

if [ -f "$CTL/pool" ]; then
  POOL=$(cat "$CTL/pool")
  POOL_VDEV=/var/tmp/$POOL.img
  truncate -s "$(cat "$CTL/pool-size")" "$POOL_VDEV" || fail "creating $POOL_VDEV"
  zpool create -- "$POOL" "$POOL_VDEV" > /dev/console 2>&1 || fail "zpool create $POOL"
  export POOL POOL_VDEV
fi
export ZSTORE_VM=1
event ready

mapfile -d '' -t argv < "$CTL/argv"
[ "${#argv[@]}" -gt 0 ] || fail "no command given"
if [ -s "$CTL/env" ]; then
  mapfile -d '' -t envs < "$CTL/env"
  for kv in "${envs[@]}"; do export "$kv"; done
fi
workdir=/root
[ -f "$CTL/workdir" ] && workdir=$(cat "$CTL/workdir")
cd "$workdir" || fail "cd $workdir"
"${argv[@]}" < /dev/null > "$CTL/output" 2>&1
rc=$?
event done
finish "$rc"
