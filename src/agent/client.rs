//! The client side of the agent: find it (and check that it is the hushfs
//! binary), start it, hand it a key, and run a command through it.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::protocol::{Exec, Request, Response};
use super::wire::{self, Got, Reader};
use crate::error::{Error, Result};
use crate::secret::Key32;

/// How long a client waits for a simple answer.
const ANSWER: Duration = Duration::from_secs(5);

/// The peer runs as our uid. (Which program it is cannot be checked: the
/// agent is non-dumpable, so its /proc/PID/exe is closed to us as to any
/// process of the uid; docs/THREAT-MODEL.md says what follows.)
fn genuine(s: &UnixStream) -> bool {
    let Ok(p) = crate::daemon::control::peer(s) else {
        return false;
    };
    // SAFETY: geteuid has no preconditions.
    p.uid == unsafe { libc::geteuid() }
}

fn connect(path: &Path) -> Option<UnixStream> {
    let s = UnixStream::connect(path).ok()?;
    s.set_write_timeout(Some(ANSWER)).ok()?;
    genuine(&s).then_some(s)
}

/// What the agent answers when all its connection slots are taken.
pub const BUSY: &str = "the agent is busy: try again";

/// `vault` as the agent is told it: absolute, UTF-8.
fn vault_arg(vault: &Path) -> Option<String> {
    std::path::absolute(vault)
        .ok()?
        .to_str()
        .map(str::to_string)
}

/// Sends one request and reads the first answer; `None` when no agent
/// answers. With `stdio`, our stdin, stdout and stderr go along; with `key`,
/// a pipe holding it (a fresh one each try). A full agent answers "busy"
/// until a connection slot frees (at most its request deadline), so that
/// is waited out, not taken as an answer.
fn exchange(
    req: &Request,
    stdio: bool,
    key: Option<&Key32>,
) -> Result<Option<(UnixStream, Reader, Response)>> {
    let until = Instant::now() + ANSWER;
    loop {
        let Some(s) = connect(&super::socket_path()) else {
            return Ok(None);
        };
        let pipe = key.map(key_pipe).transpose()?;
        let mut fds = if stdio { vec![0, 1, 2] } else { vec![] };
        fds.extend(pipe.as_ref().map(|p| p.as_raw_fd()));
        // A full agent answers and closes before reading: the send may
        // fail, the answer is still there to read.
        let sent = wire::send(&s, req, &fds);
        drop(pipe);
        let mut reader = Reader::default();
        match reader.recv::<Response>(&s, Some(Instant::now() + ANSWER)) {
            Ok(Got::Msg(Response::Err { error }, _)) if error == BUSY && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Got::Msg(r, _)) if sent.is_ok() => return Ok(Some((s, reader, r))),
            _ => return Ok(None),
        }
    }
}

fn ask(req: &Request) -> Option<Response> {
    exchange(req, false, None).ok().flatten().map(|(_, _, r)| r)
}

/// The agent's pid and keyring, if an agent answers.
pub fn hello() -> Option<(u32, i32)> {
    match ask(&Request::Hello)? {
        Response::Hello { pid, keyring } => Some((pid, keyring)),
        _ => None,
    }
}

/// For a process the agent started (`HUSHFS_AGENT_KEYRING` set): checks
/// that its session keyring is the running agent's, and if so lets the
/// keychain use it. Anything else (a stale or forged variable, no agent)
/// leaves the process without a cache.
pub fn adopt_session() {
    let Some(claimed) = std::env::var_os(super::server::KEYRING_ENV) else {
        return;
    };
    let claimed: Option<i32> = claimed.to_str().and_then(|s| s.parse().ok());
    let mine = crate::sys::keyring::session_serial();
    if claimed.is_none() || claimed != mine {
        // A forged or stale variable: not the agent's keyring.
        close_given_key();
        return;
    }
    match hello() {
        Some((_, keyring)) if Some(keyring) == mine => {
            crate::sys::keyring::set_trusted(keyring);
            take_given_key();
        }
        // We hold the agent's keyring but cannot confirm it (the agent is
        // gone or busy): leave it at once, so that nothing this process
        // starts possesses it, and run as outside the agent.
        _ => {
            close_given_key();
            if crate::sys::keyring::join_new_session().is_err() {
                eprintln!("hushfs: cannot leave the agent's keyring; stopping");
                std::process::exit(crate::error::exit::USAGE);
            }
        }
    }
}

/// Drops a handed-over key unread (this process is not trusted with it).
fn close_given_key() {
    if let Some(fd) = given_key_fd() {
        // SAFETY: the fd is open (checked) and was put there for this
        // process to consume; closing it is all we do with it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
}

/// The fd named by `HUSHFS_GIVEN_KEY_FD`, if open; the variable is removed
/// so that nothing this command starts looks for it (a daemon has its own
/// fd 3).
fn given_key_fd() -> Option<i32> {
    let var = std::env::var_os(super::server::KEY_FD_ENV)?;
    // SAFETY: called from `cli::run` at start, before any thread exists.
    unsafe { std::env::remove_var(super::server::KEY_FD_ENV) };
    let fd = var.to_str()?.parse::<i32>().ok()?;
    // SAFETY: F_GETFD only checks that the fd is open.
    (unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).then_some(fd)
}

/// The key a client handed over for this one command (fd named by
/// `HUSHFS_GIVEN_KEY_FD`): read now and the fd closed, so nothing this
/// command starts inherits it.
fn take_given_key() {
    let Some(fd) = given_key_fd() else {
        return;
    };
    // SAFETY: the agent put this pipe at `fd` for us to consume; we are its
    // only owner and close it after reading.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    if std::io::Read::read_exact(&mut f, &mut k[..]).is_ok() {
        crate::vault::unlock::set_given_key(Key32::from_bytes(*k));
    }
}

/// Starts the agent unless one answers; returns once it listens.
pub fn ensure_running() -> Result<()> {
    if hello().is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot find the hushfs binary: {e}")))?;
    let logs = crate::sys::paths::state_dir().join("logs");
    crate::sys::paths::ensure_private_dir(&logs)?;
    let log_path = logs.join("agent.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| Error::io("cannot open log", &log_path, e))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Other(format!("cannot start the agent: pipe: {e}")))?;
    let mut c = Command::new(exe);
    c.arg("__agent")
        // The agent's environment: only what says where things are. A
        // loader variable here would run code inside the key holder.
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| keep_for_agent(k)))
        .env("PATH", super::SAFE_PATH)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::io("cannot open log", &log_path, e))?,
        )
        .stderr(log)
        .current_dir("/");
    let rw = ready_w.as_raw_fd();
    // SAFETY: runs in the forked child before exec; dup2 and setsid are
    // async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            crate::sys::harden::inherit_as(rw, crate::daemon::spawn::READY_FD)?;
            libc::setsid();
            Ok(())
        });
    }
    let mut child = c
        .spawn()
        .map_err(|e| Error::Other(format!("cannot start the agent: {e}")))?;
    drop(c);
    drop(ready_w);
    let mut ready = std::fs::File::from(ready_r);
    let msg = crate::daemon::spawn::read_ready(&mut ready, Duration::from_secs(10));
    // The agent is in its own session; reap the launcher's child entry
    // only when it has exited (a failed start).
    match msg.as_deref() {
        Some("ok") => {
            std::thread::spawn(move || child.wait());
            Ok(())
        }
        Some(m) => {
            let _ = child.wait();
            Err(Error::Other(format!(
                "cannot start the agent: {}",
                m.strip_prefix("error: ").unwrap_or(m)
            )))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Other(format!(
                "the agent did not start; see {}",
                log_path.display()
            )))
        }
    }
}

fn keep_for_agent(k: &std::ffi::OsStr) -> bool {
    let k = k.as_bytes();
    k.starts_with(b"XDG_")
        || k.starts_with(b"HUSHFS_")
            && k != super::server::KEYRING_ENV.as_bytes()
            && k != b"HUSHFS_PASSPHRASE_FILE"
        || [&b"HOME"[..], b"USER", b"LOGNAME", b"TMPDIR", b"RUST_LOG"].contains(&k)
}

/// Makes the running agent (if any) forget the vault's key. Returns whether
/// an agent confirmed.
pub fn forget(vault: &Path) -> bool {
    let Some(vault) = vault_arg(vault) else {
        return false;
    };
    matches!(ask(&Request::Forget { vault }), Some(Response::Ok))
}

/// Hands the vault's key to the agent for `ttl` (in a pipe, never in the
/// message).
pub fn store(vault: &Path, key: &Key32, ttl: Duration) -> Result<()> {
    let vault =
        vault_arg(vault).ok_or_else(|| Error::usage("the vault's path is not valid UTF-8"))?;
    let req = Request::Store {
        vault,
        ttl_secs: ttl.as_secs().max(1),
    };
    match exchange(&req, false, Some(key))?.map(|(_, _, r)| r) {
        Some(Response::Ok) => Ok(()),
        Some(Response::Err { error }) => Err(Error::Other(format!(
            "the agent refused the unlock: {error}"
        ))),
        _ => Err(Error::Other(
            "the agent did not answer: see $XDG_STATE_HOME/hushfs/logs/agent.log".into(),
        )),
    }
}

/// Runs `hushfs ARGS` in the agent with our stdin, stdout and stderr, and
/// returns its exit code. Signals sent to us go on to it. `key`, if given,
/// is handed to that command alone (through a pipe), not cached. With
/// `if_unlocked`, only when the agent runs and holds that vault's key:
/// `Ok(None)` otherwise (the caller then runs the command itself).
pub fn forward(
    args: &[OsString],
    key: Option<&Key32>,
    if_unlocked: Option<&Path>,
) -> Result<Option<i32>> {
    let if_unlocked = match if_unlocked {
        Some(v) => match vault_arg(v) {
            Some(v) => Some(v),
            None => return Ok(None),
        },
        None => None,
    };
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Other(format!("cannot read the current directory: {e}")))?;
    // SAFETY: umask only swaps the process mask; set it straight back.
    let umask = unsafe {
        let m = libc::umask(0o077);
        libc::umask(m);
        m
    };
    let only_if_unlocked = if_unlocked.is_some();
    let req = Request::Exec(Exec {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: cwd.as_os_str().as_bytes().to_vec(),
        env: std::env::vars_os()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        umask,
        if_unlocked,
    });
    let mut signals = signal_hook::iterator::Signals::new(super::protocol::SIGNALS)
        .map_err(|e| Error::Other(format!("cannot handle signals: {e}")))?;
    let (s, mut reader) = match exchange(&req, true, key)? {
        Some((s, reader, Response::Started { .. })) => (s, reader),
        Some((_, _, Response::Unlocked { .. })) | None if only_if_unlocked => return Ok(None),
        Some((_, _, Response::Err { error })) => {
            return Err(Error::Other(format!("the agent cannot run it: {error}")));
        }
        _ => {
            return Err(Error::Other(
                "the agent did not start the command: run it again".into(),
            ));
        }
    };
    drop(req);
    let handle = signals.handle();
    let out = s
        .try_clone()
        .map_err(|e| Error::Other(format!("cannot reach the agent: {e}")))?;
    let relay = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if wire::send(&out, &Request::Signal { signal: sig }, &[]).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::Other(format!("cannot handle signals: {e}")))?;
    let r = reader.recv::<Response>(&s, None);
    handle.close();
    let _ = relay.join();
    match r {
        Ok(Got::Msg(Response::Exit { code }, _)) => Ok(Some(code)),
        _ => Err(Error::Other(
            "lost the agent while the command ran: its outcome is unknown".into(),
        )),
    }
}

/// A pipe's read end holding the key (32 bytes fit in any pipe buffer).
fn key_pipe(k: &Key32) -> Result<std::os::fd::OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Other(format!("cannot hand over the key: pipe: {e}")))?;
    std::io::Write::write_all(&mut std::fs::File::from(w), k.expose())
        .map_err(|e| Error::Other(format!("cannot hand over the key: {e}")))?;
    Ok(r)
}
