//! The `load` check, after OBuilder's stress test: many builds at once, chained over four
//! levels from one base, each build holding a copy of one shared cache while it runs. No
//! operation may fail, and every result must hold exactly what its chain of builds wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use store_api::{ReleaseOutcome, Store, StoreExt, User};

use crate::config::Config;
use crate::exec::Settings;
use crate::factory::SharedFactory;
use crate::report::{CheckOutcome, Failure};
use crate::scenarios::support::{Ctx, cache_name, id, show_build_error};

/// The check's name.
pub(crate) const LOAD: &str = "load";

/// Levels of each chain above the base.
const LEVELS: usize = 4;

/// How long, at most, the first wave of builds waits for each other (to prove they run at
/// once); at most the operation timeout.
const GATE: Duration = Duration::from_secs(60);

/// Runs the check. Blocking: it makes its own multi-threaded runtime.
pub(crate) fn load(
    factory: SharedFactory,
    config: &Config,
    settings: &Settings,
) -> (CheckOutcome, Option<String>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (fail(format!("could not start a runtime: {e}")), None),
    };
    let ctx = Ctx::new(factory, settings.clone());
    runtime.block_on(run(ctx, config.load_builds, config.load_jobs.max(1)))
}

fn fail(message: String) -> CheckOutcome {
    CheckOutcome::Failed(Failure {
        message,
        sequence: None,
    })
}

/// Counts something in progress and remembers its peak.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn up(&self) -> usize {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        n
    }
    fn down(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// What every build shares.
struct Shared {
    store: Arc<dyn Store>,
    user: User,
    builds: Gauge,
    holders: Gauge,
    /// The first wave waits until this many copies are out at once.
    wave: usize,
    /// Chains that got a permit so far: the first `wave` of them are the first wave. Not the
    /// chains numbered below `wave`: tasks take permits in no set order, and a first-wave
    /// build whose fellows hold no permit would wait out the whole gate.
    started: AtomicUsize,
    /// Set once `wave` copies were out at the same time.
    wave_met: AtomicBool,
    published: Mutex<BTreeSet<String>>,
    discarded: AtomicUsize,
    errors: Mutex<Vec<String>>,
    op_timeout: Duration,
    /// How long the first wave waits for each other.
    gate: Duration,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e);
    }
}

fn name(chain: usize, level: usize) -> String {
    format!("l{level}-c{chain}")
}

/// The files of the result at `level` of `chain`.
fn expected(chain: usize, level: usize) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut path = "base".to_owned();
    files.insert("own/base".to_owned(), "base".to_owned());
    for l in 1..=level {
        let n = name(chain, l);
        path = format!("{path}/{n}");
        files.insert(format!("own/{n}"), n);
    }
    files.insert("path".to_owned(), path);
    files
}

async fn run(ctx: Ctx, builds: usize, jobs: usize) -> (CheckOutcome, Option<String>) {
    let started = Instant::now();
    let env = match ctx.open().await {
        Ok(env) => env,
        Err(e) => return (fail(format!("{e:?}")), None),
    };
    let store = env.store();
    if let Err(e) = env
        .build(None, &id("base"), &[("own/base", "base"), ("path", "base")])
        .await
    {
        return (fail(format!("{e:?}")), None);
    }
    let chains: Vec<usize> = (0..builds.div_ceil(LEVELS))
        .map(|c| (builds - c * LEVELS).min(LEVELS))
        .collect();
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        user: crate::exec::current_user(),
        builds: Gauge::default(),
        holders: Gauge::default(),
        wave: jobs.min(chains.len()),
        started: AtomicUsize::new(0),
        wave_met: AtomicBool::new(false),
        published: Mutex::new(BTreeSet::new()),
        discarded: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        op_timeout: ctx.settings.op_timeout,
        gate: ctx.settings.op_timeout.min(GATE),
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = Vec::new();
    for (chain, &levels) in chains.iter().enumerate() {
        let shared = Arc::clone(&shared);
        let permits = Arc::clone(&permits);
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let first_wave = shared.started.fetch_add(1, Ordering::SeqCst) < shared.wave;
            for level in 1..=levels {
                if let Err(e) = build_one(&shared, chain, level, first_wave && level == 1).await {
                    shared.error(e);
                    return;
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            shared.error(format!("a chain's task failed: {e}"));
        }
    }

    // Every result holds exactly what its chain wrote.
    let mut checked = 0;
    for (chain, &levels) in chains.iter().enumerate() {
        for level in 1..=levels {
            let n = name(chain, level);
            match store.result(&id(&n)).await {
                Ok(Some(dir)) => match crate::fault_sweep::files_at(&dir) {
                    Ok(got) if got == expected(chain, level) => checked += 1,
                    Ok(got) => shared.error(format!("{n} holds {got:?}")),
                    Err(e) => shared.error(e),
                },
                Ok(None) => {
                    if shared
                        .errors
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_empty()
                    {
                        shared.error(format!("{n} was built but has no result"));
                    }
                }
                Err(e) => shared.error(format!("result({n}): {e}")),
            }
        }
    }
    // The cache holds exactly one published copy.
    let published = shared
        .published
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match store.cache(shared.user, &cache_name("load")).await {
        Ok(lease) => {
            match crate::fault_sweep::files_at(lease.path()) {
                Ok(got) => {
                    let writer = got.get("writer").cloned().unwrap_or_default();
                    if got.len() != 1 || !published.contains(&writer) {
                        shared.error(format!(
                            "the shared cache holds {got:?}, not one of the {} published copies",
                            published.len()
                        ));
                    }
                }
                Err(e) => shared.error(e),
            }
            drop(lease);
        }
        Err(e) => shared.error(format!("acquiring the shared cache at the end: {e}")),
    }
    let (peak_builds, peak_holders) = (shared.builds.peak(), shared.holders.peak());
    if peak_builds < shared.wave.min(8) || peak_holders < shared.wave {
        shared.error(format!(
            "at most {peak_builds} builds and {peak_holders} copies ran at once; expected \
             {} of each (builds of different ids may run concurrently)",
            shared.wave
        ));
    }
    drop(store);
    if let Err(e) = env.close().await {
        shared.error(format!("{e:?}"));
    }
    let detail = format!(
        "{checked} builds checked of {builds}, in {} chains of up to {LEVELS} from one base; at \
         most {peak_builds} builds and {peak_holders} copies of the shared cache at once; {} \
         releases published, {} discarded; {:.0} s",
        chains.len(),
        published.len(),
        shared.discarded.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if errors.is_empty() {
        (CheckOutcome::Passed, Some(detail))
    } else {
        let shown: Vec<&String> = errors.iter().take(20).collect();
        (
            fail(format!(
                "{} error(s) under load (first {}):\n{}",
                errors.len(),
                shown.len(),
                shown
                    .iter()
                    .map(|e| format!("- {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            Some(detail),
        )
    }
}

/// Builds level `level` of `chain` on the level below, holding a copy of the shared cache
/// while the build function runs.
async fn build_one(
    shared: &Arc<Shared>,
    chain: usize,
    level: usize,
    first_wave: bool,
) -> Result<(), String> {
    let n = name(chain, level);
    let base = if level == 1 {
        "base".to_owned()
    } else {
        name(chain, level - 1)
    };
    let (me, base_id) = (id(&n), id(&base));
    let s = Arc::clone(shared);
    let fut = shared
        .store
        .build(Some(&base_id), &me, move |dir| async move {
            s.builds.up();
            let r = in_build(&s, &n, &dir, first_wave).await;
            s.builds.down();
            r
        });
    match tokio::time::timeout(shared.op_timeout + shared.gate, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("building {me}: {}", show_build_error(&e))),
        Err(_) => Err(format!("building {me} did not finish (hung?)")),
    }
}

async fn in_build(
    s: &Shared,
    n: &str,
    dir: &std::path::Path,
    first_wave: bool,
) -> Result<(), String> {
    let lease = s
        .store
        .cache(s.user, &cache_name("load"))
        .await
        .map_err(|e| format!("acquiring the shared cache: {e}"))?;

    if s.holders.up() >= s.wave {
        s.wave_met.store(true, Ordering::SeqCst);
    }
    if first_wave {
        // Prove the concurrency: the first wave waits until all its copies are out at once.
        // A latch, not the gauge: the others leave and release as soon as it reads `wave`,
        // and a poll that came a moment later would miss it and wait out the gate.
        let until = Instant::now() + s.gate;
        while !s.wave_met.load(Ordering::SeqCst) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let work = (|| {
        let path = fs::read_to_string(dir.join("path")).map_err(|e| format!("{n}: {e}"))?;
        fs::write(dir.join("path"), format!("{path}/{n}")).map_err(|e| format!("{n}: {e}"))?;
        fs::create_dir_all(dir.join("own")).map_err(|e| format!("{n}: {e}"))?;
        fs::write(dir.join("own").join(n), n).map_err(|e| format!("{n}: {e}"))?;
        fs::write(lease.path().join("writer"), n).map_err(|e| format!("{n}: cache: {e}"))
    })();
    tokio::time::sleep(Duration::from_millis(2)).await;
    if let Err(e) = work {
        s.holders.down();
        return Err(e);
    }
    let released = lease.release().await;
    s.holders.down();
    match released {
        Ok(ReleaseOutcome::Published) => {
            s.published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(n.to_owned());
            Ok(())
        }
        Ok(ReleaseOutcome::Discarded) => {
            s.discarded.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        Err(e) => Err(format!("{n}: releasing the shared cache: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_files_follow_the_chain() {
        let e = expected(3, 2);
        assert_eq!(e["path"], "base/l1-c3/l2-c3");
        assert_eq!(e.len(), 4);
        let _ = store_api::Id::new(name(49, 4)).expect("a valid id");
    }
}
