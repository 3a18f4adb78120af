//! Results cannot be changed through the path `result` returns, even by root (CI runs as
//! root, and root ignores permission bits).

mod common;

use common::{Failed, id, is_root, list, read, write};
use store_api::{Store, StoreExt};
use store_fake::FakeStore;

async fn build_base(store: &FakeStore) -> std::path::PathBuf {
    store
        .build(None, &id("base"), |dir| async move {
            write(&dir.join("output"), "ok");
            std::fs::create_dir(dir.join("sub")).expect("mkdir");
            write(&dir.join("sub/file"), "deep");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build base");
    store
        .result(&id("base"))
        .await
        .expect("result")
        .expect("built")
}

#[tokio::test]
async fn writes_through_the_result_path_never_reach_later_builds() {
    let store = FakeStore::new().expect("open");
    let result = build_base(&store).await;
    // Tamper in every way a stray process could; as root, all of these succeed.
    write(&result.join("output"), "tampered");
    write(&result.join("new"), "planted");
    std::fs::remove_file(result.join("sub/file")).expect("rm");
    std::fs::create_dir(result.join("sub/planted-dir")).expect("mkdir");
    if is_root() {
        eprintln!("running as root: the writes above were not stopped by permissions");
    }

    for child in ["c1", "c2"] {
        store
            .build(Some(&id("base")), &id(child), |dir| async move {
                assert_eq!(read(&dir.join("output")), "ok");
                assert_eq!(list(&dir), vec!["output".to_owned(), "sub".to_owned()]);
                assert_eq!(list(&dir.join("sub")), vec!["file".to_owned()]);
                assert_eq!(read(&dir.join("sub/file")), "deep");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build child");
    }
}

#[tokio::test]
async fn a_removed_result_path_is_restored_on_reopen_and_clones_still_work() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    {
        let store = FakeStore::open(&root).expect("open");
        let result = build_base(&store).await;
        std::fs::remove_dir_all(&result).expect("rm -rf the result path");
        store
            .build(Some(&id("base")), &id("child"), |dir| async move {
                assert_eq!(read(&dir.join("output")), "ok");
                Ok::<(), Failed>(())
            })
            .await
            .expect("clone from the private master");
    }
    let store = FakeStore::open(&root).expect("reopen");
    let result = store
        .result(&id("base"))
        .await
        .expect("result")
        .expect("still a result");
    assert_eq!(read(&result.join("output")), "ok");
    assert_eq!(read(&result.join("sub/file")), "deep");
}

#[tokio::test]
async fn writes_to_a_build_dir_after_the_build_ended_do_not_reach_the_result() {
    let store = FakeStore::new().expect("open");
    let mut kept_dir = None;
    store
        .build(None, &id("a"), |dir| {
            kept_dir = Some(dir.clone());
            async move {
                write(&dir.join("f"), "final");
                Ok::<(), Failed>(())
            }
        })
        .await
        .expect("build");
    let dir = kept_dir.expect("dir");
    // The caller promised not to, but if it does, it cannot reach the result's master.
    assert!(!dir.exists(), "the build dir was renamed into the result");
    store
        .build(Some(&id("a")), &id("b"), |dir| async move {
            assert_eq!(read(&dir.join("f")), "final");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build b");
}
