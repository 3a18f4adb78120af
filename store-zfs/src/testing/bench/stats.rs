//! Samples and their summaries: median and 95th percentile of wall time, mean process counts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::counting::Counts;

/// One measured call: how long it took and what it spawned (including background work it
/// left behind, which the bench waits for outside the timed span).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Wall time of the call itself.
    pub wall: Duration,
    /// Processes spawned by the call.
    pub counts: Counts,
    /// Processes spawned afterwards by background work the call started.
    pub deferred: Counts,
}

/// What a set of samples of one operation on one store comes to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median wall time, milliseconds.
    pub median_ms: f64,
    /// 95th percentile (nearest rank) wall time, milliseconds.
    pub p95_ms: f64,
    /// Mean `zfs`/`zpool` processes per call (call + deferred background work).
    pub procs: f64,
    /// Mean syncing processes per call.
    pub syncing: f64,
    /// Mean non-syncing processes per call.
    pub other: f64,
    /// Mean processes per call spawned by deferred background work (included above).
    pub deferred: f64,
    /// Mean "dataset is busy" failures (retried) per call (included above).
    pub busy_retries: f64,
}

impl Summary {
    /// Summarises `samples` (empty gives all zeros).
    pub fn of(samples: &[Sample]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
        ms.sort_by(f64::total_cmp);
        let n = samples.len();
        let mean = |f: &dyn Fn(&Sample) -> u64| {
            samples.iter().map(|s| f(s) as f64).sum::<f64>() / n as f64
        };
        Summary {
            n,
            median_ms: median(&ms),
            p95_ms: percentile(&ms, 0.95),
            procs: mean(&|s| s.counts.total() + s.deferred.total()),
            syncing: mean(&|s| s.counts.syncing + s.deferred.syncing),
            other: mean(&|s| s.counts.other + s.deferred.other),
            deferred: mean(&|s| s.deferred.total()),
            busy_retries: mean(&|s| s.counts.busy_failures + s.deferred.busy_failures),
        }
    }
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of sorted values (mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of the pairwise ratios `a[i] / b[i]` (pairs measured back to back, so slow
/// phases of a noisy machine hit both sides of a pair alike).
pub fn median_ratio(a: &[Sample], b: &[Sample]) -> Option<f64> {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, y)| !y.wall.is_zero())
        .map(|(x, y)| x.wall.as_secs_f64() / y.wall.as_secs_f64())
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    Some(median(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, syncing: u64, other: u64) -> Sample {
        Sample {
            wall: Duration::from_millis(ms),
            counts: Counts {
                syncing,
                other,
                busy_failures: 0,
            },
            deferred: Counts::default(),
        }
    }

    #[test]
    fn median_and_nearest_rank_p95() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&v[..10], 0.95), 10.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn summary_means_counts() {
        let sum = Summary::of(&[s(10, 2, 2), s(30, 2, 3), s(20, 2, 1)]);
        assert_eq!(sum.n, 3);
        assert_eq!(sum.median_ms, 20.0);
        assert_eq!(sum.p95_ms, 30.0);
        assert_eq!(sum.syncing, 2.0);
        assert_eq!(sum.other, 2.0);
        assert_eq!(sum.procs, 4.0);
    }

    #[test]
    fn pairwise_ratio() {
        let a = [s(10, 0, 0), s(20, 0, 0), s(40, 0, 0)];
        let b = [s(20, 0, 0), s(20, 0, 0), s(20, 0, 0)];
        assert_eq!(median_ratio(&a, &b), Some(1.0));
        assert_eq!(median_ratio(&[], &[]), None);
    }
}
