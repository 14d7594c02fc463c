//! A real mount of a throwaway vault, through the CLI as a user runs it, and
//! unmounted on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::Env;

pub const PROJECT: &str = "app";

pub fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/procs.py")
}

pub struct Mount {
    pub env: Env,
    pub dir: PathBuf,
}

impl Mount {
    /// A vault holding `secrets` in project `app`, mounted at a fresh dir.
    pub fn new(secrets: &[(&str, &[u8])]) -> Mount {
        Self::with(Env::new(), secrets, &[])
    }

    pub fn with(env: Env, secrets: &[(&str, &[u8])], extra: &[&str]) -> Mount {
        // Traversable parents, so other uids reach the mount itself and are
        // refused by it, not by a directory on the way.
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, value) in secrets {
            env.set(&format!("{PROJECT}/{name}"), value);
        }
        let dir = env.path("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["mount", dir.to_str().unwrap(), "--project", PROJECT];
        args.extend_from_slice(extra);
        let o = env.run(&args);
        assert!(
            o.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Mount { env, dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn path(&self, name: &str) -> String {
        self.file(name).to_str().unwrap().to_string()
    }

    /// `hushfs run --mount DIR --no-redact -- CMD...`: these tests compare
    /// the bytes a command read (redaction has tests of its own).
    pub fn run(&self, cmd: &[&str]) -> Output {
        let mut args = vec![
            "run",
            "--mount",
            self.dir.to_str().unwrap(),
            "--no-redact",
            "--",
        ];
        args.extend_from_slice(cmd);
        self.env.run(&args)
    }

    /// `hushfs run --mount DIR -- CMD...`, output redacted.
    pub fn run_redacted(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--mount", self.dir.to_str().unwrap(), "--"];
        args.extend_from_slice(cmd);
        self.env.run(&args)
    }

    /// The helper script inside a granted tree; its JSON answer.
    pub fn granted(&self, args: &[&str]) -> Value {
        let h = helper();
        let mut cmd = vec!["python3", h.to_str().unwrap()];
        cmd.extend_from_slice(args);
        json(&self.run(&cmd))
    }

    /// The helper script outside any grant.
    pub fn outsider(&self, args: &[&str]) -> Value {
        json(
            &Command::new("python3")
                .arg(helper())
                .args(args)
                .output()
                .unwrap(),
        )
    }

    pub fn status(&self) -> Value {
        let o = self.env.run(&["status", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// This mount's entry in `status`.
    pub fn mount_status(&self) -> Value {
        self.status()["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountpoint"] == self.dir.to_str().unwrap())
            .cloned()
            .expect("mount listed in status")
    }

    pub fn daemon_pid(&self) -> u32 {
        self.mount_status()["pid"].as_u64().unwrap() as u32
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.dir)
    }
}

pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

pub fn json(o: &Output) -> Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; status {:?}, stderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
    });
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: {s}; stderr {}", String::from_utf8_lossy(&o.stderr)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value a read result says was read, or the errno name.
pub fn read_ok(v: &Value) -> Option<String> {
    v["ok"].as_str().map(str::to_string)
}

pub fn read_err(v: &Value) -> Option<String> {
    v["err"].as_str().map(str::to_string)
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self
            .env
            .cmd(&["umount", self.dir.to_str().unwrap()])
            .stderr(Stdio::null())
            .output();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
