//! [`Config`]: the suite's knobs, from code and from the environment.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::report::Progress;

/// A progress callback: called from the suite's threads for every [`Progress`] event.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The suite's knobs. [`Config::default`] keeps `cargo test` fast on an in-memory backend;
/// [`Config::from_env`] applies the `ZSTORE_CONFORMANCE_*` variables on top. Build one with
/// `Config { cases: 8, ..Config::default() }` (fields may be added later).
///
/// | variable | field |
/// |---|---|
/// | `ZSTORE_CONFORMANCE_CASES` | [`cases`](Config::cases) |
/// | `ZSTORE_CONFORMANCE_MAX_OPS` | [`max_ops`](Config::max_ops) |
/// | `ZSTORE_CONFORMANCE_SEED` | [`seed`](Config::seed) |
/// | `ZSTORE_CONFORMANCE_CONCURRENCY_CASES` | [`concurrency_cases`](Config::concurrency_cases) |
/// | `ZSTORE_CONFORMANCE_OP_TIMEOUT_SECS` | [`op_timeout`](Config::op_timeout) |
/// | `ZSTORE_CONFORMANCE_SHRINK_SECS` | [`max_shrink_time`](Config::max_shrink_time) |
/// | `ZSTORE_CONFORMANCE_ARTIFACTS` | [`artifacts_dir`](Config::artifacts_dir) |
/// | `ZSTORE_CONFORMANCE_ONLY` | [`only`](Config::only) (comma-separated check names) |
/// | `ZSTORE_CONFORMANCE_QUICK_CHECKS` | [`full_check_each_step`](Config::full_check_each_step) `= false` when set to `1` |
/// | `ZSTORE_CONFORMANCE_FAULT_DEPTH` | [`fault_depth`](Config::fault_depth) (`all` for every step) |
/// | `ZSTORE_CONFORMANCE_FAULT_BUDGET_SECS` | [`fault_budget`](Config::fault_budget) (`0` for no limit) |
/// | `ZSTORE_CONFORMANCE_FAULT_FLOOR_PERCENT` | [`fault_floor_percent`](Config::fault_floor_percent) (`0` for none) |
/// | `ZSTORE_CONFORMANCE_FAULT_AT_ONCE` | [`fault_cases_at_once`](Config::fault_cases_at_once) |
/// | `ZSTORE_CONFORMANCE_REPLAY` | the generated `sequences` test replays this saved sequence |
/// | `ZSTORE_CONFORMANCE_LOAD_BUILDS` | [`load_builds`](Config::load_builds) |
/// | `ZSTORE_CONFORMANCE_LOAD_JOBS` | [`load_jobs`](Config::load_jobs) |
#[derive(Clone)]
pub struct Config {
    /// How many random operation sequences to run.
    pub cases: u32,
    /// The longest operation sequence generated.
    pub max_ops: usize,
    /// The seed of the random generator; `None` picks one (it is printed in the report, so a
    /// run can be repeated).
    pub seed: Option<u64>,
    /// How many cases of the concurrency property to run.
    pub concurrency_cases: u32,
    /// How long one store operation may take before the suite calls it hung.
    pub op_timeout: Duration,
    /// How long shrinking a failing sequence may take.
    pub max_shrink_time: Duration,
    /// Where failing sequences are saved as JSON (`None`: a `zstore-conformance` directory in
    /// the system's temporary directory).
    pub artifacts_dir: Option<PathBuf>,
    /// Run only the checks with these names (see [`check_names`](crate::check_names));
    /// `None` runs all.
    pub only: Option<Vec<String>>,
    /// Check that a new cache's top directory is owned by the requested user, and give caches
    /// users other than the current one. `None`: only when running as root (no one else can
    /// `chown`).
    pub check_ownership: Option<bool>,
    /// After each step, compare every result and every cache with the model (`true`), or only
    /// those the step touched, with everything compared after reopen and at the end
    /// (`false`, for slow backends).
    pub full_check_each_step: bool,
    /// Called for every progress event (tracing events are emitted as well).
    pub progress: Option<ProgressFn>,
    /// The `fault_sweep` check injects at most this many fault positions per operation and
    /// per kind of fault (failed step, stop), spread over the operation's steps (the first
    /// and the last always among them); `None` sweeps every step.
    pub fault_depth: Option<usize>,
    /// The `fault_sweep` check starts no new case after this much time. It first runs each
    /// operation once without a fault (at least the first one runs), then injects faults in
    /// an order that takes every operation in turn and spreads over each one's steps (the
    /// first and last first), so a sweep cut short still covers every operation it probed.
    /// `None`: no limit. The check's detail line says how many faults were injected, out of
    /// how many possible, and what the budget cut.
    pub fault_budget: Option<Duration>,
    /// The least share of the possible faults (in percent) a `fault_sweep` cut short by its
    /// time budget must have injected, or the check fails: a slow machine must not quietly
    /// turn the sweep into a token one. `None` (the default): no floor. A sweep that ran whole
    /// always passes this.
    pub fault_floor_percent: Option<u8>,
    /// How many `fault_sweep` cases run at once, each on storage of its own (default 1). More
    /// helps a backend whose steps wait more than they compute (a slow process start on
    /// several CPUs, a sync per command); the sweep's verdict and detail line do not depend
    /// on it, only its time.
    pub fault_cases_at_once: usize,
    /// How many builds the `load` check runs (chains of 4 levels from one base).
    pub load_builds: usize,
    /// How many chains the `load` check builds at once; every build holds a copy of one
    /// shared cache while it runs, so this is also the number of concurrent holders.
    pub load_jobs: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cases: 128,
            max_ops: 40,
            seed: None,
            concurrency_cases: 6,
            op_timeout: Duration::from_secs(60),
            max_shrink_time: Duration::from_secs(60),
            artifacts_dir: None,
            only: None,
            check_ownership: None,
            full_check_each_step: true,
            progress: None,
            fault_depth: None,
            fault_budget: Some(Duration::from_secs(180)),
            fault_floor_percent: None,
            fault_cases_at_once: 1,
            load_builds: 200,
            load_jobs: 10,
        }
    }
}

/// A `ZSTORE_CONFORMANCE_*` variable that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    problem: &'static str,
}

impl Config {
    /// The defaults with every set `ZSTORE_CONFORMANCE_*` variable applied.
    ///
    /// # Errors
    /// A [`ConfigError`] naming a variable whose value does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().with_env()
    }

    /// `self` with every set `ZSTORE_CONFORMANCE_*` variable applied on top.
    ///
    /// # Errors
    /// A [`ConfigError`] naming a variable whose value does not parse.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// `self` with the `ZSTORE_CONFORMANCE_*` variables that `get` returns applied on top, as
    /// [`with_env`](Self::with_env) does with the process environment (empty values count as
    /// unset).
    ///
    /// # Errors
    /// A [`ConfigError`] naming a variable whose value does not parse.
    pub fn with_vars(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = var("ZSTORE_CONFORMANCE_CASES") {
            self.cases = number("ZSTORE_CONFORMANCE_CASES", &v)?;
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_MAX_OPS") {
            self.max_ops = number("ZSTORE_CONFORMANCE_MAX_OPS", &v)?;
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_SEED") {
            self.seed = Some(number("ZSTORE_CONFORMANCE_SEED", &v)?);
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_CONCURRENCY_CASES") {
            self.concurrency_cases = number("ZSTORE_CONFORMANCE_CONCURRENCY_CASES", &v)?;
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_OP_TIMEOUT_SECS") {
            self.op_timeout =
                Duration::from_secs(number("ZSTORE_CONFORMANCE_OP_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_SHRINK_SECS") {
            self.max_shrink_time =
                Duration::from_secs(number("ZSTORE_CONFORMANCE_SHRINK_SECS", &v)?);
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_ARTIFACTS") {
            self.artifacts_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_ONLY") {
            self.only = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_FAULT_DEPTH") {
            self.fault_depth = match v.trim() {
                "all" => None,
                n => Some(number("ZSTORE_CONFORMANCE_FAULT_DEPTH", n)?),
            };
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_FAULT_BUDGET_SECS") {
            self.fault_budget = match number("ZSTORE_CONFORMANCE_FAULT_BUDGET_SECS", &v)? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            };
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_FAULT_FLOOR_PERCENT") {
            self.fault_floor_percent = match number("ZSTORE_CONFORMANCE_FAULT_FLOOR_PERCENT", &v)? {
                0 => None,
                p => Some(p),
            };
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_FAULT_AT_ONCE") {
            self.fault_cases_at_once =
                number::<usize>("ZSTORE_CONFORMANCE_FAULT_AT_ONCE", &v)?.max(1);
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_LOAD_BUILDS") {
            self.load_builds = number("ZSTORE_CONFORMANCE_LOAD_BUILDS", &v)?;
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_LOAD_JOBS") {
            self.load_jobs = number("ZSTORE_CONFORMANCE_LOAD_JOBS", &v)?;
        }
        if let Some(v) = var("ZSTORE_CONFORMANCE_QUICK_CHECKS") {
            self.full_check_each_step = match v.as_str() {
                "1" | "true" => false,
                "0" | "false" => true,
                _ => {
                    return Err(ConfigError {
                        name: "ZSTORE_CONFORMANCE_QUICK_CHECKS",
                        value: v,
                        problem: "expected 0, 1, true or false",
                    });
                }
            };
        }
        Ok(self)
    }

    /// The `ZSTORE_CONFORMANCE_*` variables that carry this config's sizes to the tests of
    /// [`conformance_tests!`](crate::conformance_tests) in another process (the inverse of
    /// [`with_vars`](Self::with_vars) for cases, steps, seed, concurrency cases, quick
    /// checks, load, fault depth, budget, floor and cases at once, and the operation timeout).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("CASES", self.cases.to_string()),
            ("MAX_OPS", self.max_ops.to_string()),
            ("CONCURRENCY_CASES", self.concurrency_cases.to_string()),
            ("QUICK_CHECKS", (!self.full_check_each_step).to_string()),
            ("LOAD_BUILDS", self.load_builds.to_string()),
            ("LOAD_JOBS", self.load_jobs.to_string()),
            ("OP_TIMEOUT_SECS", self.op_timeout.as_secs().to_string()),
            (
                "FAULT_DEPTH",
                self.fault_depth.map_or("all".to_owned(), |d| d.to_string()),
            ),
            (
                "FAULT_BUDGET_SECS",
                self.fault_budget
                    .map_or(0, |b| b.as_secs().max(1))
                    .to_string(),
            ),
            (
                "FAULT_FLOOR_PERCENT",
                self.fault_floor_percent.unwrap_or(0).to_string(),
            ),
            ("FAULT_AT_ONCE", self.fault_cases_at_once.to_string()),
        ];
        if let Some(seed) = self.seed {
            vars.push(("SEED", seed.to_string()));
        }
        vars.into_iter()
            .map(|(k, v)| (format!("ZSTORE_CONFORMANCE_{k}"), v))
            .collect()
    }

    pub(crate) fn wants(&self, check: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == check))
    }

    pub(crate) fn artifacts(&self) -> PathBuf {
        self.artifacts_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("zstore-conformance"))
    }

    pub(crate) fn emit(&self, event: Progress) {
        tracing::info!(target: "conformance", "{event}");
        if let Some(progress) = &self.progress {
            progress(&event);
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("cases", &self.cases)
            .field("max_ops", &self.max_ops)
            .field("seed", &self.seed)
            .field("concurrency_cases", &self.concurrency_cases)
            .field("op_timeout", &self.op_timeout)
            .field("max_shrink_time", &self.max_shrink_time)
            .field("artifacts_dir", &self.artifacts_dir)
            .field("only", &self.only)
            .field("check_ownership", &self.check_ownership)
            .field("full_check_each_step", &self.full_check_each_step)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .field("fault_depth", &self.fault_depth)
            .field("fault_budget", &self.fault_budget)
            .field("fault_floor_percent", &self.fault_floor_percent)
            .field("fault_cases_at_once", &self.fault_cases_at_once)
            .field("load_builds", &self.load_builds)
            .field("load_jobs", &self.load_jobs)
            .finish()
    }
}

fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError {
        name,
        value: value.to_owned(),
        problem: "expected a non-negative integer",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_env_round_trips_through_with_vars() {
        let config = Config {
            cases: 8,
            max_ops: 12,
            seed: Some(7),
            concurrency_cases: 3,
            full_check_each_step: false,
            load_builds: 40,
            load_jobs: 4,
            op_timeout: Duration::from_secs(90),
            fault_depth: Some(2),
            fault_budget: Some(Duration::from_secs(60)),
            fault_floor_percent: Some(25),
            fault_cases_at_once: 3,
            ..Config::default()
        };
        let vars = config.to_env();
        let back = Config::default()
            .with_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .expect("parses");
        assert_eq!(
            (back.cases, back.max_ops, back.seed, back.concurrency_cases),
            (8, 12, Some(7), 3)
        );
        assert!(!back.full_check_each_step);
        assert_eq!((back.load_builds, back.load_jobs), (40, 4));
        assert_eq!(back.op_timeout, Duration::from_secs(90));
        assert_eq!(back.fault_depth, Some(2));
        assert_eq!(back.fault_budget, Some(Duration::from_secs(60)));
        assert_eq!(back.fault_floor_percent, Some(25));
        assert_eq!(back.fault_cases_at_once, 3);
        let unbounded = Config {
            fault_depth: None,
            fault_budget: None,
            fault_floor_percent: None,
            seed: None,
            ..Config::default()
        };
        let vars = unbounded.to_env();
        let back = Config {
            seed: Some(1),
            ..Config::default()
        }
        .with_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("parses");
        assert_eq!(
            (
                back.fault_depth,
                back.fault_budget,
                back.fault_floor_percent
            ),
            (None, None, None)
        );
        assert_eq!(back.seed, Some(1), "no seed variable leaves the seed alone");
    }
}
