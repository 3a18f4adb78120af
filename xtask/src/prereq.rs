//! Host prerequisites: find programs, and install the Debian packages that provide missing ones
//! (only when running as root; otherwise say exactly what to install).

use std::path::{Path, PathBuf};

use crate::error::{Result, XtaskError};
use crate::procs;
use crate::runner::{Cmd, Runner};

/// A program xtask needs, and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// The executable's file name.
    pub program: &'static str,
    /// The Debian (bookworm) package providing it.
    pub package: &'static str,
}

/// Directories searched besides `PATH`: CI may run with a `PATH` that lacks the sbin dirs.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The full path of `program`, if it is installed.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes sure every program in `needs` is installed, installing the missing packages with
/// `apt-get` when running as root. `purpose` names what they are needed for, for messages.
/// Returns the packages it installed.
pub async fn ensure(runner: &Runner, needs: &[Need], purpose: &str) -> Result<Vec<&'static str>> {
    let mut missing: Vec<&'static str> = needs
        .iter()
        .filter(|n| find(n.program).is_none())
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(missing);
    }
    let list = missing.join(" ");
    if !procs::is_root() {
        return Err(XtaskError::Missing {
            what: format!("{purpose} needs the Debian package(s) {list}, which are not installed"),
            hint: format!(
                "run xtask as root to let it install them, or: sudo apt-get install {list}"
            ),
        });
    }
    if find("apt-get").is_none() {
        return Err(XtaskError::Missing {
            what: format!("{purpose} needs {list}, and this host has no apt-get to install them"),
            hint: "install the equivalent packages with this system's package manager".into(),
        });
    }
    eprintln!("xtask: installing {list} (needed for {purpose})");
    let update = Cmd::new("apt-get").args(["-q", "update"]);
    runner.check(&apt_env(update)).await?;
    let install = Cmd::new("apt-get")
        .args(["-q", "-y", "--no-install-recommends", "install"])
        .args(&missing);
    runner.check(&apt_env(install)).await?;
    for n in needs {
        if find(n.program).is_none() {
            return Err(XtaskError::Missing {
                what: format!(
                    "{} is still missing after installing {}",
                    n.program, n.package
                ),
                hint: format!("check `apt-cache policy {}` and the apt sources", n.package),
            });
        }
    }
    Ok(missing)
}

fn apt_env(cmd: Cmd) -> Cmd {
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_but_not_nonsense() {
        assert!(find("sh").is_some());
        assert!(find("zstore-no-such-program").is_none());
    }

    #[tokio::test]
    async fn nothing_to_do_when_present() {
        let runner = Runner::system();
        let need = [Need {
            program: "sh",
            package: "dash",
        }];
        assert!(ensure(&runner, &need, "test").await.expect("ok").is_empty());
    }
}
