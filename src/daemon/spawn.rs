//! Starting a daemon in the background: the same binary re-executed with a
//! hidden subcommand, detached into its own session, the data key passed
//! through a pipe (never argv or the environment), and readiness reported
//! back through another pipe, so `hushfs mount` returns once the mount works
//! or with the daemon's own error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::secret::Key32;

/// The fds the child finds the key and the ready pipe on.
pub const KEY_FD: i32 = 3;
pub const READY_FD: i32 = 4;

pub struct Spawn<'a> {
    pub mountpoint: &'a Path,
    pub vault: &'a Path,
    pub project: &'a str,
    pub config: Option<&'a Path>,
    pub threads: usize,
    pub private: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub log: &'a Path,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Other(format!("pipe: {e}")))
}

/// Starts the daemon and waits until it reports the mount ready. Returns
/// the daemon's pid.
pub fn spawn(s: &Spawn, key: &Key32) -> Result<u32> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot find the hushfs binary: {e}")))?;
    if let Some(dir) = s.log.parent() {
        crate::sys::paths::ensure_private_dir(dir)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(s.log)
        .map_err(|e| Error::io("cannot open log", s.log, e))?;
    let (key_r, key_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut c = Command::new(exe);
    c.arg("__serve")
        .arg("--mountpoint")
        .arg(s.mountpoint)
        .arg("--vault")
        .arg(s.vault)
        .arg("--project")
        .arg(s.project)
        .arg("--threads")
        .arg(s.threads.to_string())
        .arg("--log")
        .arg(s.log);
    if let Some(cfg) = s.config {
        c.arg("--config").arg(cfg);
    }
    for (on, flag) in [
        (s.private, "--private"),
        (s.allow_other, "--allow-other"),
        (s.allow_root, "--allow-root"),
    ] {
        if on {
            c.arg(flag);
        }
    }
    // fuser finds fusermount3 through PATH; the daemon may hold the agent's
    // keyring, so it must be the system's, not one planted in the caller's.
    c.env("PATH", crate::agent::SAFE_PATH);
    // fuser also runs FUSERMOUNT_PATH. In the agent's keyring session it is
    // never passed on: whatever it names could be swapped after any check.
    // Outside it there is no keyring to take, and tests use it.
    if crate::sys::keyring::trusted().is_some() {
        c.env_remove("FUSERMOUNT_PATH");
    }
    c.stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::io("cannot open log", s.log, e))?,
        )
        .stderr(log);
    let (kr, rw) = (key_r.as_raw_fd(), ready_w.as_raw_fd());
    let private = s.private;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (dup2, fcntl, setsid).
    unsafe {
        c.pre_exec(move || {
            crate::sys::harden::inherit_as(kr, KEY_FD)?;
            crate::sys::harden::inherit_as(rw, READY_FD)?;
            // A mount outlives the terminal; a private one stays in run's
            // session but still ignores its terminal's ^C (run handles it).
            if !private {
                libc::setsid();
            } else {
                libc::setpgid(0, 0);
            }
            Ok(())
        });
    }
    let mut child = c
        .spawn()
        .map_err(|e| Error::Other(format!("cannot start the daemon: {e}")))?;
    drop(key_r);
    drop(ready_w);
    File::from(key_w)
        .write_all(key.expose())
        .map_err(|e| Error::Other(format!("cannot hand the key to the daemon: {e}")))?;
    let mut ready = File::from(ready_r);
    let msg = read_ready(&mut ready, Duration::from_secs(30));
    match msg.as_deref() {
        Some("ok") => Ok(child.id()),
        Some(m) => {
            let _ = child.wait();
            Err(Error::Other(
                m.strip_prefix("error: ").unwrap_or(m).to_string(),
            ))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Other(format!(
                "the daemon did not report ready; see its log {}",
                s.log.display()
            )))
        }
    }
}

/// The first line the daemon writes, or None on timeout / silent exit.
pub(crate) fn read_ready(f: &mut File, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; poll only writes revents.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            continue;
        }
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if buf.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let s = String::from_utf8_lossy(&buf);
    let line = s.lines().next()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}

/// Reads the key the parent wrote to KEY_FD (daemon side).
pub fn read_key_fd() -> Result<Key32> {
    // SAFETY: fcntl(F_GETFD) only checks that the fd is open.
    if unsafe { libc::fcntl(KEY_FD, libc::F_GETFD) } < 0 {
        return Err(Error::usage("__serve is internal: use `hushfs mount`"));
    }
    // SAFETY: the parent set up KEY_FD for us to consume.
    let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(KEY_FD) };
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    f.read_exact(&mut k[..])
        .map_err(|e| Error::Other(format!("cannot read the key: {e}")))?;
    Ok(Key32::from_bytes(*k))
}

/// The ready pipe (daemon side), if the parent gave one.
pub fn ready_fd() -> Option<File> {
    // SAFETY: fcntl(F_GETFD) only checks that the fd is open.
    if unsafe { libc::fcntl(READY_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the parent set up READY_FD for us.
    Some(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(READY_FD) })
}

/// `$XDG_STATE_HOME/hushfs/logs/<mount id>.log`.
pub fn log_path(mountpoint: &Path) -> PathBuf {
    crate::sys::paths::state_dir()
        .join("logs")
        .join(format!("mount-{}.log", super::registry::id(mountpoint)))
}
