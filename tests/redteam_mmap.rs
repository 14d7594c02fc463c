//! Issue 15, part 1: a value must never reach the page cache, where a
//! process outside every grant could map it with no read reaching the
//! daemon. Run as an ordinary user (hushfs, the authorized command and the
//! outsider all as uid 65534), as a same-user attacker would.

mod common;
use common::mount::{helper, hex, is_mounted, json};
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;
const VALUE: &[u8] = b"mmap-leak-probe-0123456789abcdef";

/// A home owned by nobody, with a vault holding `app/TOKEN` and a mount.
struct Nobody {
    _e: Env,
    home: PathBuf,
    mnt: PathBuf,
}

impl Nobody {
    fn new() -> Nobody {
        let e = Env::empty();
        std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = e.path("home");
        std::fs::create_dir(&home).unwrap();
        let mnt = home.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::write(home.join("pass"), "nobody's passphrase\n").unwrap();
        for p in [&home, &mnt, &home.join("pass")] {
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(NOBODY)),
                Some(nix::unistd::Gid::from_raw(NOBODY)),
            )
            .unwrap();
        }
        let n = Nobody { _e: e, home, mnt };
        n.ok(n.hushfs(&INIT_FAST), None);
        n.ok(n.hushfs(&["set", "app/TOKEN"]), Some(VALUE));
        let m = n.mnt.to_str().unwrap().to_string();
        n.ok(n.hushfs(&["mount", &m, "-p", "app"]), None);
        assert!(is_mounted(&n.mnt));
        n
    }

    /// `args` as uid 65534 in this home.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .env_clear()
            // /root's python shims are out of its reach.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env("HUSHFS_PASSPHRASE_FILE", self.home.join("pass"))
            .env("HUSHFS_KEYCHAIN", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn hushfs(&self, args: &[&str]) -> Command {
        let mut all = vec![env!("CARGO_BIN_EXE_hushfs")];
        all.extend_from_slice(args);
        self.cmd(&all)
    }

    fn ok(&self, mut c: Command, input: Option<&[u8]>) -> Output {
        let mut ch = c.spawn().unwrap();
        if let Some(i) = input {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(i).unwrap();
        }
        drop(ch.stdin.take());
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    }

    fn file(&self) -> String {
        format!("{}/TOKEN", self.mnt.display())
    }

    /// The audit lines of the mount's reads, as `hushfs audit show --json`.
    fn audit_reads(&self) -> Vec<serde_json::Value> {
        let o = self.ok(self.hushfs(&["audit", "show", "--json"]), None);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "read")
            .collect()
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let m = self.mnt.to_str().unwrap().to_string();
        let _ = self.hushfs(&["umount", &m]).output();
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn wait_for(p: &Path) {
    for _ in 0..500 {
        if p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", p.display());
}

/// The sequence: the outsider receives an authorized process's fd
/// and maps it MAP_PRIVATE untouched; the authorized process then maps and
/// faults the file (and splices it, and asks for readahead); the outsider
/// touches its mapping, and splices. Before the fix the authorized fault
/// and splice filled the page cache, and the outsider read the value from
/// it with no READ and no audit line.
#[test]
fn a_private_mapping_made_early_never_sees_the_value() {
    let n = Nobody::new();
    let h = helper();
    let h = h.to_str().unwrap();
    let sock = n.home.join("pass.sock");
    let go = n.home.join("go");
    let (sock_s, go_s) = (sock.to_str().unwrap(), go.to_str().unwrap());
    let len = VALUE.len().to_string();
    // The outsider: the same uid, outside every grant.
    let outsider = n
        .cmd(&["python3", h, "maplate", sock_s, &len, go_s])
        .spawn()
        .unwrap();
    wait_for(&sock);
    let m = n.mnt.to_str().unwrap().to_string();
    let file = n.file();
    let granted = n.ok(
        n.hushfs(&[
            "run",
            "--mount",
            &m,
            "--no-redact",
            "--",
            "python3",
            h,
            "faultsend",
            &file,
            sock_s,
            go_s,
        ]),
        None,
    );
    let inside = json(&granted);
    let outside = json(&outsider.wait_with_output().unwrap());
    let secret = hex(VALUE);

    // The outsider gets nothing, by any path.
    assert!(
        !outside.to_string().contains(&secret[..16]),
        "the outsider read the value from the page cache: {outside}"
    );
    assert_eq!(outside["touch"]["signal"], "SIGBUS", "{outside}");
    for op in ["pread", "sendfile", "splice"] {
        assert_eq!(outside[op]["err"], "EACCES", "{op}: {outside}");
    }
    // The authorized process still reads directly; its own private
    // mapping faults too (nothing may fill the page cache).
    for op in ["read", "pread"] {
        assert_eq!(inside[op]["ok"], secret, "{op}: {inside}");
    }
    // sendfile and splice go through the page cache (filemap_splice_read),
    // so they are refused like the fault.
    for op in ["sendfile", "splice"] {
        assert_eq!(inside[op]["err"], "EACCES", "{op}: {inside}");
    }
    assert_eq!(inside["fault"]["signal"], "SIGBUS", "{inside}");

    // Every refused fill is in the audit log, with its reason.
    let reads = n.audit_reads();
    let refused: Vec<_> = reads
        .iter()
        .filter(|r| r["decision"] == "deny" && r["reason"] == hushfs::fs::CACHE_FILL)
        .collect();
    assert!(
        !refused.is_empty(),
        "no audit line for a refused page-cache read: {reads:?}"
    );
    assert!(refused.iter().all(|r| r["file"] == "TOKEN"), "{refused:?}");
    assert!(
        reads
            .iter()
            .any(|r| r["decision"] == "allow" && r["reason"] != hushfs::fs::CACHE_FILL),
        "the direct pread was recorded as allowed: {reads:?}"
    );
}

/// Issue 15, part 4, as docs/THREAT-MODEL.md and docs/AGENTS.md say it:
/// without Yama a same-uid process may `pidfd_getfd` an authorized
/// process's descriptor — reads through it are still decided for the thief
/// and denied — and may read that process's memory, where the value it
/// read lies. On a machine with Yama `ptrace_scope` >= 1 both are refused.
#[test]
fn a_stolen_descriptor_reads_nothing_but_memory_is_open_without_yama() {
    let n = Nobody::new();
    let h = helper();
    let h = h.to_str().unwrap();
    let info = n.home.join("info");
    let stop = n.home.join("stop");
    let m = n.mnt.to_str().unwrap().to_string();
    let file = n.file();
    let holder = n
        .hushfs(&[
            "run",
            "--mount",
            &m,
            "--no-redact",
            "--",
            "python3",
            h,
            "holdfd",
            &file,
            info.to_str().unwrap(),
            stop.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    wait_for(&info);
    let text = std::fs::read_to_string(&info).unwrap();
    let (pid, fd) = text.split_once(' ').unwrap();
    let thief = json(
        &n.cmd(&["python3", h, "steal", pid, fd, &hex(VALUE)])
            .output()
            .unwrap(),
    );
    std::fs::write(&stop, "").unwrap();
    let held = json(&holder.wait_with_output().unwrap());
    assert_eq!(held["held"], VALUE.len(), "the holder read the value");
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    if yama == "absent" || yama == "0" {
        assert_eq!(thief["getfd"]["ok"], "", "pidfd_getfd works: {thief}");
        assert_eq!(thief["pread"]["err"], "EACCES", "{thief}");
        assert_eq!(thief["mem"]["found"], true, "memory is readable: {thief}");
    } else {
        assert!(thief["getfd"]["err"].is_string(), "Yama {yama}: {thief}");
        assert!(thief["mem"]["found"] != true, "Yama {yama}: {thief}");
    }
    assert!(!thief.to_string().contains(&hex(VALUE)[..16]), "{thief}");
}
