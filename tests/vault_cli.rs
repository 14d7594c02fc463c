//! The vault through the CLI as a user types it: set/ls/rm, limits, import,
//! errors and exit codes.

mod common;
use common::*;

#[test]
fn set_ls_rm_round_trip() {
    let e = Env::new();
    e.set("app/DB_PASSWORD", b"hunter2\n");
    let o = e.run_stdin(&["set", "app/API_KEY"], b"k-123\n");
    assert!(o.status.success());
    assert_eq!(
        e.value("app", "DB_PASSWORD").unwrap(),
        b"hunter2\n",
        "--raw keeps the newline"
    );
    assert_eq!(
        e.value("app", "API_KEY").unwrap(),
        b"k-123",
        "one trailing newline stripped"
    );

    let ls = e.ok(&["ls"]);
    assert!(
        ls.contains("app/API_KEY") && ls.contains("app/DB_PASSWORD"),
        "{ls}"
    );
    assert!(
        !ls.contains("hunter2") && !ls.contains("k-123"),
        "ls shows values: {ls}"
    );

    let json: serde_json::Value = serde_json::from_str(&e.ok(&["ls", "app", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["name"], "DB_PASSWORD");
    assert_eq!(rows[1]["size"], 8);
    assert!(rows[1]["modified"].as_str().unwrap().ends_with('Z'));

    e.ok(&["rm", "app/API_KEY"]);
    assert!(e.value("app", "API_KEY").is_none());
    let o = e.run(&["rm", "app/API_KEY"]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("no secret app/API_KEY"), "{msg}");
    let o = e.run(&["ls", "nope"]);
    assert_clean_failure(&o, 1, &[]);
}

#[test]
fn binary_values_and_the_one_mib_limit() {
    let e = Env::new();
    let bin: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let f = e.path("bin");
    std::fs::write(&f, &bin).unwrap();
    e.ok(&["set", "p/BIN", "--from-file", f.to_str().unwrap()]);
    assert_eq!(e.value("p", "BIN").unwrap(), bin);

    let mib = vec![b'x'; 1024 * 1024];
    std::fs::write(&f, &mib).unwrap();
    e.ok(&["set", "p/BIG", "--from-file", f.to_str().unwrap()]);
    assert_eq!(e.value("p", "BIG").unwrap().len(), 1024 * 1024);
    // Through stdin, 1 MiB plus the stripped newline is still 1 MiB.
    let mut with_nl = mib.clone();
    with_nl.push(b'\n');
    let o = e.run_stdin(&["set", "p/BIG2"], &with_nl);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let over = vec![b'y'; 1024 * 1024 + 1];
    std::fs::write(&f, &over).unwrap();
    let o = e.run(&["set", "p/OVER", "--from-file", f.to_str().unwrap()]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("1 MiB"), "{msg}");
    let o = e.run_stdin(&["set", "p/OVER", "--raw"], &over);
    assert_clean_failure(&o, 2, &[]);
    assert!(e.value("p", "OVER").is_none());
}

#[test]
fn bad_names_are_rejected_with_the_rule() {
    let e = Env::new();
    let long = format!("p/{}", "a".repeat(129));
    for bad in [
        "NOPROJECT",
        "p/a/b",
        "p/.env",
        "p/..",
        "../x/y",
        "p/",
        "/x",
        "p/a b",
        long.as_str(),
    ] {
        let o = e.run_stdin(&["set", bad], b"v");
        let msg = assert_clean_failure(&o, 2, &[]);
        assert!(
            msg.contains("PROJECT/NAME") || msg.contains("A-Z a-z 0-9"),
            "{bad}: {msg}"
        );
    }
    assert_eq!(e.secrets().count(), 0);
}

#[test]
fn import_a_tricky_dotenv_file() {
    let e = Env::new();
    let file = e.path("tricky.env");
    std::fs::write(
        &file,
        concat!(
            "# a comment\r\n",
            "export EXPORTED=plain\r\n",
            "SINGLE='single $NOT_EXPANDED \\n'\n",
            "DOUBLE=\"back\\\\slash \\\"quoted\\\" \\$HOME\"\n",
            "MULTI=\"line one\nline two\"\n",
            "EMPTY=\n",
            "SPACED = trimmed   # trailing comment\n",
            "URL=postgres://u:p%40ss@h:5432/db?x=1\n",
        ),
    )
    .unwrap();
    let o = e.run(&["import", "app", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("imported 7 secrets"));
    let s = e.secrets();
    let v = |n: &str| s.get("app", n).map(|e| e.value.expose().to_vec()).unwrap();
    assert_eq!(v("EXPORTED"), b"plain");
    assert_eq!(v("SINGLE"), b"single $NOT_EXPANDED \\n");
    assert_eq!(v("DOUBLE"), b"back\\slash \"quoted\" $HOME");
    assert_eq!(v("MULTI"), b"line one\nline two");
    assert_eq!(v("EMPTY"), b"");
    assert_eq!(v("SPACED"), b"trimmed");
    assert_eq!(v("URL"), b"postgres://u:p%40ss@h:5432/db?x=1");
    assert!(file.exists(), "without --shred the file stays");
}

#[test]
fn import_shred_removes_the_file_only_after_saving() {
    let e = Env::new();
    let file = e.path("prod.env");
    std::fs::write(&file, "TOKEN=abc123\n").unwrap();
    // A second name for the same inode shows what shredding did to the
    // bytes themselves: overwritten, not merely unlinked.
    let other = e.path("prod.env.link");
    std::fs::hard_link(&file, &other).unwrap();
    e.ok(&["import", "app", file.to_str().unwrap(), "--shred"]);
    assert!(!file.exists());
    assert_eq!(e.value("app", "TOKEN").unwrap(), b"abc123");
    let left = std::fs::read(&other).unwrap();
    assert_eq!(
        left,
        vec![0u8; "TOKEN=abc123\n".len()],
        "overwritten in place"
    );

    // A failed import (locked vault) leaves the file alone.
    std::fs::write(&file, "TOKEN=abc123\n").unwrap();
    let o = e
        .cmd(&["import", "app", file.to_str().unwrap(), "--shred"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert_clean_failure(&o, 1, &[b"abc123"]);
    assert!(file.exists());
}

#[test]
fn import_errors_do_not_echo_values() {
    let e = Env::new();
    let file = e.path("bad.env");
    std::fs::write(&file, "GOOD=1\nBROKEN=\"unterminated sekrit-value\n").unwrap();
    let o = e.run(&["import", "app", file.to_str().unwrap()]);
    assert_clean_failure(&o, 2, &[b"sekrit-value"]);
    assert!(
        e.value("app", "GOOD").is_none(),
        "a failed import stores nothing"
    );
}

#[test]
fn errors_say_what_to_do() {
    let e = Env::empty();
    let o = e.run(&["ls"]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(
        msg.contains("no vault at") && msg.contains("hushfs init"),
        "{msg}"
    );

    let e = Env::new();
    let o = e.run(&[
        "init",
        "--kdf-memory",
        "19",
        "--kdf-time",
        "2",
        "--kdf-parallelism",
        "1",
    ]);
    assert_clean_failure(&o, 2, &[]);

    let o = e
        .cmd(&["ls"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(
        msg.contains("vault is locked: run `hushfs unlock`"),
        "{msg}"
    );

    std::fs::write(e.path("wrong"), "not it").unwrap();
    let o = e
        .cmd(&["ls"])
        .env("HUSHFS_PASSPHRASE_FILE", e.path("wrong"))
        .output()
        .unwrap();
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("wrong passphrase"), "{msg}");

    for bad in [
        ["--kdf-memory", "5000"],
        ["--kdf-time", "1"],
        ["--kdf-parallelism", "0"],
    ] {
        let f = Env::empty();
        let o = f.run(&["init", bad[0], bad[1]]);
        let msg = assert_clean_failure(&o, 2, &[]);
        assert!(msg.contains("allowed"), "{msg}");
        assert!(!f.vault.exists());
    }

    let o = e.run(&["set"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn passphrase_from_fd_and_never_from_argv() {
    let e = Env::new();
    e.set("p/A", b"1");
    // --passphrase-fd: the shell opens fd 3 on the file.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3<'{}'; '{}' ls --passphrase-fd 3",
            e.pass_file.display(),
            env!("CARGO_BIN_EXE_hushfs")
        ))
        .env("HUSHFS_VAULT", &e.vault)
        .env("HUSHFS_KEYCHAIN", "off")
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = e.run(&["ls", "--passphrase-fd", "57"]);
    assert_clean_failure(&o, 2, &[]);
    // There is no option that takes a passphrase or a value on the command line.
    let help = e.ok(&["set", "--help"]) + &e.ok(&["--help"]);
    assert!(
        !help.contains("--passphrase ") && !help.contains("--value"),
        "{help}"
    );
}

#[test]
fn passwd_and_rekey() {
    let mut e = Env::new();
    e.set("p/A", b"alpha");
    let before = e.open().unwrap();
    let new_pass = e.passwd("another long passphrase");
    let o = e.run(&["ls"]);
    assert_clean_failure(&o, 1, &[]);
    // Env implements Drop, so switch its passphrase file in place.
    e.pass_file = new_pass.clone();
    let e2 = e;
    let after = e2.open().unwrap();
    assert_eq!(
        before.key().expose(),
        after.key().expose(),
        "passwd keeps the data key"
    );
    e2.ok(&["rekey"]);
    let rekeyed = e2.open().unwrap();
    assert_ne!(
        after.key().expose(),
        rekeyed.key().expose(),
        "rekey makes a new data key"
    );
    assert_eq!(
        rekeyed.secrets.get("p", "A").unwrap().value.expose(),
        b"alpha"
    );
}

#[test]
fn status_reports_without_prompting() {
    let e = Env::new();
    e.set("p/A", b"1");
    let st: serde_json::Value = serde_json::from_str(&e.ok(&["status", "--json"])).unwrap();
    assert_eq!(st["unlocked"], false);
    assert_eq!(st["kdf"]["m_kib"], 19 * 1024);
    assert!(
        st["projects"].is_null(),
        "locked: project names need the key"
    );
}

#[test]
fn broken_pipe_is_not_an_error() {
    let e = Env::new();
    for i in 0..3 {
        e.set(&format!("p/K{i}"), b"v");
    }
    // `hushfs ls | true`: the reader is gone before ls writes.
    let mut child = e
        .cmd(&["ls"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn init_on_a_terminal_asks_twice_without_echo() {
    let e = Env::empty();
    let init = || {
        let mut c = e.cmd(&INIT_FAST);
        c.env_remove("HUSHFS_PASSPHRASE_FILE");
        c
    };
    // Two different answers: refused, no vault.
    let (code, out) = common::pty::converse(
        init(),
        &[
            ("New passphrase", "first typed passphrase"),
            ("Repeat the passphrase", "second, different one"),
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("differ"), "{out}");
    assert!(!e.vault.exists());
    // The same twice: created; what was typed never appeared on screen.
    let typed = "a long enough passphrase";
    let (code, out) = common::pty::converse(
        init(),
        &[("New passphrase", typed), ("Repeat the passphrase", typed)],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(typed), "the passphrase was echoed: {out}");
    assert!(e.vault.exists());
}
