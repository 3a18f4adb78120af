//! Random operation sequences (proptest strategies). Ops are drawn from small pools of ids,
//! cache names, paths and users so that sequences collide often: builds on bases, deletes of
//! bases with children, several copies of one cache, names that need escaping.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use store_api::{CacheName, Id, User};

use crate::ops::{Ending, Op};
use crate::tree::Edit;

/// The pools a sequence draws from.
#[derive(Clone, Debug)]
pub(crate) struct Universe {
    pub ids: Vec<Id>,
    /// The first name is used most; the others need escaping on most backends, and two of them
    /// are a classic collision of naive escaping (`a/b` and `a%2fb`).
    pub caches: Vec<CacheName>,
    pub users: Vec<User>,
    pub can_reopen: bool,
}

const PATHS: &[&str] = &["a", "b", "d", "d/x", "d/y", "d/e/z", "l"];

impl Universe {
    pub(crate) fn new(check_ownership: bool, can_reopen: bool, current: User) -> Self {
        let id = |s: &str| Id::new(s).expect("a valid literal id");
        let cache = |s: &str| CacheName::new(s).expect("a valid literal cache name");
        let users = if check_ownership {
            vec![
                User::new(1000, 1000).expect("valid"),
                User::new(123, 456).expect("valid"),
            ]
        } else {
            vec![current]
        };
        Self {
            // With names a naive mapping would merge (see `collisions`): `X` and `x`, `a.b`
            // and `a_b`; `a/b`, `a%2fb`, `a%2Fb` and `a_b`, `opam` and `Opam`, `c` and `c.`,
            // the composed and decomposed `café`, two long names equal up to the last byte.
            ids: ["base", "mid", "top", "x", "y", "z", "X", "a.b", "a_b"]
                .map(id)
                .to_vec(),
            caches: [
                "opam",
                "a/b",
                "a%2fb",
                "a%2Fb",
                "a_b",
                "Opam",
                "c",
                "c.",
                "caf\u{e9}",
                "cafe\u{301}",
            ]
            .map(cache)
            .into_iter()
            .chain(
                crate::collisions::cache_groups()
                    .last()
                    .into_iter()
                    .flatten()
                    .take(2)
                    .map(|n| cache(n)),
            )
            .collect(),
            users,
            can_reopen,
        }
    }

    fn cache(&self) -> BoxedStrategy<CacheName> {
        let first = self.caches[0].clone();
        // The two long names last in the list get an arm of their own: drawn as rarely as
        // the others, a sequence seldom holds both, and a truncating mapping slipped through.
        let long = self.caches[self.caches.len().saturating_sub(2)..].to_vec();
        prop_oneof![
            3 => Just(first),
            2 => select(self.caches.clone()),
            1 => select(long)
        ]
        .boxed()
    }

    pub(crate) fn ops(&self, max_ops: usize) -> BoxedStrategy<Vec<Op>> {
        vec(self.op(), 1..=max_ops.max(1)).boxed()
    }

    fn op(&self) -> BoxedStrategy<Op> {
        let ids = select(self.ids.clone());
        // Ids are ordered: a build's base is mostly an id earlier in the pool (so chains form
        // and most bases exist), sometimes any id (which may be missing: MissingBase).
        let pool = self.ids.clone();
        // Early ids are built most often.
        let index = prop_oneof![5 => Just(0usize), 3 => Just(1), 2 => Just(2), 2 => 3..pool.len()];
        let id_and_base = index.prop_flat_map(move |i| {
            let id = pool[i].clone();
            let earlier = pool[..i].to_vec();
            let any = select(pool.clone()).prop_map(Some).boxed();
            let base = if earlier.is_empty() {
                prop_oneof![6 => Just(None), 1 => any].boxed()
            } else {
                let last = earlier[earlier.len() - 1].clone();
                prop_oneof![
                    2 => Just(None),
                    1 => Just(Some(last)),
                    6 => Just(Some(earlier[0].clone())),
                    2 => select(earlier).prop_map(Some),
                    1 => any,
                ]
                .boxed()
            };
            (Just(id), base)
        });
        let build = (
            id_and_base,
            vec(edit(), 0..4),
            proptest::option::of("log-[a-z]{1,3}"),
            proptest::bool::weighted(0.25),
            ending(),
        )
            .prop_map(
                |((id, base), edits, log, delete_base_while_running, ending)| Op::Build {
                    id,
                    base,
                    edits,
                    log,
                    delete_base_while_running,
                    ending,
                },
            );
        let delete = ids.clone().prop_map(|id| Op::Delete { id });
        let delete_weight = 2;
        let tamper = ids.prop_map(|id| Op::Tamper { id });
        let acquire = (self.cache(), select(self.users.clone()))
            .prop_map(|(cache, user)| Op::Acquire { cache, user });
        let write = (0..4usize, edit()).prop_map(|(copy, edit)| Op::Write { copy, edit });
        let release = (0..4usize).prop_map(|copy| Op::Release { copy });
        let drop_copy = (0..4usize).prop_map(|copy| Op::DropCopy { copy });
        let delete_cache = self.cache().prop_map(|cache| Op::DeleteCache { cache });
        let reopen_weight = if self.can_reopen { 1 } else { 0 };
        prop_oneof![
            12 => build,
            delete_weight => delete,
            1 => tamper,
            5 => acquire,
            5 => write,
            5 => release,
            2 => drop_copy,
            2 => delete_cache,
            1 => Just(Op::CompleteDeletes),
            reopen_weight => Just(Op::Reopen),
        ]
        .boxed()
    }
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        12 => Just(Ending::Succeed),
        2 => Just(Ending::Fail),
        1 => Just(Ending::Panic),
        2 => Just(Ending::CancelWhileRunning),
        1 => Just(Ending::CancelEarly),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = select(PATHS).prop_map(str::to_owned);
    prop_oneof![
        6 => (path.clone(), "[a-z0-9]{0,4}", select(&[0o644u32, 0o600, 0o755, 0o640][..]))
            .prop_map(|(path, content, mode)| Edit::Write { path, content, mode }),
        2 => (path.clone(), select(&[0o755u32, 0o700, 0o750][..]))
            .prop_map(|(path, mode)| Edit::Mkdir { path, mode }),
        1 => (path.clone(), select(&["a", "d/x", "../outside", "/nowhere"][..]))
            .prop_map(|(path, target)| Edit::Symlink { path, target: target.to_owned() }),
        2 => path.prop_map(|path| Edit::Remove { path }),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    use store_api::Store;

    use super::*;
    use crate::exec::Settings;
    use crate::factory::{Capabilities, Erased, FactoryError, SharedFactory, StoreFactory};
    use crate::sequences::run_case;

    struct Fake;

    #[async_trait::async_trait]
    impl StoreFactory for Fake {
        type Storage = ();
        fn name(&self) -> String {
            "fake".into()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn fresh(&self) -> Result<(Arc<dyn Store>, ()), FactoryError> {
            Ok((Arc::new(store_fake::FakeStore::new()?), ()))
        }
    }

    /// Generated sequences must reach the interesting states, not only skip or no-op: this
    /// guards the generator's weights and pools against changes that would quietly weaken the
    /// suite.
    #[tokio::test(flavor = "multi_thread")]
    async fn sequences_reach_the_interesting_states() {
        crate::quiet_panic::install();
        let universe = Universe::new(false, false, crate::exec::current_user());
        let strategy = universe.ops(40);
        let mut runner = TestRunner::new_with_rng(
            proptest::test_runner::Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
        );
        let factory: SharedFactory = Arc::new(Erased(Fake));
        let settings = Settings {
            op_timeout: std::time::Duration::from_secs(30),
            check_ownership: false,
            full_check_each_step: true,
        };
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut steps, mut skipped) = (0, 0);
        for _ in 0..40 {
            let ops = strategy.new_tree(&mut runner).expect("generate").current();
            let outcome = run_case(factory.clone(), &settings, &ops).await;
            assert_eq!(
                outcome.failure,
                None,
                "the fake failed:\n{}",
                crate::ops::script(&ops, &outcome.notes)
            );
            for (op, note) in ops.iter().zip(&outcome.notes) {
                steps += 1;
                if note.starts_with(crate::exec::SKIPPED) {
                    skipped += 1;
                    continue;
                }
                for key in [
                    "Busy, as expected",
                    "Published",
                    "Discarded",
                    "MissingBase",
                    "dropped",
                    "creates the cache",
                    "writes were accepted",
                ] {
                    if note.contains(key) {
                        *seen.entry(key).or_default() += 1;
                    }
                }
                if let Op::Build {
                    base: Some(_),
                    ending: Ending::Succeed,
                    delete_base_while_running,
                    ..
                } = op
                    && note.is_empty()
                {
                    *seen
                        .entry(if *delete_base_while_running {
                            "built while deleting its base"
                        } else {
                            "built from a base"
                        })
                        .or_default() += 1;
                }
            }
        }
        println!("{steps} steps, {skipped} skipped: {seen:#?}");
        assert!(
            skipped * 3 < steps,
            "too many skipped steps: {skipped} of {steps}"
        );
        for key in [
            "Busy, as expected",
            "Published",
            "Discarded",
            "MissingBase",
            "dropped",
            "creates the cache",
            "built from a base",
            "built while deleting its base",
        ] {
            assert!(seen.get(key).copied().unwrap_or(0) >= 2, "{key}: {seen:#?}");
        }
    }
}
