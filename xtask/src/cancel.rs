//! Cooperative cancellation on SIGINT / SIGTERM / SIGHUP.
//!
//! A signal does not kill xtask: it flips a [`Cancel`] token. Code that waits on long-running
//! children (qemu, the image build) selects on [`Cancel::cancelled`], stops and reaps them,
//! and then the usual cleanup (destroy the test pool, stop a daemon xtask started) runs on the
//! way out. A second signal means "stop now": xtask exits at once (qemu still dies with it,
//! see `vm::run`, because it runs under a parent-death signal).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::error::{EXIT_INTERRUPTED, Result, XtaskError};

/// A cheap, clonable "has the operator asked us to stop?" token.
#[derive(Clone, Debug)]
pub struct Cancel {
    rx: watch::Receiver<bool>,
}

/// The sending side of a [`Cancel`] token.
#[derive(Debug)]
pub struct CancelSource {
    tx: watch::Sender<bool>,
}

impl CancelSource {
    /// Cancels every token made from this source.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }
}

impl Cancel {
    /// A new token and the handle that cancels it.
    pub fn new() -> (CancelSource, Cancel) {
        let (tx, rx) = watch::channel(false);
        (CancelSource { tx }, Cancel { rx })
    }

    /// Whether cancellation has been requested.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once cancellation is requested (never, if the source is gone uncancelled).
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `fut` unless cancellation comes first (then `fut` is dropped: only use this for
    /// futures whose drop is a clean stop, e.g. commands spawned with `kill_on_drop`).
    pub async fn run<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            r = fut => r,
            () = self.cancelled() => Err(XtaskError::Interrupted),
        }
    }
}

/// Installs the signal handlers and returns the token they cancel. Must run inside the runtime.
pub fn on_signals() -> Result<Cancel> {
    let (source, token) = Cancel::new();
    let mut streams = Vec::new();
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let s =
            signal(kind).map_err(|e| XtaskError::Invalid(format!("cannot handle {name}: {e}")))?;
        streams.push((s, name));
    }
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let name = next_signal(&mut streams).await;
            count += 1;
            if count == 1 {
                eprintln!("xtask: {name} received: cleaning up (send it again to exit at once)");
                source.cancel();
            } else {
                eprintln!("xtask: second signal: exiting without cleanup");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
    Ok(token)
}

async fn next_signal(streams: &mut [(tokio::signal::unix::Signal, &'static str)]) -> &'static str {
    let [(a, na), (b, nb), (c, nc)] = streams else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = a.recv() => na,
        _ = b.recv() => nb,
        _ = c.recv() => nc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_stops_when_cancelled() {
        let (source, token) = Cancel::new();
        assert!(!token.is_cancelled());
        source.cancel();
        let r = token.run(std::future::pending::<Result<()>>()).await;
        assert!(matches!(r, Err(XtaskError::Interrupted)));
        assert!(token.is_cancelled());
    }
}
