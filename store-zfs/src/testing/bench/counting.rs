//! [`CountingRunner`]: the [`Runner`] both stores under test go through, counting
//! every `zfs`/`zpool` process it starts (syncing and not, and "dataset is busy" retries) and
//! recording the command lines (with how long each took) of the current measurement, and each
//! command's kind and duration for the per-command cost table ([`super::command_costs`]).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Cmd, CmdOutput, RunError, Runner, is_transient_busy};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Process counts over some span of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Processes that change the pool and wait for a transaction group (`create`, `clone`,
    /// `snapshot`, `destroy`, `rename`, `promote`, `set`, `inherit`).
    pub syncing: u64,
    /// Every other `zfs`/`zpool` process (`list`, `get`, `mount`, `unmount`, `zpool ...`).
    pub other: u64,
    /// Of all of these, the ones that failed with "dataset is busy" (and were retried).
    pub busy_failures: u64,
}

impl Counts {
    /// All processes.
    pub fn total(&self) -> u64 {
        self.syncing + self.other
    }

    /// `self - before`, for a span measured as two readings.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            syncing: self.syncing - before.syncing,
            other: self.other - before.other,
            busy_failures: self.busy_failures - before.busy_failures,
        }
    }
}

#[derive(Default)]
struct State {
    counts: Counts,
    lines: Vec<String>,
    /// Kind ([`super::command_costs::kind`]) and milliseconds of each command.
    timings: Vec<(String, f64)>,
}

/// Wraps the real runner; counts and records every command passed through it.
pub struct CountingRunner {
    inner: Arc<dyn Runner>,
    state: Mutex<State>,
}

impl CountingRunner {
    /// Counts the commands passed to `inner`.
    pub fn new(inner: Arc<dyn Runner>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters half-updated; keep counting.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.state().counts
    }

    /// Returns and clears the command lines recorded so far.
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut self.state().lines)
    }

    /// Returns and clears the kinds and milliseconds of the commands run so far.
    pub fn take_timings(&self) -> Vec<(String, f64)> {
        std::mem::take(&mut self.state().timings)
    }
}

#[async_trait]
impl Runner for CountingRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let t0 = std::time::Instant::now();
        let out = self.inner.run(cmd).await;
        let took = t0.elapsed();
        let mut st = self.state();
        if cmd.is_syncing() {
            st.counts.syncing += 1;
        } else {
            st.counts.other += 1;
        }
        let mut line = cmd.to_string();
        if let Ok(o) = &out {
            if !o.success() {
                if is_transient_busy(&o.stderr) {
                    st.counts.busy_failures += 1;
                }
                line.push_str(&format!("  [exit {}]", o.status.unwrap_or(-1)));
            }
        }
        let ms = took.as_secs_f64() * 1000.0;
        line.push_str(&format!("  ({ms:.1} ms)"));
        st.lines.push(line);
        st.timings.push((super::command_costs::kind(cmd), ms));
        out
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned;

    #[async_trait]
    impl Runner for Canned {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            Ok(match cmd.subcommand() {
                Some("destroy") => CmdOutput::failed(1, "cannot destroy 'p/x': dataset is busy\n"),
                _ => CmdOutput::ok(""),
            })
        }
        async fn mount_table(&self) -> std::io::Result<String> {
            Ok(String::new())
        }
    }

    #[tokio::test]
    async fn counts_syncing_other_and_busy() {
        let r = CountingRunner::new(Arc::new(Canned));
        let before = r.counts();
        for args in [
            &["list", "-H", "p"][..],
            &["snapshot", "p@s"],
            &["destroy", "p/x"],
            &["mount", "p/x"],
            &["rename", "p/a", "p/b"],
        ] {
            r.run(&Cmd::zfs(args.iter().copied())).await.expect("runs");
        }
        r.run(&Cmd::zpool(["wait", "-t", "free", "p"]))
            .await
            .expect("runs");
        let d = r.counts().since(&before);
        assert_eq!((d.syncing, d.other, d.busy_failures), (3, 3, 1));
        assert_eq!(d.total(), 6);
        let lines = r.take_lines();
        assert!(
            lines[2].starts_with("zfs destroy p/x  [exit 1]  ("),
            "{}",
            lines[2]
        );
        assert!(lines[0].ends_with(" ms)"), "{}", lines[0]);
        assert!(r.take_lines().is_empty());
        let kinds: Vec<String> = r.take_timings().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                "zfs list -H",
                "zfs snapshot",
                "zfs destroy",
                "zfs mount",
                "zfs rename",
                "zpool wait -t free"
            ]
        );
        assert!(r.take_timings().is_empty());
    }
}
