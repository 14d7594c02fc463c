//! The files in mountscripts/ work: the systemd user unit verifies and its
//! commands mount and unmount; the direnv helper mounts on entering a
//! directory and exports the path, never values (issue test 5).

mod common;
use common::mount::is_mounted;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hushfs"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn systemd_unit_verifies_cleanly() {
    let e = Env::empty();
    let home = e.path("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hushfs"), home.join(".cargo/bin/hushfs"))
        .unwrap();
    let units = e.path("units");
    std::fs::create_dir(&units).unwrap();
    let unit = units.join("hushfs@myapp.service");
    std::fs::copy(root().join("mountscripts/hushfs@.service"), &unit).unwrap();
    std::fs::create_dir(e.path("run")).unwrap();
    verify_unit(&unit, &home, &e.path("run"), "hushfs@");
}

/// `systemd-analyze verify --user UNIT` passes with no warning that names
/// the unit (unknown keys and bad values are only warnings: demand none).
fn verify_unit(unit: &Path, home: &Path, runtime: &Path, name: &str) {
    let o = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(unit)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .output()
        .expect("systemd-analyze (package systemd) is installed by .ci/install-deps");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.lines().any(|l| l.contains(name)), "{err}");
}

/// The agent's unit verifies, and the agent it starts is the one `unlock`
/// hands the key to: commands then run without a passphrase.
#[test]
fn agent_unit_verifies_and_its_agent_serves_unlock() {
    let mut e = Env::new();
    e.keychain = true;
    let home = e.path("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hushfs"), home.join(".cargo/bin/hushfs"))
        .unwrap();
    let unit = root().join("mountscripts/hushfs-agent.service");
    std::fs::create_dir_all(e.path("run")).unwrap();
    verify_unit(&unit, &home, &e.path("run"), "hushfs-agent");
    // ExecStart=, as systemd would run it.
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("%h", home.to_str().unwrap());
    let mut argv = exec.split_whitespace();
    // systemd starts a unit with a clean environment (cargo's test runner
    // sets LD_LIBRARY_PATH, which the agent refuses to start with).
    let mut agent = Command::new(argv.next().unwrap())
        .args(argv)
        .env_clear()
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", e.path("run"))
        .env("XDG_STATE_HOME", e.path("state"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sock = e.path("run/hushfs/agent.sock");
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "the agent did not listen"
    );
    e.ok(&["unlock"]);
    e.set("app/K", b"from-the-agent");
    // Without the passphrase file: only the agent can open the vault now.
    let o = e
        .cmd(&["ls"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("app/K"));
    // The agent the unit started is the one that holds it: stop it and the
    // vault is locked again.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let o = e
        .cmd(&["ls"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

/// The unit's Exec*= command lines with %h, %t and %i expanded.
fn unit_commands(home: &Path, runtime: &Path, instance: &str) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("mountscripts/hushfs@.service")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("Exec"))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            let v = v
                .trim_start_matches('-')
                .replace("%h", home.to_str().unwrap())
                .replace("%t", runtime.to_str().unwrap())
                .replace("%i", instance);
            (
                k.to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

#[test]
fn systemd_unit_commands_mount_and_stop_cleanly() {
    let e = Env::new();
    e.set("myapp/TOKEN", b"unit-secret");
    let home = e.path("home");
    std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hushfs"), home.join(".cargo/bin/hushfs"))
        .unwrap();
    let runtime = e.path("run");
    let cmds = unit_commands(&home, &runtime, "myapp");
    let get = |k: &str| {
        cmds.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let run = |argv: &[String]| {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env("HUSHFS_VAULT", &e.vault)
            .env("HUSHFS_PASSPHRASE_FILE", &e.pass_file)
            .env("HUSHFS_KEYCHAIN", "off")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_STATE_HOME", e.path("state"));
        c
    };
    assert!(run(&get("ExecStartPre")).status().unwrap().success());
    // ExecStart stays in the foreground, as Type=exec expects.
    // Killed on any exit of the test, so a failure leaves no daemon behind.
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut daemon = Daemon(
        run(&get("ExecStart"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mnt = runtime.join("hushfs/mnt/myapp");
    // Ready once `hushfs status` lists it (the kernel mount comes first).
    let listed = || {
        let o = e
            .cmd(&["status", "--json"])
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(mnt.to_str().unwrap())
    };
    assert!(wait_until(Duration::from_secs(10), listed), "not mounted");
    assert!(is_mounted(&mnt));
    let o = e
        .cmd(&[
            "run",
            "--no-redact",
            "--mount",
            mnt.to_str().unwrap(),
            "--",
            "cat",
            mnt.join("TOKEN").to_str().unwrap(),
        ])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert_eq!(
        o.stdout,
        b"unit-secret",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // systemctl stop sends SIGTERM (KillSignal=): a clean unmount.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.0.wait().unwrap().success());
    assert!(!is_mounted(&mnt));
    // ExecStopPost has nothing left to do, and says so without failing the unit (its `-` prefix).
    let _ = run(&get("ExecStopPost")).output().unwrap();
}

#[test]
fn direnv_helper_mounts_on_entry_and_exports_only_the_path() {
    let e = Env::new();
    e.set("app/TOKEN", b"direnv-secret-value");
    let repo = e.path("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join(".envrc"), "use hushfs app\n").unwrap();
    let config = e.path("config/direnv");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("direnvrc"),
        format!(
            "source '{}'\n",
            root().join("mountscripts/hushfs-direnv.sh").display()
        ),
    )
    .unwrap();
    let direnv = |args: &[&str]| {
        Command::new("direnv")
            .args(args)
            .current_dir(&repo)
            .env("HOME", e.path("home"))
            .env("XDG_CONFIG_HOME", e.path("config"))
            .env("XDG_DATA_HOME", e.path("data-direnv"))
            .env(
                "PATH",
                format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap()),
            )
            .env("HUSHFS_VAULT", &e.vault)
            .env("HUSHFS_PASSPHRASE_FILE", &e.pass_file)
            .env("HUSHFS_KEYCHAIN", "off")
            .env("XDG_RUNTIME_DIR", e.path("run"))
            .env("XDG_STATE_HOME", e.path("state"))
            .output()
            .expect("direnv is installed by .ci/install-deps")
    };
    let o = direnv(&["allow", repo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = direnv(&[
        "exec",
        repo.to_str().unwrap(),
        "sh",
        "-c",
        "printf '%s\\n' \"$HUSHFS_DIR\"; env",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let dir = PathBuf::from(out.lines().next().unwrap());
    assert_eq!(dir, repo.join(".hushfs"));
    assert!(is_mounted(&dir), "the helper mounted the project");
    assert!(
        !out.contains("direnv-secret-value"),
        "a value reached the environment"
    );
    // Entering again reuses the live mount.
    let o = direnv(&["exec", repo.to_str().unwrap(), "true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = e.cmd(&["umount", dir.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success());
}

#[test]
fn completions_and_man_pages_install_and_render() {
    let e = Env::empty();
    let share = e.path("share");
    let o = Command::new(root().join("mountscripts/install-extras"))
        .env("HUSHFS", env!("CARGO_BIN_EXE_hushfs"))
        .env("XDG_DATA_HOME", &share)
        .env_remove("PREFIX")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bash = std::fs::read_to_string(share.join("bash-completion/completions/hushfs")).unwrap();
    for sub in ["mount", "umount", "run", "allow", "revoke", "audit"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(share.join("zsh/site-functions/_hushfs").is_file());
    assert!(
        share
            .join("fish/vendor_completions.d/hushfs.fish")
            .is_file()
    );
    // bash accepts the script.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p hushfs",
            share.join("bash-completion/completions/hushfs").display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // man renders the pages, the per-command ones included.
    for page in ["hushfs.1", "hushfs-run.1", "hushfs-allow.1"] {
        let o = Command::new("man")
            .arg("-l")
            .arg(share.join("man/man1").join(page))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
    let allow = std::fs::read_to_string(share.join("man/man1/hushfs-allow.1")).unwrap();
    assert!(allow.contains("cgroup"));
}
