//! What the sweep expects of a store after an interrupted operation, and how it reads the
//! store through the contract to compare.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use store_api::{Store, User};

use crate::scenarios::support::{cache_name, id};
use crate::tree::{Node, Tree};

/// Files of a result or a cache version: (path, contents), sorted by path.
pub(crate) type Files = &'static [(&'static str, &'static str)];

/// How an id is built: its base and what the build function writes; `full` is the result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recipe {
    pub(crate) base: Option<&'static str>,
    pub(crate) writes: Files,
    pub(crate) full: Files,
}

impl Recipe {
    pub(crate) fn new(base: Option<&'static str>, writes: Files, full: Files) -> Self {
        Self { base, writes, full }
    }
}

/// A result or a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Thing {
    Result(&'static str),
    Cache(&'static str),
}

impl std::fmt::Display for Thing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Thing::Result(n) => write!(f, "result `{n}`"),
            Thing::Cache(n) => write!(f, "cache `{n}`"),
        }
    }
}

/// One thing an operation can affect: the states it may be in after the operation was
/// interrupted anywhere (`None`: no result, or a cache that is gone or was never released,
/// which reads as empty), and the state required once the operation reported success.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub(crate) thing: Thing,
    pub(crate) allowed: Vec<Option<Files>>,
    pub(crate) after_ok: Option<Option<Files>>,
}

impl Item {
    pub(crate) fn result(
        name: &'static str,
        allowed: Vec<Option<Files>>,
        after_ok: Option<Option<Files>>,
    ) -> Self {
        Self {
            thing: Thing::Result(name),
            allowed,
            after_ok,
        }
    }

    pub(crate) fn cache(
        name: &'static str,
        allowed: Vec<Option<Files>>,
        after_ok: Option<Option<Files>>,
    ) -> Self {
        Self {
            thing: Thing::Cache(name),
            allowed,
            after_ok,
        }
    }
}

/// The regular files under `dir` (path, contents); directories and modes are not compared.
pub(crate) fn files_at(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let tree = Tree::read(dir).map_err(|e| e.to_string())?;
    Ok(files_of(&tree))
}

fn files_of(tree: &Tree) -> BTreeMap<String, String> {
    tree.entries()
        .iter()
        .filter_map(|(p, n)| match n {
            Node::File { content, .. } => {
                Some((p.clone(), String::from_utf8_lossy(content).into_owned()))
            }
            _ => None,
        })
        .collect()
}

/// Whether `got` holds exactly `expected`.
pub(crate) fn same(got: &BTreeMap<String, String>, expected: Files) -> bool {
    got.len() == expected.len()
        && expected
            .iter()
            .all(|(p, c)| got.get(*p).is_some_and(|g| g == c))
}

/// What the store shows for `thing`: `None` for no result, or an empty cache.
pub(crate) async fn read(
    store: &Arc<dyn Store>,
    user: User,
    thing: Thing,
) -> Result<Option<BTreeMap<String, String>>, String> {
    match thing {
        Thing::Result(name) => match store.result(&id(name)).await {
            Ok(None) => Ok(None),
            Ok(Some(dir)) => files_at(&dir)
                .map(Some)
                .map_err(|e| format!("reading the result of `{name}`: {e}")),
            Err(e) => Err(format!("result(`{name}`) failed: {e}")),
        },
        Thing::Cache(name) => {
            let lease = store
                .cache(user, &cache_name(name))
                .await
                .map_err(|e| format!("acquiring a copy of cache `{name}` to read it: {e}"))?;
            let files = files_at(lease.path())
                .map_err(|e| format!("reading a copy of cache `{name}`: {e}"));
            drop(lease);
            let files = files?;
            Ok((!files.is_empty()).then_some(files))
        }
    }
}

fn show(state: &Option<Files>) -> String {
    match state {
        None => "absent/empty".into(),
        Some(f) => format!("{f:?}"),
    }
}

fn matches(got: &Option<BTreeMap<String, String>>, want: &Option<Files>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => same(g, w),
        _ => false,
    }
}

/// Checks every item on `store`; `succeeded` says the operation reported success (then the
/// state required after success applies). Returns one line per problem.
pub(crate) async fn check_items(
    store: &Arc<dyn Store>,
    user: User,
    items: &[Item],
    succeeded: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for item in items {
        let got = match read(store, user, item.thing).await {
            Ok(g) => g,
            Err(e) => {
                wrong.push(e);
                continue;
            }
        };
        let shown = got
            .as_ref()
            .map_or_else(|| "absent/empty".to_owned(), |g| format!("{g:?}"));
        match (&item.after_ok, succeeded) {
            (Some(required), true) if !matches(&got, required) => wrong.push(format!(
                "{} holds {shown}, but the operation reported success, so it must be {}",
                item.thing,
                show(required)
            )),
            _ if !item.allowed.iter().any(|a| matches(&got, a)) => wrong.push(format!(
                "{} holds {shown}; allowed: {}",
                item.thing,
                item.allowed
                    .iter()
                    .map(show)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            _ => {}
        }
    }
    wrong
}

/// The sentinel file in `state_dir` is as the setup wrote it.
pub(crate) fn check_state_dir(store: &Arc<dyn Store>) -> Option<String> {
    let (path, content) = super::ops::SENTINEL;
    let full = store.state_dir().join(path);
    match std::fs::read_to_string(&full) {
        Ok(c) if c == content => None,
        Ok(c) => Some(format!("state_dir: {} now holds {c:?}", full.display())),
        Err(e) => Some(format!("state_dir: {}: {e}", full.display())),
    }
}
