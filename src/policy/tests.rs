use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        Fixture { dir }
    }
    fn lookup(&self) -> Lookup {
        Lookup {
            path: Some(self.dir.path().join("bin").into_os_string()),
            cwd: self.dir.path().to_path_buf(),
        }
    }
    fn exe(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join("bin").join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
    fn policy(&self, json: &str) -> Result<Policy> {
        Policy::parse_input(json.as_bytes(), &self.lookup())
    }
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn view(exe: &Path, argv: &[&str]) -> CommandView {
    CommandView {
        exe: std::fs::canonicalize(exe).unwrap(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
    }
}

#[test]
fn glob_semantics() {
    assert!(glob(b"*", b".env"));
    assert!(!glob(b"*", b"conf/app.json"));
    assert!(glob(b"conf/*.json", b"conf/app.json"));
    assert!(glob(b"**", b"a/b/c"));
    assert!(glob(b"**/c", b"c"));
    assert!(glob(b"**/c", b"a/b/c"));
    assert!(!glob(b"**/c", b"a/bc"));
    assert!(glob(b"DB_?", b"DB_1"));
    assert!(!glob(b"DB_?", b"DB_12"));
    assert!(!glob(b".env", b".envx"));
}

#[test]
fn binary_rule_resolves_through_path_and_matches_prefix() {
    let f = Fixture::new();
    let tool = f.exe("tool", b"\x7fELF not really");
    let p = f
        .policy(r#"{"commands": [{"argv": ["tool", "deploy"], "files": [".env"]}]}"#)
        .unwrap();
    assert_eq!(
        p.commands[0].argv.as_ref().unwrap()[0],
        tool.to_str().unwrap()
    );
    assert!(p.commands[0].interpreter.is_none());
    let c = p.compile();
    assert!(
        c.find(&view(&tool, &["tool", "deploy", "--prod"]))
            .is_some()
    );
    assert!(c.find(&view(&tool, &["tool", "deploy"])).is_some());
    assert!(
        c.find(&view(&tool, &["tool", "destroy"])).is_none(),
        "other arguments"
    );
    assert!(
        c.find(&view(&tool, &["tool"])).is_none(),
        "too few arguments"
    );
    assert!(
        c.find(&view(&tool, &["cat", "deploy"])).is_none(),
        "other argv[0]"
    );
    let other = f.exe("other", b"x");
    assert!(
        c.find(&view(&other, &["tool", "deploy"])).is_none(),
        "other executable"
    );
    // The prediction `run` makes agrees with the rule.
    let (prog, v) = CommandView::predict(&os(&["tool", "deploy"]), &f.lookup()).unwrap();
    assert_eq!(prog, tool);
    assert!(c.find(&v).is_some());
    let (_, v) = CommandView::predict(&os(&["other", "deploy"]), &f.lookup()).unwrap();
    assert!(c.find(&v).is_none());
}

#[test]
fn exe_rule_allows_any_arguments() {
    let f = Fixture::new();
    let tool = f.exe("tool", b"bin");
    let p = f
        .policy(&format!(
            r#"{{"commands": [{{"exe": "{}", "files": ["**"]}}]}}"#,
            tool.display()
        ))
        .unwrap();
    assert_eq!(p.commands[0].exe, None, "stored as argv");
    let c = p.compile();
    assert!(
        c.find(&view(&tool, &["tool", "anything", "else"]))
            .is_some()
    );
    assert!(c.find(&view(&tool, &["tool"])).is_some());
}

#[test]
fn script_rule_expects_its_interpreter() {
    let f = Fixture::new();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let script = f.exe("deploy.sh", b"#!/bin/sh -e\necho hi\n");
    let p = f
        .policy(r#"{"commands": [{"argv": ["./bin/deploy.sh", "prod"], "files": [".env"]}]}"#)
        .unwrap();
    let i = p.commands[0].interpreter.clone().unwrap();
    assert_eq!((i.exe.as_str(), i.name.as_str()), ("/bin/sh", "sh"));
    assert_eq!(i.args, ["-e"]);
    let c = p.compile();
    let s = script.to_str().unwrap();
    // As the kernel starts it: interpreter, its argument, the script.
    assert!(c.find(&view(&sh, &["/bin/sh", "-e", s, "prod"])).is_some());
    assert!(
        c.find(&view(&sh, &["/bin/sh", "-e", s, "staging"]))
            .is_none()
    );
    // The interpreter with other options, or code of its own, is not the script.
    assert!(c.find(&view(&sh, &["/bin/sh", "-c", s, "prod"])).is_none());
    assert!(
        c.find(&view(&sh, &["/bin/sh", "-e", "/tmp/evil", "prod"]))
            .is_none()
    );
    let (_, v) = CommandView::predict(&os(&["./bin/deploy.sh", "prod"]), &f.lookup()).unwrap();
    assert!(c.find(&v).is_some(), "{v:?}");
}

#[test]
fn env_shebang_resolves_the_program() {
    let f = Fixture::new();
    let interp = f.exe("myinterp", b"binary");
    let script = f.exe("task", b"#!/usr/bin/env myinterp\n");
    let p = f
        .policy(r#"{"commands": [{"argv": ["task"], "files": ["*"]}]}"#)
        .unwrap();
    let i = p.commands[0].interpreter.clone().unwrap();
    assert_eq!(i.exe, interp.to_str().unwrap());
    assert_eq!(i.name, "myinterp");
    let c = p.compile();
    assert!(
        c.find(&view(&interp, &["myinterp", script.to_str().unwrap(), "x"]))
            .is_some()
    );
    let _ = f.exe("opts", b"#!/usr/bin/env -i myinterp\n");
    let e = f
        .policy(r#"{"commands": [{"argv": ["opts"], "files": ["*"]}]}"#)
        .unwrap_err();
    assert!(e.to_string().contains("name its interpreter"), "{e}");
}

#[test]
fn bad_input_is_refused_with_a_hint() {
    let f = Fixture::new();
    for (json, want) in [
        (
            r#"{"commands": [{"argv": ["nope"], "files": ["*"]}]}"#,
            "not an executable",
        ),
        (r#"{"commands": [{"files": ["*"]}]}"#, "needs either"),
        (
            r#"{"commands": [{"exe": "/bin/sh", "files": []}]}"#,
            "`files` must list",
        ),
        (
            r#"{"commands": [{"exe": "/bin/sh", "files": ["*"], "bogus": 1}]}"#,
            "unknown field",
        ),
        (r#"{"version": 2, "commands": []}"#, "version 2"),
        ("not json", "expected {"),
    ] {
        let e = f.policy(json).unwrap_err().to_string();
        assert!(e.contains(want), "{json}: {e}");
    }
}

#[test]
fn stored_policy_round_trips_and_unknown_is_an_error() {
    let f = Fixture::new();
    f.exe("tool", b"bin");
    let p = f
        .policy(
            r#"{"commands": [{"argv": ["tool"], "files": ["*"], "secrets": ["A"], "env": true}]}"#,
        )
        .unwrap();
    let mut meta = ProjectMeta::default();
    assert_eq!(Policy::from_meta(&meta).unwrap(), None);
    meta.fields.insert(FIELD.into(), p.to_value());
    assert_eq!(Policy::from_meta(&meta).unwrap(), Some(p));
    meta.fields.insert(
        FIELD.into(),
        serde_json::json!({"version": 9, "commands": []}),
    );
    assert!(
        Policy::from_meta(&meta)
            .unwrap_err()
            .contains("upgrade hushfs")
    );
    meta.fields.insert(
        FIELD.into(),
        serde_json::json!({"commands": [], "allow_all": true}),
    );
    assert!(
        Policy::from_meta(&meta).is_err(),
        "unknown fields fail closed"
    );
}

#[test]
fn files_and_secrets_limits() {
    let r = Rule {
        argv: Some(vec!["/bin/x".into()]),
        exe: None,
        interpreter: None,
        files: vec![".env".into(), "conf/*.json".into()],
        secrets: Some(vec!["DB".into()]),
        env: false,
        unredacted: false,
    };
    assert!(r.allows_file(".env", &["DB".into()]));
    assert!(
        !r.allows_file(".env", &["DB".into(), "API".into()]),
        "holds a secret not listed"
    );
    assert!(r.allows_file("conf/app.json", &[]));
    assert!(!r.allows_file("DB", &["DB".into()]), "path not listed");
    assert!(!r.allows_env("DB"), "env not allowed");
    let r = Rule { env: true, ..r };
    assert!(r.allows_env("DB"));
    assert!(!r.allows_env("API"));
}

struct Fake(
    Mutex<HashMap<u32, CommandView>>,
    std::sync::atomic::AtomicUsize,
);

impl CommandSource for Arc<Fake> {
    fn view(&self, pid: u32, _starttime: u64) -> Option<CommandView> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.lock().get(&pid).cloned()
    }
}

#[test]
fn enforcer_judges_the_command_process() {
    let f = Fixture::new();
    let tool = f.exe("tool", b"bin");
    let cat = f.exe("cat", b"bin");
    let p = f
        .policy(r#"{"commands": [{"argv": ["tool", "test"], "files": [".env"]}]}"#)
        .unwrap();
    let fake = Arc::new(Fake(Mutex::new(HashMap::new()), Default::default()));
    fake.0.lock().insert(10, view(&tool, &["tool", "test"]));
    fake.0.lock().insert(11, view(&cat, &["cat", ".env"]));
    let e = Enforcer::with_source(&p, Box::new(fake.clone()));
    let subject = |tgid| Subject {
        tgid,
        starttime: 5,
        exe: None,
        cmdline: None,
        ..Subject::default()
    };
    assert_eq!(e.check(Some(&subject(10)), ".env", &[]), Ok(()));
    assert!(
        e.check(Some(&subject(10)), "TOKEN", &[]).is_err(),
        "file not listed"
    );
    assert!(
        e.check(Some(&subject(11)), ".env", &[]).is_err(),
        "command not listed"
    );
    assert!(
        e.check(Some(&subject(12)), ".env", &[]).is_err(),
        "process gone"
    );
    assert!(e.check(None, ".env", &[]).is_err(), "the root itself");
    // Repeated reads reuse what was learnt about the process.
    let before = fake.1.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(e.check(Some(&subject(10)), ".env", &[]), Ok(()));
    }
    assert_eq!(fake.1.load(std::sync::atomic::Ordering::Relaxed), before);
}

#[test]
fn proc_view_of_this_process() {
    let me = std::process::id();
    let st = crate::authz::ProcSource::stat(&crate::authz::ProcFs, me).unwrap();
    let v = ProcCommands.view(me, st.starttime).unwrap();
    assert_eq!(v.exe, std::fs::canonicalize("/proc/self/exe").unwrap());
    assert_eq!(
        v.argv[0],
        std::env::args_os().next().unwrap().as_bytes().to_vec()
    );
    assert!(
        ProcCommands.view(me, st.starttime + 1).is_none(),
        "other start time"
    );
}
