//! `df` and `complete_deletes` on the fake: exact figures, errors instead of made-up numbers,
//! and each engine's way of waiting for frees.

use std::sync::Arc;

use async_trait::async_trait;
use store_api::Store;
use store_zfs::testing::{FakeZfs, RecordingRunner};
use store_zfs::{Cmd, CmdOutput, RunError, Runner, ZfsOptions, ZfsStore};

/// Answers some commands itself, passes the rest to the fake.
struct Override {
    fake: FakeZfs,
    answer: fn(&Cmd) -> Option<CmdOutput>,
}

#[async_trait]
impl Runner for Override {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        match (self.answer)(cmd) {
            Some(out) => Ok(out),
            None => self.fake.run(cmd).await,
        }
    }
    async fn mount_table(&self) -> std::io::Result<String> {
        self.fake.mount_table().await
    }
}

async fn store(
    openzfs: bool,
    answer: fn(&Cmd) -> Option<CmdOutput>,
) -> (tempfile::TempDir, ZfsStore, Arc<RecordingRunner>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = if openzfs {
        FakeZfs::openzfs(dir.path(), "fp")
    } else {
        FakeZfs::new(dir.path(), "fp")
    };
    let rec = RecordingRunner::new(Arc::new(Override { fake, answer }));
    let store = ZfsStore::open_with(
        "fp",
        ZfsOptions {
            runner: rec.clone(),
            ..ZfsOptions::default()
        },
    )
    .await
    .expect("open");
    rec.take();
    (dir, store, rec)
}

fn is_df(cmd: &Cmd) -> bool {
    cmd.args.iter().any(|a| a == "used,available")
}

#[tokio::test]
async fn df_is_exact_and_never_made_up() {
    // 1 MiB used, 3 MiB available (the fake's figures): 75 % free.
    let (_d, s, _r) = store(false, |_| None).await;
    assert_eq!(s.df().await.expect("df"), 75.0);

    let (_d, s, _r) = store(false, |c| {
        is_df(c).then(|| CmdOutput::failed(1, "cannot open 'fp': I/O error\n"))
    })
    .await;
    let err = s.df().await.expect_err("unreadable");
    assert!(err.to_string().contains("I/O error"), "{err}");

    let (_d, s, _r) = store(false, |c| is_df(c).then(|| CmdOutput::ok(""))).await;
    assert!(s.df().await.is_err(), "empty output is an error, not 0 %");

    let (_d, s, _r) = store(false, |c| {
        is_df(c).then(|| CmdOutput::ok("used\t12K\navailable\t1G\n"))
    })
    .await;
    assert!(
        s.df().await.is_err(),
        "human-readable sizes are not parsed as numbers"
    );
}

#[tokio::test]
async fn complete_deletes_per_engine() {
    // zfs-fuse frees synchronously: no command at all.
    let (_d, s, rec) = store(false, |_| None).await;
    s.complete_deletes().await.expect("fuse");
    assert!(rec.take().is_empty());

    // OpenZFS 2.x: `zpool wait -t free`.
    let (_d, s, rec) = store(true, |_| None).await;
    s.complete_deletes().await.expect("openzfs");
    assert_eq!(rec.take_lines(), ["zpool wait -t free -- fp"]);

    // OpenZFS without `zpool wait` (0.8): poll `freeing` until it reads 0.
    static POLLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let (_d, s, rec) = store(true, |c| match c.args.first().map(String::as_str) {
        Some("wait") => Some(CmdOutput::failed(2, "unrecognized command 'wait'\n")),
        Some("get") if c.args.iter().any(|a| a == "freeing") => {
            let n = POLLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(CmdOutput::ok(if n < 2 { "4096\n" } else { "0\n" }))
        }
        _ => None,
    })
    .await;
    s.complete_deletes().await.expect("polled");
    let lines = rec.take_lines();
    assert_eq!(lines[0], "zpool wait -t free -- fp");
    assert_eq!(lines[1..], ["zpool get -H -p -o value freeing fp"; 3]);

    // A failing `zpool wait` is an error, not a silent success.
    let (_d, s, _r) = store(true, |c| {
        (c.args.first().map(String::as_str) == Some("wait"))
            .then(|| CmdOutput::failed(1, "cannot open 'fp': no such pool\n"))
    })
    .await;
    assert!(s.complete_deletes().await.is_err());
}
