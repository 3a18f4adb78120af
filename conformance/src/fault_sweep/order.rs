//! Which faults the sweep injects, and in what order, so that a sweep cut short by its time
//! budget (or limited in depth) has still tried every operation at points spread over all of
//! its steps.

use std::collections::VecDeque;

use crate::fault_plan::Fault;

/// `0..n` in an order that spreads: the first, the last, the middle, then the middles of
/// each half, and so on. Every number appears once.
pub(crate) fn spread(n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    out.push(0);
    if n == 1 {
        return out;
    }
    out.push(n - 1);
    let mut halves = VecDeque::from([(0, n - 1)]);
    while let Some((lo, hi)) = halves.pop_front() {
        if hi - lo < 2 {
            continue;
        }
        let mid = lo + (hi - lo) / 2;
        out.push(mid);
        halves.push_back((lo, mid));
        halves.push_back((mid, hi));
    }
    out
}

/// The faults for an operation of `steps` steps: a stop before and after every step
/// (`StopAfter(0..=steps)`) and a failure of every step (`FailStep(0..steps)`), at most
/// `depth` of each, interleaved; `StopAfter(0)` (the state before the operation) first.
pub(crate) fn faults(steps: usize, depth: Option<usize>) -> Vec<Fault> {
    let cap = depth.unwrap_or(usize::MAX);
    let stops: Vec<Fault> = spread(steps + 1)
        .into_iter()
        .take(cap.max(1))
        .map(Fault::StopAfter)
        .collect();
    let fails: Vec<Fault> = spread(steps)
        .into_iter()
        .take(cap)
        .map(Fault::FailStep)
        .collect();
    let mut out = Vec::with_capacity(stops.len() + fails.len());
    for i in 0..stops.len().max(fails.len()) {
        out.extend(stops.get(i).copied());
        out.extend(fails.get(i).copied());
    }
    out
}

/// One fault from each list in turn: `(list index, fault)`.
pub(crate) fn round_robin(lists: &[Vec<Fault>]) -> Vec<(usize, Fault)> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            lists
                .iter()
                .enumerate()
                .filter_map(move |(k, l)| l.get(i).map(|f| (k, *f)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_everything_once() {
        for n in 0..40 {
            let mut s = spread(n);
            if n > 1 {
                assert_eq!(&s[..2], &[0, n - 1]);
            }
            s.sort_unstable();
            assert_eq!(s, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
        assert_eq!(spread(9), [0, 8, 4, 2, 6, 1, 3, 5, 7]);
    }

    #[test]
    fn faults_start_with_the_state_before_and_respect_the_depth() {
        let all = faults(3, None);
        assert_eq!(all.len(), 4 + 3);
        assert_eq!(all[0], Fault::StopAfter(0));
        assert!(all.contains(&Fault::StopAfter(3)) && all.contains(&Fault::FailStep(2)));
        let some = faults(10, Some(2));
        assert_eq!(
            some,
            [
                Fault::StopAfter(0),
                Fault::FailStep(0),
                Fault::StopAfter(10),
                Fault::FailStep(9)
            ]
        );
        assert_eq!(faults(0, Some(0)), [Fault::StopAfter(0)]);
    }

    #[test]
    fn round_robin_takes_one_of_each_in_turn() {
        let lists = vec![faults(1, None), faults(0, None)];
        assert_eq!(
            round_robin(&lists),
            [
                (0, Fault::StopAfter(0)),
                (1, Fault::StopAfter(0)),
                (0, Fault::FailStep(0)),
                (0, Fault::StopAfter(1))
            ]
        );
    }
}
