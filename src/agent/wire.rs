//! Framing for the agent socket: JSON lines, each optionally carrying fds
//! (SCM_RIGHTS), read with a limit and a deadline so that no client can
//! hold a connection thread by sending slowly or too much.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{Envelope, MAX_LINE, VERSION};

fn io_err(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

/// Sends one message, with `fds` attached to its first byte.
pub fn send<T: Serialize>(s: &UnixStream, body: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Envelope { v: VERSION, body })
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    line.push(b'\n');
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let mut sent = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&line)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io_err)?;
    while sent < line.len() {
        sent += sendmsg::<()>(
            s.as_raw_fd(),
            &[IoSlice::new(&line[sent..])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io_err)?;
    }
    zeroize::Zeroize::zeroize(&mut line);
    Ok(())
}

/// What `recv` got: a message, or the end of the connection.
pub enum Got<T> {
    Msg(T, Vec<OwnedFd>),
    Eof,
}

/// The reading side of a connection: bytes after a message's newline stay
/// here for the next `recv`.
#[derive(Default)]
pub struct Reader {
    pending: zeroize::Zeroizing<Vec<u8>>,
}

#[derive(serde::Deserialize)]
struct VersionOnly {
    v: u32,
}

impl Reader {
    /// Reads one message. With `deadline`, the whole message must arrive
    /// by then.
    pub fn recv<T: DeserializeOwned>(
        &mut self,
        s: &UnixStream,
        deadline: Option<Instant>,
    ) -> std::io::Result<Got<T>> {
        let mut fds = Vec::new();
        let mut buf = zeroize::Zeroizing::new([0u8; 8192]);
        let end = loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                break i;
            }
            if self.pending.len() > MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "message too long",
                ));
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the message did not arrive in time",
                        ));
                    }
                    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                }
                None => s.set_read_timeout(None)?,
            }
            let mut cmsg = nix::cmsg_space!([RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf[..])];
            let msg = match recvmsg::<()>(
                s.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                // SO_RCVTIMEO ran out.
                Err(nix::Error::EAGAIN) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the message did not arrive in time",
                    ));
                }
                Err(e) => return Err(io_err(e)),
            };
            let n = msg.bytes;
            for c in msg.cmsgs().map_err(io_err)? {
                if let ControlMessageOwned::ScmRights(r) = c {
                    // SAFETY: SCM_RIGHTS delivered these fds to us; we are
                    // their only owner.
                    fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            if n == 0 {
                return Ok(Got::Eof);
            }
            self.pending.extend_from_slice(&buf[..n]);
        };
        let line = zeroize::Zeroizing::new(self.pending[..end].to_vec());
        self.pending.drain(..=end);
        let bad = |e: serde_json::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let v: VersionOnly = serde_json::from_slice(&line).map_err(bad)?;
        if v.v != VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "protocol version {} not supported (this hushfs speaks {VERSION})",
                    v.v
                ),
            ));
        }
        let env: Envelope<T> = serde_json::from_slice(&line).map_err(bad)?;
        Ok(Got::Msg(env.body, fds))
    }
}
