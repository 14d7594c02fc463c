//! Where hushfs keeps things, following the XDG base directory spec.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// `$XDG_DATA_HOME/hushfs/vault` (default `~/.local/share/hushfs/vault`).
pub fn default_vault() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
        .join("hushfs")
        .join("vault")
}

/// `$XDG_STATE_HOME/hushfs` (default `~/.local/state/hushfs`): logs, audit.
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("hushfs")
}

pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

pub fn gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// `$XDG_RUNTIME_DIR/hushfs`, or `/run/user/UID/hushfs`, or
/// `$TMPDIR/hushfs-UID` when neither exists (root in a container, CI).
/// Control sockets and private mounts live here.
pub fn runtime_dir() -> PathBuf {
    if let Some(v) = std::env::var_os("XDG_RUNTIME_DIR")
        && Path::new(&v).is_absolute()
    {
        return PathBuf::from(v).join("hushfs");
    }
    let run_user = PathBuf::from(format!("/run/user/{}", uid()));
    if run_user.is_dir() {
        return run_user.join("hushfs");
    }
    std::env::temp_dir().join(format!("hushfs-{}", uid()))
}

/// A directory hushfs names itself: `hushfs`, `hushfs-UID`, or one directly
/// inside such a directory. Only those are ever tightened.
fn is_ours(dir: &Path) -> bool {
    let named = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with("hushfs"))
    };
    named(Some(dir)) || named(dir.parent())
}

/// Creates `dir` (and parents) with mode 0700 and makes sure it is a real
/// directory owned by us that no other user can enter, so nobody can plant
/// or read files in it. An existing directory that others can reach is
/// tightened only when it is hushfs's own by name; anything else is an
/// error, since tightening a shared directory (XDG_RUNTIME_DIR pointed at
/// /tmp by mistake) would lock everyone else out of it.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        // Parents we create are private too (a later call may check them).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io("cannot create", parent, e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create", dir, e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory: remove it and try again",
            dir.display()
        )));
    }
    if meta.uid() != uid() {
        return Err(Error::usage(format!(
            "{} belongs to uid {}, not to you: remove it or set XDG_RUNTIME_DIR",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 && is_ours(dir) {
        // hushfs's own directory, made by an older version or by a parent
        // create with the default umask: tighten it.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot restrict permissions of", dir, e))?;
    } else if meta.mode() & 0o077 != 0 {
        return Err(Error::usage(format!(
            "{} is open to other users (mode {:o}): `chmod 700` it if it is hushfs's own, or set XDG_RUNTIME_DIR / XDG_STATE_HOME elsewhere",
            dir.display(),
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_created_0700_and_shared_dirs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        ensure_private_dir(&d).unwrap();
        let shared = t.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = ensure_private_dir(&shared).unwrap_err().to_string();
        assert!(e.contains("open to other users"), "{e}");
        assert_eq!(
            fs::metadata(&shared).unwrap().mode() & 0o7777,
            0o1777,
            "left untouched"
        );
    }
}
