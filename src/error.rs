//! One error type for the whole program. Every variant says what went wrong
//! and what to do next, maps to a documented exit code, and never carries a
//! secret byte: constructors take names and paths only.

use std::io;
use std::path::{Path, PathBuf};

/// Exit codes, documented in README.md.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Denied (wrong passphrase, locked vault, authorization) or not found.
    pub const DENIED: i32 = 1;
    /// Usage, input or environment error (bad argument, damaged vault, I/O).
    pub const USAGE: i32 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no vault at {}: run `hushfs init`", .0.display())]
    NoVault(PathBuf),

    #[error("a vault already exists at {}: pass --vault to create another", .0.display())]
    VaultExists(PathBuf),

    #[error("vault is locked: run `hushfs unlock` (or pass --passphrase-fd N)")]
    Locked,

    #[error("wrong passphrase for {} (or the vault header was altered)", .0.display())]
    WrongPassphrase(PathBuf),

    #[error("vault {} is damaged: {reason}; restore it from a backup", .path.display())]
    Damaged { path: PathBuf, reason: String },

    #[error(
        "vault {} has format version {version}, this hushfs reads version 1: upgrade hushfs",
        .path.display()
    )]
    UnknownVersion { path: PathBuf, version: u16 },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    Denied(String),

    #[error("{0}")]
    Usage(String),

    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{0}")]
    Other(String),

    /// stdout was closed by the reader (`| head`): not an error for the user.
    #[error("broken pipe")]
    BrokenPipe,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BrokenPipe => exit::OK,
            Error::Locked | Error::WrongPassphrase(_) | Error::NotFound(_) | Error::Denied(_) => {
                exit::DENIED
            }
            Error::NoVault(_) => exit::DENIED,
            Error::VaultExists(_)
            | Error::Damaged { .. }
            | Error::UnknownVersion { .. }
            | Error::Usage(_)
            | Error::Io { .. }
            | Error::Other(_) => exit::USAGE,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn damaged(path: &Path, reason: impl Into<String>) -> Self {
        Error::Damaged {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with what was being done and where. The hint for
    /// the common causes is added to the message by `Display` of io::Error
    /// plus the path, which is enough to act on.
    pub fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
