//! The builder's view from the `store_api` crate docs, through `Arc<dyn Store>`.
//!
//! Kept here as well because that doctest does not compile as written (see the note on the
//! `sub` build below); this is the same scenario with that one line adjusted.

use std::sync::Arc;

use store_api::{CacheName, Id, ReleaseOutcome, Store, StoreExt, User};

#[tokio::test]
async fn builder_view_through_dyn_store() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(store_fake::FakeStore::new()?);

    let base = Id::new("base")?;
    if store.result(&base).await?.is_none() {
        store
            .build(None, &base, |dir| async move {
                tokio::fs::write(dir.join("output"), "ok").await
            })
            .await?;
    }

    let sub = Id::new("sub")?;
    let downloads = CacheName::new("opam-archives")?;
    let cache_store = Arc::clone(&store);
    store
        .build(Some(&base), &sub, |dir| async move {
            let lease = cache_store
                .cache(User::new(1000, 1000)?, &downloads)
                .await?;
            tokio::fs::write(lease.path().join("archive.tar"), "bytes").await?;
            assert_eq!(lease.release().await?, ReleaseOutcome::Published);
            let base_output = tokio::fs::read_to_string(dir.join("output")).await?;
            tokio::fs::write(dir.join("output"), base_output + "+").await?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        // `BuildError<Box<dyn Error + Send + Sync>>` is not `std::error::Error` (a boxed
        // trait object is not `Error` itself), so the doctest's bare `?` does not compile.
        .map_err(|e| e.to_string())?;

    let sub_dir = store.result(&sub).await?.expect("sub was just built");
    assert_eq!(std::fs::read_to_string(sub_dir.join("output"))?, "ok+");

    #[derive(Debug, PartialEq)]
    struct StepFailed;
    let fail = Id::new("fail")?;
    let err = store
        .build(None, &fail, |_dir| async { Err(StepFailed) })
        .await
        .expect_err("fails");
    assert_eq!(err.into_failed(), Some(StepFailed));
    assert_eq!(store.result(&fail).await?, None);
    Ok(())
}
