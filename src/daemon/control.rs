//! The daemon's control socket: SO_PEERCRED-checked, one request per
//! connection, with an optional fd passed by SCM_RIGHTS.
//!
//! No client can hold up another: one thread polls the listener and every
//! connection still sending its request, each of which must arrive whole
//! within `REQUEST_DEADLINE`; a complete request is answered on a thread of
//! its own, whose write gives up after `ANSWER_DEADLINE`. At most
//! `MAX_CONNECTIONS` are open at once; the next one is told so in one line
//! and closed.

use std::io::{ErrorKind, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    recvmsg, sendmsg, sockopt,
};

use super::protocol::{Envelope, Request, Response, VERSION};
use crate::error::{Error, Result};

const MAX_LINE: usize = 64 * 1024;

/// Connections open at once (being read, or being answered). Idle ones
/// cost the daemon a descriptor each, not a thread.
pub const MAX_CONNECTIONS: usize = 256;
/// A whole request must arrive within this long of the connection.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Writing the answer gives up after this long (a client that never reads).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(2);

/// How long a client waits for the daemon's answer. A reload may fetch
/// from a remote source; everything else is answered at once, so a stuck
/// daemon is reported in seconds, not after half a minute.
pub fn client_timeout(req: &Request) -> Duration {
    match req {
        Request::Reload => Duration::from_secs(30),
        _ => Duration::from_secs(5),
    }
}

/// Who is on the other end of a control connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

pub fn peer(s: &UnixStream) -> std::io::Result<Peer> {
    let c =
        nix::sys::socket::getsockopt(s, sockopt::PeerCredentials).map_err(std::io::Error::from)?;
    Ok(Peer {
        pid: c.pid() as u32,
        uid: c.uid(),
    })
}

/// Sends one line, with `fd` attached to its first byte.
fn send_line(
    s: &UnixStream,
    line: &[u8],
    fd: Option<RawFd>,
    flags: MsgFlags,
) -> std::io::Result<()> {
    let fds;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => vec![],
    };
    let n = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(line)],
        &cmsgs,
        flags | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    if n < line.len() {
        (&*s).write_all(&line[n..])?;
    }
    Ok(())
}

/// One `recvmsg`: appends what came to `line` and keeps the first fd
/// passed (the protocol carries at most one; others are closed at once).
/// Returns the byte count, 0 at end of stream.
fn recv_some(
    s: &UnixStream,
    line: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    flags: MsgFlags,
) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(r) = c {
            for f in r {
                // SAFETY: SCM_RIGHTS delivered this fd to us; we are its
                // only owner.
                let f = unsafe { OwnedFd::from_raw_fd(f) };
                if fds.is_empty() {
                    fds.push(f);
                }
            }
        }
    }
    let n = msg.bytes;
    line.extend_from_slice(&buf[..n]);
    Ok(n)
}

/// Cuts `line` at its newline; whether it had one.
fn complete(line: &mut Vec<u8>) -> bool {
    match memchr::memchr(b'\n', line) {
        Some(i) => {
            line.truncate(i);
            true
        }
        None => false,
    }
}

fn too_long() -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidData,
        format!("request longer than {} KiB", MAX_LINE / 1024),
    )
}

/// Connects without waiting on a daemon that accepts nothing: a full
/// backlog (a stopped daemon) is retried until `deadline`, then reported.
fn connect(socket: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    let addr = UnixAddr::new(socket).map_err(std::io::Error::from)?;
    loop {
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(std::io::Error::from)?;
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "it accepts no connections (stopped or overloaded)",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether something listens on `socket`: a refused or missing socket is a
/// dead daemon; a full backlog is a live one that is busy or stopped.
pub fn listening(socket: &Path) -> bool {
    match connect(socket, Instant::now()) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::TimedOut,
    }
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"))
    } else {
        Ok(left)
    }
}

/// Client side: sends a request (with an optional fd) and reads the
/// response, all within `client_timeout(req)`.
pub fn call(socket: &Path, req: &Request, fd: Option<RawFd>) -> Result<Response> {
    let limit = client_timeout(req);
    let deadline = Instant::now() + limit;
    let s = connect(socket, deadline).map_err(|e| {
        Error::Other(format!(
            "cannot reach the mount's daemon at {}: {e}",
            socket.display()
        ))
    })?;
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: req.clone(),
    })
    .expect("request serialises");
    line.push(b'\n');
    remaining(deadline)
        .and_then(|t| s.set_write_timeout(Some(t)))
        .and_then(|()| send_line(&s, &line, fd, MsgFlags::empty()))
        .map_err(|e| Error::Other(format!("cannot talk to the daemon: {e}")))?;
    let mut resp = Vec::new();
    let mut fds = Vec::new();
    let read = (|| loop {
        s.set_read_timeout(Some(remaining(deadline)?))?;
        let n = recv_some(&s, &mut resp, &mut fds, MsgFlags::empty()).map_err(|e| {
            if e.kind() == ErrorKind::WouldBlock {
                std::io::Error::new(ErrorKind::TimedOut, "timed out")
            } else {
                e
            }
        })?;
        if n == 0 || complete(&mut resp) {
            return Ok(());
        }
        if resp.len() > MAX_LINE {
            return Err(too_long());
        }
    })();
    read.map_err(|e: std::io::Error| {
        Error::Other(format!(
            "no answer from the daemon at {} within {} s: {e}",
            socket.display(),
            limit.as_secs()
        ))
    })?;
    let env: Envelope<Response> = serde_json::from_slice(&resp)
        .map_err(|e| Error::Other(format!("bad answer from the daemon: {e}")))?;
    Ok(env.body)
}

fn encode(resp: Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: resp,
    })
    .expect("response serialises");
    out.push(b'\n');
    out
}

/// Answers from the polling thread without ever blocking it: nothing was
/// written on this connection yet, so a short line fits in the socket's
/// buffer; if it does not, the client loses it.
fn refuse(s: &UnixStream, msg: impl Into<String>) {
    let _ = send_line(s, &encode(Response::err(msg)), None, MsgFlags::MSG_DONTWAIT);
}

/// A connection still sending its request.
struct Pending {
    s: UnixStream,
    peer: Peer,
    line: Vec<u8>,
    fds: Vec<OwnedFd>,
    deadline: Instant,
}

enum Progress {
    More,
    Complete,
    Gone,
    Bad(String),
}

impl Pending {
    /// Reads what is there without blocking.
    fn read(&mut self) -> Progress {
        loop {
            match recv_some(
                &self.s,
                &mut self.line,
                &mut self.fds,
                MsgFlags::MSG_DONTWAIT,
            ) {
                // A client that closes its end after the request.
                Ok(0) if self.line.is_empty() => return Progress::Gone,
                Ok(0) => return Progress::Complete,
                Ok(_) if complete(&mut self.line) => return Progress::Complete,
                Ok(_) if self.line.len() > MAX_LINE => {
                    return Progress::Bad(format!("bad request: {}", too_long()));
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::More,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Progress::Gone,
            }
        }
    }
}

/// Counts a connection being answered until it is dropped.
struct Answering<'a>(&'a AtomicUsize);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Server side: accepts connections and answers each with `handle`, which
/// gets the verified peer, the request and any fds. Peers other than the
/// daemon's uid and root are refused before their request is read.
pub fn serve(
    listener: UnixListener,
    handle: impl Fn(Peer, Request, Vec<OwnedFd>) -> Response + Sync,
) {
    // Answering threads borrow the handler; the scope never ends, as the
    // daemon exits from its main thread.
    let answering = AtomicUsize::new(0);
    std::thread::scope(|sc| accept_loop(sc, &listener, &handle, &answering));
}

fn accept_loop<'s, H>(
    sc: &'s std::thread::Scope<'s, '_>,
    listener: &UnixListener,
    handle: &'s H,
    answering: &'s AtomicUsize,
) where
    H: Fn(Peer, Request, Vec<OwnedFd>) -> Response + Sync,
{
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("control socket: {e}");
        return;
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut full = false;
    loop {
        let now = Instant::now();
        pending.retain(|p| {
            if p.deadline > now {
                return true;
            }
            refuse(
                &p.s,
                format!(
                    "bad request: not complete within {} s: send one JSON line at once",
                    REQUEST_DEADLINE.as_secs()
                ),
            );
            false
        });
        let mut pfds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(pending.iter().map(|p| p.s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = pending
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now).as_millis() as i32 + 1)
            .min()
            .unwrap_or(-1);
        // SAFETY: pfds is a valid, exclusively borrowed array of pollfd of
        // the given length; poll only writes revents.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            continue;
        }
        // Backwards, so that swap_remove only moves entries already seen.
        for i in (0..pending.len()).rev() {
            if pfds[i + 1].revents == 0 {
                continue;
            }
            match pending[i].read() {
                Progress::More => {}
                Progress::Gone => {
                    pending.swap_remove(i);
                }
                Progress::Bad(why) => refuse(&pending.swap_remove(i).s, why),
                Progress::Complete => dispatch(sc, pending.swap_remove(i), handle, answering),
            }
        }
        if pfds[0].revents == 0 {
            continue;
        }
        loop {
            let s = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors: the listener stays readable, so
                    // pause rather than spin.
                    log::warn!("control socket: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            };
            let p = match peer(&s) {
                Ok(p) => p,
                Err(e) => {
                    refuse(&s, format!("cannot identify peer: {e}"));
                    continue;
                }
            };
            if p.uid != me && p.uid != 0 {
                log::warn!("control: refused uid {} (pid {})", p.uid, p.pid);
                refuse(&s, "permission denied: not the mount owner");
                continue;
            }
            if pending.len() + answering.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                if !full {
                    log::warn!(
                        "control: {MAX_CONNECTIONS} connections open; refusing more (pid {})",
                        p.pid
                    );
                }
                full = true;
                refuse(
                    &s,
                    format!(
                        "busy: the daemon has {MAX_CONNECTIONS} control connections open; try again (a process of yours is flooding its socket)"
                    ),
                );
                continue;
            }
            full = false;
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            pending.push(Pending {
                s,
                peer: p,
                line: Vec::new(),
                fds: Vec::new(),
                deadline: Instant::now() + REQUEST_DEADLINE,
            });
        }
    }
}

/// Parses a complete request and answers it on a thread of its own, so a
/// slow handler (a reload fetching from a server) or a client that does
/// not read its answer holds up nobody else.
fn dispatch<'s, H>(
    sc: &'s std::thread::Scope<'s, '_>,
    p: Pending,
    handle: &'s H,
    answering: &'s AtomicUsize,
) where
    H: Fn(Peer, Request, Vec<OwnedFd>) -> Response + Sync,
{
    let body = match serde_json::from_slice::<Envelope<Request>>(&p.line) {
        Ok(env) if env.v == VERSION => env.body,
        Ok(env) => {
            return refuse(
                &p.s,
                format!(
                    "protocol version {} not supported (this daemon speaks {VERSION}): use the hushfs that started the mount",
                    env.v
                ),
            );
        }
        Err(e) => return refuse(&p.s, format!("bad request: {e}")),
    };
    answering.fetch_add(1, Ordering::AcqRel);
    let guard = Answering(answering);
    let spawned = std::thread::Builder::new()
        .name("control-req".into())
        .spawn_scoped(sc, move || {
            let _guard = guard;
            let resp = handle(p.peer, body, p.fds);
            let out = encode(resp);
            let sent =
                p.s.set_nonblocking(false)
                    .and_then(|()| p.s.set_write_timeout(Some(ANSWER_DEADLINE)))
                    .and_then(|()| send_line(&p.s, &out, None, MsgFlags::empty()));
            if let Err(e) = sent {
                log::debug!("control: answer to pid {} not delivered: {e}", p.peer.pid);
            }
        });
    // The closure (and with it the connection) is dropped: the client reads
    // end of stream and reports no answer.
    if let Err(e) = spawned {
        log::warn!("control: cannot start a thread for a request: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose handler takes 3 s over a reload and answers
    /// everything else at once, on a socket in a fresh directory.
    fn server() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            serve(l, |_, req, _| {
                if req == Request::Reload {
                    std::thread::sleep(Duration::from_secs(3));
                }
                Response::ok()
            })
        });
        (dir, sock)
    }

    #[test]
    fn a_slow_answer_delays_no_other() {
        let (_d, sock) = server();
        let slow = {
            let sock = sock.clone();
            std::thread::spawn(move || call(&sock, &Request::Reload, None).unwrap().ok)
        };
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert!(call(&sock, &Request::Lock, None).unwrap().ok);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(slow.join().unwrap());
    }

    #[test]
    fn a_silent_connection_is_answered_at_the_deadline() {
        let (_d, sock) = server();
        let s = UnixStream::connect(&sock).unwrap();
        let t = Instant::now();
        let mut line = Vec::new();
        let mut fds = Vec::new();
        while !complete(&mut line) {
            if recv_some(&s, &mut line, &mut fds, MsgFlags::empty()).unwrap() == 0 {
                break;
            }
        }
        let took = t.elapsed();
        assert!(
            took >= REQUEST_DEADLINE - Duration::from_millis(100) && took < REQUEST_DEADLINE * 3,
            "{took:?}"
        );
        let r: Envelope<Response> = serde_json::from_slice(&line).unwrap();
        assert!(!r.body.ok);
        assert!(r.body.error.unwrap().contains("not complete within 2 s"));
    }

    #[test]
    fn a_dead_socket_is_not_listening() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        assert!(!listening(&sock));
        drop(UnixListener::bind(&sock).unwrap());
        assert!(!listening(&sock), "a socket file nobody listens on");
        let (_d, live) = server();
        assert!(listening(&live));
    }
}
