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
            ids: ["base", "mid", "top", "x"].map(id).to_vec(),
            caches: ["opam", "a/b", "a%2fb"].map(cache).to_vec(),
            users,
            can_reopen,
        }
    }

    fn cache(&self) -> BoxedStrategy<CacheName> {
        let first = self.caches[0].clone();
        prop_oneof![3 => Just(first), 2 => select(self.caches.clone())].boxed()
    }

    pub(crate) fn ops(&self, max_ops: usize) -> BoxedStrategy<Vec<Op>> {
        vec(self.op(), 1..=max_ops.max(1)).boxed()
    }

    fn op(&self) -> BoxedStrategy<Op> {
        let ids = select(self.ids.clone());
        let build = (
            ids.clone(),
            proptest::option::weighted(0.6, ids.clone()),
            vec(edit(), 0..4),
            proptest::option::of("log-[a-z]{1,3}"),
            proptest::bool::weighted(0.15),
            ending(),
        )
            .prop_map(
                |(id, base, edits, log, delete_base_while_running, ending)| Op::Build {
                    id,
                    base,
                    edits,
                    log,
                    delete_base_while_running,
                    ending,
                },
            );
        let delete = ids.clone().prop_map(|id| Op::Delete { id });
        let tamper = ids.prop_map(|id| Op::Tamper { id });
        let acquire = (self.cache(), select(self.users.clone()))
            .prop_map(|(cache, user)| Op::Acquire { cache, user });
        let write = (0..4usize, edit()).prop_map(|(copy, edit)| Op::Write { copy, edit });
        let release = (0..4usize).prop_map(|copy| Op::Release { copy });
        let drop_copy = (0..4usize).prop_map(|copy| Op::DropCopy { copy });
        let delete_cache = self.cache().prop_map(|cache| Op::DeleteCache { cache });
        let reopen_weight = if self.can_reopen { 1 } else { 0 };
        prop_oneof![
            10 => build,
            3 => delete,
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
