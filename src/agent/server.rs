//! `hushfs __agent`: the per-user process that alone holds cached keys.
//!
//! It joins a fresh possessor-only session keyring (the cache lives there,
//! out of reach of every process that does not descend from the agent),
//! listens on `$XDG_RUNTIME_DIR/hushfs/agent.sock`, and runs the commands
//! clients hand it as its own children, with the clients' stdin, stdout and
//! stderr. It exits when its socket is removed or replaced.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::protocol::{Exec, Request, Response};
use super::wire::{self, Got, Reader};
use crate::error::{Error, Result};
use crate::secret::Key32;
use crate::sys::pidfd::PidFd;
use crate::vault::{Sealed, keychain};

/// Most connections served at once; more are answered with an error and
/// closed, so a flood cannot exhaust threads.
const MAX_CONNS: usize = 256;
/// Most commands running through the agent at once. A running command
/// does not hold one of the connection slots above.
const MAX_EXECS: usize = 64;
/// A request (other than the signals that follow an `Exec`) must arrive
/// whole within this time.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Environment variables the dynamic loader and libc act on, which would
/// let whoever sets them run code inside a process that holds keys: the
/// list glibc ignores for set-uid programs (UNSECURE_ENVVARS), by prefix.
const UNSAFE_ENV: [&str; 12] = [
    "LD_",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];

/// Variables that are the agent's to set: its keyring's serial, and the fd
/// of a key handed over for one command.
pub const KEYRING_ENV: &str = "HUSHFS_AGENT_KEYRING";
pub const KEY_FD_ENV: &str = "HUSHFS_GIVEN_KEY_FD";
const GIVEN_KEY_FD: i32 = 3;

pub fn is_unsafe_env(name: &[u8]) -> bool {
    UNSAFE_ENV.iter().any(|p| name.starts_with(p.as_bytes()))
        || name == KEYRING_ENV.as_bytes()
        || name == KEY_FD_ENV.as_bytes()
}

struct Agent {
    keyring: i32,
    /// Which command lines the agent runs (those the CLI sends it).
    may_run: fn(&[Vec<u8>]) -> bool,
    /// Commands running now.
    execs: AtomicUsize,
    conns: AtomicUsize,
    me: u32,
}

/// Runs the agent until its socket goes away. `ready` gets "ok" once the
/// socket is listening (or the reason it cannot start).
pub fn serve(ready: Option<File>, may_run: fn(&[Vec<u8>]) -> bool) -> Result<i32> {
    let r = start();
    let (listener, path, ino) = match r {
        Ok(x) => x,
        Err(e) => {
            if let Some(mut f) = ready {
                let _ = writeln!(f, "error: {e}");
            }
            return Err(e);
        }
    };
    if let Some(mut f) = ready {
        let _ = writeln!(f, "ok");
    }
    let keyring = crate::sys::keyring::trusted().expect("set by start");
    let agent = Arc::new(Agent {
        keyring,
        may_run,
        execs: AtomicUsize::new(0),
        conns: AtomicUsize::new(0),
        // SAFETY: geteuid has no preconditions.
        me: unsafe { libc::geteuid() },
    });
    // Gone or replaced socket (its directory removed, another agent took
    // the name): this agent is no longer reachable, so it ends.
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.ino() == ino => {}
                    _ => std::process::exit(0),
                }
            }
        })
        .map_err(|e| Error::Other(format!("cannot start the agent's watcher: {e}")))?;
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        if agent.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
            agent.conns.fetch_sub(1, Ordering::SeqCst);
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = wire::send(&s, &Response::err(super::client::BUSY), &[]);
            continue;
        }
        let a = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                handle(&a, s);
                a.conns.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            agent.conns.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(0)
}

/// Hardening, the keyring, the socket.
fn start() -> Result<(UnixListener, PathBuf, u64)> {
    if let Some((k, _)) = std::env::vars_os().find(|(k, _)| is_unsafe_env(k.as_bytes())) {
        return Err(Error::usage(format!(
            "the agent does not start with {} set: start it with `hushfs unlock`",
            k.to_string_lossy()
        )));
    }
    crate::sys::harden::one_malloc_arena();
    crate::sys::harden::lock_memory_if_allowed();
    let serial = crate::sys::keyring::join_new_session()
        .map_err(|e| Error::Other(format!("cannot create the agent's keyring: {e}")))?;
    crate::sys::keyring::set_trusted(serial);
    let purged = keychain::purge_user_keyring();
    if purged > 0 {
        log::info!("removed {purged} hushfs entries from the user keyring");
    }
    let dir = crate::sys::paths::runtime_dir();
    crate::sys::paths::ensure_private_dir(&dir)?;
    let path = super::socket_path();
    if super::client::hello().is_some() {
        return Err(Error::Other("an agent is already running".into()));
    }
    // Bind under a temporary name and rename over the socket path, so a
    // stale socket is replaced atomically.
    let tmp = dir.join(format!("agent.{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| Error::io("cannot listen on", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot create", &path, e))?;
    let ino = std::fs::symlink_metadata(&path)
        .map_err(|e| Error::io("cannot inspect", &path, e))?
        .ino();
    Ok((listener, path, ino))
}

fn handle(a: &Agent, s: UnixStream) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    match crate::daemon::control::peer(&s) {
        Ok(p) if p.uid == a.me => {}
        Ok(p) => {
            log::warn!("agent: refused uid {} (pid {})", p.uid, p.pid);
            let _ = wire::send(&s, &Response::err("permission denied: not your agent"), &[]);
            return;
        }
        Err(e) => {
            let _ = wire::send(
                &s,
                &Response::err(format!("cannot identify peer: {e}")),
                &[],
            );
            return;
        }
    }
    let mut reader = Reader::default();
    let req = match reader.recv::<Request>(&s, Some(Instant::now() + REQUEST_DEADLINE)) {
        Ok(Got::Msg(r, fds)) => (r, fds),
        Ok(Got::Eof) => return,
        Err(e) => {
            let _ = wire::send(&s, &Response::err(format!("bad request: {e}")), &[]);
            return;
        }
    };
    let resp = match req {
        (Request::Hello, _) => Response::Hello {
            pid: std::process::id(),
            keyring: a.keyring,
        },
        (Request::Store { vault, ttl_secs }, fds) => store(&vault, fds, ttl_secs),
        (Request::Unlocked { vault }, _) => unlocked(&vault),
        (Request::Forget { vault }, _) => match vault_id(&vault) {
            Ok(id) => match keychain::clear(&id) {
                Ok(_) => Response::Ok,
                Err(why) => Response::err(format!("cannot forget the key: {why}")),
            },
            Err(e) => Response::err(e),
        },
        (Request::Exec(e), fds) => {
            if let Some(v) = &e.if_unlocked
                && cached(v).is_none()
            {
                let _ = wire::send(&s, &unlocked(v), &[]);
                return;
            }
            exec(a, &s, &mut reader, e, fds);
            return;
        }
        (Request::Signal { .. }, _) => Response::err("signal without a command"),
    };
    let _ = wire::send(&s, &resp, &[]);
}

fn sealed(vault: &str) -> std::result::Result<Sealed, String> {
    let p = Path::new(vault);
    if !p.is_absolute() {
        return Err("the vault path must be absolute".into());
    }
    Sealed::read(p).map_err(|e| e.to_string())
}

fn vault_id(vault: &str) -> std::result::Result<String, String> {
    sealed(vault).map(|s| s.header().id_hex())
}

/// The key comes in the pipe that is the message's fd.
fn store(vault: &str, fds: Vec<OwnedFd>, ttl_secs: u64) -> Response {
    let Some(fd) = fds.into_iter().next() else {
        return Response::err("store needs the key's pipe");
    };
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    if std::io::Read::read_exact(&mut File::from(fd), &mut k[..]).is_err() {
        return Response::err("bad key");
    }
    let k = Key32::from_bytes(*k);
    let s = match sealed(vault) {
        Ok(s) => s,
        Err(e) => return Response::err(e),
    };
    // The key must open this vault: a client cannot plant a wrong one.
    if s.open(&k).is_err() {
        return Response::err("that key does not open the vault");
    }
    match keychain::store(
        &s.header().id_hex(),
        &k,
        Duration::from_secs(ttl_secs.max(1)),
    ) {
        Ok(()) => Response::Ok,
        Err(why) => Response::err(format!("cannot cache the key: {why}")),
    }
}

/// Seconds left on the vault's cached key, if it has one here.
fn cached(vault: &str) -> Option<u64> {
    keychain::expires_in(&vault_id(vault).ok()?)
}

/// An unreadable vault is not unlocked here; the command run by the client
/// itself reports why.
fn unlocked(vault: &str) -> Response {
    let exp = cached(vault);
    Response::Unlocked {
        unlocked: exp.is_some(),
        expires_in_secs: exp,
    }
}

fn exec(a: &Agent, s: &UnixStream, reader: &mut Reader, e: Exec, fds: Vec<OwnedFd>) {
    // stdin, stdout, stderr, and optionally a pipe with this command's key.
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        let _ = wire::send(
            s,
            &Response::err("exec needs stdin, stdout and stderr"),
            &[],
        );
        return;
    };
    let key_fd = fds.next();
    if !(a.may_run)(&e.args) {
        let _ = wire::send(
            s,
            &Response::err("the agent runs only the commands that use the cached key"),
            &[],
        );
        return;
    }
    if a.execs.fetch_add(1, Ordering::SeqCst) >= MAX_EXECS {
        a.execs.fetch_sub(1, Ordering::SeqCst);
        let _ = wire::send(s, &Response::err(super::client::BUSY), &[]);
        return;
    }
    // A running command holds an exec slot, not a connection slot.
    a.conns.fetch_sub(1, Ordering::SeqCst);
    run_command(a, s, reader, e, [stdin, stdout, stderr], key_fd);
    a.conns.fetch_add(1, Ordering::SeqCst);
    a.execs.fetch_sub(1, Ordering::SeqCst);
}

fn run_command(
    a: &Agent,
    s: &UnixStream,
    reader: &mut Reader,
    e: Exec,
    [stdin, stdout, stderr]: [OwnedFd; 3],
    key_fd: Option<OwnedFd>,
) {
    let Exec {
        args,
        cwd,
        env,
        umask,
        ..
    } = e;
    // This process's own image, never the file now at its path (which
    // someone may have replaced since the agent started).
    let mut c = Command::new("/proc/self/exe");
    c.arg0("hushfs")
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .envs(
            env.iter()
                .filter(|(k, _)| !is_unsafe_env(k))
                .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
        )
        .env(KEYRING_ENV, a.keyring.to_string())
        // Where the command finds this agent: the agent's own places, not
        // ones the client chose (a Hello sent elsewhere would fail and
        // leave the command in the keyring, untrusted).
        .env_remove("XDG_RUNTIME_DIR")
        .envs(std::env::var_os("XDG_RUNTIME_DIR").map(|v| ("XDG_RUNTIME_DIR", v)))
        .envs(
            std::env::var_os("XDG_RUNTIME_DIR")
                .is_none()
                .then(|| std::env::var_os("TMPDIR").map(|v| ("TMPDIR", v)))
                .flatten(),
        )
        .current_dir(OsStr::from_bytes(&cwd))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let mask = umask & 0o777;
    let kfd = key_fd.as_ref().map(|f| f.as_raw_fd());
    if kfd.is_some() {
        c.env(KEY_FD_ENV, GIVEN_KEY_FD.to_string());
    }
    // SAFETY: runs in the forked child before exec; umask, dup2 and setsid
    // are async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            if let Some(f) = kfd {
                crate::sys::harden::inherit_as(f, GIVEN_KEY_FD)?;
            }
            libc::umask(mask);
            // Its own session: the agent's signals and ours stay apart.
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            let _ = wire::send(s, &Response::err(format!("cannot start hushfs: {e}")), &[]);
            return;
        }
    };
    drop(c);
    drop(key_fd);
    let pid = child.id();
    let _ = wire::send(s, &Response::Started { pid }, &[]);
    // Our unreaped child: the pidfd is exact.
    let pidfd = PidFd::open(pid).ok();
    let mut client = true;
    // Without a pidfd (none left to open), `wait` below is all there is.
    while let Some(pf) = pidfd.as_ref() {
        let mut p = [
            libc::pollfd {
                fd: pf.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if client { s.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds; poll only writes revents.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n < 0 || p[0].revents != 0 {
            break;
        }
        if p[1].revents == 0 {
            continue;
        }
        match reader.recv::<Request>(s, Some(Instant::now() + REQUEST_DEADLINE)) {
            Ok(Got::Msg(Request::Signal { signal }, _)) if forwardable(signal) => {
                let _ = pf.send_signal(signal);
            }
            Ok(Got::Msg(..)) => {}
            // The client is gone (killed, or its terminal closed): hang up
            // on the command as a terminal would.
            Ok(Got::Eof) | Err(_) => {
                client = false;
                let _ = pf.send_signal(libc::SIGHUP);
            }
        }
    }
    let code = match child.wait() {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            _ => 1,
        },
        Err(_) => 1,
    };
    if client {
        let _ = wire::send(s, &Response::Exit { code }, &[]);
    }
}

/// Signals a client may pass on to its command (and SIGKILL).
fn forwardable(sig: i32) -> bool {
    sig == libc::SIGKILL || super::protocol::SIGNALS.contains(&sig)
}
