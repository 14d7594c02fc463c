//! How a command gets the data key: the keychain cache first, then a
//! passphrase from `--passphrase-fd N`, from the file named by
//! `HUSHFS_PASSPHRASE_FILE`, or from a no-echo prompt on a terminal. Never
//! from argv or a plain environment variable.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

use super::{Sealed, Vault, keychain, store};
use crate::error::{Error, Result};
use crate::secret::{Key32, Passphrase, SecretBuf, SecretBytes};

/// Largest passphrase read from an fd or file.
const PASS_MAX: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub struct KeyOpts {
    /// Read the passphrase from this inherited file descriptor.
    pub passphrase_fd: Option<RawFd>,
    /// Read a new passphrase (init confirmation, passwd) from this fd.
    pub new_passphrase_fd: Option<RawFd>,
}

/// Reads (and closes) the fd. Each command reads a given fd at most once.
fn read_fd(fd: RawFd) -> Result<SecretBytes> {
    // SAFETY: F_GETFD only queries the descriptor table; it fails with EBADF
    // for an fd that is not open, which we report instead of using it.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::usage(format!(
            "--passphrase-fd {fd}: no such open file descriptor (e.g. run with `3< file`)"
        )));
    }
    // SAFETY: the fd is open (checked above) and ours to consume: the user
    // handed it to us for exactly this read. It is closed after reading.
    let mut f = unsafe { File::from_raw_fd(fd) };
    read_secret(&mut f).map_err(|e| Error::usage(format!("--passphrase-fd {fd}: {e}")))
}

fn read_secret(r: &mut impl Read) -> std::io::Result<SecretBytes> {
    let mut b = SecretBuf::read_limited(r, PASS_MAX)?;
    b.strip_suffix_byte(b'\n');
    b.strip_suffix_byte(b'\r');
    Ok(b.into_secret())
}

fn read_env_file(var: &str) -> Result<Option<SecretBytes>> {
    let Some(path) = std::env::var_os(var) else {
        return Ok(None);
    };
    let p = Path::new(&path);
    let mut f = File::open(p).map_err(|e| Error::io("cannot open passphrase file", p, e))?;
    Ok(Some(read_secret(&mut f).map_err(|e| {
        Error::io("cannot read passphrase file", p, e)
    })?))
}

fn prompt(text: &str) -> Result<SecretBytes> {
    let s = zeroize::Zeroizing::new(
        rpassword::prompt_password(text)
            .map_err(|e| Error::usage(format!("cannot read the passphrase: {e}")))?,
    );
    Ok(SecretBytes::copy_from(s.as_bytes()))
}

/// The passphrase from the non-interactive sources or a terminal prompt;
/// `None` when there is no source.
pub fn passphrase(opts: &KeyOpts, prompt_text: &str) -> Result<Option<Passphrase>> {
    let bytes = if let Some(fd) = opts.passphrase_fd {
        Some(read_fd(fd)?)
    } else if let Some(b) = read_env_file("HUSHFS_PASSPHRASE_FILE")? {
        Some(b)
    } else if std::io::stdin().is_terminal() {
        Some(prompt(prompt_text)?)
    } else {
        None
    };
    Ok(bytes.map(Passphrase::new))
}

/// A new passphrase: from `--new-passphrase-fd`, `HUSHFS_NEW_PASSPHRASE_FILE`,
/// or typed twice on a terminal. `fallback_current` lets `init` take it from
/// the ordinary sources.
pub fn new_passphrase(opts: &KeyOpts, fallback_current: bool) -> Result<Passphrase> {
    let from_source = if let Some(fd) = opts.new_passphrase_fd {
        Some(read_fd(fd)?)
    } else if let Some(b) = read_env_file("HUSHFS_NEW_PASSPHRASE_FILE")? {
        Some(b)
    } else if let Some(fd) = opts.passphrase_fd.filter(|_| fallback_current) {
        Some(read_fd(fd)?)
    } else if fallback_current {
        read_env_file("HUSHFS_PASSPHRASE_FILE")?
    } else {
        None
    };
    let p = match from_source {
        Some(b) => Passphrase::new(b),
        None if std::io::stdin().is_terminal() => {
            let a = Passphrase::new(prompt("New passphrase: ")?);
            let b = Passphrase::new(prompt("Repeat the passphrase: ")?);
            if a != b {
                return Err(Error::usage(
                    "the two passphrases differ: run the command again",
                ));
            }
            a
        }
        None => {
            return Err(Error::usage(
                "no passphrase given: type it on a terminal, or pass --new-passphrase-fd N \
                 or HUSHFS_NEW_PASSPHRASE_FILE",
            ));
        }
    };
    if p.is_empty() {
        return Err(Error::usage("the passphrase is empty: choose a long one"));
    }
    if p.len() < 12 {
        eprintln!("hushfs: warning: a passphrase under 12 characters is easy to guess offline");
    }
    Ok(p)
}

/// A key handed to this process for this one command (by the client that
/// asked the agent to run it; never cached).
static GIVEN: std::sync::OnceLock<Key32> = std::sync::OnceLock::new();

/// Records the key the agent passed on for this command.
pub fn set_given_key(k: Key32) {
    let _ = GIVEN.set(k);
}

/// Opens the vault with the cached key or a passphrase.
pub fn open(path: &Path, opts: &KeyOpts) -> Result<Vault> {
    let sealed = Sealed::read(path)?;
    if let Some(k) = GIVEN.get()
        && let Ok(secrets) = sealed.open(k)
    {
        return Ok(Vault::from_parts(sealed, k.clone(), secrets));
    }
    let id = sealed.header().id_hex();
    if opts.passphrase_fd.is_none()
        && let Some(key) = keychain::load(&id)
    {
        if let Ok(secrets) = sealed.open(&key) {
            return Ok(Vault::from_parts(sealed, key, secrets));
        }
        // A key from before `rekey` (or a damaged file): forget it and
        // let the passphrase decide which.
        let _ = keychain::clear(&id);
    }
    open_with_passphrase(sealed, opts).map(|(v, _)| v)
}

/// Opens the vault with the passphrase only, ignoring the cache: for changes
/// that need the user's presence (passwd, rekey, policies).
pub fn open_with_passphrase(sealed: Sealed, opts: &KeyOpts) -> Result<(Vault, Passphrase)> {
    let pass = passphrase(opts, "Passphrase: ")?.ok_or(Error::Locked)?;
    let key = sealed.unwrap_key(&pass)?;
    let secrets = sealed.open(&key)?;
    Ok((Vault::from_parts(sealed, key, secrets), pass))
}

/// Runs `f` on the vault under the writer lock, re-reading it under the
/// lock, and saves when `f` reports a change. Nothing is written on error.
pub fn modify<T>(
    path: &Path,
    opts: &KeyOpts,
    f: impl FnOnce(&mut Vault) -> Result<(T, bool)>,
) -> Result<T> {
    let _lock = store::WriteLock::acquire(path)?;
    let mut vault = open(path, opts)?;
    let (out, changed) = f(&mut vault)?;
    if changed {
        vault.save()?;
    }
    Ok(out)
}
