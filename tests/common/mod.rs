//! Shared test harness: a throwaway vault in a temp directory, the hushfs
//! binary with an isolated environment, and helpers to read the vault back
//! through the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod mount;
pub mod pty;

use hushfs::vault::unlock::{self, KeyOpts};
use hushfs::vault::{Secrets, Vault};

pub const PASS: &str = "test passphrase 1234";

/// `init` with the floor KDF parameters: fast tests.
pub const INIT_FAST: [&str; 7] = [
    "init",
    "--kdf-memory",
    "19",
    "--kdf-time",
    "2",
    "--kdf-parallelism",
    "1",
];

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
        e.ok(&INIT_FAST);
        e
    }

    /// `passwd` to `new` (asserting success); returns the new passphrase's
    /// file. The caller switches `pass_file` when it wants to go on.
    pub fn passwd(&self, new: &str) -> PathBuf {
        let file = self.path(&format!("pass-{}", new.len()));
        std::fs::write(&file, format!("{new}\n")).unwrap();
        let o = self
            .cmd(&["passwd"])
            .env("HUSHFS_NEW_PASSPHRASE_FILE", &file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        file
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
        // A command that refuses its arguments exits without reading stdin;
        // the write then fails with EPIPE, which is not the test's concern.
        match child.stdin.take().unwrap().write_all(input) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r.unwrap(),
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

    /// Where this environment's audit logs are.
    pub fn audit_dir(&self) -> PathBuf {
        self.path("state/hushfs/audit")
    }

    /// A writer on this vault's audit log through the library (the
    /// keychain left alone), rotating at `max_bytes`.
    pub fn audit_writer(&self, max_bytes: u64) -> hushfs::audit::Writer {
        let v = self.open().unwrap();
        let opts = hushfs::audit::Options {
            dir: self.audit_dir(),
            max_bytes,
            keychain: false,
        };
        hushfs::audit::Writer::open(&v.header.vault_id, Some(v.key()), &opts).unwrap()
    }

    /// Seqs of the entries `hushfs audit show --json ARGS` prints.
    pub fn audit_seqs(&self, args: &[&str]) -> Vec<u64> {
        let mut a = vec!["audit", "show", "--json"];
        a.extend_from_slice(args);
        self.ok(&a)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["seq"].as_u64().unwrap()
            })
            .collect()
    }

    /// Starts `hushfs set SECRET` with `value` on its stdin.
    pub fn spawn_set(&self, secret: &str, value: &[u8]) -> std::process::Child {
        use std::io::Write;
        let mut c = self
            .cmd(&["set", secret])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(value).unwrap();
        c
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
        // Leave nothing cached after a test: the agent forgets the key (and
        // ends when the temporary runtime directory goes).
        if self.keychain && self.vault.exists() {
            let _ = self.cmd(&["lock"]).output();
            if let Ok(s) = hushfs::vault::Sealed::read(&self.vault) {
                let _ = hushfs::audit::forget_keychain_state(&s.header().vault_id);
            }
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

    /// Bytes in `file`'s extension area (the audit anchor, once the audit
    /// log has entries): the offsets below move by this much.
    pub fn ext_len(file: &[u8]) -> usize {
        u32::from_le_bytes(file[EXT_LEN..EXT_LEN + 4].try_into().unwrap()) as usize
    }
    /// With an empty extension area.
    pub const WRAP_NONCE: usize = EXT_LEN + 4;
    pub const WRAPPED_KEY: usize = WRAP_NONCE + 24;
    pub const BODY_NONCE: usize = WRAPPED_KEY + 48;
}
