//! A [`store_api::Store`] on ZFS: build results are snapshots, bases are clones, caches are
//! generation datasets. Works on OpenZFS 2.x and on zfs-fuse 0.7 (pool version 23), detecting
//! which at open ([`Engine`]).
//!
//! ```no_run
//! use store_api::{Id, Store, StoreExt};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = store_zfs::ZfsStore::open("tank/zstore").await?;
//! let id = Id::new("base")?;
//! store.build(None, &id, |dir| async move { std::fs::write(dir.join("out"), "ok") }).await?;
//! assert!(store.result(&id).await?.is_some());
//! # Ok(()) }
//! ```
//!
//! # Opening
//!
//! [`ZfsStore::open`] takes a pool (`tank`: the pool `tank`), a mount path (`/tank`,
//! `/mnt/tank`: the pool named by the last component, or failing that the dataset mounted at
//! that path, e.g. `/tank/zstore`) or a dataset below a pool's root (`tank/zstore`). It checks
//! that it exists, is a ZFS filesystem and is mounted, and says which of these failed. It then
//! detects the engine once (`zfs version`: exit 0 is OpenZFS, exit 2 "unrecognized command"
//! is zfs-fuse), creates the layout if missing, rebuilds its in-memory index from one
//! `zfs list` and repairs what an interrupted process left (see *Crash safety*).
//!
//! # Layout (an interface: operators read and pre-seed it)
//!
//! With `R` the store's root dataset:
//!
//! | dataset | what |
//! |---|---|
//! | `R/state` | [`state_dir`](store_api::Store::state_dir); never touched by the store |
//! | `R/result/<id>` + `@snap` | the result of `<id>`; `canmount=noauto`; the build ran inside it, so the log is `<mountpoint>/log` |
//! | `R/result/<id>:<n>` | the same, when `R/result/<id>` is still taken by a deleted result that clones depend on (`n` = 1, 2, …; `:` never occurs in an id) |
//! | `R/result/…` with `zstore:deleted=on` | a deleted result kept only while clones of its `@snap` exist; destroyed with its last dependent |
//! | `R/cache/<component>` | a cache's container (`canmount=off`); `<component>` is the escaped cache name |
//! | `R/cache/<component>/g<N>` + `@v<N>` | generation `N` of the cache; the **highest `N` that has its own `@v<N>` snapshot is the cache's content** |
//! | `R/cache/<component>/g<M>` without `@v<M>` | a copy handed out by [`cache`](store_api::Store::cache) (a clone of the published `@v<N>`) |
//! | `R/cache/<component>/g<N>@v<K>`, `K < N` | an older version moved there by `promote`, kept while copies taken from it are out |
//!
//! A new cache is created at its first acquire as generation `g1`: empty, its top directory
//! owned by the requesting user, snapshotted as `@v1`. Every copy is a clone of the
//! published version; releasing a copy publishes it (as the next version) only if no other
//! copy of the same version was released first.
//!
//! A result is exactly "a dataset `R/result/<leaf>` that has `@snap` and not `zstore:deleted=on`";
//! anything under `R/result` without `@snap` is an interrupted build and is destroyed at open.
//!
//! ## What the store destroys, and what it leaves alone
//!
//! Every dataset the store creates carries the user property `zstore:made`, set to its own
//! name below `R` (`result/<leaf>`, `cache/<component>`, `cache/<component>/g<N>`); a child
//! inherits its parent's value, which is not the child's name, so the proof does not pass
//! down. Open destroys a leftover (an interrupted build, a deleted result nothing depends on,
//! a cache copy or old version a crash left, a cache that never got a version) only if it
//! carries that proof, holds no dataset or snapshot the store did not make, and no process
//! uses it. Everything else under the groups (a dataset made by hand, a child of a result or
//! of a container, a container child not named `g<N>`, another tool's snapshots) is left as
//! it is, logged, and listed by [`ZfsStore::left_alone`]; open never fails because of it.
//! The store's own snapshots are only `@snap` on results and `@v<K>` on cache generations.
//! The groups are created with `com.sun:auto-snapshot=false`, so that auto-snapshot tools
//! (which would pin every dataset the store destroys) leave them out.
//!
//! Results are exposed read-only at their own mountpoint, mounted with `zfs mount -o
//! ro,nosuid,nodev` (zfs-fuse has no `.zfs/snapshot`, and its `readonly=on` does not stop
//! appends; the kernel's `ro` mount does). Nothing is written there after the snapshot, so the
//! mount shows exactly `@snap`; builds from it clone `@snap`, so even a write that slipped
//! through could not reach them.
//!
//! What the store promises about setuid files and device nodes: a result keeps them exactly
//! (modes and device numbers are content, and a build from that base gets them back), but
//! through the result path they are inert: executing a setuid file there does not change
//! the user, and a device node there cannot be opened (`nosuid`, `nodev`). The build
//! directory and cache copies are mounted read-write with setuid and devices honoured,
//! because a build's sandbox runs there (a build that uses `sudo` needs setuid). Anyone who
//! can reach a running build's directory can therefore run what the build put there: keep
//! the store's root out of reach of untrusted local users (for example mode 0700 on its
//! mountpoint) if builds are untrusted.
//!
//! ## Cache names
//!
//! Cache names are any UTF-8 (1–128 bytes, no NUL). The container component is `c-` followed
//! by the name with every byte other than ASCII letters, digits, `-`, `_`, `.` written as
//! `:xx` (lower-case hex; `:` itself is escaped): `opam-archives` → `c-opam-archives`,
//! `c:/windows/cache` → `c-c:3a:2fwindows:2fcache`, `-R` → `c--R`, `pool/other` →
//! `c-pool:2fother`. This is injective and reversible, and only uses characters ZFS accepts
//! (a property test checks both). A name whose escaped form exceeds 128 bytes gets the
//! component `h-<first ≤96 escaped bytes>-<n>` (the first `n` not taken) and keeps its full
//! escaped name in the container's user property `zstore:name`.
//!
//! ## Pre-seeding a cache by hand
//!
//! With the store closed (the index is read at open). The next open adopts a cache in
//! exactly this shape (one generation with its own version snapshot, nothing else) by giving
//! its two datasets the `zstore:made` proof (two `zfs set`, once); from then on the store
//! manages it as one it made.
//!
//! ```text
//! zfs create -o canmount=off tank/zstore/cache/c-opam-archives
//! zfs create -o canmount=noauto tank/zstore/cache/c-opam-archives/g1
//! zfs mount tank/zstore/cache/c-opam-archives/g1
//! cp -a archives/. /tank/zstore/cache/c-opam-archives/g1/
//! chown -R 1000:1000 /tank/zstore/cache/c-opam-archives/g1
//! zfs unmount tank/zstore/cache/c-opam-archives/g1
//! zfs snapshot tank/zstore/cache/c-opam-archives/g1@v1
//! ```
//!
//! # Mounts
//!
//! zfs-fuse serves at most 1000 mounted filesystems per daemon (and then silently stops
//! mounting), so the store never mounts everything. Everything it creates is
//! `canmount=noauto` (not mounted by `zfs mount -a`). Mounted are only: the groups; each
//! running build's dataset; each cache copy that is out; and results that
//! [`result`](store_api::Store::result) returned, read-only, at most
//! [`ZFS_FUSE_MOUNT_CAP`] on zfs-fuse (no cap on OpenZFS; configurable with
//! [`ZfsOptions::max_mounted_results`]). Past the cap the least recently returned result is
//! unmounted; calling `result()` again mounts it again (the path does not change; until
//! then the path is an empty directory, which is this store's one departure from "the path
//! stays valid until `id` is deleted", and only past the cap). Published
//! cache generations and deleted results are unmounted. If a process still has a file open
//! in a build directory when the build commits (OBuilder keeps a log descriptor open a
//! little past `build`), the snapshot is taken anyway and the result stays mounted
//! read-write until a later `result()` can remount it read-only; builds from it clone the
//! snapshot, so they never see later writes. After every create or clone the
//! store checks the mount table, so a silently failed mount is an error, never a path into
//! the parent dataset.
//!
//! # Command costs
//!
//! "Syncing" commands change the pool and wait for a transaction group (`create`, `clone`,
//! `snapshot`, `destroy`, `promote`, `set`); `mount`, `unmount`, `list` and `get` are cheap,
//! and reading the mount table starts no process.
//!
//! | operation | syncing | other commands |
//! |---|---|---|
//! | `result` (hit, mounted) / (miss) | 0 | none, no process |
//! | `result` (hit, not mounted) | 0 | `mount -o ro,nosuid,nodev` |
//! | `build` from a base | 2: `clone`, `snapshot` | `unmount`, `mount -o ro,nosuid,nodev` (+ `mount` on OpenZFS, where clones of `canmount=noauto` are not mounted) |
//! | `build` without base | 2: `create`, `snapshot` | `mount`, `unmount`, `mount -o ro,nosuid,nodev` |
//! | `build` failing | 2: `clone`/`create`, `destroy -r` | `unmount` (+ mounts as above) |
//! | `delete`, nothing depends on it | 1: `destroy -r` (+1 per deleted origin it frees) | `unmount` |
//! | `delete`, clones depend on it | 1: `set zstore:deleted=on` | `unmount` |
//! | `cache`, existing cache | 1: `clone` | (`mount` on OpenZFS) |
//! | `cache`, new cache | 4: `create` container, `create g1` (the empty first version, given to the user), `snapshot g1@v1`, `clone` the copy | `mount`, `unmount` (+ `mount` of the copy on OpenZFS) |
//! | release that publishes | 3: `snapshot`, `promote`, then `destroy -R` of the old version snapshot (its only clone is the old generation, unmounted); on zfs-fuse 4: `destroy` of the old generation, then of the snapshot; while other copies still clone the old version, 3: `destroy` of the old generation alone | `unmount` |
//! | release that discards / drop | 1: `destroy` of the copy (which unmounts it), or, when it is the last copy of an old version, `destroy -R` of that version's snapshot, which takes the copy with it; on zfs-fuse 2 then: `destroy` of the copy, then of the snapshot | none |
//! | `delete_cache` | 1: `destroy -r` | `unmount` of mounted copies |
//! | `df` | 0 | `zfs get used,available` |
//! | `complete_deletes` | 0 | none (zfs-fuse), `zpool wait -t free` (OpenZFS) |
//!
//! A command repeated after "dataset is busy" (zfs-fuse releases a dataset a few
//! milliseconds after `umount` returns) counts once: the retry policy lives in one place,
//! retries only "dataset is busy" / "mountpoint or dataset is busy", waits 10 ms doubling,
//! at most about 5 s in all, and never passes `-f` (a lazy unmount on zfs-fuse, which can
//! wedge its daemon). An unmount refused because a process uses the mount is not retried:
//! zfs-fuse says "target is busy", OpenZFS "cannot unmount '…': pool or dataset is busy"
//! ([`is_mount_in_use`]); the store snapshots a build directory mounted, or destroys a
//! dataset later, instead of waiting. Every command runs through one [`Runner`] (argument vectors, never a
//! shell; `--` before names except for `promote` and `set`, which do not accept it) in a
//! `zfs_command` tracing span, and a failure keeps its argument vector, exit status and
//! stderr ([`store_api::CommandFailure`]).
//!
//! On zfs-fuse, every command runs under a machine-wide lock ([`daemon_lock`]): its daemon
//! cannot serve two commands that start at once (one is lost, or a mount concurrent with an
//! unmount deadlocks it, and then every file access under its mounts hangs until it is
//! killed). Concurrent builds still run their build functions at once; only the commands
//! queue. A command holds the lock until it ends, even when the process that started it is
//! killed first, so a store reopened at once waits for it. Other programs that use the same
//! daemon do not take the lock. Only root can hold it (`/run/zstore`, root's, mode 0700),
//! and a command waits at most [`daemon_lock::LOCK_WAIT`] for another process's, then fails
//! with [`StoreError::Locked`](store_api::StoreError::Locked) naming the holder.
//!
//! On zfs-fuse, no `zfs destroy` the store runs has a snapshot with clones at or below its
//! target: zfs-fuse's libzfs finds such a snapshot's dependents by walking every dataset and
//! snapshot in the pool (`libzfs_graph.c`), and a `destroy -R` of a cache version snapshot
//! with its one clone took 0.02 s in an empty pool, 0.8 s beside 500 results, 4.2 s beside
//! 1,000 and 16.7 s beside 2,000 here, against 17–28 ms at every size for a plain `destroy`
//! of the clone followed by one of the snapshot. (The one exception is a `delete_cache`
//! while a copy dropped earlier is still left in the cache because a process used it.) The
//! tests hold every operation to this with `testing::FakeZfs::pool_walks`. OpenZFS reads a
//! snapshot's clones off the snapshot: there the same `destroy -R` took 0.28 s (under TCG) in
//! an empty pool and 0.31 s beside 2,000 results, so the store keeps the one command.
//!
//! No operation lists datasets. Open costs one `zfs list` of the store plus repairs. What an
//! operation costs at 10 and at 2,000 results is measured by the benchmark
//! (`testing::bench`, which `cargo xtask bench` runs; its scale phase, with a table of each
//! command kind's median at both sizes), not asserted by a test.
//!
//! Measured so (zfs-fuse, 2-core machine, medians at 10 → 2,000 results): every command
//! costs more in the fuller pool whatever it does, ours and OBuilder's alike (`create` 16 →
//! 27 ms, `clone` 18 → 34, `snapshot` 12 → 20, `destroy` 15 → 24, `promote` 12 → 18,
//! `unmount` 9 → 12, `mount` 8 → 15, `destroy -r` of a result 26 → 78), so an operation's
//! cost grows 1.5–2.6× with the pool though none of its commands walks it: build from a base
//! 49 → 88 ms, release that publishes 66 → 108, delete 35 → 92. OBuilder's release renames
//! datasets with clones, which walks the pool like `destroy -R`: 159 ms → 40 s. On OpenZFS
//! no command the store runs was seen to grow with the pool (the per-command script in the
//! guest, empty pool → 2,000 results: `clone`, `snapshot`, `promote`, `destroy`,
//! `destroy -R`, `create`: single samples of 0.1–0.45 s under TCG, with no trend; the
//! benchmark's scale phase has not yet been run there).
//!
//! # Engines
//!
//! Only these paths differ, chosen by the engine detected at open: `complete_deletes`
//! (nothing to wait for on zfs-fuse, whose frees are synchronous; `zpool wait -t free`, or
//! polling `freeing` where `zpool wait` is missing, on OpenZFS) and the default cap on
//! read-only result mounts. Whether a created or cloned dataset came up mounted (zfs-fuse
//! mounts clones despite `canmount=noauto`; OpenZFS does not) is read from the mount table,
//! not assumed.
//!
//! # Concurrency and cancellation
//!
//! All methods take `&self` and may run concurrently. Builds of different ids run in
//! parallel, including many from one base. Operations on one cache run one at a time (a
//! per-cache lock). Every multi-command step (preparing and committing a build, acquiring,
//! releasing, deleting) runs in a task of its own, so dropping the caller's future never
//! stops it half-way; a dropped build is then destroyed (its snapshot, if it got one, is
//! never recorded), a lease acquired for a dropped caller is discarded, and a release runs
//! to its end. A root is open once at a time ([`ZfsStore`]): a second open fails with
//! [`StoreError::Locked`](store_api::StoreError::Locked) and changes nothing.
//!
//! # Crash safety
//!
//! The commit point of a build is its `zfs snapshot …@snap`; of a cache release, the
//! `zfs snapshot …/g<M>@v<M>` of the copy. Everything before is invisible; everything after
//! is housekeeping that open redoes. Step by step (a crash *after* the step named):
//!
//! **build**: `clone`/`create` → a dataset without `@snap`: open destroys it, the id has no
//! result. `mount`/`unmount` → same. `snapshot` → a complete result (the build function had
//! finished): open keeps it, unmounting a read-write mount so it is remounted read-only on
//! demand. `mount -o ro` → a complete result.
//!
//! **delete**: `unmount` → the result is intact. `destroy -r` (snapshot gone, dataset not
//! yet) → no `@snap`: destroyed at open, the id has no result. `set zstore:deleted=on` →
//! hidden; open destroys it once nothing is cloned from it, and its origin chain with it.
//!
//! **cache acquire**: for a new cache, container `create` → an empty container: open
//! destroys it (the cache was never created). `create g1`, `mount`, `chown`, `unmount` → no
//! `@v1`: open destroys it and the container. `snapshot g1@v1` → the cache exists, empty and
//! owned by the user (the contract creates it at the first acquire, so a crash after this
//! keeps it). `clone` of the copy `g<M>` → no `@v<M>`: open destroys it; the cache stays at
//! its version.
//!
//! **cache release (publish)**: `unmount` → copy not published (destroyed at open).
//! `snapshot g<M>@v<M>` → **published**: `M` is now the highest generation with its own
//! snapshot, so open sees version `M` whatever else remains. `promote g<M>` → the old
//! generation is a snapshot-less clone: open destroys it. `destroy -R` of the old version
//! snapshot `g<M>@v<K>` (ZFS destroys its clone, the old generation, first) → done; on
//! zfs-fuse instead `destroy` of the old generation → `g<M>@v<K>` has no clone: open
//! destroys it; `destroy` of it → done. While other copies still clone `@v<K>`, only the old
//! generation goes, and the snapshot after its last copy. Open's repair
//! for a cache: destroy unpublished generations, promote the published one until it has no
//! origin inside the cache, destroy the other generations and every snapshot but `@v<N>`.
//! The old version stays intact until the new one is committed, and a version is one
//! snapshot: a crash leaves the old or the new one, never empty and never a mix. A copy that
//! a process still uses (a crashed builder's sandbox with a file open) cannot be unmounted
//! or destroyed: open leaves it, logged, keeps the version snapshot it was cloned from, and
//! the next operation on that cache (or the next open) destroys it once it is free. The
//! cache itself is at its released version at once.
//!
//! **cache discard / stale release**: one `destroy` of the copy, or, if it was the last
//! clone of an old version snapshot, one `destroy -R` of that snapshot (on zfs-fuse:
//! `destroy` of the copy, then of the snapshot) → the copy (and the snapshot) are gone, or
//! destroyed at open; the cache never changes, as neither is ever the published version.
//!
//! **delete_cache**: one `destroy -r`, which ZFS carries out dataset by dataset: after a
//! crash either `@v<N>` of the published generation still exists (the cache is at its old
//! version, repaired as above) or it does not (the cache is gone; the rest is destroyed at
//! open). Generation numbers only grow, so an older generation can never come back as the
//! published one: each published version is cloned from the one before it and gets a higher
//! number, and promotes keep old snapshots' `@v<K>` names distinct from `@v<N>`.
//!
//! Background work (destroying the dataset of a cancelled build or a dropped copy) runs in
//! tasks; [`ZfsStore::wait_idle`] waits for them. If the process ends first, the next open
//! does the same work, because everything it would destroy is recognisable from names and
//! snapshots alone.
//!
//! A zfs-fuse daemon crash is outside this argument: restart it and `zfs mount` the store
//! root (the store mounts its groups and results itself).

//! # Testing
//!
//! With the `testing` feature (never in production), `testing` holds what this crate's tests
//! use and other crates' tests may reuse:
//! `testing::TestPool` (a sparse-file pool with a unique name, destroyed on drop; its
//! creation fails clearly if the ZFS daemon does not answer), `testing::pool` (the
//! workspace's one test-pool helper, which `TestPool` and `cargo xtask pool` share: named
//! file-backed pools with a record each in `/var/tmp/zstore-pools`, so a pool a crashed test
//! left is listed by `cargo xtask pool list`), `testing::require_zfs` (skip
//! loudly without ZFS, fail if `ZSTORE_REQUIRE_ZFS=1`), `testing::RecordingRunner`,
//! `testing::FaultRunner` (fail command N, or stop every command after N to simulate a
//! crash, then reopen with a real runner) and `testing::FakeZfs` (an in-memory model of the
//! commands, for fast tests without a pool, with zfs-fuse or OpenZFS behaviour). With the
//! `bench` feature, `testing::bench` is the benchmark's ZFS part: this store against
//! OBuilder's ZFS command sequences on one pool, every `zfs`/`zpool` process counted.

mod backoff;
mod build;
mod cache;
mod cache_state;
mod check;
pub mod daemon_lock;
mod engine;
#[cfg(any(test, feature = "testing"))]
mod fake_zfs;
mod layout;
mod locate;
mod lock_file;
pub mod mounts;
mod names;
mod open;
mod reclaim_caches;
mod reclaim_results;
mod results;
pub mod runner;
mod space;
mod state;
mod store;
mod store_lock;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod zfs_cli;

pub use backoff::Backoff;
pub use check::check_layout;
pub use engine::Engine;
pub use layout::{DELETED_PROPERTY, MAX_ROOT_LEN, RESULT_SNAP};
pub use names::{NAME_PROPERTY, escape as escape_cache_name, unescape as unescape_cache_name};
pub use open::ZFS_FUSE_MOUNT_CAP;
pub use runner::{Cmd, CmdOutput, Program, RunError, Runner, SystemRunner};
pub use store::{ZfsOptions, ZfsStore, ZfsStoreBuilder};
pub use zfs_cli::{is_mount_in_use, is_transient_busy};
