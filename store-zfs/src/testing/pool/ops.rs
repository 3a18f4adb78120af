//! Creating, destroying, listing and inspecting file-backed test pools through `zpool`/`zfs`.
//! Only commands that behave the same on zfs-fuse 0.7 and OpenZFS 2.x are used (no `-p` on
//! list, no `-f` on destroy).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolError, PoolName, PoolRecord};
use crate::backoff::Backoff;
use crate::runner::{Cmd, CmdOutput, Runner};

/// Runs `cmd` to completion; a non-zero exit is *not* an error here. Logged at info (xtask
/// shows each command it runs), the outcome at debug.
async fn output(runner: &dyn Runner, cmd: &Cmd) -> Result<CmdOutput, PoolError> {
    let argv = display(cmd);
    tracing::info!(%argv, "run");
    let started = Instant::now();
    let out = runner.run(cmd).await.map_err(|source| PoolError::Run {
        argv: argv.clone(),
        source,
    })?;
    let ms = started.elapsed().as_millis();
    if out.success() {
        tracing::debug!(%argv, ms, "ok");
    } else {
        tracing::debug!(%argv, ms, status = ?out.status, stderr = out.stderr.trim(), "failed");
    }
    Ok(out)
}

/// Runs `cmd` to completion and fails unless it exits with status 0.
async fn check(runner: &dyn Runner, cmd: &Cmd) -> Result<CmdOutput, PoolError> {
    let out = output(runner, cmd).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(PoolError::failed(display(cmd), &out))
    }
}

/// The command line, each word quoted as a shell would need it. For messages and logs only:
/// no shell ever runs it.
fn display(cmd: &Cmd) -> String {
    cmd.argv()
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Names of the imported pools.
///
/// # Errors
/// `zpool list` fails, as it does on an engine without a daemon or module.
pub async fn imported(runner: &dyn Runner) -> Result<Vec<String>, PoolError> {
    let out = check(runner, &Cmd::zpool(["list", "-H", "-o", "name"])).await?;
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "no pools available")
        .map(str::to_owned)
        .collect())
}

/// Creates pool `name` on a sparse file of `size_bytes` in `dir`, mounted under `dir/mnt/`,
/// tagged with [`OWNER_PROPERTY`], with `cachefile=none` (a restarted zfs-fuse daemon must
/// not import it again on its own); records `engine` (as described to humans). The record is
/// saved first, so an interrupted creation is still listed. On failure, nothing it made is
/// left behind.
///
/// # Errors
/// `name` is recorded or imported already, a path of `dir` is not UTF-8 (a command line
/// here is UTF-8), or a file, the directory or `zpool create` fails.
pub async fn create(
    runner: &dyn Runner,
    dir: &PoolDir,
    name: &PoolName,
    size_bytes: u64,
    engine: &str,
) -> Result<PoolRecord, PoolError> {
    if dir.load(name)?.is_some() {
        return Err(PoolError::Invalid(format!(
            "pool {name} is already recorded in {}; destroy it first",
            dir.root().display()
        )));
    }
    if imported(runner).await?.iter().any(|p| p == name.as_str()) {
        return Err(PoolError::Invalid(format!(
            "a pool named {name} already exists"
        )));
    }
    let record = dir.new_record(name, size_bytes, engine);
    // Checked before anything is made: a lossy path would name another file.
    utf8(&record.vdev)?;
    utf8(&record.mountpoint)?;
    dir.save(&record)?;
    let made = make_pool(runner, &record).await;
    if let Err(e) = made {
        if let Err(cleanup) = dir.forget(name) {
            tracing::warn!(error = %cleanup, "cleanup after failed create");
        }
        return Err(e);
    }
    tracing::info!(pool = %name, vdev = %record.vdev.display(), "pool created");
    Ok(record)
}

/// `path` as a command-line word.
fn utf8(path: &Path) -> Result<&str, PoolError> {
    path.to_str().ok_or_else(|| {
        PoolError::Invalid(format!(
            "pool path {} is not UTF-8; choose another pool directory",
            path.display()
        ))
    })
}

async fn make_pool(runner: &dyn Runner, record: &PoolRecord) -> Result<(), PoolError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&record.vdev)
        .map_err(|e| PoolError::io("creating the vdev file", &record.vdev, e))?;
    file.set_len(record.size_bytes)
        .map_err(|e| PoolError::io("sizing the vdev file", &record.vdev, e))?;
    drop(file);
    std::fs::create_dir_all(&record.mountpoint)
        .map_err(|e| PoolError::io("creating the mountpoint", &record.mountpoint, e))?;
    let owner = format!("{OWNER_PROPERTY}={OWNER_VALUE}");
    check(
        runner,
        &Cmd::zpool([
            "create",
            "-o",
            "cachefile=none",
            "-m",
            utf8(&record.mountpoint)?,
            "-O",
            &owner,
            "--",
            &record.name,
            utf8(&record.vdev)?,
        ]),
    )
    .await?;
    Ok(())
}

/// Whether pool `name` is imported.
///
/// # Errors
/// `zpool` cannot be run.
pub async fn exists(runner: &dyn Runner, name: &PoolName) -> Result<bool, PoolError> {
    let out = output(
        runner,
        &Cmd::zpool(["list", "-H", "-o", "name", "--", name.as_str()]),
    )
    .await?;
    Ok(out.success())
}

/// Destroys pool `name`, which the helper must have created (a record in `dir` and, if
/// imported, [`OWNER_PROPERTY`] = [`OWNER_VALUE`] on its root dataset), then its file,
/// mountpoint directory and record. Retries with [`Backoff::TEARDOWN`] while ZFS reports the
/// pool busy; never `-f`.
///
/// # Errors
/// [`PoolError::NotOurs`] (and no command that changes anything ran), or a command or file
/// removal failed. A pool that could not be destroyed keeps its record, so it is still
/// listed.
pub async fn destroy(runner: &dyn Runner, dir: &PoolDir, name: &PoolName) -> Result<(), PoolError> {
    if dir.load(name)?.is_none() {
        return Err(PoolError::NotOurs {
            name: name.to_string(),
            why: format!(
                "xtask has no record of creating it in {}",
                dir.root().display()
            ),
        });
    }
    if exists(runner, name).await? {
        let owner = property(runner, name.as_str(), OWNER_PROPERTY).await?;
        if owner != OWNER_VALUE {
            return Err(PoolError::NotOurs {
                name: name.to_string(),
                why: format!("its {OWNER_PROPERTY} is {owner:?}, not {OWNER_VALUE:?}"),
            });
        }
        let cmd = Cmd::zpool(["destroy", "--", name.as_str()]);
        let mut delays = Backoff::TEARDOWN.delays();
        loop {
            let out = output(runner, &cmd).await?;
            if out.success() {
                break;
            }
            // zfs-fuse can report a pool busy for a moment after its datasets were unmounted.
            match delays.next() {
                Some(delay) if out.stderr.contains("busy") => tokio::time::sleep(delay).await,
                _ => return Err(PoolError::failed(display(&cmd), &out)),
            }
        }
        tracing::info!(pool = %name, "pool destroyed");
    }
    dir.forget(name)
}

/// `zfs get -H -o value PROP -- DATASET`, trimmed.
///
/// # Errors
/// The command fails (no such dataset, no ZFS).
pub async fn property(runner: &dyn Runner, dataset: &str, prop: &str) -> Result<String, PoolError> {
    let out = check(
        runner,
        &Cmd::zfs(["get", "-H", "-o", "value", prop, "--", dataset]),
    )
    .await?;
    Ok(out.stdout.trim().to_owned())
}

/// A pool the helper made, and what `zpool list` says about it now.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The record.
    pub record: PoolRecord,
    /// `Some([size, allocated, health])` if imported, `None` if not (stale record).
    pub live: Option<[String; 3]>,
}

/// The pools recorded in `dir`, with their live state, and why the live state is missing if
/// ZFS could not be asked (then every pool shows as not imported).
///
/// # Errors
/// Only if the directory cannot be read.
pub async fn list(
    runner: &dyn Runner,
    dir: &PoolDir,
) -> Result<(Vec<Listing>, Option<String>), PoolError> {
    let records = dir.records()?;
    let live = check(
        runner,
        &Cmd::zpool(["list", "-H", "-o", "name,size,allocated,health"]),
    )
    .await;
    let (rows, problem) = match live {
        Ok(out) => (out.stdout, None),
        Err(e) => (String::new(), Some(e.to_string())),
    };
    let listings = records
        .into_iter()
        .map(|record| {
            let live = rows.lines().find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 4 && f[0] == record.name)
                    .then(|| [f[1].to_owned(), f[2].to_owned(), f[3].to_owned()])
            });
            Listing { record, live }
        })
        .collect();
    Ok((listings, problem))
}

/// Why pool `name` is not empty, or `None` if it holds nothing: no dataset or snapshot besides
/// its root, and no file in the root dataset's mountpoint.
///
/// # Errors
/// `zfs list` or `zfs get` fails.
pub async fn why_not_empty(
    runner: &dyn Runner,
    name: &PoolName,
) -> Result<Option<String>, PoolError> {
    let out = check(
        runner,
        &Cmd::zfs([
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            "-t",
            "all",
            "--",
            name.as_str(),
        ]),
    )
    .await?;
    let others: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != name.as_str())
        .collect();
    if let Some(first) = others.first() {
        return Ok(Some(format!(
            "it has {} dataset(s)/snapshot(s) besides its root, e.g. {first}",
            others.len()
        )));
    }
    let mnt = PathBuf::from(property(runner, name.as_str(), "mountpoint").await?);
    if mnt.is_absolute() {
        if let Ok(mut entries) = std::fs::read_dir(&mnt) {
            if let Some(Ok(e)) = entries.next() {
                return Ok(Some(format!(
                    "its root dataset holds files, e.g. {}",
                    e.path().display()
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::runner::RunError;
    use crate::state::lock;

    /// argv prefix (program first), and the canned answer.
    type Rule = (Vec<String>, CmdOutput);

    /// A [`Runner`] that answers from a script: the last added rule whose argv prefix matches
    /// wins; a command no rule matches fails to start (as an uninstalled program would).
    /// Every call is recorded.
    #[derive(Default)]
    struct Scripted {
        rules: Mutex<Vec<Rule>>,
        /// Answers used once each, in order, before `rules` are consulted.
        once: Mutex<Vec<Rule>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Scripted {
        /// Answers commands whose argv starts with `prefix` with `code`, `stdout`, `stderr`.
        fn on(&self, prefix: &[&str], code: i32, stdout: &str, stderr: &str) {
            let out = CmdOutput {
                status: Some(code),
                stdout: stdout.into(),
                stderr: stderr.into(),
            };
            lock(&self.rules).push((prefix.iter().map(|s| s.to_string()).collect(), out));
        }

        /// Answers the next command whose argv starts with `prefix`, once, before any rule
        /// added with [`on`](Self::on); several such answers are used in the order added.
        fn once(&self, prefix: &[&str], code: i32, stdout: &str, stderr: &str) {
            let out = CmdOutput {
                status: Some(code),
                stdout: stdout.into(),
                stderr: stderr.into(),
            };
            lock(&self.once).push((prefix.iter().map(|s| s.to_string()).collect(), out));
        }

        /// The argv of every call so far.
        fn calls(&self) -> Vec<Vec<String>> {
            lock(&self.calls).clone()
        }
    }

    #[async_trait]
    impl Runner for Scripted {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            let argv = cmd.argv();
            lock(&self.calls).push(argv.clone());
            {
                let mut once = lock(&self.once);
                if let Some(i) = once.iter().position(|(p, _)| argv.starts_with(p)) {
                    return Ok(once.remove(i).1);
                }
            }
            let rules = lock(&self.rules);
            match rules.iter().rev().find(|(p, _)| argv.starts_with(p)) {
                Some((_, out)) => Ok(out.clone()),
                None => Err(RunError::Spawn {
                    program: cmd.program.name(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not scripted"),
                }),
            }
        }

        async fn mount_table(&self) -> std::io::Result<String> {
            Ok(String::new())
        }
    }

    fn setup() -> (Scripted, tempfile::TempDir, PoolDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = PoolDir::resolve(Some(tmp.path()));
        (Scripted::default(), tmp, dir)
    }

    #[tokio::test]
    async fn create_runs_zpool_with_owner_tag_no_cachefile_and_double_dash() {
        let (exec, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "tank\n", "");
        exec.on(&["zpool", "create"], 0, "", "");
        let name = PoolName::new("zt-xunit").expect("valid");
        let rec = create(&exec, &dir, &name, 64 << 20, "zfs-fuse")
            .await
            .expect("create");
        let calls = exec.calls();
        let create_call = calls.last().expect("called");
        assert_eq!(
            create_call[..9],
            [
                "zpool",
                "create",
                "-o",
                "cachefile=none",
                "-m",
                &rec.mountpoint.to_string_lossy(),
                "-O",
                "org.zstore:created-by=zstore-xtask",
                "--"
            ]
        );
        assert_eq!(create_call[9..], ["zt-xunit", &*rec.vdev.to_string_lossy()]);
        assert_eq!(std::fs::metadata(&rec.vdev).expect("vdev").len(), 64 << 20);
        assert!(rec.mountpoint.is_dir());
        assert_eq!(dir.load(&name).expect("load"), Some(rec));
    }

    #[tokio::test]
    async fn create_refuses_a_name_that_is_taken() {
        let (exec, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "zt-xunit\n", "");
        let name = PoolName::new("zt-xunit").expect("valid");
        let err = create(&exec, &dir, &name, 64 << 20, "zfs-fuse")
            .await
            .expect_err("taken");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(!exec.calls().iter().any(|c| c[1] == "create"));
        assert!(dir.records().expect("records").is_empty());
    }

    #[tokio::test]
    async fn failed_create_leaves_nothing_and_keeps_the_command_and_stderr() {
        let (exec, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "", "");
        exec.on(
            &["zpool", "create"],
            1,
            "",
            "cannot create 'zt-xunit': no space\n",
        );
        let name = PoolName::new("zt-xunit").expect("valid");
        let err = create(&exec, &dir, &name, 64 << 20, "zfs-fuse")
            .await
            .expect_err("fails");
        assert!(err.to_string().contains("no space"), "{err}");
        let PoolError::CommandFailed { argv, status, .. } = &err else {
            panic!("expected CommandFailed, got {err:?}");
        };
        assert!(
            argv.starts_with("zpool create -o cachefile=none -m "),
            "{argv}"
        );
        assert_eq!(*status, Some(1));
        assert!(dir.records().expect("records").is_empty());
        assert!(!dir.vdev(&name).exists());
        assert!(!dir.mountpoint(&name).exists());
    }

    #[tokio::test]
    async fn destroy_refuses_pools_it_did_not_make() {
        let (exec, _tmp, dir) = setup();
        let name = PoolName::new("tank").expect("valid");
        let err = destroy(&exec, &dir, &name).await.expect_err("refused");
        assert!(err.to_string().contains("no record"), "{err}");
        assert!(exec.calls().is_empty(), "no command may run");

        // Recorded, but the live pool carries someone else's tag.
        dir.save(&dir.new_record(&name, 64 << 20, "zfs-fuse"))
            .expect("save");
        exec.on(&["zpool", "list"], 0, "tank\n", "");
        exec.on(&["zfs", "get"], 0, "-\n", "");
        let err = destroy(&exec, &dir, &name).await.expect_err("refused");
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(matches!(err, PoolError::NotOurs { .. }), "{err:?}");
        assert!(!exec.calls().iter().any(|c| c[1] == "destroy"));
        assert!(dir.load(&name).expect("load").is_some(), "still recorded");
    }

    #[tokio::test]
    async fn destroy_retries_while_busy_then_forgets_the_pool() {
        let (exec, _tmp, dir) = setup();
        let name = PoolName::new("zt-xunit").expect("valid");
        dir.save(&dir.new_record(&name, 64 << 20, "zfs-fuse"))
            .expect("save");
        std::fs::write(dir.vdev(&name), b"").expect("vdev");
        exec.on(&["zpool", "list"], 0, "zt-xunit\n", "");
        exec.on(&["zfs", "get"], 0, "zstore-xtask\n", "");
        for _ in 0..2 {
            exec.once(
                &["zpool", "destroy"],
                1,
                "",
                "cannot destroy: pool is busy\n",
            );
        }
        exec.on(&["zpool", "destroy"], 0, "", "");
        destroy(&exec, &dir, &name).await.expect("destroyed");
        let destroys: Vec<_> = exec
            .calls()
            .into_iter()
            .filter(|c| c[..2] == ["zpool", "destroy"])
            .collect();
        assert_eq!(destroys.len(), 3, "busy is retried");
        assert!(
            destroys
                .iter()
                .all(|c| *c == ["zpool", "destroy", "--", "zt-xunit"])
        );
        assert!(dir.load(&name).expect("load").is_none());
        assert!(!dir.vdev(&name).exists());
    }

    #[tokio::test]
    async fn destroy_does_not_retry_other_failures_and_keeps_the_record() {
        let (exec, _tmp, dir) = setup();
        let name = PoolName::new("zt-xunit").expect("valid");
        dir.save(&dir.new_record(&name, 64 << 20, "zfs-fuse"))
            .expect("save");
        exec.on(&["zpool", "list"], 0, "zt-xunit\n", "");
        exec.on(&["zfs", "get"], 0, "zstore-xtask\n", "");
        exec.on(&["zpool", "destroy"], 1, "", "cannot destroy: I/O error\n");
        let err = destroy(&exec, &dir, &name).await.expect_err("fails");
        assert!(
            err.to_string().contains("zpool destroy -- zt-xunit"),
            "{err}"
        );
        assert!(err.to_string().contains("I/O error"), "{err}");
        let destroys = exec
            .calls()
            .iter()
            .filter(|c| c[..2] == ["zpool", "destroy"])
            .count();
        assert_eq!(destroys, 1);
        assert!(dir.load(&name).expect("load").is_some(), "still listed");
    }

    #[tokio::test]
    async fn destroy_of_a_recorded_pool_that_is_not_imported_only_forgets_it() {
        let (exec, _tmp, dir) = setup();
        let name = PoolName::new("zt-xgone").expect("valid");
        dir.save(&dir.new_record(&name, 64 << 20, "zfs-fuse"))
            .expect("save");
        exec.on(
            &["zpool", "list"],
            1,
            "",
            "cannot open 'zt-xgone': no such pool\n",
        );
        destroy(&exec, &dir, &name).await.expect("forgotten");
        assert!(
            !exec
                .calls()
                .iter()
                .any(|c| c[1] == "destroy" || c[0] == "zfs")
        );
        assert!(dir.records().expect("records").is_empty());
    }

    #[tokio::test]
    async fn nonempty_pools_are_reported() {
        let (exec, tmp, _dir) = setup();
        let name = PoolName::new("tank").expect("valid");
        exec.on(&["zfs", "list"], 0, "tank\ntank/data\ntank/data@s\n", "");
        let why = why_not_empty(&exec, &name)
            .await
            .expect("ok")
            .expect("not empty");
        assert!(why.contains("2 dataset"), "{why}");

        exec.on(&["zfs", "list"], 0, "tank\n", "");
        exec.on(&["zfs", "get"], 0, "none\n", "");
        assert_eq!(why_not_empty(&exec, &name).await.expect("ok"), None);

        // No dataset besides the root, but a file in its mountpoint.
        std::fs::write(tmp.path().join("f"), "x").expect("write");
        exec.on(
            &["zfs", "get"],
            0,
            &format!("{}\n", tmp.path().display()),
            "",
        );
        let why = why_not_empty(&exec, &name)
            .await
            .expect("ok")
            .expect("not empty");
        assert!(why.contains("holds files"), "{why}");
    }

    #[tokio::test]
    async fn list_shows_records_with_their_live_state_and_survives_no_zfs() {
        let (exec, _tmp, dir) = setup();
        let live = PoolName::new("zt-xlive").expect("valid");
        let stale = PoolName::new("zt-xstale").expect("valid");
        for n in [&live, &stale] {
            dir.save(&dir.new_record(n, 64 << 20, "zfs-fuse"))
                .expect("save");
        }
        exec.on(
            &["zpool", "list"],
            0,
            "zt-xlive\t1G\t1M\tONLINE\nother\t1G\t1M\tONLINE\n",
            "",
        );
        let (rows, problem) = list(&exec, &dir).await.expect("list");
        assert_eq!(problem, None);
        let names: Vec<_> = rows.iter().map(|r| r.record.name.as_str()).collect();
        assert_eq!(names, ["zt-xlive", "zt-xstale"]);
        assert_eq!(
            rows[0].live,
            Some(["1G".to_owned(), "1M".to_owned(), "ONLINE".to_owned()])
        );
        assert_eq!(rows[1].live, None);

        let none = Scripted::default();
        let (rows, problem) = list(&none, &dir).await.expect("records still listed");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.live.is_none()));
        assert!(problem.expect("why").contains("zpool list"));
    }

    #[tokio::test]
    async fn fresh_names_avoid_imported_and_recorded_pools() {
        let (exec, _tmp, dir) = setup();
        exec.on(&["zpool", "list"], 0, "tank\n", "");
        let a = crate::testing::pool::fresh_name(&exec, &dir, "zt-x")
            .await
            .expect("name");
        assert!(a.as_str().starts_with("zt-x"), "{a}");
        dir.save(&dir.new_record(&a, 64 << 20, "zfs-fuse"))
            .expect("save");
        let b = crate::testing::pool::fresh_name(&exec, &dir, "zt-x")
            .await
            .expect("name");
        assert_ne!(a, b);

        let calls = exec.calls().len();
        let err = crate::testing::pool::fresh_name(&exec, &dir, "1x")
            .await
            .expect_err("invalid prefix");
        assert!(err.to_string().contains("invalid pool name"), "{err}");
        assert_eq!(exec.calls().len(), calls, "refused before any command");
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let c = Cmd::zpool(["create", "-m", "/var/tmp/a b", "--", "it's"]);
        assert_eq!(display(&c), r"zpool create -m '/var/tmp/a b' -- 'it'\''s'");
    }
}
