//! Shared test harness: a throwaway vault in a temp directory, the hushfs
//! binary with an isolated environment, and helpers to read the vault back
//! through the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod mount;

use hushfs::vault::unlock::{self, KeyOpts};
use hushfs::vault::{Secrets, Vault};

pub const PASS: &str = "test passphrase 1234";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub pass_file: PathBuf,
    /// When false, HUSHFS_KEYCHAIN=off keeps tests out of the kernel keyring.
    pub keychain: bool,
}

impl Env {
    /// An environment without a vault yet.
    pub fn empty() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("hushfs-test-")
            .tempdir()
            .unwrap();
        let vault = dir.path().join("data/vault");
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
        Env {
            dir,
            vault,
            pass_file,
            keychain: false,
        }
    }

    /// An environment with an initialised vault (fast KDF parameters).
    pub fn new() -> Env {
        let e = Env::empty();
        e.ok(&[
            "init",
            "--kdf-memory",
            "19",
            "--kdf-time",
            "2",
            "--kdf-parallelism",
            "1",
        ]);
        e
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The hushfs command with this environment's vault, passphrase file and
    /// XDG directories.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hushfs"));
        c.args(args)
            .env("HUSHFS_VAULT", &self.vault)
            .env("HUSHFS_PASSPHRASE_FILE", &self.pass_file)
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env_remove("HUSHFS_NEW_PASSPHRASE_FILE")
            .stdin(std::process::Stdio::null());
        if !self.keychain {
            c.env("HUSHFS_KEYCHAIN", "off");
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails on its arguments exits without reading
        // stdin: a broken pipe here is its answer, not a test error.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "hushfs {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn set(&self, secret: &str, value: &[u8]) {
        let o = self.run_stdin(&["set", secret, "--raw"], value);
        assert!(
            o.status.success(),
            "set {secret}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Opens the vault through the library with the passphrase.
    pub fn open(&self) -> hushfs::error::Result<Vault> {
        let f = std::fs::File::open(&self.pass_file).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        unlock::open(
            &self.vault,
            &KeyOpts {
                passphrase_fd: Some(fd),
                new_passphrase_fd: None,
            },
        )
    }

    pub fn secrets(&self) -> Secrets {
        self.open().unwrap().secrets
    }

    pub fn value(&self, project: &str, name: &str) -> Option<Vec<u8>> {
        self.secrets()
            .get(project, name)
            .map(|e| e.value.expose().to_vec())
    }
}

/// Asserts a failed run: the exit code, one line on stderr starting with
/// "hushfs: ", no panic, and none of `forbidden` in any output.
pub fn assert_clean_failure(o: &Output, code: i32, forbidden: &[&[u8]]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("hushfs: warning"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one line: {err:?}");
    assert!(lines[0].starts_with("hushfs: "), "{err}");
    for f in forbidden {
        assert!(
            !contains(&o.stderr, f) && !contains(&o.stdout, f),
            "output leaks a secret"
        );
    }
    lines[0].to_string()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave nothing cached in the kernel keyring after a test.
        if self.keychain && self.vault.exists() {
            let _ = self.cmd(&["lock"]).output();
        }
    }
}

/// Offsets of the header fields in a version-1 vault (docs/VAULT-FORMAT.md),
/// for tests that alter them.
pub mod layout {
    pub const VERSION: usize = 8;
    pub const SALT_LEN: usize = 11;
    pub const M_KIB: usize = 12;
    pub const T: usize = 16;
    pub const P: usize = 20;
    pub const SALT: usize = 24;
    /// With the 32-byte salt hushfs writes.
    pub const VAULT_ID: usize = SALT + 32;
    pub const GENERATION: usize = VAULT_ID + 16;
    pub const EXT_LEN: usize = GENERATION + 8;
    /// With an empty extension area.
    pub const WRAP_NONCE: usize = EXT_LEN + 4;
    pub const WRAPPED_KEY: usize = WRAP_NONCE + 24;
    pub const BODY_NONCE: usize = WRAPPED_KEY + 48;
}
