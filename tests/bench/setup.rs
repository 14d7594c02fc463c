//! The benchmark's world: a vault with default KDF parameters in a temp
//! directory, unlocked once into the keychain (the cached path users run
//! on all day), a live mount of project `app`, and ways to start hushfs
//! and the harness's helper processes in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stats::Samples;

pub const PASS: &str = "benchmark passphrase 2026";
/// The secret every latency row reads: 64 bytes, like a typical token.
pub const SECRET64: &[u8; 64] = b"sk_live_51NzQ8RbY7TqgX2mKp4Lw9HvCj3Ds6EeFa0UoIiYy5ZxWbVnMtGhJkLr";

pub struct Bench {
    pub tmp: tempfile::TempDir,
    pub vault: PathBuf,
    pub pass_file: PathBuf,
    /// `app`'s mount, kept for the whole run.
    pub mnt: PathBuf,
    mounts: std::cell::RefCell<Vec<PathBuf>>,
}

/// What a helper printed: its samples and its `key value` lines.
pub struct Out {
    pub samples: Samples,
    pub fields: HashMap<String, String>,
}

impl Out {
    pub fn field(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }

    pub fn errors(&self) -> u64 {
        self.field("errors").parse().unwrap_or(u64::MAX)
    }
}

impl Bench {
    pub fn new() -> Bench {
        let tmp = tempfile::Builder::new()
            .prefix("hushfs-bench-")
            .tempdir()
            .expect("temp dir");
        let pass_file = tmp.path().join("pass");
        std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
        let b = Bench {
            vault: tmp.path().join("vault"),
            mnt: tmp.path().join("mnt"),
            pass_file,
            tmp,
            mounts: Default::default(),
        };
        // Default KDF parameters: the unlock row measures what users get.
        b.ok(b.with_pass(&["init"]));
        b.ok(b.with_pass(&["unlock"]));
        let mut env = String::new();
        env += &format!("SECRET={}\n", std::str::from_utf8(SECRET64).unwrap());
        for i in 0..9 {
            env += &format!("OTHER_{i}=value-number-{i}-of-the-app-project\n");
        }
        b.import("app", &env);
        b.mount(&b.mnt, "app");
        b
    }

    /// hushfs with this bench's vault and XDG directories; the key comes
    /// from the keychain (cached by `unlock`).
    pub fn hushfs(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hushfs"));
        c.args(args)
            .env("HUSHFS_VAULT", &self.vault)
            .env("XDG_STATE_HOME", self.tmp.path().join("state"))
            .env("XDG_RUNTIME_DIR", self.tmp.path().join("run"))
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .env_remove("HUSHFS_KEYCHAIN")
            .stdin(Stdio::null());
        c
    }

    /// hushfs given the passphrase file (for commands that need it).
    pub fn with_pass(&self, args: &[&str]) -> Command {
        let mut c = self.hushfs(args);
        c.env("HUSHFS_PASSPHRASE_FILE", &self.pass_file);
        c
    }

    pub fn ok(&self, mut c: Command) -> String {
        let o = c.stderr(Stdio::piped()).output().expect("spawn");
        assert!(
            o.status.success(),
            "{c:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Like `ok`, but when the cached key is gone (another user of this
    /// machine's keyring removed it mid-run), unlocks again and retries
    /// once. Returns the output and the wall time of the attempt that
    /// succeeded.
    fn ok_unlocked(&self, mk: impl Fn() -> Command) -> (String, Duration) {
        let t = Instant::now();
        let o = mk().stderr(Stdio::piped()).output().expect("spawn");
        if o.status.success() {
            return (String::from_utf8_lossy(&o.stdout).into_owned(), t.elapsed());
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("vault is locked"), "{:?} failed: {err}", mk());
        eprintln!("bench: the cached key was removed from outside; unlocking again");
        self.ok(self.with_pass(&["unlock"]));
        let t = Instant::now();
        let out = self.ok(mk());
        (out, t.elapsed())
    }

    pub fn import(&self, project: &str, dotenv: &str) {
        let f = self.tmp.path().join(format!("{project}.env"));
        std::fs::write(&f, dotenv).unwrap();
        self.ok_unlocked(|| self.hushfs(&["import", project, f.to_str().unwrap()]));
        std::fs::remove_file(&f).unwrap();
    }

    /// Mounts and returns how long `hushfs mount` took to come back ready.
    pub fn mount(&self, dir: &Path, project: &str) -> Duration {
        std::fs::create_dir_all(dir).unwrap();
        let (_, dt) =
            self.ok_unlocked(|| self.hushfs(&["mount", dir.to_str().unwrap(), "-p", project]));
        self.mounts.borrow_mut().push(dir.to_path_buf());
        dt
    }

    pub fn umount(&self, dir: &Path) {
        self.ok(self.hushfs(&["umount", dir.to_str().unwrap()]));
        self.mounts.borrow_mut().retain(|d| d != dir);
    }

    /// The daemon serving `dir`.
    pub fn daemon_pid(&self, dir: &Path) -> u32 {
        let st: serde_json::Value =
            serde_json::from_str(&self.ok(self.hushfs(&["status", "--json"]))).expect("json");
        let want = std::fs::canonicalize(dir).unwrap();
        st["mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountpoint"].as_str().map(Path::new) == Some(want.as_path()))
            .and_then(|m| m["pid"].as_u64())
            .expect("daemon pid in status") as u32
    }

    /// The harness itself as `helper ARGS`: a process outside any grant.
    pub fn helper(&self, args: &[&str]) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.arg("helper").args(args);
        c
    }

    /// A helper started by `hushfs run --mount DIR`: its tree is granted.
    pub fn granted(&self, dir: &Path, args: &[&str]) -> Command {
        let exe = std::env::current_exe().unwrap();
        let mut all = vec![
            "run",
            "--no-redact",
            "--mount",
            dir.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "helper",
        ];
        all.extend_from_slice(args);
        self.hushfs(&all)
    }

    /// Runs a helper and parses what it printed.
    pub fn collect(&self, mut c: Command) -> Out {
        let o = c.stderr(Stdio::inherit()).output().expect("spawn helper");
        assert!(o.status.success(), "{c:?} failed");
        let mut samples = Samples::default();
        let mut fields = HashMap::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            match line.parse::<u64>() {
                Ok(ns) => samples.0.push(ns),
                Err(_) => {
                    if let Some((k, v)) = line.split_once(' ') {
                        fields.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
        Out { samples, fields }
    }

    /// One line about the machine, for the report.
    pub fn machine(&self) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".into(), |kb| format!("{} GiB", kb >> 20));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        format!(
            "## hushfs benchmarks\n\nMachine: {cpu}, {cores} cores, {mem}; Linux {kernel}; release build; {}.\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for d in self.mounts.borrow().clone() {
            let _ = self
                .hushfs(&["umount", d.to_str().unwrap()])
                .stderr(Stdio::null())
                .status();
        }
        // Leave no cached key of this throwaway vault behind.
        let _ = self.hushfs(&["lock"]).stderr(Stdio::null()).status();
    }
}

/// Peak RSS and exit status of a child, from wait4(2).
// wait4 below reaps the child; clippy sees only that Child::wait is not called.
#[allow(clippy::zombie_processes)]
pub fn run_measured(c: &mut Command) -> (Duration, u64, bool) {
    let t = Instant::now();
    let child = c.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child; std's Child is not waited on afterwards.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let dt = t.elapsed();
    assert!(r > 0, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (dt, ru.ru_maxrss as u64 * 1024, ok)
}

/// VmRSS and VmHWM of a process, in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Runs each command `reps` times, the commands interleaved round by round
/// (so that drifts of a noisy machine hit all alike), output discarded;
/// one `Samples` per command, in order.
pub fn interleaved(names: &[&str], make: &[&dyn Fn() -> Command], reps: usize) -> Vec<Samples> {
    let mut s: Vec<Samples> = vec![Samples::default(); make.len()];
    for _ in 0..reps {
        for (i, m) in make.iter().enumerate() {
            let mut c = m();
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let (dt, _, ok) = run_measured(&mut c);
            assert!(ok, "{}", names[i]);
            s[i].push(dt);
        }
    }
    s
}
