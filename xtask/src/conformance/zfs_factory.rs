//! The conformance factory for ZFS targets (`--engine zfs-fuse|kernel|vm`): every case gets a
//! child dataset of its own under the run's pool, opened with [`ZfsStore`]; teardown checks
//! that the store left nothing behind, then destroys the child.
//!
//! Every command, the factory's own and the store's, goes through one injectable
//! [`store_zfs::Runner`] ([`ZfsFactory::with_runner`]). Fault injection for the suite's
//! `fault_sweep`: [`StoreFactory::open_with_faults`] wraps that runner in a [`PlanRunner`],
//! which asks the suite's [`FaultPlan`] before every `zfs`/`zpool` command (run it, fail it,
//! or refuse it as if the process had died), and opens the case's dataset with
//! [`ZfsFactory::open`]; the suite then reopens it with the plain runner
//! ([`StoreFactory::reopen`]) to see what the fault left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Capabilities, FactoryError, FaultPlan, StoreFactory, Verdict};
use store_api::Store;
use store_zfs::daemon_lock::DaemonSerialized;
use store_zfs::{Cmd, CmdOutput, RunError, Runner, SystemRunner, ZfsOptions, ZfsStore};

use crate::engine::ZfsKind;
use crate::mount_escape::unescape;

/// How long teardown waits for a store's background work (cleanups of cancelled builds and
/// dropped copies) before calling it hung.
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// How long teardown retries destroying a case's dataset while ZFS says it is busy.
const DESTROY_LIMIT: Duration = Duration::from_secs(60);

/// Opens [`ZfsStore`]s, one child dataset of the run's pool per case. Clones share the
/// runner and the case counter (so groups of checks running at once never pick the same
/// dataset name).
#[derive(Clone)]
pub struct ZfsFactory {
    pool: String,
    kind: ZfsKind,
    runner: Arc<dyn Runner>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for ZfsFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZfsFactory")
            .field("pool", &self.pool)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// One case's storage: its dataset, and the last store opened on it (kept so teardown can
/// wait for its background work and compare its index with the pool).
pub struct ZfsCase {
    dataset: String,
    last: Mutex<Option<ZfsStore>>,
}

impl ZfsCase {
    fn take_last(&self) -> Option<ZfsStore> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set_last(&self, store: ZfsStore) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(store);
    }
}

impl ZfsFactory {
    /// A factory for cases under `pool`, served by `kind`, with the real `zfs` command.
    ///
    /// On zfs-fuse the factory's own commands (case datasets, teardown) take the machine-wide
    /// daemon lock, as the stores do (its daemon cannot serve two commands that start at
    /// once); on OpenZFS nothing is serialised.
    pub fn new(pool: impl Into<String>, kind: ZfsKind) -> Self {
        let runner: Arc<dyn Runner> = match kind {
            ZfsKind::ZfsFuse => Arc::new(DaemonSerialized::new(Arc::new(SystemRunner))),
            ZfsKind::Openzfs => Arc::new(SystemRunner),
        };
        Self::with_runner(pool, kind, runner)
    }

    /// As [`new`](Self::new), with every command run through `runner`.
    pub fn with_runner(pool: impl Into<String>, kind: ZfsKind, runner: Arc<dyn Runner>) -> Self {
        Self {
            pool: pool.into(),
            kind,
            runner,
            next: Arc::default(),
        }
    }

    /// Opens a store on `case` through `runner` (the factory's own, or a wrapper of it such
    /// as a fault-injecting one), first waiting for the previous store on the case to finish
    /// its background work: one store per dataset at a time, as if the previous process had
    /// exited.
    pub async fn open(
        &self,
        case: &ZfsCase,
        runner: Arc<dyn Runner>,
    ) -> Result<ZfsStore, FactoryError> {
        if let Some(previous) = case.take_last() {
            idle(&previous).await?;
        }
        let store = ZfsStore::open(
            &case.dataset,
            ZfsOptions {
                runner,
                ..ZfsOptions::default()
            },
        )
        .await
        // As it is, so that the suite can tell a refused second open (`StoreError::Locked`).
        .map_err(FactoryError::from)?;
        case.set_last(store.clone());
        Ok(store)
    }

    async fn run(&self, args: &[&str]) -> Result<CmdOutput, FactoryError> {
        let cmd = Cmd::zfs(args.iter().copied());
        tracing::debug!(target: "xtask::cmd", argv = %cmd, "run");
        let out = self
            .runner
            .run(&cmd)
            .await
            .map_err(|e| format!("`{cmd}`: {e}"))?;
        Ok(out)
    }

    async fn check(&self, args: &[&str]) -> Result<String, FactoryError> {
        let out = self.run(args).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "`zfs {}` failed (exit {:?}): {}",
                args.join(" "),
                out.status,
                out.stderr.trim()
            )
            .into())
        }
    }

    /// Creates a new, unused child dataset of the pool.
    async fn new_dataset(&self) -> Result<String, FactoryError> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let ds = format!("{}/case-{n}", self.pool);
            let out = self.run(&["create", "--", &ds]).await?;
            if out.success() {
                return Ok(ds);
            }
            if !out.stderr.contains("already exists") {
                return Err(format!(
                    "`zfs create -- {ds}` failed (exit {:?}): {}",
                    out.status,
                    out.stderr.trim()
                )
                .into());
            }
        }
    }

    /// Unmounts everything mounted under `ds` (deepest first) and destroys it recursively;
    /// never `-f` (it can wedge zfs-fuse), retrying only while ZFS says "busy".
    async fn destroy(&self, ds: &str) -> Result<(), FactoryError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let mut mounted: Vec<String> = self
                .mounts()
                .await?
                .into_keys()
                .filter(|d| within(d, ds))
                .collect();
            mounted.sort_by_key(|d| std::cmp::Reverse(d.len()));
            let mut last = None;
            for d in &mounted {
                let out = self.run(&["unmount", "--", d]).await?;
                if !out.success() && !out.stderr.contains("not currently mounted") {
                    last = Some(format!("`zfs unmount -- {d}`: {}", out.stderr.trim()));
                }
            }
            if last.is_none() {
                let out = self.run(&["destroy", "-r", "--", ds]).await?;
                if out.success() || out.stderr.contains("does not exist") {
                    return Ok(());
                }
                last = Some(format!("`zfs destroy -r -- {ds}`: {}", out.stderr.trim()));
            }
            let last = last.unwrap_or_default();
            if !store_zfs::is_transient_busy(&last) && !store_zfs::is_mount_in_use(&last) {
                return Err(last.into());
            }
            if started.elapsed() > DESTROY_LIMIT {
                return Err(format!("still busy after {DESTROY_LIMIT:?}: {last}").into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// The mounted ZFS datasets, from the mount table.
    async fn mounts(&self) -> Result<BTreeMap<String, MountEntry>, FactoryError> {
        let table = self
            .runner
            .mount_table()
            .await
            .map_err(|e| format!("reading the mount table: {e}"))?;
        Ok(parse_mounts(&table))
    }

    /// Everything that would make the case's dataset not look like a cleanly closed store.
    async fn leftovers(
        &self,
        ds: &str,
        store: Option<&ZfsStore>,
    ) -> Result<Vec<String>, FactoryError> {
        let listing = self
            .check(&[
                "list",
                "-H",
                "-r",
                "-t",
                "all",
                "-o",
                &format!("name,origin,{}", store_zfs::DELETED_PROPERTY),
                "--",
                ds,
            ])
            .await?;
        let rows: Vec<Row> = listing.lines().filter_map(Row::parse).collect();
        let mounts = self.mounts().await?;
        let mut found = audit(ds, &rows, &mounts);
        if let Some(store) = store {
            let indexed: BTreeSet<String> = store.results().iter().map(|i| i.to_string()).collect();
            let on_pool = live_result_ids(ds, &rows);
            if indexed != on_pool {
                found.push(format!(
                    "the store's index lists results {indexed:?}, the pool holds {on_pool:?}"
                ));
            }
        }
        Ok(found)
    }
}

/// Waits for a store's background work, bounded.
async fn idle(store: &ZfsStore) -> Result<(), FactoryError> {
    tokio::time::timeout(IDLE_LIMIT, store.wait_idle())
        .await
        .map_err(|_| {
            format!(
                "the store on {} still had background work after {IDLE_LIMIT:?} (hung?)",
                store.dataset()
            )
            .into()
        })
}

#[async_trait]
impl StoreFactory for ZfsFactory {
    type Storage = ZfsCase;

    fn name(&self) -> String {
        match self.kind {
            ZfsKind::ZfsFuse => "zfs-fuse".into(),
            ZfsKind::Openzfs => "openzfs".into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_reopen: true,
            // `delete_cache` is refused with Busy exactly while a copy is out.
            may_return_busy: true,
            fault_injection: true,
        }
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, ZfsCase), FactoryError> {
        let dataset = self.new_dataset().await?;
        let case = ZfsCase {
            dataset,
            last: Mutex::new(None),
        };
        match self.open(&case, Arc::clone(&self.runner)).await {
            Ok(store) => Ok((Arc::new(store), case)),
            Err(e) => {
                if let Err(e2) = self.destroy(&case.dataset).await {
                    tracing::warn!(dataset = %case.dataset, error = %e2, "cannot destroy a case dataset whose store did not open");
                }
                Err(e)
            }
        }
    }

    async fn reopen(&self, case: &ZfsCase) -> Result<Arc<dyn Store>, FactoryError> {
        Ok(Arc::new(self.open(case, Arc::clone(&self.runner)).await?))
    }

    async fn open_with_faults(
        &self,
        case: &ZfsCase,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let runner = PlanRunner {
            inner: Arc::clone(&self.runner),
            plan,
        };
        Ok(Arc::new(self.open(case, Arc::new(runner)).await?))
    }

    async fn list_storage(&self, case: &ZfsCase) -> Result<Option<Vec<String>>, FactoryError> {
        // Background work (a dropped copy being destroyed) would make two listings of the
        // same state differ.
        let last = case.take_last();
        if let Some(store) = &last {
            idle(store).await?;
            case.set_last(store.clone());
        }
        let listing = self
            .check(&[
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "all",
                "-r",
                "--",
                &case.dataset,
            ])
            .await?;
        let mut names: Vec<String> = listing
            .lines()
            .filter_map(|n| n.strip_prefix(case.dataset.as_str()))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(Some(names))
    }

    async fn teardown(&self, case: ZfsCase) -> Result<(), FactoryError> {
        let last = case.take_last();
        let mut problems = Vec::new();
        if let Some(store) = &last {
            if let Err(e) = idle(store).await {
                problems.push(e.to_string());
            }
        }
        match self.leftovers(&case.dataset, last.as_ref()).await {
            Ok(found) => problems.extend(found),
            Err(e) => problems.push(format!("the leak check could not run: {e}")),
        }
        drop(last);
        if let Err(e) = self.destroy(&case.dataset).await {
            problems.push(format!("destroying {}: {e}", case.dataset));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the store on {} left:\n  - {}",
                case.dataset,
                problems.join("\n  - ")
            )
            .into())
        }
    }
}

/// The runner of a store opened by `open_with_faults`: every command first asks the plan,
/// then runs, fails as a real command fails (exit 1), or is refused (the process "died").
struct PlanRunner {
    inner: Arc<dyn Runner>,
    plan: FaultPlan,
}

#[async_trait]
impl Runner for PlanRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        // Held until the command has finished: the suite waits for none to be in flight.
        let step = self.plan.step(cmd.to_string());
        match step.verdict() {
            Verdict::Proceed => self.inner.run(cmd).await,
            Verdict::Fail => Ok(CmdOutput::failed(1, "injected failure\n")),
            // As a command that could not start: the process that would start it is gone.
            Verdict::Refuse => Err(RunError::Spawn {
                program: cmd.program.name(),
                source: std::io::Error::other("refused: the process stopped (injected crash)"),
            }),
        }
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}

/// One row of `zfs list -o name,origin,zstore:deleted`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    name: String,
    origin: Option<String>,
    deleted: bool,
}

impl Row {
    fn parse(line: &str) -> Option<Self> {
        let mut cols = line.split('\t');
        let name = cols.next().filter(|n| !n.is_empty())?.to_owned();
        let origin = cols
            .next()
            .filter(|o| *o != "-" && !o.is_empty())
            .map(str::to_owned);
        let deleted = cols.next() == Some("on");
        Some(Self {
            name,
            origin,
            deleted,
        })
    }
}

/// One mounted ZFS dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MountEntry {
    path: PathBuf,
    read_only: bool,
}

/// The ZFS mounts (`zfs`, `fuse.zfs`) of a `/proc/mounts` text, by dataset.
fn parse_mounts(table: &str) -> BTreeMap<String, MountEntry> {
    let mut out = BTreeMap::new();
    for line in table.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [dev, path, fstype, opts, ..] = f.as_slice() else {
            continue;
        };
        if *fstype != "zfs" && *fstype != "fuse.zfs" {
            continue;
        }
        out.insert(
            unescape(dev),
            MountEntry {
                path: PathBuf::from(unescape(path)),
                read_only: opts.split(',').any(|o| o == "ro"),
            },
        );
    }
    out
}

/// Whether dataset `d` is `ds` or below it.
fn within(d: &str, ds: &str) -> bool {
    d == ds || d.strip_prefix(ds).is_some_and(|r| r.starts_with('/'))
}

/// The ids of the live results on the pool: `<root>/result/<leaf>` with `@snap`, not marked
/// deleted; the id is the leaf up to `:`.
fn live_result_ids(root: &str, rows: &[Row]) -> BTreeSet<String> {
    let prefix = format!("{root}/result/");
    let snapped: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.name.strip_suffix(&format!("@{}", store_zfs::RESULT_SNAP)))
        .collect();
    rows.iter()
        .filter(|r| !r.deleted && snapped.contains(r.name.as_str()))
        .filter_map(|r| r.name.strip_prefix(&prefix))
        .filter(|leaf| !leaf.contains('/') && !leaf.contains('@'))
        .map(|leaf| leaf.split(':').next().unwrap_or(leaf).to_owned())
        .collect()
}

/// What a cleanly closed store under `root` must look like (crate docs of `store-zfs`,
/// "Layout"), checked against the pool listing and the mount table. Every deviation is one
/// line: datasets left by builds or copies, snapshots that should be gone, deleted results
/// nothing depends on, mounts that should not be there.
fn audit(root: &str, rows: &[Row], mounts: &BTreeMap<String, MountEntry>) -> Vec<String> {
    let mut found = Vec::new();
    let groups: Vec<String> = ["state", "result", "cache"]
        .iter()
        .map(|g| format!("{root}/{g}"))
        .collect();
    let result_prefix = format!("{root}/result/");
    let cache_prefix = format!("{root}/cache/");
    let names: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let origins: BTreeSet<&str> = rows.iter().filter_map(|r| r.origin.as_deref()).collect();
    // Snapshots by the dataset holding them.
    let mut snaps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in rows {
        if let Some((ds, snap)) = r.name.split_once('@') {
            snaps.entry(ds).or_default().push(snap);
        }
    }
    // Cache containers and their generations.
    let mut containers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in &groups {
        if !names.contains(g.as_str()) {
            found.push(format!("layout dataset {g} is missing"));
        }
    }
    for r in rows.iter().filter(|r| !r.name.contains('@')) {
        let name = r.name.as_str();
        if name == root || groups.iter().any(|g| g == name) {
            continue;
        }
        if let Some(leaf) = name.strip_prefix(&result_prefix) {
            if leaf.contains('/') {
                found.push(format!("{name}: not a dataset the store makes"));
                continue;
            }
            let own = snaps.get(name).cloned().unwrap_or_default();
            if !own.contains(&store_zfs::RESULT_SNAP) {
                found.push(format!(
                    "{name}: a result dataset without @{} (an unfinished or failed build left behind)",
                    store_zfs::RESULT_SNAP
                ));
            }
            for s in own.iter().filter(|s| **s != store_zfs::RESULT_SNAP) {
                found.push(format!("{name}@{s}: a snapshot the store does not make"));
            }
            let snap = format!("{name}@{}", store_zfs::RESULT_SNAP);
            if r.deleted && !origins.contains(snap.as_str()) {
                found.push(format!(
                    "{name}: deleted, but nothing is cloned from it any more (it should be destroyed)"
                ));
            }
        } else if let Some(rest) = name.strip_prefix(&cache_prefix) {
            match rest.split_once('/') {
                None => {
                    containers.entry(name).or_default();
                }
                Some((comp, generation)) if !generation.contains('/') => {
                    let container = &name[..cache_prefix.len() + comp.len()];
                    containers.entry(container).or_default().push(name);
                }
                Some(_) => found.push(format!("{name}: not a dataset the store makes")),
            }
        } else {
            found.push(format!("{name}: not a dataset the store makes"));
        }
    }
    for (container, gens) in &containers {
        match gens.as_slice() {
            [] => found.push(format!(
                "{container}: a cache container without any version (should be destroyed)"
            )),
            [only] => {
                let n = only.rsplit('/').next().and_then(|g| g.strip_prefix('g'));
                let own = snaps.get(only).cloned().unwrap_or_default();
                let expected = n.map(|n| format!("v{n}"));
                if own.len() != 1 || expected.as_deref() != own.first().copied() {
                    found.push(format!(
                        "{only}: the published generation should hold exactly @{}, holds {own:?}",
                        expected.as_deref().unwrap_or("v<N>")
                    ));
                }
            }
            many => {
                // One is the published version; the others are copies (clones) or older
                // generations that should have been destroyed.
                let copies: Vec<&&str> = many
                    .iter()
                    .filter(|g| {
                        let n = g.rsplit('/').next().and_then(|g| g.strip_prefix('g'));
                        let own = snaps.get(**g).cloned().unwrap_or_default();
                        !n.is_some_and(|n| own.contains(&format!("v{n}").as_str()))
                    })
                    .collect();
                found.push(format!(
                    "{container}: {} generations left (temporary copies: {copies:?})",
                    many.len()
                ));
            }
        }
    }
    for (ds, m) in mounts {
        if !within(ds, root) {
            continue;
        }
        let row = rows.iter().find(|r| r.name == *ds);
        let Some(row) = row else {
            found.push(format!(
                "{ds} is still mounted at {} but no longer exists",
                m.path.display()
            ));
            continue;
        };
        if ds == root || groups.iter().any(|g| g == ds) {
            continue;
        }
        if ds.starts_with(&result_prefix) {
            if row.deleted {
                found.push(format!(
                    "{ds}: a deleted result still mounted at {}",
                    m.path.display()
                ));
            } else if !m.read_only {
                found.push(format!(
                    "{ds}: a result mounted read-write at {} after its build ended",
                    m.path.display()
                ));
            }
        } else if ds.starts_with(&cache_prefix) {
            found.push(format!(
                "{ds}: a cache generation still mounted at {} with no copy out",
                m.path.display()
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[&str]) -> Vec<Row> {
        lines.iter().filter_map(|l| Row::parse(l)).collect()
    }

    const LAYOUT: [&str; 4] = [
        "p/c\t-\t-",
        "p/c/state\t-\t-",
        "p/c/result\t-\t-",
        "p/c/cache\t-\t-",
    ];

    fn with_layout(extra: &[&'static str]) -> Vec<Row> {
        let mut v: Vec<&str> = LAYOUT.to_vec();
        v.extend_from_slice(extra);
        rows(&v)
    }

    #[test]
    fn a_clean_store_passes() {
        let r = with_layout(&[
            "p/c/result/a\t-\t-",
            "p/c/result/a@snap\t-\t-",
            "p/c/result/b\tp/c/result/a@snap\t-",
            "p/c/result/b@snap\t-\t-",
            "p/c/result/d\t-\ton",
            "p/c/result/d@snap\t-\t-",
            "p/c/result/e:1\tp/c/result/d@snap\t-",
            "p/c/result/e:1@snap\t-\t-",
            "p/c/cache/c-opam\t-\t-",
            "p/c/cache/c-opam/g4\t-\t-",
            "p/c/cache/c-opam/g4@v4\t-\t-",
        ]);
        let mut m = BTreeMap::new();
        m.insert(
            "p/c/result/a".to_owned(),
            MountEntry {
                path: "/p/c/result/a".into(),
                read_only: true,
            },
        );
        m.insert(
            "p/c".to_owned(),
            MountEntry {
                path: "/p/c".into(),
                read_only: false,
            },
        );
        assert_eq!(audit("p/c", &r, &m), Vec::<String>::new());
        assert_eq!(
            live_result_ids("p/c", &r),
            ["a", "b", "e"].map(String::from).into()
        );
    }

    #[test]
    fn leftovers_are_named() {
        let r = with_layout(&[
            "p/c/result/half\t-\t-",
            "p/c/result/gone\t-\ton",
            "p/c/result/gone@snap\t-\t-",
            "p/c/cache/c-x\t-\t-",
            "p/c/cache/c-x/g1\t-\t-",
            "p/c/cache/c-x/g1@v1\t-\t-",
            "p/c/cache/c-x/g2\tp/c/cache/c-x/g1@v1\t-",
            "p/c/cache/c-y\t-\t-",
            "p/c/cache/c-z\t-\t-",
            "p/c/cache/c-z/g3\t-\t-",
            "p/c/cache/c-z/g3@v3\t-\t-",
            "p/c/cache/c-z/g3@v2\t-\t-",
        ]);
        let mut m = BTreeMap::new();
        m.insert(
            "p/c/result/x".to_owned(),
            MountEntry {
                path: "/p/c/result/x".into(),
                read_only: true,
            },
        );
        m.insert(
            "p/c/cache/c-z/g3".to_owned(),
            MountEntry {
                path: "/p/c/cache/c-z/g3".into(),
                read_only: false,
            },
        );
        m.insert(
            "p/other/x".to_owned(),
            MountEntry {
                path: "/p/other/x".into(),
                read_only: false,
            },
        );
        let found = audit("p/c", &r, &m).join("\n");
        for expected in [
            "p/c/result/half: a result dataset without @snap",
            "p/c/result/gone: deleted, but nothing is cloned",
            "p/c/cache/c-x: 2 generations left (temporary copies: [\"p/c/cache/c-x/g2\"])",
            "p/c/cache/c-y: a cache container without any version",
            "p/c/cache/c-z/g3: the published generation should hold exactly @v3",
            "p/c/result/x is still mounted",
            "p/c/cache/c-z/g3: a cache generation still mounted",
        ] {
            assert!(found.contains(expected), "{expected}\nin:\n{found}");
        }
        assert!(!found.contains("p/other"), "{found}");
        assert_eq!(found.lines().count(), 7, "{found}");
    }

    /// A pool for the live tests, or `None` (loudly) without ZFS unless ZSTORE_REQUIRE_ZFS=1.
    fn live_pool(test: &str) -> Option<store_zfs::testing::TestPool> {
        if !store_zfs::testing::require_zfs(test) {
            return None;
        }
        let prefix = std::env::var("ZSTORE_TEST_POOL_PREFIX").unwrap_or_else(|_| "zt-x".into());
        Some(store_zfs::testing::TestPool::create(&prefix).expect("test pool"))
    }

    async fn use_store(store: &Arc<dyn Store>) {
        use store_api::{CacheName, Id, StoreExt, User};
        let (a, b) = (Id::new("a").expect("id"), Id::new("b").expect("id"));
        store
            .build(
                None,
                &a,
                |dir| async move { std::fs::write(dir.join("f"), "x") },
            )
            .await
            .expect("build a");
        store
            .build(Some(&a), &b, |_| async { Ok::<_, std::io::Error>(()) })
            .await
            .expect("build b");
        store.delete(&a).await.expect("delete a");
        let name = CacheName::new("c/1").expect("name");
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        std::fs::write(lease.path().join("v"), "1").expect("write");
        let dropped = store.cache(User::ROOT, &name).await.expect("second copy");
        lease.release().await.expect("release");
        drop(dropped);
        assert!(store.result(&b).await.expect("result").is_some());
    }

    /// A store used and closed cleanly passes the leak check, and teardown removes the case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_teardown_of_a_clean_store() {
        let Some(pool) = live_pool("live_teardown_of_a_clean_store") else {
            return;
        };
        let factory = ZfsFactory::new(pool.name(), ZfsKind::ZfsFuse);
        let (store, case) = factory.fresh().await.expect("fresh");
        use_store(&store).await;
        drop(store);
        let store = factory.reopen(&case).await.expect("reopen");
        let listing = factory
            .list_storage(&case)
            .await
            .expect("list")
            .expect("some");
        for name in [
            "",
            "/state",
            "/result/b",
            "/result/b@snap",
            "/result/a@snap",
        ] {
            assert!(listing.contains(&name.to_owned()), "{name}: {listing:?}");
        }
        drop(store);
        factory.teardown(case).await.expect("clean");
        assert_eq!(
            pool.datasets().expect("list"),
            [pool.name().to_owned()],
            "the case dataset is gone"
        );
    }

    /// Leftovers fail teardown, which still destroys the case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_teardown_names_leftovers() {
        let Some(pool) = live_pool("live_teardown_names_leftovers") else {
            return;
        };
        let factory = ZfsFactory::new(pool.name(), ZfsKind::ZfsFuse);
        let (store, case) = factory.fresh().await.expect("fresh");
        use_store(&store).await;
        drop(store);
        let junk = format!("{}/result/junk", case.dataset);
        factory
            .check(&["create", "--", &junk])
            .await
            .expect("create junk");
        let err = factory
            .teardown(case)
            .await
            .expect_err("leftovers")
            .to_string();
        assert!(
            err.contains(&format!("{junk}: a result dataset without @snap")),
            "{err}"
        );
        assert_eq!(pool.datasets().expect("list"), [pool.name().to_owned()]);
    }

    #[test]
    fn parses_the_mount_table() {
        let t = "proc /proc proc rw 0 0\n\
                 p/c/result/a /mnt/p/c/result/a fuse.zfs ro,relatime 0 0\n\
                 p/c/x /mnt/with\\040space zfs rw 0 0\n";
        let m = parse_mounts(t);
        assert_eq!(m.len(), 2);
        assert!(m["p/c/result/a"].read_only);
        assert_eq!(m["p/c/x"].path, PathBuf::from("/mnt/with space"));
        assert!(within("p/c/x", "p/c") && within("p/c", "p/c") && !within("p/cc", "p/c"));
    }
}
