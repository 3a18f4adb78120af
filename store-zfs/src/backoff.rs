//! [`Backoff`]: the one schedule every "busy, try again" loop of the workspace follows (the
//! store's commands, test pools (`testing::pool`) and suite teardown, the benchmark), each with
//! its own patience.

use std::time::Duration;

/// How long to wait between attempts while ZFS says a dataset or pool is busy: `first`, then
/// doubling up to `max_delay`, until `total` has been waited in all.
///
/// zfs-fuse returns from `umount` before the daemon releases the dataset, so a `destroy`,
/// `rename` or `mount` right after an unmount often fails with EBUSY and succeeds a few
/// milliseconds later; a pool can stay busy for a moment after its last unmount. Only
/// transient busy messages are retried ([`is_transient_busy`](crate::is_transient_busy));
/// a mount a process really uses is not, since waiting would not help and forcing it can
/// wedge zfs-fuse.
///
/// ```
/// use std::time::Duration;
/// let waits: Vec<Duration> = store_zfs::Backoff::STORE.delays().take(3).collect();
/// assert_eq!(waits, [10, 20, 40].map(Duration::from_millis));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest single wait.
    pub max_delay: Duration,
    /// The most waited in all; the attempt after it is the last.
    pub total: Duration,
}

impl Backoff {
    /// The store's own commands: 10 ms doubling, about 5 s in all (a caller waits for it).
    pub const STORE: Backoff = Backoff {
        first: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        total: Duration::from_secs(5),
    };

    /// Destroying a test pool or a case's datasets after a test: 20 ms doubling to 1 s, a
    /// minute in all (a busy mount left by the test may take a while to go).
    pub const TEARDOWN: Backoff = Backoff {
        first: Duration::from_millis(20),
        max_delay: Duration::from_secs(1),
        total: Duration::from_secs(60),
    };

    /// The waits between attempts, in order; the iterator ends when `total` is used up (the
    /// last wait is cut to fit).
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let mut waited = Duration::ZERO;
        let mut next = self.first;
        std::iter::from_fn(move || {
            let left = self.total.saturating_sub(waited);
            if left.is_zero() {
                return None;
            }
            let delay = next.min(self.max_delay).min(left);
            waited += delay;
            next = next.saturating_mul(2);
            Some(delay)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_double_up_to_the_cap_and_add_up_to_the_total() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            total: Duration::from_millis(1000),
        };
        let waits: Vec<u128> = b.delays().map(|d| d.as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 300, 100]);
        assert_eq!(
            Backoff::STORE.delays().sum::<Duration>(),
            Backoff::STORE.total
        );
        assert_eq!(
            Backoff::TEARDOWN.delays().sum::<Duration>(),
            Backoff::TEARDOWN.total
        );
    }
}
