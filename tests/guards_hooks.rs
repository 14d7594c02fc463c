//! Commit and push hooks in real git repositories, and `hushfs scan` as a
//! user runs it: a secret value (raw or encoded) blocks the commit or push,
//! the message names the secret but never shows the value, clean changes
//! pass, an existing hook keeps running.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const VALUE: &[u8] = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";

fn env() -> Env {
    let e = Env::new();
    e.set("app/STRIPE_KEY", VALUE);
    e.set("app/PIN", b"1234");
    e
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(v)
}

struct Repo<'a> {
    env: &'a Env,
    dir: PathBuf,
}

impl<'a> Repo<'a> {
    fn new(env: &'a Env, name: &str) -> Repo<'a> {
        let dir = env.path(name);
        let r = Repo { env, dir };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.ok(&["init", "-q", "-b", "main"]);
        r.ok(&["config", "user.email", "dev@example.com"]);
        r.ok(&["config", "user.name", "Dev"]);
        r
    }

    /// A command in the repository with the test's hushfs environment and
    /// no user or system git configuration.
    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new(prog);
        c.args(args)
            .current_dir(&self.dir)
            .env("HUSHFS_VAULT", &self.env.vault)
            .env("HUSHFS_PASSPHRASE_FILE", &self.env.pass_file)
            .env("HUSHFS_KEYCHAIN", "off")
            .env("XDG_STATE_HOME", self.env.path("state"))
            .env("XDG_RUNTIME_DIR", self.env.path("run"))
            .env("HOME", self.env.path("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null());
        c
    }

    fn git(&self, args: &[&str]) -> Output {
        self.cmd("git", args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.git(args);
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn hushfs(&self, args: &[&str]) -> Output {
        self.cmd(env!("CARGO_BIN_EXE_hushfs"), args)
            .output()
            .unwrap()
    }

    fn write(&self, name: &str, content: &[u8]) {
        let p = self.dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn commit(&self, name: &str, content: &[u8], msg: &str) -> Output {
        self.write(name, content);
        self.ok(&["add", name]);
        self.git(&["commit", "-q", "-m", msg])
    }

    fn commits(&self) -> usize {
        let o = self.git(&["rev-list", "--count", "HEAD"]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_value(o: &Output) {
    assert!(
        !contains(&o.stdout, VALUE) && !contains(&o.stderr, VALUE),
        "the value leaked into the output"
    );
}

fn hook_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn commit_with_a_secret_is_blocked_clean_commit_passes() {
    let e = env();
    let r = Repo::new(&e, "repo");
    let o = r.hushfs(&["hook", "install", "--pre-commit"]);
    assert!(o.status.success(), "{}", text(&o));

    let mut content = b"# config\nname = app\nkey = ".to_vec();
    content.extend_from_slice(VALUE);
    content.push(b'\n');
    let o = r.commit("config.toml", &content, "add config");
    assert!(!o.status.success(), "the commit must be refused");
    let t = text(&o);
    assert!(t.contains("config.toml:3: app/STRIPE_KEY (raw)"), "{t}");
    assert!(t.contains("commit blocked"), "{t}");
    assert!(
        t.contains("app/PIN"),
        "short values are listed as not scanned: {t}"
    );
    assert_no_value(&o);
    assert_eq!(r.commits(), 0);

    // Encoded, in another file: still found.
    r.ok(&["reset", "-q"]);
    let o = r.commit(
        "deploy.yaml",
        format!("a: 1\nsecret: {}\n", b64(VALUE)).as_bytes(),
        "b64",
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("deploy.yaml:2: app/STRIPE_KEY (base64)"),
        "{}",
        text(&o)
    );
    assert_no_value(&o);

    r.ok(&["reset", "-q"]);
    std::fs::remove_file(r.dir.join("config.toml")).unwrap();
    std::fs::remove_file(r.dir.join("deploy.yaml")).unwrap();
    let o = r.commit("README", b"nothing secret here\n", "clean");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(r.commits(), 1);
}

#[test]
fn existing_hook_still_runs_and_is_restored() {
    let e = env();
    let r = Repo::new(&e, "repo");
    let hooks = r.dir.join(".git/hooks");
    let marker = e.path("old-hook-ran");
    let old = format!("#!/bin/sh\necho ran >> '{}'\n", marker.display());
    std::fs::write(hooks.join("pre-commit"), &old).unwrap();
    std::fs::set_permissions(
        hooks.join("pre-commit"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let o = r.hushfs(&["hook", "install"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(hook_file(&hooks, "pre-commit").contains("# hushfs hook: pre-commit"));
    assert!(hooks.join("pre-push").exists());

    assert!(r.commit("a.txt", b"hello\n", "clean").status.success());
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ran\n",
        "the old hook ran"
    );

    // A secret stops the commit before the old hook runs.
    let mut v = b"x=".to_vec();
    v.extend_from_slice(VALUE);
    assert!(!r.commit("b.txt", &v, "leak").status.success());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");

    let o = r.hushfs(&["hook", "uninstall"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        hook_file(&hooks, "pre-commit"),
        old,
        "the old hook is back, unchanged"
    );
    assert!(!hooks.join("pre-push").exists());
    assert!(!hooks.join("pre-commit.hushfs-chained").exists());
    // Nothing of ours left: uninstalling again says so.
    assert_eq!(r.hushfs(&["hook", "uninstall"]).status.code(), Some(1));
}

#[test]
fn core_hooks_path_is_respected() {
    let e = env();
    let r = Repo::new(&e, "repo");
    r.ok(&["config", "core.hooksPath", ".githooks"]);
    let o = r.hushfs(&["hook", "install", "--pre-commit"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(r.dir.join(".githooks/pre-commit").exists());
    assert!(!r.dir.join(".git/hooks/pre-commit").exists());
    let mut v = b"token=".to_vec();
    v.extend_from_slice(VALUE);
    let o = r.commit("x.env", &v, "leak");
    assert!(!o.status.success());
    assert!(text(&o).contains("x.env:1: app/STRIPE_KEY"), "{}", text(&o));
}

#[test]
fn pre_push_scans_every_pushed_commit() {
    let e = env();
    let remote = e.path("remote.git");
    let o = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&remote)
        .output()
        .unwrap();
    assert!(o.status.success());
    let r = Repo::new(&e, "repo");
    r.ok(&["remote", "add", "origin", remote.to_str().unwrap()]);
    assert!(r.commit("a.txt", b"one\n", "one").status.success());
    let o = r.hushfs(&["hook", "install", "--pre-push"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = r.git(&["push", "-q", "origin", "main"]);
    assert!(
        o.status.success(),
        "a clean new branch pushes: {}",
        text(&o)
    );

    // Added in one commit, removed in the next: still in the history sent.
    let hex: String = VALUE.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        r.commit("b.txt", format!("k={hex}\n").as_bytes(), "leak")
            .status
            .success()
    );
    let leak = r.ok(&["rev-parse", "HEAD"]).trim().to_string();
    assert!(r.commit("b.txt", b"k=redacted\n", "fix").status.success());
    let o = r.git(&["push", "-q", "origin", "main"]);
    assert!(!o.status.success(), "the push must be refused");
    let t = text(&o);
    assert!(
        t.contains(&format!("{}:b.txt:1: app/STRIPE_KEY (hex)", &leak[..12])),
        "{t}"
    );
    assert!(t.contains("push blocked"), "{t}");
    assert_no_value(&o);
    assert!(
        !contains(&o.stderr, hex.as_bytes()),
        "no encoded value either"
    );

    // The same range by hand.
    let o = r.hushfs(&["scan", "--range", "origin/main..HEAD"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("b.txt:1: app/STRIPE_KEY (hex)"));
    let o = r.hushfs(&["scan", "--range", "HEAD..HEAD"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn locked_vault_fails_the_hook_unless_allowed() {
    let e = env();
    let r = Repo::new(&e, "repo");
    assert!(
        r.hushfs(&["hook", "install", "--pre-commit"])
            .status
            .success()
    );
    r.write("a.txt", b"hello\n");
    r.ok(&["add", "a.txt"]);
    let o = r
        .cmd("git", &["commit", "-q", "-m", "x"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the vault is locked and scanning needs the values"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("hushfs unlock"));

    assert!(
        r.hushfs(&["hook", "install", "--pre-commit", "--allow-locked"])
            .status
            .success()
    );
    let o = r
        .cmd("git", &["commit", "-q", "-m", "x"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NOT scanned"), "{}", text(&o));
}

#[test]
fn scan_files_reports_each_encoding_and_exit_codes() {
    let e = env();
    let d = e.path("tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    // A password with characters URL encoding changes.
    let password: &[u8] = b"p@ss w0rd/with+symbols";
    e.set("app/DB_PASSWORD", password);
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let url = percent_encoding::percent_encode(password, QUERY).to_string();
    assert!(url.contains("%40") && url.contains("%2F"));
    let upper: String = VALUE.iter().map(|b| format!("{b:02X}")).collect();
    let mut blob = vec![1u8, 2];
    blob.extend_from_slice(VALUE);
    blob.push(3);
    use base64::Engine;
    let urlsafe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&blob);
    std::fs::write(
        d.join("sub/app.log"),
        format!("start\nGET /cb?code={url}&x=1\nid={upper}\n\nembedded {urlsafe}\n"),
    )
    .unwrap();
    std::fs::write(d.join("clean.txt"), "nothing\n").unwrap();
    let o = e.run(&["scan", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let f = d.join("sub/app.log").display().to_string();
    for want in [
        format!("{f}:2: app/DB_PASSWORD (url-encoded)"),
        format!("{f}:3: app/STRIPE_KEY (HEX)"),
        format!("{f}:5: app/STRIPE_KEY (base64"),
    ] {
        assert!(out.contains(&want), "{want} missing in {out}");
    }
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_no_value(&o);
    assert!(!contains(&o.stdout, password) && !contains(&o.stderr, password));

    let o = e.run(&["scan", d.join("clean.txt").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // stdin
    let mut input = b"line\nv=".to_vec();
    input.extend_from_slice(VALUE);
    let o = e.run_stdin(&["scan", "-", "--project", "app"], &input);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("<stdin>:2: app/STRIPE_KEY (raw)"));
    // Nothing to scan: a usage error that says what to pass.
    let o = e.run(&["scan"]);
    let msg = assert_clean_failure(&o, 2, &[VALUE]);
    assert!(msg.contains("--staged"), "{msg}");
}

/// The pre-commit framework's hooks (.pre-commit-hooks.yaml), run the way
/// pre-commit runs them: `entry` through the shell, with hushfs on PATH and
/// the PRE_COMMIT_* variables it sets — including a first push, where it
/// leaves PRE_COMMIT_FROM_REF unset.
#[test]
fn pre_commit_framework_hooks_block_a_secret_also_on_a_first_push() {
    let e = env();
    let r = Repo::new(&e, "fw");
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml");
    let entry = |id: &str| -> String {
        let o = Command::new("python3")
            .args([
                "-c",
                "import sys, yaml; print([h['entry'] for h in yaml.safe_load(open(sys.argv[1])) if h['id'] == sys.argv[2]][0])",
            ])
            .arg(&yaml)
            .arg(id)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hushfs")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |id: &str, vars: &[(&str, &str)]| {
        let mut c = r.cmd("sh", &["-c", &entry(id)]);
        c.env("PATH", &path)
            .env_remove("PRE_COMMIT_FROM_REF")
            .env_remove("PRE_COMMIT_TO_REF");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert_eq!(
        r.commit("README", b"hello\n", "first").status.code(),
        Some(0)
    );
    let first = r.ok(&["rev-parse", "HEAD"]).trim().to_string();
    // Staged: a value in the index blocks the commit.
    r.write("config.py", format!("KEY = '{}'\n", b64(VALUE)).as_bytes());
    r.ok(&["add", "config.py"]);
    let o = run("hushfs-staged", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("STRIPE_KEY"));
    assert_no_value(&o);
    r.ok(&["commit", "-q", "--no-verify", "-m", "leak"]);
    let head = r.ok(&["rev-parse", "HEAD"]).trim().to_string();
    // A first push: no FROM ref; every commit up to TO is scanned.
    let o = run("hushfs-push", &[("PRE_COMMIT_TO_REF", &head)]);
    assert_eq!(o.status.code(), Some(1), "first push: {}", text(&o));
    assert!(text(&o).contains("STRIPE_KEY"));
    assert_no_value(&o);
    // A later push of the same commit from the first one: caught too.
    let o = run(
        "hushfs-push",
        &[
            ("PRE_COMMIT_FROM_REF", &first),
            ("PRE_COMMIT_TO_REF", &head),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Only the clean first commit pushed: passes.
    let o = run("hushfs-push", &[("PRE_COMMIT_TO_REF", &first)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn project_limits_which_values_scan_looks_for() {
    let e = env();
    e.set("other/API_KEY", b"other-project-value-77");
    let f = e.path("notes.txt");
    std::fs::write(&f, "key: other-project-value-77\n").unwrap();
    let f = f.to_str().unwrap();
    // All projects: found, named with its project.
    let o = e.run(&["scan", f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("API_KEY"), "{}", text(&o));
    // Only app's values: clean.
    let o = e.run(&["scan", "--project", "app", f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Only other's: found.
    let o = e.run(&["scan", "-p", "other", f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The hook installed with -p scans that project only.
    let r = Repo::new(&e, "scoped");
    let h = r.hushfs(&["hook", "install", "-p", "app"]);
    assert!(h.status.success(), "{}", text(&h));
    assert_eq!(
        r.commit(
            "notes.txt",
            b"key: other-project-value-77\n",
            "other's value"
        )
        .status
        .code(),
        Some(0),
        "another project's value passes an app-only hook"
    );
    let o = r.commit("leak.txt", VALUE, "app's value");
    assert_ne!(o.status.code(), Some(0), "app's value is still caught");
    assert!(text(&o).contains("STRIPE_KEY"));
}
