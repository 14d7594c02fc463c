//! The command's output through the redactor. When `run`'s stdout is a
//! terminal the command writes to a pty (so it still sees a terminal:
//! colours, line buffering, curses programs); otherwise to pipes. One
//! thread per source reads, redacts and writes each chunk at once.
//!
//! With stdin a terminal too, the command gets the pty as its controlling
//! terminal and stdin (its own session, the user's terminal settings):
//! programs that read keys from their terminal (less, vim, REPLs, password
//! prompts) work, and ^C reaches them through the pty. `run` then puts the
//! real terminal in raw mode, forwards keystrokes, and restores the mode
//! when the command is done. Without a terminal on stdin there is nothing
//! to forward: the pty only carries output, in raw (transparent) mode, and
//! the real terminal stays as it is. The pty's size follows the real
//! terminal's (`sync_size` on SIGWINCH).

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::scan::{Matcher, Redactor};

/// After the command exits, keep copying while output still arrives (from
/// processes it left behind) for at most this long...
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// ...and stop as soon as nothing arrived for this long.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Where the command's stdout and stderr go, before it is spawned.
pub struct Plan {
    matcher: Arc<Matcher>,
    /// (read end or pty master, our fd it is copied to)
    sources: Vec<(OwnedFd, RawFd)>,
    child_stdout: OwnedFd,
    child_stderr: Option<OwnedFd>,
    /// Interactive: the pty is also the command's stdin and controlling
    /// terminal.
    child_stdin: Option<OwnedFd>,
    pty: Option<Arc<OwnedFd>>,
}

fn cloexec(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(|e| Error::Other(format!("fcntl: {e}")))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Other(format!("cannot create a pipe: {e}")))
}

/// The terminal size of `fd`, if it is a terminal.
fn winsize(fd: RawFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Copies the size of run's terminal to the pty (after SIGWINCH).
pub fn sync_size(master: &OwnedFd) {
    if let Some(ws) = winsize(libc::STDOUT_FILENO) {
        // SAFETY: TIOCSWINSZ reads one winsize from the struct we own; the
        // fd is a pty master we hold open.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

impl Plan {
    /// Pipes, or a pty when stdout is a terminal.
    pub fn new(matcher: Arc<Matcher>) -> Result<Plan> {
        let mut sources = Vec::new();
        let stderr_tty = std::io::stderr().is_terminal();
        if std::io::stdout().is_terminal() {
            let ws = winsize(libc::STDOUT_FILENO).map(|w| nix::pty::Winsize {
                ws_row: w.ws_row,
                ws_col: w.ws_col,
                ws_xpixel: w.ws_xpixel,
                ws_ypixel: w.ws_ypixel,
            });
            let pty = nix::pty::openpty(ws.as_ref(), None)
                .map_err(|e| Error::Other(format!("cannot open a pty: {e}")))?;
            cloexec(&pty.master)?;
            cloexec(&pty.slave)?;
            let interactive = std::io::stdin().is_terminal();
            let t = if interactive {
                // The user's settings (echo, line editing, ^C): the pty's
                // line discipline does their work now.
                nix::sys::termios::tcgetattr(std::io::stdin())
            } else {
                // Transparent: no echo, no line editing, no output
                // processing (the real terminal does that).
                nix::sys::termios::tcgetattr(&pty.slave).map(|mut t| {
                    nix::sys::termios::cfmakeraw(&mut t);
                    t
                })
            }
            .map_err(|e| Error::Other(format!("tcgetattr: {e}")))?;
            nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .map_err(|e| Error::Other(format!("tcsetattr: {e}")))?;
            let child_stdin = if interactive {
                Some(
                    pty.slave
                        .try_clone()
                        .map_err(|e| Error::Other(format!("dup: {e}")))?,
                )
            } else {
                None
            };
            let master = Arc::new(pty.master);
            let read_master = master
                .try_clone()
                .map_err(|e| Error::Other(format!("dup: {e}")))?;
            sources.push((read_master, libc::STDOUT_FILENO));
            let child_stderr = if stderr_tty {
                // Same terminal: one stream, order kept.
                Some(
                    pty.slave
                        .try_clone()
                        .map_err(|e| Error::Other(format!("dup: {e}")))?,
                )
            } else {
                let (r, w) = pipe()?;
                sources.push((r, libc::STDERR_FILENO));
                Some(w)
            };
            return Ok(Plan {
                matcher,
                sources,
                child_stdout: pty.slave,
                child_stderr,
                child_stdin,
                pty: Some(master),
            });
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        sources.push((out_r, libc::STDOUT_FILENO));
        sources.push((err_r, libc::STDERR_FILENO));
        Ok(Plan {
            matcher,
            sources,
            child_stdout: out_w,
            child_stderr: Some(err_w),
            child_stdin: None,
            pty: None,
        })
    }

    /// The pty master, for resizing.
    pub fn pty(&self) -> Option<Arc<OwnedFd>> {
        self.pty.clone()
    }

    /// Points the command's stdout and stderr at the pty or pipes. Our
    /// copies of those ends go with the `Command`: drop it after spawning,
    /// or the readers never see the end of the output.
    pub fn attach(&mut self, c: &mut Command) -> Result<()> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::Other(format!("dup: {e}")))
        };
        c.stdout(Stdio::from(dup(&self.child_stdout)?));
        if let Some(e) = &self.child_stderr {
            c.stderr(Stdio::from(dup(e)?));
        }
        if let Some(i) = &self.child_stdin {
            c.stdin(Stdio::from(dup(i)?));
            // SAFETY: runs in the child between fork and exec, after stdin
            // became the pty slave; setsid and ioctl are async-signal-safe
            // and touch only the child.
            unsafe {
                c.pre_exec(|| {
                    // A session of its own, with the pty as controlling
                    // terminal: ^C and the pty's size reach the command.
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Ok(())
    }

    /// Starts copying. Call after the command was spawned.
    pub fn start(self) -> Running {
        // Our own copies of the child's ends must close, or EOF never comes.
        drop(self.child_stdout);
        drop(self.child_stderr);
        let interactive = self.child_stdin.is_some();
        drop(self.child_stdin);
        let raw = match (&self.pty, interactive) {
            (Some(master), true) => RawTerminal::enter().inspect(|_| {
                if let Ok(m) = master.try_clone() {
                    // Blocks in read(0) until a key comes; it is not
                    // joined (run exits when the command is done).
                    let _ = std::thread::Builder::new()
                        .name("keys".into())
                        .spawn(move || forward_keys(m));
                }
            }),
            _ => None,
        };
        let exited = Arc::new(AtomicBool::new(false));
        let threads = self
            .sources
            .into_iter()
            .map(|(src, dst)| {
                let r = Redactor::new(self.matcher.clone());
                let exited = exited.clone();
                std::thread::Builder::new()
                    .name("redact".into())
                    .spawn(move || copy(src, dst, r, &exited))
                    .expect("spawn a thread")
            })
            .collect();
        Running {
            threads,
            exited,
            _pty: self.pty,
            raw,
        }
    }
}

/// The real terminal in raw mode while keys are forwarded to the pty;
/// restored when dropped.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let saved = tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// Copies keystrokes from run's terminal to the pty.
fn forward_keys(master: OwnedFd) {
    let mut buf = Zeroizing::new([0u8; 4096]);
    // SAFETY: fd 0 is run's stdin, a terminal, open for the whole process.
    let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
    loop {
        match nix::unistd::read(stdin, &mut buf[..]) {
            Ok(0) => return,
            Ok(n) => {
                if !write_all(master.as_fd(), &buf[..n]) {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return,
        }
    }
}

pub struct Running {
    threads: Vec<JoinHandle<()>>,
    exited: Arc<AtomicBool>,
    _pty: Option<Arc<OwnedFd>>,
    raw: Option<RawTerminal>,
}

impl Running {
    /// The command has exited: copy what is left, restore the terminal,
    /// then return.
    pub fn finish(self) {
        self.exited.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        drop(self.raw);
    }
}

/// Writes everything, retrying on EINTR; false when `dst` is gone.
fn write_all(dst: BorrowedFd, mut b: &[u8]) -> bool {
    while !b.is_empty() {
        match nix::unistd::write(dst, b) {
            Ok(0) => return false,
            Ok(n) => b = &b[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return false,
        }
    }
    true
}

fn copy(src: OwnedFd, dst: RawFd, mut r: Redactor, exited: &AtomicBool) {
    // SAFETY: dst is run's stdout or stderr, open for the whole process;
    // a closed one makes write fail with EBADF, which ends the copy.
    let dst = unsafe { BorrowedFd::borrow_raw(dst) };
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut exit_seen: Option<Instant> = None;
    loop {
        let mut pfd = [libc::pollfd {
            fd: src.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let wait = if exit_seen.is_some() {
            DRAIN_IDLE
        } else {
            Duration::from_millis(200)
        };
        // SAFETY: one valid pollfd that we own; poll writes only revents.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, wait.as_millis() as i32) };
        if exit_seen.is_none() && exited.load(Ordering::Acquire) {
            exit_seen = Some(Instant::now());
        }
        if n == 0 {
            if exit_seen.is_some() {
                break; // the command is gone and nothing more came
            }
            continue;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        match nix::unistd::read(src.as_fd(), &mut buf[..]) {
            // EOF; a pty master answers EIO once every slave fd is closed.
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => {
                if !write_all(dst, r.push(&buf[..n])) {
                    // Our reader went away (`| head`): close the source
                    // so the command gets EPIPE, as it would without us.
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => break,
        }
        if exit_seen.is_some_and(|t| t.elapsed() > DRAIN_MAX) {
            break;
        }
    }
    write_all(dst, r.finish());
}
