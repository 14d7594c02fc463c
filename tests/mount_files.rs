//! The files behave like real, read-only files (issue tests 8, 9, 12) and
//! follow the vault live; `lock` empties them.

mod common;
use common::mount::*;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn true_sizes_repeat_reads_pread_and_32_readers() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let m = Mount::new(&[("SMALL", b"0123456789"), ("BIG", &big), ("EMPTY", b"")]);
    for (name, value) in [
        ("SMALL", &b"0123456789"[..]),
        ("BIG", &big[..]),
        ("EMPTY", b""),
    ] {
        let v = m.granted(&["io", &m.path(name)]);
        assert_eq!(v["size"], value.len(), "{name}: stat size");
        assert_eq!(v["regular"], true, "{name} is a regular file, not a FIFO");
        assert_eq!(v["a"], hex(value), "{name}: first read");
        assert_eq!(v["b"], v["a"], "{name}: second read gives the same bytes");
        // A private mapping would fill the page cache, where an outsider
        // holding a passed fd could read it: its faults are refused for
        // everyone (docs/SEMANTICS.md, Caching).
        if value.is_empty() {
            assert_eq!(v["mmap_private"]["ok"], "", "{name}: nothing to map");
        } else {
            assert_eq!(
                v["mmap_private"]["signal"], "SIGBUS",
                "{name}: a private mapping of a value faults, even when authorized"
            );
        }
        assert_eq!(v["end"], value.len(), "{name}: SEEK_END");
        for (off, got) in v["preads"].as_object().unwrap() {
            let off: usize = off.parse().unwrap();
            let want = &value[off.min(value.len())..(off + 5).min(value.len())];
            assert_eq!(got, &hex(want), "{name}: pread at {off}");
        }
        assert_eq!(v["mode"], "0o100400", "{name}: 0400 regular file");
        assert_eq!(v["uid"], unsafe_uid(), "{name}: owned by the mount owner");
    }
    // 32 concurrent reader processes, identical bytes.
    let all = m.granted(&["concurrent", &m.path("BIG"), "32"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 32);
    for r in all {
        assert_eq!(read_ok(r).as_deref(), Some(hex(&big).as_str()));
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

#[test]
fn every_write_fails_and_changes_nothing() {
    let m = Mount::new(&[("TOKEN", b"keep-me")]);
    let before = std::fs::metadata(m.file("TOKEN")).unwrap();
    // Even an authorized process cannot write.
    let r = m.granted(&["writes", m.dir.to_str().unwrap(), "TOKEN"]);
    // docs/SEMANTICS.md promises EROFS for every one of them; removing
    // the mount's own root is EBUSY (the kernel: it is a mount point).
    assert!(r.as_object().unwrap().len() >= 14, "{r}");
    for (op, errno) in r.as_object().unwrap() {
        let want = if op == "rmdir" { "EBUSY" } else { "EROFS" };
        assert_eq!(errno, want, "{op}: {r}");
    }
    let o = m.run(&["cat", &m.path("TOKEN")]);
    assert_eq!(o.stdout, b"keep-me");
    let after = std::fs::metadata(m.file("TOKEN")).unwrap();
    assert_eq!(before.len(), after.len());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(before.mode(), after.mode());
    let names: Vec<_> = std::fs::read_dir(&m.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec![".env", "TOKEN"]);
    assert_eq!(
        m.env.value(PROJECT, "TOKEN").unwrap(),
        b"keep-me",
        "the vault is untouched"
    );
}

/// Polls until `f` holds, for at most `limit`; returns the time it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() <= limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn set_while_mounted_shows_up_within_a_second() {
    let m = Mount::new(&[("TOKEN", b"old")]);
    // A reader that opened before the change keeps its snapshot.
    let ready = m.env.path("ready");
    let go = m.env.path("go");
    let reader = {
        let (p, r, g) = (m.path("TOKEN"), ready.clone(), go.clone());
        let h = helper();
        let mut c = m.env.cmd(&[
            "run",
            "--mount",
            m.dir.to_str().unwrap(),
            "--no-redact",
            "--",
            "python3",
            h.to_str().unwrap(),
            "snapshot",
            &p,
            r.to_str().unwrap(),
            g.to_str().unwrap(),
        ]);
        c.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    assert!(within(Duration::from_secs(10), || ready.exists()).is_some());

    m.env.set("app/TOKEN", b"a-new-longer-value");
    let took = within(Duration::from_secs(1), || {
        std::fs::metadata(m.file("TOKEN"))
            .map(|x| x.len())
            .unwrap_or(0)
            == 18
            && m.run(&["cat", &m.path("TOKEN")]).stdout == b"a-new-longer-value"
    });
    assert!(took.is_some(), "new value and size not visible within 1 s");

    // New names appear and removed ones vanish.
    m.env.set("app/ADDED", b"x");
    assert!(within(Duration::from_secs(1), || m.file("ADDED").exists()).is_some());
    m.env.ok(&["rm", "app/ADDED"]);
    assert!(within(Duration::from_secs(1), || !m.file("ADDED").exists()).is_some());
    // `import` too.
    let f = m.env.path("more.env");
    std::fs::write(&f, "IMPORTED=from-a-file\n").unwrap();
    m.env.ok(&["import", PROJECT, f.to_str().unwrap()]);
    assert!(
        within(Duration::from_secs(1), || m
            .run(&["cat", &m.path("IMPORTED")])
            .stdout
            == b"from-a-file")
        .is_some(),
        "an imported secret did not show up within 1 s"
    );

    std::fs::write(&go, "").unwrap();
    let o = reader.wait_with_output().unwrap();
    assert_eq!(
        read_ok(&json(&o)).as_deref(),
        Some(hex(b"old").as_str()),
        "the early reader kept its snapshot"
    );
}

#[test]
fn lock_empties_the_mount_until_unlock() {
    let mut env = Env::new();
    env.keychain = true;
    let m = Mount::with(env, &[("TOKEN", b"v1")], &[]);
    assert_eq!(m.run(&["cat", &m.path("TOKEN")]).stdout, b"v1");
    m.env.ok(&["unlock", "--ttl", "10m"]);
    let out = m.env.ok(&["lock"]);
    assert!(out.contains("1 mount(s)"), "{out}");
    let o = m.run(&["cat", &m.path("TOKEN")]);
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "read after lock"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    assert_eq!(
        std::fs::metadata(m.file("TOKEN")).unwrap().len(),
        2,
        "names and sizes stay"
    );
    assert_eq!(m.mount_status()["locked"], true);
    // unlock brings the values back (the daemon takes the key from the keychain).
    m.env.ok(&["unlock", "--ttl", "10m"]);
    assert_eq!(m.run(&["cat", &m.path("TOKEN")]).stdout, b"v1");
}

#[test]
fn status_lists_mounts_and_grants() {
    let m = Mount::new(&[("TOKEN", b"v")]);
    let st = m.mount_status();
    assert_eq!(st["project"], PROJECT);
    assert_eq!(st["files"], 2, "TOKEN and .env");
    assert_eq!(st["grants"].as_array().unwrap().len(), 0);
    let o = m.run(&[
        "sh",
        "-c",
        "\"$0\" status --json",
        env!("CARGO_BIN_EXE_hushfs"),
    ]);
    let inner: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = &inner["mounts"][0]["grants"][0];
    assert!(
        g["label"].as_str().unwrap().starts_with("run: sh -c"),
        "{g}"
    );
    assert!(
        g["matches"].as_str().unwrap().contains("descendants"),
        "{g}"
    );
    // The grant ended with the run.
    assert_eq!(m.mount_status()["grants"].as_array().unwrap().len(), 0);
    let text = m.env.ok(&["status"]);
    assert!(
        text.contains(&format!("mount:    {}", m.dir.display())),
        "{text}"
    );
}

#[test]
fn env_file_and_configured_files_load_back_exactly() {
    let e = Env::new();
    let repo = e.path("repo");
    std::fs::create_dir_all(repo.join("deploy")).unwrap();
    let cfg = repo.join("hushfs.toml");
    std::fs::write(
        &cfg,
        r#"
project = "app"
[[file]]
path = "config/app.json"
format = "json"
[[file]]
path = "ssh/id_ed25519"
secret = "DEPLOY_KEY"
mode = "0600"
[[file]]
path = "config/database.yml"
template = "deploy/database.yml.tmpl"
"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("deploy/database.yml.tmpl"),
        "password: \"{{ DB_PASSWORD | json }}\"\nurl: {{ DB_URL }}\n",
    )
    .unwrap();
    let password: &[u8] = b"p\"a's$HOME\\x `id` \n2nd line";
    let multi: &[u8] = b"it's $HOME\n\"quoted\" \\ end";
    let key: &[u8] =
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n";
    let m = Mount::with(
        e,
        &[
            ("DB_PASSWORD", password),
            ("DB_URL", b"{{ DB_PASSWORD }}"),
            ("DEPLOY_KEY", key),
            ("MULTI", multi),
        ],
        &["--config", cfg.to_str().unwrap()],
    );

    // .env, sourced by a shell inside the granted tree, gives the exact value.
    let o = m.run(&[
        "sh",
        "-c",
        "set -a; . \"$HUSHFS_DIR/.env\"; printf %s \"$DB_URL\"",
    ]);
    assert_eq!(
        o.stdout,
        b"{{ DB_PASSWORD }}",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = m.run(&[
        "sh",
        "-c",
        "set -a; . \"$HUSHFS_DIR/.env\"; printf %s \"$MULTI\"",
    ]);
    assert_eq!(
        o.stdout, multi,
        "multi-line value with quotes, $ and \\ through sh"
    );
    // A quote and a backtick together cannot be written for every loader:
    // that entry is left out with a comment naming the file to read.
    let env_text = String::from_utf8(m.run(&["cat", &m.path(".env")]).stdout).unwrap();
    assert!(
        env_text.contains("# DB_PASSWORD omitted:")
            && env_text.contains("read the file DB_PASSWORD"),
        "{env_text}"
    );
    assert!(!env_text.contains("2nd line"), "{env_text}");
    // JSON parses back to the values.
    let o = m.run(&["cat", &m.path("config/app.json")]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["DB_PASSWORD"].as_str().unwrap().as_bytes(), password);
    assert_eq!(j["DEPLOY_KEY"].as_str().unwrap().as_bytes(), key);

    // The raw key file: exact bytes, mode 0600 as ssh wants, true size.
    let io = m.granted(&["io", &m.path("ssh/id_ed25519")]);
    assert_eq!(io["a"], hex(key));
    assert_eq!(io["mode"], "0o100600");
    assert_eq!(io["size"], key.len());

    // The template: filters applied, a placeholder-looking value not expanded.
    let o = m.run(&["cat", &m.path("config/database.yml")]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("url: {{ DB_PASSWORD }}\n"), "{text}");
    let quoted = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("password: ")
        .unwrap();
    let decoded: String = serde_json::from_str(quoted).unwrap();
    assert_eq!(decoded.as_bytes(), password);

    // Nothing of it is readable outside the tree.
    for f in [
        ".env",
        "config/app.json",
        "ssh/id_ed25519",
        "config/database.yml",
    ] {
        assert_eq!(
            read_err(&m.outsider(&["read", &m.path(f)])).as_deref(),
            Some("EACCES"),
            "{f}"
        );
    }
}

#[test]
fn a_template_naming_a_missing_secret_fails_at_mount_time() {
    let e = Env::new();
    e.set("app/A", b"1");
    let cfg = e.path("hushfs.toml");
    std::fs::write(
        &cfg,
        "project = \"app\"\n[[file]]\npath = \"x.conf\"\ntemplate = \"x.tmpl\"\n",
    )
    .unwrap();
    std::fs::write(e.path("x.tmpl"), "a={{ A }}\nb={{ MISSING }}\n").unwrap();
    let dir = e.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let o = e.run(&[
        "mount",
        dir.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("MISSING") && msg.contains("x.tmpl"), "{msg}");
    assert!(!is_mounted(&dir));
}

#[test]
fn access_and_xattrs_follow_the_semantics() {
    let m = Mount::new(&[("TOKEN", b"v")]);
    let script = r#"
import errno, json, os, sys
p = sys.argv[1]
def t(f):
    try:
        return f()
    except OSError as e:
        return errno.errorcode[e.errno]
print(json.dumps({"r": os.access(p, os.R_OK), "w": os.access(p, os.W_OK), "x": os.access(p, os.X_OK),
  "get": t(lambda: os.getxattr(p, "user.x")), "list": t(lambda: os.listxattr(p))}))
"#;
    let inside = json(&m.run(&["python3", "-c", script, &m.path("TOKEN")]));
    assert_eq!(
        inside,
        serde_json::json!({"r": true, "w": false, "x": false, "get": "ENOTSUP", "list": []})
    );
    let outside = json(
        &std::process::Command::new("python3")
            .args(["-c", script, &m.path("TOKEN")])
            .output()
            .unwrap(),
    );
    assert_eq!(
        outside["r"], false,
        "access(R_OK) tells an outsider the truth"
    );
}

#[test]
fn ls_l_of_a_large_project_lists_every_file_with_its_size() {
    // More entries than one readdir reply holds: the listing is paged, and
    // `ls -l` takes sizes from READDIRPLUS or lookups; both must agree with
    // the values.
    let env = Env::new();
    let mut dotenv = String::new();
    for i in 0..700 {
        dotenv += &format!("KEY_{i:04}={}\n", "v".repeat(i % 50 + 1));
    }
    let f = env.path("big.env");
    std::fs::write(&f, dotenv).unwrap();
    env.ok(&["import", PROJECT, f.to_str().unwrap()]);
    let m = Mount::with(env, &[], &[]);
    for _ in 0..2 {
        let o = std::process::Command::new("ls")
            .args(["-l", "--time-style=+"])
            .arg(&m.dir)
            .output()
            .unwrap();
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        let sizes: std::collections::HashMap<&str, u64> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6).then(|| (*f.last().unwrap(), f[4].parse().unwrap()))
            })
            .collect();
        assert_eq!(sizes.len(), 700, "every secret once (.env is hidden)");
        for i in 0..700 {
            assert_eq!(sizes[format!("KEY_{i:04}").as_str()], (i % 50 + 1) as u64);
        }
    }
}
