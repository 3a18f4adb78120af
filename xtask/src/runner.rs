//! The one way xtask runs external commands: argument vectors (never a shell string), logged
//! with `tracing`, failures kept with argv, exit status and stderr.
//!
//! Short commands go through [`Runner::output`] / [`Runner::check`], which call an [`Exec`]
//! implementation: the real one in production, a scripted one in tests (record the argv,
//! replay canned outputs, inject failures). Long-running children (qemu, the image build) are
//! started with [`Runner::spawn`] so their lifetime can be managed by the caller.

use std::ffi::{OsStr, OsString};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use store_zfs::daemon_lock::{self, DaemonLock};

use crate::error::{Result, XtaskError};

/// One external command: a program, its arguments and extra environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Cmd {
    /// A command running `program` (looked up in `PATH` unless it contains a `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (on top of xtask's own environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The program and its arguments.
    pub fn argv(&self) -> impl Iterator<Item = &OsStr> {
        std::iter::once(self.program.as_os_str()).chain(self.args.iter().map(OsString::as_os_str))
    }

    /// The command line, quoted like a shell would need it. For messages and logs only: it is
    /// never executed by a shell.
    pub fn display(&self) -> String {
        self.argv().map(quote).collect::<Vec<_>>().join(" ")
    }

    /// A tokio command for this argv and environment.
    pub fn to_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

/// Shell-style quoting, for display.
fn quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a finished command produced.
#[derive(Clone, Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Executes a command to completion and captures its output. The seam for tests.
#[async_trait]
pub trait Exec: Send + Sync {
    /// Runs `cmd` with no standard input and returns what it printed and how it ended.
    /// An `Err` means the command could not be started.
    async fn output(&self, cmd: &Cmd) -> std::io::Result<Output>;
}

/// The real thing: spawns the process.
#[derive(Debug, Default)]
pub struct SystemExec;

#[async_trait]
impl Exec for SystemExec {
    async fn output(&self, cmd: &Cmd) -> std::io::Result<Output> {
        // zfs-fuse's daemon cannot serve two commands that start at once, whoever runs them:
        // zfs and zpool take the same machine-wide lock as the stores.
        let program = cmd.program.to_string_lossy();
        let lock = if daemon_lock::talks_to_daemon(&program) && !daemon_lock::held() {
            Some(DaemonLock::acquire().await.map_err(std::io::Error::other)?)
        } else {
            None
        };
        let out = cmd
            .to_command()
            // Under the lock, the command holds it until it ends (see `DaemonLock::stdin`).
            .stdin(lock.as_ref().map_or_else(Stdio::null, DaemonLock::stdin))
            .kill_on_drop(true)
            .output()
            .await?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Runs external commands, logging each one. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    exec: Arc<dyn Exec>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner that really runs commands.
    pub fn system() -> Self {
        Runner {
            exec: Arc::new(SystemExec),
        }
    }

    /// A runner on top of another executor (tests).
    #[cfg(test)]
    pub fn with_exec(exec: Arc<dyn Exec>) -> Self {
        Runner { exec }
    }

    /// Runs `cmd` to completion; a non-zero exit is *not* an error here.
    pub async fn output(&self, cmd: &Cmd) -> Result<Output> {
        let argv = cmd.display();
        tracing::info!(target: "xtask::cmd", %argv, "run");
        let started = Instant::now();
        let out = self
            .exec
            .output(cmd)
            .await
            .map_err(|source| XtaskError::Spawn {
                argv: argv.clone(),
                source,
            })?;
        let ms = started.elapsed().as_millis();
        if out.success() {
            tracing::debug!(target: "xtask::cmd", %argv, ms, "ok");
        } else {
            tracing::debug!(target: "xtask::cmd", %argv, ms, status = %out.status,
                stderr = out.stderr.trim(), "failed");
        }
        Ok(out)
    }

    /// Runs `cmd` to completion and fails unless it exits with status 0.
    pub async fn check(&self, cmd: &Cmd) -> Result<Output> {
        let out = self.output(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(failure(cmd, &out))
        }
    }

    /// Starts a long-running child. It is killed if the returned handle is dropped; callers
    /// that must also reap it use `kill().await`.
    pub fn spawn(
        &self,
        cmd: &Cmd,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Result<tokio::process::Child> {
        let argv = cmd.display();
        tracing::info!(target: "xtask::cmd", %argv, "spawn");
        let mut c = cmd.to_command();
        c.stdin(Stdio::null()).kill_on_drop(true);
        configure(&mut c);
        c.spawn()
            .map_err(|source| XtaskError::Spawn { argv, source })
    }
}

/// The error for a command that ran and failed.
pub fn failure(cmd: &Cmd, out: &Output) -> XtaskError {
    XtaskError::CommandFailed {
        argv: cmd.display(),
        status: out.status,
        stderr: out.stderr.trim().to_owned(),
    }
}

#[cfg(test)]
pub mod scripted {
    //! A scripted [`Exec`] for tests: canned answers by argv prefix, every call recorded.

    use std::os::unix::process::ExitStatusExt;
    use std::sync::Mutex;

    use super::*;

    /// argv prefix, exit code, stdout, stderr.
    type Rule = (Vec<String>, i32, String, String);

    /// Answers commands from a script; unknown commands fail to spawn (`NotFound`).
    #[derive(Default)]
    pub struct ScriptedExec {
        rules: Mutex<Vec<Rule>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl ScriptedExec {
        /// Answers commands whose argv starts with `prefix` (last added rule wins).
        pub fn on(&self, prefix: &[&str], code: i32, stdout: &str, stderr: &str) {
            self.rules.lock().expect("lock").push((
                prefix.iter().map(|s| s.to_string()).collect(),
                code,
                stdout.into(),
                stderr.into(),
            ));
        }

        /// The argv of every call so far.
        pub fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Exec for ScriptedExec {
        async fn output(&self, cmd: &Cmd) -> std::io::Result<Output> {
            let argv: Vec<String> = cmd
                .argv()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            self.calls.lock().expect("lock").push(argv.clone());
            let rules = self.rules.lock().expect("lock");
            let rule = rules
                .iter()
                .rev()
                .find(|(prefix, ..)| argv.starts_with(prefix));
            match rule {
                Some((_, code, stdout, stderr)) => Ok(Output {
                    status: ExitStatus::from_raw(code << 8),
                    stdout: stdout.clone(),
                    stderr: stderr.clone(),
                }),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not scripted",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let c = Cmd::new("zpool")
            .args(["create", "-m", "/var/tmp/a b", "--"])
            .arg("it's");
        assert_eq!(c.display(), r"zpool create -m '/var/tmp/a b' -- 'it'\''s'");
    }

    #[tokio::test]
    async fn check_keeps_argv_status_and_stderr() {
        let exec = Arc::new(scripted::ScriptedExec::default());
        exec.on(
            &["zpool", "destroy"],
            1,
            "",
            "cannot open 'x': no such pool\n",
        );
        let runner = Runner::with_exec(exec.clone());
        let err = runner
            .check(&Cmd::new("zpool").args(["destroy", "--", "x"]))
            .await
            .expect_err("fails");
        let msg = err.to_string();
        assert!(msg.contains("zpool destroy -- x"), "{msg}");
        assert!(msg.contains("exit status: 1"), "{msg}");
        assert!(msg.contains("no such pool"), "{msg}");
        assert_eq!(exec.calls(), vec![vec!["zpool", "destroy", "--", "x"]]);
    }

    #[tokio::test]
    async fn spawn_failure_names_the_command() {
        let runner = Runner::system();
        let err = runner
            .output(&Cmd::new("/nonexistent/zstore-no-such-program"))
            .await
            .expect_err("cannot spawn");
        assert!(err.to_string().contains("zstore-no-such-program"));
    }
}
