//! Where the time of a reopen goes (diagnostic, ignored by default).

mod common;

use std::time::Instant;

use common::{id, open, pool};
use store_api::StoreExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "diagnostic"]
async fn reopen_timing() {
    let Some(pool) = pool("reopen_timing") else {
        return;
    };
    let n: usize = std::env::var("ZSTORE_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (store, _rec) = open(&pool).await;
    for i in 0..n {
        store
            .build(None, &id(&format!("r{i}")), |_| async { Ok::<_, ()>(()) })
            .await
            .expect("b");
    }
    drop(store);
    let t = Instant::now();
    let (_store, rec) = open(&pool).await;
    eprintln!("reopen with {n}: {:?}", t.elapsed());
    for c in rec.take() {
        eprintln!("  {c}");
    }
}
