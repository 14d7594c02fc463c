//! Reading process facts from /proc (and pidfds), and a trait so the
//! decision logic can be tested against a fake process table.

use std::sync::Arc;

use crate::sys::pidfd::PidFd;

/// The two fields of /proc/PID/stat that authorization needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// Clock ticks since boot.
    pub starttime: u64,
}

/// Parses /proc/PID/stat. The command name sits in parentheses, is up to 16
/// bytes and may itself contain spaces, ')' and non-UTF-8 bytes, so the
/// fields are read from bytes after the *last* ')': ppid is the 2nd field
/// there, starttime the 20th.
pub fn parse_stat(b: &[u8]) -> Option<ProcStat> {
    let close = b.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(&b[close + 1..]).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let _state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let starttime = f.nth(17)?.parse().ok()?;
    Some(ProcStat { ppid, starttime })
}

/// What the decision needs to know about processes. `Anchor` pins the
/// identity of a thread while its decision is cached.
pub trait ProcSource: Send + Sync + 'static {
    type Anchor: Send + Sync;
    /// Pins thread `tid`; `None` when it is gone.
    fn anchor(&self, tid: u32) -> Option<Self::Anchor>;
    fn alive(&self, a: &Self::Anchor) -> bool;
    /// The process (thread group) of thread `tid`.
    fn tgid(&self, tid: u32, a: &Self::Anchor) -> Option<u32>;
    /// The current parent of the pinned thread's process, read through the
    /// anchor (one call, no /proc path). `None` when the thread is gone or
    /// the source cannot tell; the walk then reads /proc instead.
    fn ppid_now(&self, _a: &Self::Anchor) -> Option<u32> {
        None
    }
    fn stat(&self, pid: u32) -> Option<ProcStat>;
    /// Executable path and command line, for the audit log.
    fn describe(&self, pid: u32) -> (Option<String>, Option<String>);
    /// The process's cgroup v2 path (the `0::` line of /proc/PID/cgroup).
    fn cgroup(&self, pid: u32) -> Option<String>;
}

/// The cgroup v2 path from the contents of /proc/PID/cgroup.
pub fn parse_cgroup(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid systems).
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(sep + 1) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[4]))
    })
}

/// A cgroup grant's anchor: the group's directory and its inode when the
/// grant was made. Gone or replaced means the grant is void.
pub struct CgroupAnchor {
    pub dir: std::path::PathBuf,
    pub ino: u64,
}

impl CgroupAnchor {
    pub fn new(dir: std::path::PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&dir)?;
        if !m.is_dir() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(CgroupAnchor { ino: m.ino(), dir })
    }
}

impl super::Liveness for CgroupAnchor {
    fn alive(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir).is_ok_and(|m| m.ino() == self.ino)
    }
}

/// At most `max` bytes from the start of a /proc file, without fs::read's
/// statx and final empty read (they doubled the cost of every step of a
/// walk), and without reading a process's whole multi-megabyte argv.
fn read_prefix(path: &str, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; max];
    let mut n = 0;
    while n < max {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            // /proc hands over what it has in one go: a short read is the
            // end, and asking again would only cost a syscall.
            Ok(k) if k < max - n => {
                n += k;
                break;
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if n > 0 => break,
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(buf)
}

/// The real thing: pidfds and /proc.
#[derive(Clone, Copy, Default)]
pub struct ProcFs;

pub const CMDLINE_MAX: usize = 256;

impl ProcSource for ProcFs {
    type Anchor = PidFd;

    fn anchor(&self, tid: u32) -> Option<PidFd> {
        PidFd::open_thread(tid).ok()
    }

    fn alive(&self, a: &PidFd) -> bool {
        a.is_alive()
    }

    fn tgid(&self, tid: u32, a: &PidFd) -> Option<u32> {
        if let Some(info) = a.info() {
            return Some(info.tgid);
        }
        // Kernels before 6.13: the Tgid line of /proc/TID/status (which
        // works for thread ids that /proc does not list).
        let s = std::fs::read(format!("/proc/{tid}/status")).ok()?;
        let s = String::from_utf8_lossy(&s);
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))?
            .trim()
            .parse()
            .ok()
    }

    fn ppid_now(&self, a: &PidFd) -> Option<u32> {
        // PIDFD_GET_INFO fails with ESRCH once the thread has exited, so an
        // answer is about the very process the anchor pins.
        a.info().map(|i| i.ppid)
    }

    fn stat(&self, pid: u32) -> Option<ProcStat> {
        parse_stat(&read_prefix(&format!("/proc/{pid}/stat"), 4096)?)
    }

    fn describe(&self, pid: u32) -> (Option<String>, Option<String>) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let cmdline = read_prefix(&format!("/proc/{pid}/cmdline"), CMDLINE_MAX * 4).map(|b| {
            let s: String = String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
                .chars()
                .take(CMDLINE_MAX)
                .collect();
            s
        });
        (exe, cmdline)
    }

    fn cgroup(&self, pid: u32) -> Option<String> {
        parse_cgroup(&std::fs::read(format!("/proc/{pid}/cgroup")).ok()?)
    }
}

impl<T: ProcSource> ProcSource for Arc<T> {
    type Anchor = T::Anchor;
    fn anchor(&self, tid: u32) -> Option<T::Anchor> {
        (**self).anchor(tid)
    }
    fn alive(&self, a: &T::Anchor) -> bool {
        (**self).alive(a)
    }
    fn tgid(&self, tid: u32, a: &T::Anchor) -> Option<u32> {
        (**self).tgid(tid, a)
    }
    fn ppid_now(&self, a: &T::Anchor) -> Option<u32> {
        (**self).ppid_now(a)
    }
    fn stat(&self, pid: u32) -> Option<ProcStat> {
        (**self).stat(pid)
    }
    fn describe(&self, pid: u32) -> (Option<String>, Option<String>) {
        (**self).describe(pid)
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        (**self).cgroup(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(comm: &[u8], ppid: u32, start: u64) -> Vec<u8> {
        let mut v = b"4242 (".to_vec();
        v.extend_from_slice(comm);
        v.extend_from_slice(
            format!(") S {ppid} 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
                .as_bytes(),
        );
        v
    }

    #[test]
    fn reads_fields_after_the_last_paren() {
        assert_eq!(
            parse_stat(&line(b"bash", 7, 999)),
            Some(ProcStat {
                ppid: 7,
                starttime: 999
            })
        );
        // A name crafted to look like fields: `x) S 4242 1 1`.
        assert_eq!(
            parse_stat(&line(b"x) S 4242 1 1", 7, 999)),
            Some(ProcStat {
                ppid: 7,
                starttime: 999
            })
        );
        assert_eq!(
            parse_stat(&line(b"a)(b) ))", 3, 5)),
            Some(ProcStat {
                ppid: 3,
                starttime: 5
            })
        );
        assert_eq!(
            parse_stat(&line(b"\xff\xfe (", 3, 5)),
            Some(ProcStat {
                ppid: 3,
                starttime: 5
            })
        );
    }

    #[test]
    fn cgroup_lines() {
        assert_eq!(
            parse_cgroup(b"12:pids:/x\n0::/system.slice/docker-1.scope\n").as_deref(),
            Some("/system.slice/docker-1.scope")
        );
        assert_eq!(parse_cgroup(b"1:name=systemd:/\n"), None);
    }

    #[test]
    fn own_stat_parses() {
        let st = ProcFs.stat(std::process::id()).unwrap();
        // SAFETY: getppid has no preconditions.
        assert_eq!(st.ppid, unsafe { libc::getppid() } as u32);
        assert!(st.starttime > 0);
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_stat(&b);
        }

        #[test]
        fn any_comm_round_trips(comm in proptest::collection::vec(any::<u8>(), 0..16), ppid in any::<u32>(), start in any::<u64>()) {
            prop_assert_eq!(parse_stat(&line(&comm, ppid, start)), Some(ProcStat { ppid, starttime: start }));
        }
    }
}
