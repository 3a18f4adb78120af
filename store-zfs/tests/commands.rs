//! The exact command sequence (and so the cost) of each operation: recorded on a real pool,
//! and on the in-memory fake in both its zfs-fuse and OpenZFS behaviours.

mod common;

use std::sync::Arc;

use common::{cname, id, open, pool};
use store_api::{ReleaseOutcome, Store, StoreExt, User};
use store_zfs::testing::{FakeZfs, RecordingRunner};
use store_zfs::{Cmd, Engine, ZfsStore};

/// Recorded commands as lines, with the store root replaced by `R`. A command repeated
/// back to back is the runner's EBUSY retry (zfs-fuse's unmount/destroy race): counted once.
fn lines(mut cmds: Vec<Cmd>, root: &str) -> Vec<String> {
    cmds.dedup();
    cmds.iter()
        .map(|c| c.to_string().replace(root, "R"))
        .collect()
}

fn syncing(cmds: &[Cmd]) -> usize {
    let mut cmds = cmds.to_vec();
    cmds.dedup();
    cmds.iter().filter(|c| c.is_syncing()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sequences() {
    let Some(pool) = pool("command_sequences") else {
        return;
    };
    let (store, rec) = open(&pool).await;
    sequences(&store, &rec, pool.name()).await;
}

async fn on_fake(openzfs: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake: Arc<FakeZfs> = Arc::new(if openzfs {
        FakeZfs::openzfs(dir.path(), "fp")
    } else {
        FakeZfs::new(dir.path(), "fp")
    });
    let rec = RecordingRunner::new(fake.clone());
    let store = common::open_with("fp", rec.clone()).await.expect("open");
    assert_eq!(store.engine().is_zfs_fuse(), !openzfs);
    sequences(&store, &rec, "fp").await;
    // No operation may cost a walk of the whole pool on zfs-fuse (see FakeZfs::pool_walks):
    // such a command's time grows with every result and cache in the pool.
    assert_eq!(
        fake.pool_walks(),
        0,
        "commands that walk the pool on zfs-fuse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sequences_fake_zfs_fuse() {
    on_fake(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sequences_fake_openzfs() {
    on_fake(true).await;
}

async fn sequences(store: &ZfsStore, rec: &RecordingRunner, root: &str) {
    let fuse = *store.engine() == Engine::ZfsFuse;
    rec.take();

    // build without base: create, mount, (build), unmount, snapshot, mount ro.
    store
        .build(None, &id("a"), |_| async { Ok::<_, ()>(()) })
        .await
        .expect("a");
    let cmds = rec.take();
    assert_eq!(syncing(&cmds), 2);
    assert_eq!(
        lines(cmds, root),
        [
            "zfs create -o canmount=noauto -o zstore:made=result/a -- R/result/a",
            "zfs mount -- R/result/a",
            "zfs unmount -- R/result/a",
            "zfs snapshot -- R/result/a@snap",
            "zfs mount -o ro,nosuid,nodev -- R/result/a",
        ]
    );

    // result() on a hit: no process at all.
    for _ in 0..10 {
        store.result(&id("a")).await.expect("r").expect("a");
    }
    assert!(store.result(&id("zz")).await.expect("r").is_none());
    assert_eq!(rec.take(), []);

    // build from a base: clone (mounted by zfs-fuse itself), unmount, snapshot, mount ro.
    store
        .build(Some(&id("a")), &id("b"), |_| async { Ok::<_, ()>(()) })
        .await
        .expect("b");
    let cmds = rec.take();
    assert_eq!(syncing(&cmds), 2);
    let mut expected =
        vec!["zfs clone -o canmount=noauto -o zstore:made=result/b -- R/result/a@snap R/result/b"];
    if !fuse {
        expected.push("zfs mount -- R/result/b");
    }
    expected.extend([
        "zfs unmount -- R/result/b",
        "zfs snapshot -- R/result/b@snap",
        "zfs mount -o ro,nosuid,nodev -- R/result/b",
    ]);
    assert_eq!(lines(cmds, root), expected);

    // A failing build: clone, then unmount and destroy.
    let _ = store
        .build(Some(&id("a")), &id("f"), |_| async { Err::<(), _>(()) })
        .await;
    let cmds = rec.take();
    assert_eq!(syncing(&cmds), 2);
    assert_eq!(
        lines(cmds, root).last().map(String::as_str),
        Some("zfs destroy -r -- R/result/f")
    );

    // delete with a dependent: one `set`, then unmount.
    store.delete(&id("a")).await.expect("delete a");
    assert_eq!(
        lines(rec.take(), root),
        [
            "zfs set zstore:deleted=on R/result/a",
            "zfs unmount -- R/result/a"
        ]
    );
    // delete of the leaf: unmount, destroy; then the freed hidden origin goes too.
    store.delete(&id("b")).await.expect("delete b");
    assert_eq!(
        lines(rec.take(), root),
        [
            "zfs unmount -- R/result/b",
            "zfs destroy -r -- R/result/b",
            "zfs unmount -- R/result/a",
            "zfs destroy -r -- R/result/a",
        ]
    );

    // A new cache: container, its empty first version (made, given to the user,
    // snapshotted), then the copy: a clone of it.
    let user = User::new(1, 1).expect("user");
    let c = cname("c");
    let lease = store.cache(user, &c).await.expect("cache");
    let cmds = rec.take();
    assert_eq!(syncing(&cmds), 4);
    let mut expected = vec![
        "zfs create -o canmount=off -o zstore:made=cache/c-c -- R/cache/c-c",
        "zfs create -o canmount=noauto -o zstore:made=cache/c-c/g1 -- R/cache/c-c/g1",
        "zfs mount -- R/cache/c-c/g1",
        "zfs unmount -- R/cache/c-c/g1",
        "zfs snapshot -- R/cache/c-c/g1@v1",
        "zfs clone -o canmount=noauto -o zstore:made=cache/c-c/g2 -- R/cache/c-c/g1@v1 R/cache/c-c/g2",
    ];
    if !fuse {
        expected.push("zfs mount -- R/cache/c-c/g2");
    }
    assert_eq!(lines(cmds, root), expected);
    // Publishing release: 3 syncing commands, the last a `destroy -R` of the old version
    // snapshot, whose only clone is the old generation. On zfs-fuse, where that `-R` walks
    // the whole pool, 4: the old generation (a snapshot-less clone after the promote), then
    // the snapshot, no longer cloned.
    assert_eq!(
        lease.release().await.expect("rel"),
        ReleaseOutcome::Published
    );
    let cmds = rec.take();
    let mut expected = vec![
        "zfs unmount -- R/cache/c-c/g2",
        "zfs snapshot -- R/cache/c-c/g2@v2",
        "zfs promote R/cache/c-c/g2",
    ];
    if fuse {
        expected.extend([
            "zfs destroy -- R/cache/c-c/g1",
            "zfs destroy -- R/cache/c-c/g2@v1",
        ]);
    } else {
        expected.push("zfs destroy -R -- R/cache/c-c/g2@v1");
    }
    assert_eq!(syncing(&cmds), if fuse { 4 } else { 3 });
    assert_eq!(lines(cmds, root), expected);

    // Acquire of an existing cache: one clone.
    let l2 = store.cache(user, &c).await.expect("cache");
    let mut expected = vec![
        "zfs clone -o canmount=noauto -o zstore:made=cache/c-c/g3 -- R/cache/c-c/g2@v2 R/cache/c-c/g3",
    ];
    if !fuse {
        expected.push("zfs mount -- R/cache/c-c/g3");
    }
    assert_eq!(lines(rec.take(), root), expected);
    let l3 = store.cache(user, &c).await.expect("cache");
    rec.take();
    assert_eq!(l2.release().await.expect("rel"), ReleaseOutcome::Published);
    let cmds = rec.take();
    assert_eq!(syncing(&cmds), 3);
    assert_eq!(
        lines(cmds, root),
        [
            "zfs unmount -- R/cache/c-c/g3",
            "zfs snapshot -- R/cache/c-c/g3@v3",
            "zfs promote R/cache/c-c/g3",
            // l3 still clones @v2, so only the old generation goes now.
            "zfs destroy -- R/cache/c-c/g2",
        ]
    );
    // The stale copy: discarded with the old version snapshot it pinned, in one command
    // (the copy is the snapshot's only clone; `zfs destroy` unmounts it first); on zfs-fuse
    // the copy, then the snapshot, for the same reason as above.
    assert_eq!(l3.release().await.expect("rel"), ReleaseOutcome::Discarded);
    let expected: &[&str] = if fuse {
        &[
            "zfs destroy -- R/cache/c-c/g4",
            "zfs destroy -- R/cache/c-c/g3@v2",
        ]
    } else {
        &["zfs destroy -R -- R/cache/c-c/g3@v2"]
    };
    assert_eq!(lines(rec.take(), root), expected);
    // A dropped copy: destroyed in the background.
    drop(store.cache(user, &c).await.expect("cache"));
    store.wait_idle().await;
    rec.take();
    store.delete_cache(&c).await.expect("delete cache");
    assert_eq!(lines(rec.take(), root), ["zfs destroy -r -- R/cache/c-c"]);

    // df: one `get`; complete_deletes: nothing on zfs-fuse.
    let free = store.df().await.expect("df");
    assert!(free > 0.0 && free <= 100.0, "{free}");
    assert_eq!(
        lines(rec.take(), root),
        ["zfs get -H -p -o property,value used,available -- R"]
    );
    store.complete_deletes().await.expect("complete");
    if fuse {
        assert_eq!(rec.take(), []);
    } else {
        assert_eq!(lines(rec.take(), root), ["zpool wait -t free -- R"]);
    }
}
