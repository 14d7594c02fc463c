//! The mount directory: absolute paths without following a dead FUSE mount,
//! what is mounted there now, and how to clear a stale mount.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// An absolute, normalised path that does not touch the filesystem beyond
/// resolving the parent (a stale mount cannot be canonicalized: ENOTCONN).
pub fn absolute(dir: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(dir).map_err(|e| Error::io("cannot resolve", dir, e))?;
    let parent = abs.parent().map(Path::to_path_buf);
    let name = abs.file_name().map(|n| n.to_os_string());
    match (parent, name) {
        (Some(p), Some(n)) => {
            let p = p
                .canonicalize()
                .map_err(|e| Error::io("cannot resolve", &p, e))?;
            Ok(p.join(n))
        }
        _ => Ok(abs),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// An ordinary directory.
    Free,
    /// A FUSE mount whose daemon is gone (ENOTCONN), or a hushfs mount
    /// without a live daemon.
    Stale,
    /// Some other filesystem is mounted here.
    Other(String),
    /// A live hushfs mount.
    Hushfs,
}

/// Undoes the octal escapes of /proc/self/mountinfo (\040 for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type mounted exactly at `dir`, if any (the last mount
/// there wins).
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (unescape(f.get(4)?) == want).then(|| f.get(sep + 1).map(|s| s.to_string()))?
        })
        .next_back()
}

pub fn inspect(dir: &Path, live_daemon: bool) -> Result<State> {
    match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(State::Stale),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::usage(format!(
                "{} does not exist: create it (mkdir) and mount again",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io("cannot inspect", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(_) => {}
    }
    Ok(match mounted_fstype(dir) {
        None => State::Free,
        Some(t) if t == "fuse.hushfs" => {
            if live_daemon {
                State::Hushfs
            } else {
                State::Stale
            }
        }
        Some(t) => State::Other(t),
    })
}

/// The fusermount3 binary, honouring FUSERMOUNT_PATH like fuser does.
pub fn fusermount() -> Option<PathBuf> {
    // Not in the agent's keyring session: the program runs with our
    // privileges there, so only the system's PATH decides.
    if let Some(p) =
        std::env::var_os("FUSERMOUNT_PATH").filter(|_| crate::sys::keyring::trusted().is_none())
    {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether /etc/fuse.conf lets ordinary users pass allow_other.
pub fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .map(|s| s.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false)
}

/// Unmounts `dir`: normally, or lazily (detach now, finish when the last
/// open file closes). Root uses umount2(2); others go through fusermount3.
pub fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    if is_root() {
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        return nix::mount::umount2(dir, flags)
            .map_err(|e| Error::io("cannot unmount", dir, e.into()));
    }
    let bin = fusermount().ok_or_else(|| {
        Error::Other(format!(
            "cannot unmount {}: fusermount3 is missing (install the fuse3 package)",
            dir.display()
        ))
    })?;
    let mut c = Command::new(bin);
    // SAFETY: runs in the forked child before exec and only makes the
    // keyctl syscall.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, crate::sys::keyring::detach_in_child);
    }
    c.arg("-u").arg("-q");
    if lazy {
        c.arg("-z");
    }
    let out = c
        .arg(dir)
        .output()
        .map_err(|e| Error::io("cannot run fusermount3 for", dir, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "cannot unmount {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Unmounts, falling back to a lazy unmount when the mount is busy.
pub fn unmount_or_detach(dir: &Path) -> Result<()> {
    match unmount(dir, false) {
        Ok(()) => Ok(()),
        Err(_) => unmount(dir, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\"), "/x\\");
    }

    #[test]
    fn proc_is_mounted() {
        assert_eq!(mounted_fstype(Path::new("/proc")).as_deref(), Some("proc"));
        assert_eq!(
            inspect(Path::new("/proc"), false).unwrap(),
            State::Other("proc".into())
        );
    }
}
