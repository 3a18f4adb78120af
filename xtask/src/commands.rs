//! Operator subcommands: `pool`, `vm` and `engines`.

use crate::cancel::Cancel;
use crate::cli::{PoolCommand, VmCommand};
use crate::engine::{self, EngineChoice};
use crate::error::{EXIT_OK, EXIT_VM_FAILED, Result, XtaskError};
use crate::runner::Runner;
use crate::vm::{self, BuildOptions, GuestExit, VmSpec};
use store_zfs::testing::pool::{self, PoolDir, PoolName};

/// `cargo xtask pool ...`.
pub async fn pool(runner: &Runner, cmd: PoolCommand) -> Result<u8> {
    match cmd {
        PoolCommand::Create {
            name,
            engine: choice,
            file,
        } => {
            if matches!(choice, EngineChoice::Vm | EngineChoice::Fake) {
                return Err(XtaskError::Invalid(
                    "pools are created on kernel OpenZFS or zfs-fuse (--engine auto|kernel|zfs-fuse)".into(),
                ));
            }
            let bytes = file.bytes()?;
            let engine = engine::prepare_local(runner, choice).await?;
            let zfs = crate::pool::runner();
            let dir = file.dir();
            let name = match name {
                Some(n) => n,
                None => pool::fresh_name(&*zfs, &dir, &file.prefix()).await?,
            };
            let rec = pool::create(&*zfs, &dir, &name, bytes, &engine.kind().to_string()).await?;
            if let Some(pid) = engine.started_daemon() {
                eprintln!(
                    "xtask: the zfs-fuse daemon started for this pool (pid {pid}) keeps running"
                );
            }
            eprintln!(
                "xtask: created pool {} on {} ({}), mounted at {}",
                rec.name,
                engine.describe(),
                rec.vdev.display(),
                rec.mountpoint.display()
            );
            println!("{}", rec.name);
            Ok(EXIT_OK)
        }
        PoolCommand::Destroy { name, pool_dir } => {
            let dir = PoolDir::resolve(pool_dir.as_deref());
            if dir.load(&name)?.is_none() {
                return Err(XtaskError::Invalid(format!(
                    "refusing to destroy {name}: xtask has no record of creating it in {}",
                    dir.root().display()
                )));
            }
            // zfs-fuse keeps pools in its cache while stopped: talk to a daemon to destroy it.
            let engine = engine::prepare_local(runner, EngineChoice::Auto).await?;
            let result = pool::destroy(&*crate::pool::runner(), &dir, &name).await;
            engine.finish(false).await?;
            result?;
            eprintln!("xtask: destroyed pool {name}");
            Ok(EXIT_OK)
        }
        PoolCommand::List { pool_dir } => {
            let dir = PoolDir::resolve(pool_dir.as_deref());
            let (rows, problem) = pool::list(&*crate::pool::runner(), &dir).await?;
            if let Some(p) = problem {
                eprintln!("xtask: cannot ask ZFS about live pools ({p}); showing records only");
            }
            if rows.is_empty() {
                eprintln!("xtask: no pools made by xtask in {}", dir.root().display());
            }
            for r in rows {
                let (size, alloc, health) = match &r.live {
                    Some([s, a, h]) => (s.as_str(), a.as_str(), h.as_str()),
                    None => ("-", "-", "NOT-IMPORTED"),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.record.name,
                    r.record.engine,
                    size,
                    alloc,
                    health,
                    r.record.mountpoint.display()
                );
            }
            Ok(EXIT_OK)
        }
    }
}

/// `cargo xtask vm ...`.
pub async fn vm(runner: &Runner, cancel: &Cancel, cmd: VmCommand) -> Result<u8> {
    match cmd {
        VmCommand::Build {
            rebuild,
            no_module_cache,
        } => {
            let image = vm::image::ensure(
                runner,
                cancel,
                BuildOptions {
                    rebuild,
                    no_module_cache,
                },
            )
            .await?;
            println!("{}", image.dir.display());
            Ok(EXIT_OK)
        }
        VmCommand::Info => {
            let inputs = vm::image::ImageInputs::for_host()?;
            println!("cache:  {}", vm::cache_root().display());
            println!("key:    {}", inputs.key());
            println!(
                "inputs: {}",
                serde_json::to_string(&inputs).unwrap_or_default()
            );
            match vm::image::cached(&inputs) {
                Some(img) => println!(
                    "image:  {} (kernel {}, zfs {}, built in {} s)",
                    img.dir.display(),
                    img.manifest.kernel,
                    img.manifest.zfs,
                    img.manifest.build_secs
                ),
                None => println!("image:  not built (cargo xtask vm build, as root)"),
            }
            Ok(EXIT_OK)
        }
        VmCommand::Run {
            share,
            workdir,
            pool_size,
            no_pool,
            env,
            vm: opts,
            command,
        } => {
            let image = vm::image::ensure(
                runner,
                cancel,
                BuildOptions {
                    rebuild: opts.rebuild_image,
                    no_module_cache: false,
                },
            )
            .await?;
            let mut spec = VmSpec::new(command);
            vm::apply_options(&mut spec, &opts);
            spec.share = share
                .map(|s| {
                    std::fs::canonicalize(&s).map_err(|e| XtaskError::io("resolving --share", s, e))
                })
                .transpose()?;
            spec.workdir = workdir;
            if !no_pool {
                let name = PoolName::unique(&crate::pool::prefix(None), 0)?;
                spec.pool = Some((name, pool_size));
            }
            for kv in env {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    XtaskError::Invalid(format!("--env {kv:?}: expected VAR=VALUE"))
                })?;
                spec.env.push((k.to_owned(), v.to_owned()));
            }
            let (outcome, _) = vm::boot(runner, cancel, &image, &spec, "vm run").await?;
            Ok(match outcome.exit.failure(&opts) {
                Some((why, code)) => {
                    eprintln!("xtask: VM: {why}");
                    code
                }
                None => match outcome.exit {
                    GuestExit::Exited(code) => {
                        eprintln!("xtask: VM: guest command exited with {code}");
                        u8::try_from(code).unwrap_or(EXIT_VM_FAILED)
                    }
                    _ => EXIT_VM_FAILED,
                },
            })
        }
    }
}

/// `cargo xtask engines`: what this machine offers.
pub async fn engines() -> Result<u8> {
    match engine::detect_kernel_openzfs().await {
        Ok(v) => println!("kernel:   available ({v})"),
        Err(why) => println!("kernel:   not available: {why}"),
    }
    let daemons = engine::running_daemons();
    println!(
        "zfs-fuse: {}, {}",
        if engine::zfs_fuse_installed() {
            "installed"
        } else {
            "not installed (apt-get install zfs-fuse)"
        },
        if daemons.is_empty() {
            "no daemon running".to_owned()
        } else {
            format!("daemon running (pid {daemons:?})")
        }
    );
    let qemu = crate::prereq::find("qemu-system-x86_64").is_some();
    let deboot = crate::prereq::find("debootstrap").is_some();
    let image = vm::image::ImageInputs::for_host()
        .ok()
        .and_then(|i| vm::image::cached(&i));
    println!(
        "vm:       qemu {}, debootstrap {}, image {}",
        if qemu { "installed" } else { "missing" },
        if deboot { "installed" } else { "missing" },
        image.map_or("not built".to_owned(), |i| format!(
            "cached ({})",
            i.dir.display()
        ))
    );
    println!("fake:     always available");
    Ok(EXIT_OK)
}
