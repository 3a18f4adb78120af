//! `TestPool` on a real pool: a guard over `testing::pool` (a record in the shared pool
//! directory, the owner property, `cachefile=none`), usable and droppable inside an async
//! context, leaving nothing behind.

use std::sync::Arc;

use store_zfs::daemon_lock::DaemonSerialized;
use store_zfs::testing::pool::{self, OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolName};
use store_zfs::testing::{TestPool, require_zfs};
use store_zfs::{Cmd, Runner, SystemRunner};

fn runner() -> DaemonSerialized {
    DaemonSerialized::new(Arc::new(SystemRunner))
}

/// `zpool get cachefile NAME`'s value (zfs-fuse's `zpool get` has no `-H`/`-o`).
async fn cachefile(name: &str) -> String {
    let out = runner()
        .run(&Cmd::zpool(["get", "cachefile", name]))
        .await
        .expect("zpool get");
    assert!(out.success(), "{out:?}");
    let row = out.stdout.lines().nth(1).expect("a row");
    row.split_whitespace().nth(2).expect("a value").to_owned()
}

/// What must hold while the pool lives: recorded, tagged, not cached, mounted, empty.
async fn check_live(test_pool: &TestPool) {
    let name = PoolName::new(test_pool.name()).expect("a valid name");
    let dir = PoolDir::resolve(None);
    let record = dir.load(&name).expect("load").expect("recorded");
    assert_eq!(record.mountpoint, test_pool.mountpoint());
    assert_eq!(record.size_bytes, 512 << 20);
    assert!(record.vdev.starts_with(dir.root()), "{record:?}");
    let owner = pool::property(&runner(), name.as_str(), OWNER_PROPERTY)
        .await
        .expect("zfs get");
    assert_eq!(owner, OWNER_VALUE);
    assert_eq!(cachefile(name.as_str()).await, "none");
    assert_eq!(test_pool.datasets().expect("datasets"), [name.to_string()]);
    assert!(test_pool.mounted().contains(&name.to_string()));
    let listed = pool::list(&runner(), &dir).await.expect("list").0;
    let row = listed
        .iter()
        .find(|l| l.record.name == name.as_str())
        .expect("listed");
    assert!(row.live.is_some(), "imported: {row:?}");
}

/// What must hold once it is dropped: not imported, no file, no record, no mountpoint.
async fn check_gone(name: &PoolName, vdev: &std::path::Path, mnt: &std::path::Path) {
    assert!(!pool::exists(&runner(), name).await.expect("zpool list"));
    let dir = PoolDir::resolve(None);
    assert_eq!(dir.load(name).expect("load"), None);
    assert!(!vdev.exists() && !mnt.exists(), "{vdev:?} {mnt:?}");
}

/// A current-thread runtime is the strictest case: `Runtime::block_on` on its thread would
/// panic. Creating, using and dropping the pool there must not.
#[tokio::test(flavor = "current_thread")]
async fn a_test_pool_works_inside_an_async_context_and_leaves_nothing() {
    if !require_zfs("a_test_pool_works_inside_an_async_context_and_leaves_nothing") {
        return;
    }
    let test_pool = TestPool::create("zt-p").expect("create");
    check_live(&test_pool).await;
    let child = format!("{}/child", test_pool.name());
    let out = runner()
        .run(&Cmd::zfs(["create", "--", &child]))
        .await
        .expect("zfs create");
    assert!(out.success(), "{out:?}");
    test_pool.destroy_tree(&child).expect("destroy_tree");
    test_pool
        .destroy_tree(&child)
        .expect("destroying what is gone is fine");
    assert_eq!(
        test_pool.datasets().expect("datasets"),
        [test_pool.name().to_owned()]
    );
    let name = PoolName::new(test_pool.name()).expect("valid");
    let vdev = PoolDir::resolve(None).vdev(&name);
    let mnt = test_pool.mountpoint().to_owned();
    drop(test_pool);
    check_gone(&name, &vdev, &mnt).await;
}

#[test]
fn a_test_pool_on_a_plain_thread_leaves_nothing() {
    if !require_zfs("a_test_pool_on_a_plain_thread_leaves_nothing") {
        return;
    }
    let test_pool = TestPool::create("zt-p").expect("create");
    assert!(test_pool.name().starts_with("zt-p"));
    let name = PoolName::new(test_pool.name()).expect("valid");
    let vdev = PoolDir::resolve(None).vdev(&name);
    let mnt = test_pool.mountpoint().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(check_live(&test_pool));
    drop(test_pool);
    rt.block_on(check_gone(&name, &vdev, &mnt));
}

#[test]
fn a_prefix_that_makes_no_valid_name_is_an_error() {
    let err = TestPool::create("1bad").expect_err("invalid");
    assert!(err.contains("invalid pool name"), "{err}");
}
