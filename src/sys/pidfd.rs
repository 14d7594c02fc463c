//! pidfds: stable handles on processes and threads. A pidfd keeps referring
//! to the same process after it exits (it becomes readable), so a pid that
//! the kernel hands out again can never be mistaken for the original.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct PidFd(OwnedFd);

fn pidfd_open(pid: u32, flags: libc::c_uint) -> io::Result<PidFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags | libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// What PIDFD_GET_INFO reports about a live task.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: Option<u64>,
}

impl PidFd {
    /// A pidfd for the process (thread-group leader) `pid`.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        pidfd_open(pid, 0)
    }

    /// A pidfd for the thread `tid` (any thread, not only leaders; Linux
    /// 6.9+). It becomes readable when that thread exits.
    pub fn open_thread(tid: u32) -> io::Result<PidFd> {
        pidfd_open(tid, libc::PIDFD_THREAD)
    }

    pub fn from_owned(fd: OwnedFd) -> PidFd {
        PidFd(fd)
    }

    /// False once the process (or thread) has exited.
    pub fn is_alive(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout: poll only writes revents.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // A pidfd is readable exactly when its task has exited. On an error
        // we cannot vouch for the process: report it dead (deny).
        n == 0
    }

    /// pid, tgid, ppid and cgroup through PIDFD_GET_INFO (Linux 6.13+),
    /// without parsing /proc. `None` when the task is gone or the kernel is
    /// older.
    pub fn info(&self) -> Option<Info> {
        // SAFETY: pidfd_info is plain old data; all-zero is a valid value.
        let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
        info.mask =
            u64::from(libc::PIDFD_INFO_PID | libc::PIDFD_INFO_CREDS | libc::PIDFD_INFO_CGROUPID);
        // SAFETY: PIDFD_GET_INFO reads and writes one pidfd_info struct,
        // which we own and which is large enough (the ioctl encodes its size).
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
        if r != 0 || info.mask & u64::from(libc::PIDFD_INFO_PID) == 0 {
            return None;
        }
        Some(Info {
            pid: info.pid,
            tgid: info.tgid,
            ppid: info.ppid,
            uid: info.ruid,
            cgroup_id: (info.mask & u64::from(libc::PIDFD_INFO_CGROUPID) != 0)
                .then_some(info.cgroupid),
        })
    }

    /// The pid this pidfd refers to, from /proc/self/fdinfo (works on all
    /// kernels with pidfds); `None` once it exited.
    pub fn pid(&self) -> Option<u32> {
        let s =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.0.as_raw_fd())).ok()?;
        let v: i64 = s
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok()?;
        u32::try_from(v).ok().filter(|p| *p > 0)
    }

    /// Sends a signal through the pidfd (no pid-reuse race).
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn into_owned(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        assert!(fd.is_alive());
        assert_eq!(fd.pid(), Some(child.id()));
        if let Some(info) = fd.info() {
            assert_eq!(info.pid, child.id());
            assert_eq!(info.tgid, child.id());
            assert_eq!(info.ppid, std::process::id());
        }
        fd.send_signal(libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!fd.is_alive());
        assert_eq!(fd.pid(), None);
    }

    #[test]
    fn thread_pidfd_gives_tgid() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let fd = PidFd::open_thread(tid).unwrap();
        assert!(fd.is_alive());
        if let Some(info) = fd.info() {
            assert_eq!(info.tgid, std::process::id());
            assert_eq!(info.pid, tid);
        }
        done_tx.send(()).unwrap();
        h.join().unwrap();
        // The thread is gone; the process lives on.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!fd.is_alive());
    }
}
