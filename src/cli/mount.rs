//! `mount`, `umount` and the hidden `__serve` (the daemon itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{Ctx, out};
use crate::daemon::{self, mountpoint, protocol::Request, registry, spawn};
use crate::error::{Error, Result};
use crate::render::Config;
use crate::sys::pidfd::PidFd;
use crate::vault::{names, unlock};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to serve the files in (must exist)
    pub dir: PathBuf,
    /// Project to serve [default: `project` in hushfs.toml]
    #[arg(long, short)]
    pub project: Option<String>,
    /// hushfs.toml to use [default: found in this directory or a parent]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stay attached and log to stderr
    #[arg(long)]
    pub foreground: bool,
    /// Let other users reach DIR: a container runtime bind-mounting it, and
    /// container processes of other uids through `hushfs allow` grants
    /// (ordinary users need `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Treat root like the mount owner (it still needs a grant to read)
    #[arg(long)]
    pub allow_root: bool,
    /// FUSE worker threads (at least 2)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub threads: u16,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mount directory
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    pub mountpoint: PathBuf,
    #[arg(long)]
    pub vault: PathBuf,
    #[arg(long)]
    pub project: String,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long)]
    pub private: bool,
    #[arg(long)]
    pub allow_other: bool,
    #[arg(long)]
    pub allow_root: bool,
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// The configuration: `--config F`, else hushfs.toml found from the
/// current directory up, else defaults. Returns it with its path.
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => Some(std::path::absolute(p).map_err(|e| Error::io("cannot resolve", p, e))?),
        None => std::env::current_dir().ok().and_then(|d| Config::find(&d)),
    };
    match path {
        Some(p) => Ok((
            Config::load(&p).map_err(|e| Error::usage(e.to_string()))?,
            Some(p),
        )),
        None => Ok((Config::default(), None)),
    }
}

pub fn resolve_project(arg: Option<String>, cfg: &Config) -> Result<String> {
    let p = arg.or_else(|| cfg.project.clone()).ok_or_else(|| {
        Error::usage("which project? pass --project P (or set `project = \"P\"` in hushfs.toml)")
    })?;
    names::validate("project", &p)?;
    Ok(p)
}

pub fn init_logging() {
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().filter_or("HUSHFS_LOG", "info"))
            .format_target(false)
            .try_init();
}

pub fn mount(ctx: &Ctx, a: MountArgs) -> Result<i32> {
    let dir = mountpoint::absolute(&a.dir)?;
    let (config, config_path) = load_config(a.config.as_deref())?;
    let project = resolve_project(a.project, &config)?;
    if registry::find(&dir).is_some() {
        return Err(Error::usage(format!(
            "{} is already mounted: `hushfs umount {}` first",
            dir.display(),
            dir.display()
        )));
    }
    if (a.allow_other || a.allow_root) && !mountpoint::is_root() && !mountpoint::user_allow_other()
    {
        return Err(Error::usage(
            "--allow-other and --allow-root need `user_allow_other` in /etc/fuse.conf for ordinary users: add that line (as root) and mount again",
        ));
    }
    let vault = unlock::open(&ctx.vault, &ctx.keys)?;
    // Render once here so a bad template or a missing secret is reported
    // by this command, not in a log file.
    crate::project::render_opened(&vault.secrets, &ctx.vault, &project, &config)?;
    let threads = usize::from(a.threads);
    if a.foreground {
        init_logging();
        daemon::serve(daemon::ServeOpts {
            mountpoint: dir,
            vault: ctx.vault.clone(),
            project,
            config,
            key: vault.key().clone(),
            threads,
            private: false,
            allow_other: a.allow_other,
            allow_root: a.allow_root,
            ready: None,
            log: None,
        })?;
        return Ok(0);
    }
    let log = spawn::log_path(&dir);
    let pid = spawn::spawn(
        &spawn::Spawn {
            mountpoint: &dir,
            vault: &ctx.vault,
            project: &project,
            config: config_path.as_deref(),
            threads,
            private: false,
            allow_other: a.allow_other,
            allow_root: a.allow_root,
            log: &log,
        },
        vault.key(),
    )?;
    out(&format!(
        "mounted {project} at {} (daemon pid {pid}, log {})\nread it with `hushfs run --mount {} -- CMD`; stop with `hushfs umount {}`\n",
        dir.display(),
        log.display(),
        dir.display(),
        dir.display()
    ))?;
    Ok(0)
}

/// Waits for a process to exit, through its pidfd.
fn wait_exit(pidfd: &PidFd, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !pidfd.is_alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !pidfd.is_alive()
}

pub fn umount(_ctx: &Ctx, a: UmountArgs) -> Result<i32> {
    let dir = mountpoint::absolute(&a.dir)?;
    if let Some(e) = registry::find(&dir) {
        let pidfd = PidFd::open(e.pid).ok();
        let r = daemon::control::call(&e.socket, &Request::Shutdown, None)?;
        if !r.ok {
            return Err(Error::Other(r.error.unwrap_or_default()));
        }
        if let Some(p) = pidfd
            && !wait_exit(&p, Duration::from_secs(10))
        {
            return Err(Error::Other(format!(
                "the daemon (pid {}) did not stop within 10 s; see {}",
                e.pid,
                e.log.map(|l| l.display().to_string()).unwrap_or_default()
            )));
        }
        out(&format!("unmounted {}\n", dir.display()))?;
        return Ok(0);
    }
    match mountpoint::inspect(&dir, false)? {
        mountpoint::State::Stale => {
            mountpoint::unmount(&dir, true)?;
            out(&format!(
                "cleared a stale mount at {} (its daemon had died)\n",
                dir.display()
            ))?;
            Ok(0)
        }
        mountpoint::State::Free | mountpoint::State::Hushfs => Err(Error::NotFound(format!(
            "{} is not a hushfs mount",
            dir.display()
        ))),
        mountpoint::State::Other(t) => Err(Error::usage(format!(
            "{} is a {t} mount, not hushfs: use umount(8)",
            dir.display()
        ))),
    }
}

/// The daemon process (started by `mount` or `run`).
pub fn serve(a: ServeArgs) -> Result<i32> {
    init_logging();
    let key = spawn::read_key_fd()?;
    let ready = spawn::ready_fd();
    let config = match &a.config {
        Some(p) => Config::load(p).map_err(|e| Error::usage(e.to_string()))?,
        None => Config::default(),
    };
    daemon::serve(daemon::ServeOpts {
        mountpoint: a.mountpoint,
        vault: a.vault,
        project: a.project,
        config,
        key,
        threads: a.threads,
        private: a.private,
        allow_other: a.allow_other,
        allow_root: a.allow_root,
        ready,
        log: a.log,
    })?;
    Ok(0)
}

/// Tells every live mount of `vault` to lock or reload. Returns how many
/// answered.
pub fn notify_mounts(vault: &Path, req: &Request) -> usize {
    registry::list()
        .into_iter()
        .filter(|e| e.vault == vault)
        .filter(|e| daemon::control::call(&e.socket, req, None).is_ok())
        .count()
}

/// Sends `req` to every live mount of `vault` at once (a stuck one delays
/// the others by nothing) and returns each mount with its confirmation, or
/// why there was none: no answer, or a refusal.
pub fn tell_mounts(vault: &Path, req: &Request) -> Vec<(registry::Entry, Result<(), String>)> {
    let mounts: Vec<registry::Entry> = registry::list()
        .into_iter()
        .filter(|e| e.vault == vault)
        .collect();
    std::thread::scope(|sc| {
        let asked: Vec<_> = mounts
            .iter()
            .map(|e| sc.spawn(move || daemon::control::call(&e.socket, req, None)))
            .collect();
        mounts
            .iter()
            .zip(asked)
            .map(|(e, h)| {
                let r = match h.join() {
                    Ok(Ok(r)) if r.ok => Ok(()),
                    Ok(Ok(r)) => Err(r.error.unwrap_or_else(|| "refused".into())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("internal error".into()),
                };
                (e.clone(), r)
            })
            .collect()
    })
}
