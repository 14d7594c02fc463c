//! `hushfs run`: the broker. It makes itself a child subreaper (so orphans
//! of the command stay in its tree), registers a grant rooted at itself with
//! the mount's daemon (its own pidfd, checked against SO_PEERCRED) before
//! the command exists, starts the command, forwards signals to it, and when
//! it exits revokes the grant and takes down a private mount. Exits with the
//! command's status. Its output goes through the redactor (output.rs)
//! unless `--no-redact`.

mod output;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use signal_hook::consts::signal::*;
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;

use crate::daemon::{control, protocol::Request, registry, spawn};
use crate::error::{Error, Result};
use crate::scan::Matcher;
use crate::secret::{Key32, SecretBytes};
use crate::sys::pidfd::PidFd;

/// A mount made for this run alone.
pub struct Private {
    pub vault: PathBuf,
    pub project: String,
    pub config: Option<PathBuf>,
    pub key: Key32,
}

/// A live mount to grant on, or a private one made for this run.
pub enum Target {
    Mount(PathBuf),
    Private(Private),
}

pub struct RunOpts {
    pub cmd: Vec<OsString>,
    /// Where the command's files are.
    pub target: Target,
    /// Environment variables to inject (`--env`).
    pub env: Vec<(String, SecretBytes)>,
    /// Execute this path (with `cmd[0]` as argv[0]) instead of looking
    /// `cmd[0]` up: the program a run policy was checked against.
    pub program: Option<PathBuf>,
    /// Redact these values from the command's stdout and stderr.
    pub redact: Option<Arc<Matcher>>,
}

/// Signals passed on to the command when another process sent them to us.
const FORWARD: [i32; 7] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

/// Longest grant label `run` sends ("run: " and up to 120 characters of
/// the command line).
pub const LABEL_MAX: usize = 125;

fn label(cmd: &[OsString]) -> String {
    let s: String = cmd
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let s: String = s.chars().take(120).collect();
    format!("run: {s}")
}

struct Cleanup {
    dir: Option<PathBuf>,
    daemon_pid: Option<u32>,
    socket: PathBuf,
    grant: Option<u64>,
}

impl Cleanup {
    /// Revokes the grant; for a private mount, stops the daemon, waits for
    /// the unmount and removes the directory.
    fn run(&mut self) {
        if let Some(g) = self.grant.take() {
            let _ = control::call(&self.socket, &Request::Revoke { grant: g }, None);
        }
        if let (Some(dir), Some(pid)) = (self.dir.take(), self.daemon_pid.take()) {
            let _ = control::call(&self.socket, &Request::Shutdown, None);
            wait_pid(pid, Duration::from_secs(10));
            if crate::daemon::mountpoint::mounted_fstype(&dir).is_some() {
                let _ = crate::daemon::mountpoint::unmount(&dir, true);
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Reaps `pid` (our child), giving up after `timeout`.
fn wait_pid(pid: u32, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    while std::time::Instant::now() < deadline {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

fn private_dir() -> Result<PathBuf> {
    let base = crate::sys::paths::runtime_dir().join("run");
    crate::sys::paths::ensure_private_dir(&base)?;
    let suffix: String = crate::sys::random::array::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = base.join(format!("{}-{suffix}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io("cannot restrict", &dir, e))?;
    Ok(dir)
}

pub fn run(o: RunOpts) -> Result<i32> {
    // Orphans of the command (double forks, daemonizing servers) are
    // reparented to us instead of init, so they stay inside the granted tree.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    // Catch signals from the start; forward once the command exists.
    let target: Arc<Mutex<Forward>> = Arc::new(Mutex::new(Forward::default()));
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARD)
        .map_err(|e| Error::Other(format!("cannot handle signals: {e}")))?;
    {
        let target = target.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for origin in signals.forever() {
                    // A signal the terminal sent to the foreground group
                    // already reached the command; pass on only what another
                    // process sent to us.
                    let sent = matches!(
                        origin.cause,
                        signal_hook::low_level::siginfo::Cause::Sent(_)
                    );
                    let mut t = target.lock();
                    // The terminal was resized: give the command's pty the
                    // new size, then tell the command (it may have looked
                    // before we resized).
                    if origin.signal == SIGWINCH
                        && let Some(pty) = t.pty.as_ref()
                    {
                        output::sync_size(pty);
                        if let Some(c) = t.child.as_ref() {
                            let _ = c.send_signal(SIGWINCH);
                        }
                        continue;
                    }
                    if !sent {
                        continue;
                    }
                    match t.child.as_ref() {
                        Some(c) => {
                            let _ = c.send_signal(origin.signal);
                        }
                        None => t.pending.push(origin.signal),
                    }
                }
            })
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }

    let mut cleanup;
    let dir = match &o.target {
        Target::Mount(m) => {
            let m = crate::daemon::mountpoint::absolute(m)?;
            let e = registry::require(&m)?;
            cleanup = Cleanup {
                dir: None,
                daemon_pid: None,
                socket: e.socket,
                grant: None,
            };
            m
        }
        Target::Private(p) => {
            let dir = private_dir()?;
            let log = spawn::log_path(&dir);
            let started = spawn::spawn(
                &spawn::Spawn {
                    mountpoint: &dir,
                    vault: &p.vault,
                    project: &p.project,
                    config: p.config.as_deref(),
                    threads: 2,
                    private: true,
                    allow_other: false,
                    allow_root: false,
                    log: &log,
                },
                &p.key,
            );
            let pid = match started {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
            };
            cleanup = Cleanup {
                dir: Some(dir.clone()),
                daemon_pid: Some(pid),
                socket: registry::socket_path(&dir),
                grant: None,
            };
            dir
        }
    };

    let result = (|| {
        // The grant exists before the command does: rooted at this process.
        let me = PidFd::open(std::process::id())
            .map_err(|e| Error::Other(format!("pidfd_open: {e}")))?;
        let r = control::call(
            &cleanup.socket,
            &Request::GrantSelf {
                label: label(&o.cmd),
            },
            Some(me.as_raw_fd()),
        )?;
        if !r.ok {
            return Err(Error::Denied(format!(
                "the daemon refused the grant: {}",
                r.error.unwrap_or_default()
            )));
        }
        cleanup.grant = r.grant;
        spawn_and_wait(&o, &dir, &target)
    })();
    cleanup.run();
    result
}

/// Where forwarded signals go: the command once it exists; until then they
/// wait in `pending`. One lock over both, so none is lost in between.
#[derive(Default)]
struct Forward {
    child: Option<PidFd>,
    pending: Vec<i32>,
    /// The pty the command writes to, resized on SIGWINCH.
    pty: Option<Arc<OwnedFd>>,
}

fn spawn_and_wait(o: &RunOpts, dir: &Path, target: &Mutex<Forward>) -> Result<i32> {
    let mut c = match &o.program {
        Some(p) => {
            let mut c = Command::new(p);
            c.arg0(&o.cmd[0]);
            c
        }
        None => Command::new(&o.cmd[0]),
    };
    c.args(&o.cmd[1..])
        .env("HUSHFS_DIR", dir)
        .env_remove(crate::agent::server::KEYRING_ENV);
    // SAFETY: runs in the forked child before exec and only makes the
    // keyctl syscall.
    unsafe {
        // The command and its tree possess none of the agent's keys.
        c.pre_exec(crate::sys::keyring::detach_in_child);
    }
    for (k, v) in &o.env {
        c.env(k, std::ffi::OsStr::from_bytes(v.expose()));
    }
    let mut plan = o.redact.clone().map(output::Plan::new).transpose()?;
    if let Some(p) = plan.as_mut() {
        p.attach(&mut c)?;
    }
    let spawned = c.spawn();
    // The Command holds our copies of the output's write ends.
    drop(c);
    let spawned = match spawned {
        Ok(ch) => ch,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("hushfs: cannot run {}: {e}", o.cmd[0].to_string_lossy());
            return Ok(code);
        }
    };
    let pid = spawned.id();
    let pty = plan.as_ref().and_then(|p| p.pty());
    let copying = plan.map(output::Plan::start);
    // Our unreaped child cannot be recycled, so this pidfd is exact.
    if let Ok(fd) = PidFd::open(pid) {
        let mut t = target.lock();
        for s in t.pending.drain(..) {
            let _ = fd.send_signal(s);
        }
        t.child = Some(fd);
        t.pty = pty;
    }
    let code = reap(pid);
    if let Some(c) = copying {
        c.finish();
    }
    code
}

/// Reaps everything (adopted orphans included) until `pid` exits; returns
/// its status as an exit code.
fn reap(pid: u32) -> Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::Other(format!("waiting for the command: {e}")));
        }
        if r as u32 == pid {
            let st = std::process::ExitStatus::from_raw(status);
            return Ok(match (st.code(), st.signal()) {
                (Some(c), _) => c,
                (None, Some(s)) => 128 + s,
                _ => 1,
            });
        }
    }
}
