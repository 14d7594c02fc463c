//! The daemon's control socket: SO_PEERCRED-checked, one request per
//! connection, with an optional fd passed by SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, sockopt};

use super::protocol::{Envelope, Request, Response, VERSION};
use crate::error::{Error, Result};

const MAX_LINE: usize = 64 * 1024;

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
fn send_line(s: &UnixStream, line: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
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
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    if n < line.len() {
        (&*s).write_all(&line[n..])?;
    }
    Ok(())
}

/// Reads one line (up to MAX_LINE) and any fds that came with it.
fn recv_line(s: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: SCM_RIGHTS delivered these fds to us; we are their
                // only owner.
                fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
        if line.contains(&b'\n') || line.len() > MAX_LINE {
            break;
        }
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request too long",
        ));
    }
    if let Some(i) = line.iter().position(|&b| b == b'\n') {
        line.truncate(i);
    }
    Ok((line, fds))
}

/// Client side: sends a request (with an optional fd) and reads the response.
pub fn call(socket: &Path, req: &Request, fd: Option<RawFd>) -> Result<Response> {
    let s = UnixStream::connect(socket).map_err(|e| {
        Error::Other(format!(
            "cannot reach the mount's daemon at {}: {e}",
            socket.display()
        ))
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        body: req.clone(),
    })
    .expect("request serialises");
    line.push(b'\n');
    send_line(&s, &line, fd)
        .map_err(|e| Error::Other(format!("cannot talk to the daemon: {e}")))?;
    let (resp, _) =
        recv_line(&s).map_err(|e| Error::Other(format!("no answer from the daemon: {e}")))?;
    let env: Envelope<Response> = serde_json::from_slice(&resp)
        .map_err(|e| Error::Other(format!("bad answer from the daemon: {e}")))?;
    Ok(env.body)
}

/// Server side: accepts connections and answers each with `handle`, which
/// gets the verified peer, the request and any fds. Peers other than the
/// daemon's uid and root are refused before their request is read.
pub fn serve(listener: UnixListener, handle: impl Fn(Peer, Request, Vec<OwnedFd>) -> Response) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.set_write_timeout(Some(Duration::from_secs(5))).ok();
        let resp = match peer(&s) {
            Ok(p) if p.uid == me || p.uid == 0 => match recv_line(&s) {
                Ok((line, fds)) => match serde_json::from_slice::<Envelope<Request>>(&line) {
                    Ok(env) if env.v == VERSION => handle(p, env.body, fds),
                    Ok(env) => Response::err(format!(
                        "protocol version {} not supported (this daemon speaks {VERSION})",
                        env.v
                    )),
                    Err(e) => Response::err(format!("bad request: {e}")),
                },
                Err(e) => Response::err(format!("bad request: {e}")),
            },
            Ok(p) => {
                log::warn!("control: refused uid {} (pid {})", p.uid, p.pid);
                Response::err("permission denied: not the mount owner")
            }
            Err(e) => Response::err(format!("cannot identify peer: {e}")),
        };
        let mut out = serde_json::to_vec(&Envelope {
            v: VERSION,
            body: resp,
        })
        .expect("response serialises");
        out.push(b'\n');
        let _ = send_line(&s, &out, None);
    }
}
