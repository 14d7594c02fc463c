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

/// Creates `dir` (and parents) and makes sure it is a real directory owned
/// by us with mode 0700, so no other user can plant or read files in it.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
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
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot restrict permissions of", dir, e))?;
    }
    Ok(())
}
