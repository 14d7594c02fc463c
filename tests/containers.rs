//! Grants for processes `hushfs run` did not start — by pid and by cgroup —
//! and other uids through --allow-other, with containers built from the
//! same kernel pieces a runtime uses (new pid + mount namespaces, bind
//! mounts, cgroup v2 groups). Issue tests 1-4.

mod common;
use common::mount::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VALUE: &[u8] = b"container-secret";

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

fn cgroup_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f[sep + 1] == "cgroup2").then(|| PathBuf::from(f[4]))
        })
        .expect("cgroup v2 is mounted")
}

/// A fresh cgroup v2 group, removed on drop.
struct Cgroup {
    /// As /proc/PID/cgroup shows it.
    path: String,
    dir: PathBuf,
}

impl Cgroup {
    fn new() -> Cgroup {
        let name = format!("hushfs-test-{}-{}", std::process::id(), rand_suffix());
        let dir = cgroup_root().join(&name);
        std::fs::create_dir(&dir).unwrap();
        Cgroup {
            path: format!("/{name}"),
            dir,
        }
    }
    fn procs(&self) -> String {
        self.dir.join("cgroup.procs").to_str().unwrap().to_string()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    getrandom_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom_bytes(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(b)
        .unwrap();
}

fn grants(m: &Mount) -> Vec<serde_json::Value> {
    m.mount_status()["grants"].as_array().unwrap().clone()
}

#[test]
fn allow_pid_admits_that_tree_and_not_its_recycled_pid() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let go = m.env.path("go");
    let out = m.env.path("out");
    // A process tree hushfs did not start (a container's init, say).
    let script = format!(
        "while [ ! -e '{go}' ]; do sleep 0.02; done; sh -c \"cat '{f}'\" > '{out}' 2>&1; sleep 30",
        go = go.display(),
        out = out.display(),
        f = m.path("TOKEN")
    );
    let mut tree = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let pid = tree.id();
    let o = m
        .env
        .run(&["allow", m.dir.to_str().unwrap(), "--pid", &pid.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains(&format!("process {pid}")), "{said}");
    std::fs::write(&go, "").unwrap();
    assert!(wait_until(Duration::from_secs(10), || std::fs::read(&out)
        .is_ok_and(|b| !b.is_empty())));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        VALUE,
        "a descendant of the granted pid reads"
    );
    // A process outside is still refused.
    assert_eq!(
        read_err(&m.outsider(&["read", &m.path("TOKEN")])).as_deref(),
        Some("EACCES")
    );

    // The granted process exits: the grant ends with it...
    tree.kill().unwrap();
    tree.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || grants(&m).is_empty()),
        "grant still listed"
    );
    // ...and a new process given the same pid gets nothing.
    let v = m.outsider(&["reuse", &pid.to_string(), &m.path("TOKEN")]);
    assert!(v.get("nopid").is_none(), "could not recycle pid {pid}");
    assert_eq!(read_err(&v).as_deref(), Some("EACCES"), "{v}");
}

#[test]
fn allow_cgroup_admits_members_only_and_revoke_and_ttl_end_it() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let cg = Cgroup::new();
    let d = m.dir.to_str().unwrap();
    let o = m.env.run(&["allow", d, "--cgroup", &cg.path]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Root may write into the group: hushfs grants it but says so.
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"));
    let o = m.env.run(&["audit", "show", "--json"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"event\":\"grant\""),
        "the grant is audited"
    );
    let st = grants(&m);
    assert_eq!(st[0]["cgroup"], cg.path.as_str());
    assert!(st[0]["matches"].as_str().unwrap().contains("cgroup"));

    // A process that moves itself into the group reads; its children too.
    let inside = |f: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > '{}' && sh -c \"cat '{f}'\"", cg.procs()))
            .output()
            .unwrap();
        (o.status.success(), o.stdout)
    };
    assert_eq!(inside(&m.path("TOKEN")), (true, VALUE.to_vec()));
    // Nothing outside the group.
    assert_eq!(
        read_err(&m.outsider(&["read", &m.path("TOKEN")])).as_deref(),
        Some("EACCES")
    );

    // Revocation takes effect at once.
    let o = m.env.run(&["revoke", d, "--cgroup", &cg.path]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!inside(&m.path("TOKEN")).0, "revoked grant still admits");

    // A TTL ends the grant by itself.
    let o = m
        .env
        .run(&["allow", d, "--cgroup", &cg.path, "--ttl", "1s"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("for 1s"));
    assert_eq!(inside(&m.path("TOKEN")), (true, VALUE.to_vec()));
    assert!(grants(&m)[0]["expires"].as_u64().is_some());
    std::thread::sleep(Duration::from_millis(2100));
    assert!(!inside(&m.path("TOKEN")).0, "expired grant still admits");
    assert!(wait_until(Duration::from_secs(3), || grants(&m).is_empty()));

    // Bad requests say what is wrong.
    let o = m.env.run(&["allow", d, "--cgroup", "/no/such/group"]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("no cgroup /no/such/group"), "{msg}");
    let o = m.env.run(&["allow", d, "--cgroup", "relative/../x"]);
    assert_clean_failure(&o, 1, &[]);
    let o = m.env.run(&["revoke", d, "77"]);
    assert_clean_failure(&o, 1, &[]);
    let o = m.env.run(&["allow", d]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_user_writable_cgroup_is_refused() {
    // nobody owns a delegated group: a process of nobody's could join it.
    let cg = Cgroup::new();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&cg.dir, Some(nobody), None).unwrap();
    nix::unistd::chown(&cg.dir.join("cgroup.procs"), Some(nobody), None).unwrap();
    let e = Env::empty();
    let home = e.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(
        e.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    nix::unistd::chown(&home, Some(nobody), Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    let mnt = home.join("mnt");
    let pass = home.join("pass");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(&pass, "nobody passphrase\n").unwrap();
    for p in [&mnt, &pass] {
        nix::unistd::chown(p, Some(nobody), Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    }
    let as_nobody = |args: &[&str], input: &[u8]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_hushfs"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("HUSHFS_PASSPHRASE_FILE", &pass)
            .env("HUSHFS_KEYCHAIN", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        use std::io::Write;
        ch.stdin.take().unwrap().write_all(input).unwrap();
        ch.wait_with_output().unwrap()
    };
    let m = mnt.to_str().unwrap();
    assert!(as_nobody(&INIT_FAST, b"").status.success());
    assert!(as_nobody(&["set", "app/TOKEN"], b"v").status.success());
    // --allow-other needs user_allow_other in /etc/fuse.conf (absent here).
    assert!(
        !Path::new("/etc/fuse.conf").exists()
            || !std::fs::read_to_string("/etc/fuse.conf")
                .unwrap()
                .contains("\nuser_allow_other")
    );
    let o = as_nobody(&["mount", m, "-p", "app", "--allow-other"], b"");
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(
        msg.contains("user_allow_other") && msg.contains("/etc/fuse.conf"),
        "{msg}"
    );
    let o = as_nobody(&["mount", m, "-p", "app"], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_nobody(&["allow", m, "--cgroup", &cg.path], b"");
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(
        msg.contains("writable by uid 65534") && msg.contains("--allow-writable-cgroup"),
        "{msg}"
    );
    let o = as_nobody(
        &["allow", m, "--cgroup", &cg.path, "--allow-writable-cgroup"],
        b"",
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("any of your processes can join it"));
    assert!(as_nobody(&["umount", m], b"").status.success());
}

/// Runs `script` as a container-like process: it joins `cg`, enters new
/// pid + mount namespaces, bind-mounts the mount at /run/secrets inside,
/// drops to uid 65534 and cats the secret.
fn container_read(m: &Mount, cg: &Cgroup) -> std::process::Output {
    let script = format!(
        "echo $$ > '{procs}' && exec unshare --pid --mount --fork --mount-proc --propagation private sh -c \
         'mount -t tmpfs tmpfs /run && mkdir /run/secrets && mount --bind \"{dir}\" /run/secrets && \
          exec setpriv --reuid=65534 --regid=65534 --clear-groups cat /run/secrets/TOKEN'",
        procs = cg.procs(),
        dir = m.dir.display()
    );
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

#[test]
fn allow_other_admits_another_uid_only_through_its_grant() {
    let m = Mount::with(Env::new(), &[("TOKEN", VALUE)], &["--allow-other"]);
    assert_eq!(m.mount_status()["allow_other"], true);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    // Not granted: nobody gets EACCES for values and for the listing.
    let o = as_nobody(&["cat", &m.path("TOKEN")]);
    assert!(!o.status.success() && o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    assert!(!as_nobody(&["ls", m.dir.to_str().unwrap()]).status.success());

    // A container-like process running as nobody, granted by its cgroup,
    // reads through a bind mount.
    let cg = Cgroup::new();
    let o = m
        .env
        .run(&["allow", m.dir.to_str().unwrap(), "--cgroup", &cg.path]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = container_read(&m, &cg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, VALUE);
    // nobody outside that group: still refused.
    assert!(!as_nobody(&["cat", &m.path("TOKEN")]).status.success());
    // The owner's own `run` grant does not extend to another uid.
    let o = m.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "cat",
        &m.path("TOKEN"),
    ]);
    assert!(!o.status.success() && o.stdout.is_empty());
}

#[test]
fn without_allow_other_a_granted_container_of_another_uid_is_refused() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let cg = Cgroup::new();
    assert!(
        m.env
            .run(&["allow", m.dir.to_str().unwrap(), "--cgroup", &cg.path])
            .status
            .success()
    );
    let o = container_read(&m, &cg);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
}

#[test]
fn container_script_grants_the_container_for_its_lifetime() {
    let m = Mount::with(
        Env::new(),
        &[("DB_PASSWORD", b"pg-pass-123")],
        &["--allow-other"],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hushfs")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new(root.join("mountscripts/hushfs-container"))
        .arg("run")
        .arg(&m.dir)
        .args([
            "--user",
            "65534",
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/DB_PASSWORD",
            "postgres:16",
        ])
        .args([
            "sh",
            "-c",
            "id -u; cat \"$POSTGRES_PASSWORD_FILE\"; echo; ls /run/secrets",
        ])
        .env("PATH", path)
        .env("DOCKER", root.join("tests/helpers/fake-docker"))
        .env("HUSHFS_VAULT", &m.env.vault)
        .env("HUSHFS_KEYCHAIN", "off")
        .env("XDG_RUNTIME_DIR", m.env.dir.path().join("run"))
        .env("XDG_STATE_HOME", m.env.dir.path().join("state"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("65534"),
        "the container ran as another uid"
    );
    assert_eq!(lines.next(), Some("pg-pass-123"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("grant"),
        "the script says what it granted"
    );
    // After the container: no grant left, no cgroup left, nothing readable.
    assert!(grants(&m).is_empty(), "{:?}", grants(&m));
    assert_eq!(
        lines.next(),
        Some("DB_PASSWORD"),
        "the mount's names inside the container"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cgroup_root().join("hushfs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "parent cgroups left behind: {leftovers:?}"
    );
    assert_eq!(
        read_err(&m.outsider(&["read", &m.path("DB_PASSWORD")])).as_deref(),
        Some("EACCES")
    );
}

#[test]
fn container_script_compose_mode_with_the_example_file() {
    let m = Mount::with(
        Env::new(),
        &[("DB_PASSWORD", b"pg-from-compose")],
        &["--allow-other"],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hushfs")).parent().unwrap();
    let out = Command::new(root.join("mountscripts/hushfs-container"))
        .arg("compose")
        .arg(&m.dir)
        .arg("-f")
        .arg(root.join("mountscripts/compose/docker-compose.yml"))
        .args([
            "run",
            "--rm",
            "db",
            "sh",
            "-c",
            "cat \"$POSTGRES_PASSWORD_FILE\"",
        ])
        .env(
            "PATH",
            format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("DOCKER", root.join("tests/helpers/fake-docker"))
        .env("HUSHFS_VAULT", &m.env.vault)
        .env("HUSHFS_KEYCHAIN", "off")
        .env("XDG_RUNTIME_DIR", m.env.dir.path().join("run"))
        .env("XDG_STATE_HOME", m.env.dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"pg-from-compose");
    assert!(
        grants(&m).is_empty(),
        "the grant ends with the compose command"
    );
}

/// `--ttl` is at most a year; a longer one is a usage error, and a grant
/// that asks the daemon for an absurd TTL itself breaks neither the daemon
/// nor `status`.
#[test]
fn allow_refuses_a_ttl_over_a_year() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let d = m.dir.to_str().unwrap();
    let o = m.env.run(&["allow", d, "--pid", &pid, "--ttl", "10000y"]);
    let msg = assert_clean_failure(&o, 2, &[VALUE]);
    assert!(msg.contains("--ttl") && msg.contains("one year"), "{msg}");
    assert!(grants(&m).is_empty());
    let o = m.env.run(&["allow", d, "--pid", &pid, "--ttl", "365d"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Past the CLI, straight to the control socket: u64::MAX seconds.
    let sock = std::fs::read_dir(m.env.path("run/hushfs/mounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the mount's control socket");
    let r = hushfs::daemon::control::call(
        &sock,
        &hushfs::daemon::protocol::Request::GrantPid {
            pid: sleeper.id(),
            ttl_secs: Some(u64::MAX),
        },
        None,
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(grants(&m).len(), 2);
    let o = m.env.run(&["status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("expires"),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || grants(&m).is_empty()),
        "the grants end with their process"
    );
}

#[test]
fn revoke_by_pid_and_all() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let d = m.dir.to_str().unwrap();
    let mut a = Command::new("sleep").arg("30").spawn().unwrap();
    let mut b = Command::new("sleep").arg("30").spawn().unwrap();
    let mut c = Command::new("sleep").arg("30").spawn().unwrap();
    for p in [&a, &b, &c] {
        m.env.ok(&["allow", d, "--pid", &p.id().to_string()]);
    }
    assert_eq!(grants(&m).len(), 3);
    // --pid removes that process's grant only.
    m.env.ok(&["revoke", d, "--pid", &a.id().to_string()]);
    let left: Vec<u64> = grants(&m)
        .iter()
        .map(|g| g["pid"].as_u64().unwrap())
        .collect();
    let mut want = vec![u64::from(b.id()), u64::from(c.id())];
    want.sort();
    let mut left = left;
    left.sort();
    assert_eq!(left, want);
    // --all removes the rest.
    m.env.ok(&["revoke", d, "--all"]);
    assert!(grants(&m).is_empty());
    for p in [&mut a, &mut b, &mut c] {
        let _ = p.kill();
        let _ = p.wait();
    }
}
