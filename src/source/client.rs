//! The HTTP side of an OpenBao / HashiCorp Vault source: one KV v2 read,
//! token login (AppRole), lookup and renewal, and failover across the
//! configured addresses of a cluster.
//!
//! Secrets handling: response bodies are read into a `SecretBuf` and parsed
//! from there; values are copied into `SecretBytes` as serde hands them over
//! (see `SecretValue`). Errors name addresses, paths and HTTP statuses only,
//! never a body, a token or a value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use ureq::Agent;
use ureq::http::{HeaderValue, Method, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use zeroize::Zeroize;

use crate::secret::{SecretBuf, SecretBytes};

/// Largest response body read (a KV v2 secret is far smaller; the
/// server's own request limit is 32 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest token file read.
const MAX_TOKEN: usize = 64 * 1024;
/// Redirects followed for one request (only to configured addresses).
const MAX_REDIRECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a confirmed leader is trusted before asking again.
const LEADER_RECHECK: Duration = Duration::from_secs(60);

/// How the client authenticates. Values live in zeroizing buffers.
#[derive(Clone)]
pub enum Auth {
    /// A token stored in the local vault.
    Token(SecretBytes),
    /// AppRole credentials stored in the local vault; the client logs in
    /// and logs in again when the token cannot be renewed any further.
    AppRole {
        role_id: SecretBytes,
        secret_id: SecretBytes,
    },
    /// A file holding a token (e.g. written by `bao login` or an agent),
    /// read again whenever it changes.
    TokenFile(PathBuf),
}

impl Auth {
    /// What kind of credential, for status lines; never the value.
    pub fn describe(&self) -> String {
        match self {
            Auth::Token(_) => "token (in the vault)".into(),
            Auth::AppRole { .. } => "AppRole (in the vault)".into(),
            Auth::TokenFile(p) => format!("token file {}", p.display()),
        }
    }

    /// Same kind and same bytes (constant-time comparison of values).
    pub fn same_as(&self, other: &Auth) -> bool {
        match (self, other) {
            (Auth::Token(a), Auth::Token(b)) => a == b,
            (
                Auth::AppRole {
                    role_id: a,
                    secret_id: b,
                },
                Auth::AppRole {
                    role_id: c,
                    secret_id: d,
                },
            ) => a == c && b == d,
            (Auth::TokenFile(a), Auth::TokenFile(b)) => a == b,
            _ => false,
        }
    }
}

/// Why a request did not produce values. Messages carry no secret bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No configured address gave a usable answer (down, sealed, no
    /// leader, overloaded): the caller may keep serving what it has.
    Unreachable(String),
    /// The server refused the credentials or the permission: stop serving.
    Refused(String),
    /// Nothing at the path (never written, deleted or destroyed).
    NotFound(String),
    /// A local problem (CA file, token file) or an answer that is not KV v2.
    Invalid(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(m)
            | Failure::Refused(m)
            | Failure::NotFound(m)
            | Failure::Invalid(m) => f.write_str(m),
        }
    }
}

/// One configured server address: `scheme://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// As the user wrote it, normalized (no trailing slash).
    pub url: String,
    scheme: String,
    host: String,
    port: u16,
}

impl Addr {
    /// Parses and checks an address: http(s), a host, no path, query or
    /// user info. Plain http is accepted for loopback hosts only, since it
    /// would carry the token in clear.
    pub fn parse(s: &str) -> Result<Addr, String> {
        let trimmed = s.trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|_| format!("{s:?} is not a URL: write e.g. https://bao.example.com:8200"))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(format!(
                "{s:?} must start with https:// (e.g. https://bao.example.com:8200)"
            ));
        }
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!(
                "{s:?} carries user info: credentials never go into an address"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{s:?} has a path or query: give only scheme, host and port"
            ));
        }
        let host = auth.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = auth
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if scheme == "http" && !is_loopback(&host) {
            return Err(format!(
                "{s:?} is plain http to another machine, which would send the token in clear: \
                 use https:// (http is accepted for 127.0.0.1 and localhost only)"
            ));
        }
        Ok(Addr {
            url: trimmed.to_string(),
            scheme,
            host,
            port,
        })
    }

    fn same_origin(&self, other: &Addr) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A secret value as serde hands it over. Strings without escapes arrive
/// borrowed from our zeroizing body buffer and are copied once into a
/// `SecretBytes`; escaped strings are unescaped by serde_json into its
/// internal scratch buffer first, which it frees without wiping (it cannot
/// be reached from here). Numbers, booleans and nested JSON are served as
/// their JSON text.
struct SecretValue(SecretBytes);

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret value")
            }
            fn visit_str<E>(self, s: &str) -> Result<SecretValue, E> {
                Ok(SecretValue(SecretBytes::copy_from(s.as_bytes())))
            }
            fn visit_string<E>(self, mut s: String) -> Result<SecretValue, E> {
                let v = SecretBytes::copy_from(s.as_bytes());
                s.zeroize();
                Ok(SecretValue(v))
            }
            fn visit_bool<E>(self, b: bool) -> Result<SecretValue, E> {
                Ok(SecretValue(SecretBytes::copy_from(if b {
                    b"true"
                } else {
                    b"false"
                })))
            }
            fn visit_i64<E>(self, n: i64) -> Result<SecretValue, E> {
                let mut s = n.to_string();
                let v = SecretBytes::copy_from(s.as_bytes());
                s.zeroize();
                Ok(SecretValue(v))
            }
            fn visit_u64<E>(self, n: u64) -> Result<SecretValue, E> {
                let mut s = n.to_string();
                let v = SecretBytes::copy_from(s.as_bytes());
                s.zeroize();
                Ok(SecretValue(v))
            }
            fn visit_f64<E>(self, n: f64) -> Result<SecretValue, E> {
                let mut s = serde_json::Value::from(n).to_string();
                let v = SecretBytes::copy_from(s.as_bytes());
                s.zeroize();
                Ok(SecretValue(v))
            }
            fn visit_unit<E>(self) -> Result<SecretValue, E> {
                Ok(SecretValue(SecretBytes::default()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<SecretValue, A::Error> {
                let v = serde_json::Value::deserialize(
                    serde::de::value::MapAccessDeserializer::new(m),
                )?;
                Ok(SecretValue(json_text(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                s: A,
            ) -> Result<SecretValue, A::Error> {
                let v = serde_json::Value::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(s),
                )?;
                Ok(SecretValue(json_text(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Nested JSON as compact text; the intermediate `Value` and `Vec` are
/// wiped as far as their types allow.
fn json_text(mut v: serde_json::Value) -> SecretBytes {
    let mut buf = SecretBuf::default();
    let _ = serde_json::to_writer(&mut buf, &v);
    wipe_json(&mut v);
    buf.into_secret()
}

fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

/// A token string moved out of a JSON answer into a zeroizing buffer.
struct SecretToken(SecretBytes);

impl<'de> Deserialize<'de> for SecretToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SecretValue::deserialize(d).map(|v| SecretToken(v.0))
    }
}

// The parts of the answers we read; everything else (including the `id`
// field of lookup-self, which is the token) is skipped without copying.
#[derive(Deserialize)]
struct KvAnswer {
    data: KvData,
}
#[derive(Deserialize)]
struct KvData {
    data: Option<BTreeMap<String, SecretValue>>,
    metadata: Option<KvMetadata>,
}
#[derive(Deserialize)]
struct KvMetadata {
    #[serde(default)]
    version: u64,
}
#[derive(Deserialize)]
struct AuthAnswer {
    auth: AuthData,
}
#[derive(Deserialize)]
struct AuthData {
    client_token: Option<SecretToken>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}
#[derive(Deserialize)]
struct LookupAnswer {
    data: LookupData,
}
#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}
#[derive(Deserialize)]
struct LeaderAnswer {
    #[serde(default)]
    ha_enabled: bool,
    #[serde(default)]
    is_self: bool,
    #[serde(default)]
    leader_address: String,
}

/// What one KV v2 read returned.
pub struct Kv {
    pub values: BTreeMap<String, SecretBytes>,
    pub version: u64,
}

/// The token in use and what the server said about its lifetime.
struct Token {
    value: SecretBytes,
    obtained: Instant,
    /// `None` until looked up; `Some(ZERO)` means it never expires.
    ttl: Option<Duration>,
    renewable: bool,
    /// TTL granted at login (AppRole), to notice when renewal stops
    /// extending it (max TTL near).
    login_ttl: Option<Duration>,
    /// The token file's identity when it was read.
    file_stamp: Option<(u64, u64, i64, i64, u64)>,
}

impl Token {
    fn expires_at(&self) -> Option<Instant> {
        match self.ttl {
            Some(t) if !t.is_zero() => Some(self.obtained + t),
            _ => None,
        }
    }

    /// Renew when two thirds of the TTL have passed (at least a second
    /// after obtaining it, so a nearly spent token does not spin).
    fn renew_at(&self) -> Option<Instant> {
        match self.ttl {
            Some(t) if !t.is_zero() && self.renewable => {
                Some(self.obtained + (t * 2 / 3).max(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

struct Reply {
    status: u16,
    body: SecretBuf,
}

/// A client for one project's server(s). Not thread-safe by design: the
/// daemon calls it from one thread at a time.
pub struct Client {
    agent: Agent,
    addrs: Vec<Addr>,
    /// The address tried first: the last leader seen, or the last that
    /// answered.
    preferred: usize,
    /// When `preferred` was last confirmed as the leader (or as a server
    /// that is not part of a cluster).
    leader_checked: Option<Instant>,
    namespace: Option<String>,
    auth: Auth,
    token: Option<Token>,
}

impl Client {
    /// Builds the HTTP agent (with the CA file if given). No request yet.
    pub fn new(
        addrs: &[String],
        ca_file: Option<&Path>,
        namespace: Option<&str>,
        auth: Auth,
    ) -> Result<Client, Failure> {
        let addrs = addrs
            .iter()
            .map(|a| Addr::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::Invalid)?;
        if addrs.is_empty() {
            return Err(Failure::Invalid("no server address configured".into()));
        }
        let roots = match ca_file {
            Some(p) => RootCerts::Specific(Arc::new(read_ca(p)?)),
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let agent: Agent = Agent::config_builder()
            // Statuses are answers we classify ourselves.
            .http_status_as_error(false)
            // Redirects are followed by hand, and only to configured
            // addresses, so the token never goes to a host the user did
            // not name.
            .max_redirects(0)
            // No proxy from the environment (HTTPS_PROXY in a forwarded
            // command's environment would route the token elsewhere).
            .proxy(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("hushfs/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(Client {
            agent,
            addrs,
            preferred: 0,
            leader_checked: None,
            namespace: namespace.map(str::to_string),
            auth,
            token: None,
        })
    }

    /// The address requests go to first (the leader, once known).
    pub fn address(&self) -> &str {
        &self.addrs[self.preferred].url
    }

    /// When the token should be renewed next, if it can be.
    pub fn renew_at(&self) -> Option<Instant> {
        self.token.as_ref().and_then(Token::renew_at)
    }

    /// When the current token expires, as wall-clock Unix seconds.
    pub fn token_expires(&self) -> Option<u64> {
        let at = self.token.as_ref()?.expires_at()?;
        let left = at.saturating_duration_since(Instant::now());
        let t = SystemTime::now() + left;
        t.duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    /// Reads the latest version of a KV v2 secret.
    pub fn read_kv(&mut self, kv_mount: &str, path: &str) -> Result<Kv, Failure> {
        let api = format!("{kv_mount}/data/{path}");
        let shown = format!("{kv_mount}/{path}");
        self.ensure_token()?;
        let mut reply = self.call(Method::GET, &api, None, true)?;
        if reply.status == 403 && matches!(self.auth, Auth::AppRole { .. }) {
            // The token may have expired between renewals: log in again
            // once before concluding that access was withdrawn.
            self.token = None;
            self.ensure_token()?;
            reply = self.call(Method::GET, &api, None, true)?;
        }
        match reply.status {
            200 => {}
            403 => return Err(self.diagnose_403(&api)),
            404 => {
                return Err(Failure::NotFound(format!(
                    "no secret at {shown} (HTTP 404 from {}): check the path with `hushfs source show`",
                    self.address()
                )));
            }
            s => {
                return Err(Failure::Invalid(format!(
                    "{} answered HTTP {s} for {api}: is {kv_mount} a KV version 2 mount?",
                    self.address()
                )));
            }
        }
        let answer: KvAnswer = serde_json::from_slice(reply.body.as_slice()).map_err(|_| {
            Failure::Invalid(format!(
                "{} sent an answer for {api} that is not a KV version 2 secret",
                self.address()
            ))
        })?;
        let version = answer.data.metadata.map(|m| m.version).unwrap_or(0);
        let Some(data) = answer.data.data else {
            return Err(Failure::NotFound(format!(
                "the latest version ({version}) of {shown} is deleted or destroyed: \
                 restore it on the server or write a new one"
            )));
        };
        Ok(Kv {
            values: data.into_iter().map(|(k, v)| (k, v.0)).collect(),
            version,
        })
    }

    /// After a 403 on the data path: is the token gone, or only the
    /// permission?
    fn diagnose_403(&mut self, api: &str) -> Failure {
        let valid = matches!(
            self.call(Method::GET, "auth/token/lookup-self", None, true),
            Ok(Reply { status: 200, .. })
        );
        self.token = None;
        if valid {
            Failure::Refused(format!(
                "the token may no longer read {api} (HTTP 403): its policy changed; \
                 ask for read access or store another credential with `hushfs source set`"
            ))
        } else {
            token_refused()
        }
    }

    /// Makes sure a token is at hand: logs in, reads the token file, looks
    /// the token up, or renews it when two thirds of its TTL have passed.
    pub fn ensure_token(&mut self) -> Result<(), Failure> {
        if let Auth::TokenFile(p) = &self.auth {
            let p = p.clone();
            let stamp = file_stamp(&p);
            if self.token.as_ref().is_none_or(|t| t.file_stamp != stamp) {
                let value = read_token_file(&p)?;
                self.token = Some(Token {
                    value,
                    obtained: Instant::now(),
                    ttl: None,
                    renewable: false,
                    login_ttl: None,
                    file_stamp: stamp,
                });
            }
        }
        match (&self.auth, &self.token) {
            (Auth::Token(v), None) => {
                let value = v.clone();
                self.token = Some(Token {
                    value,
                    obtained: Instant::now(),
                    ttl: None,
                    renewable: false,
                    login_ttl: None,
                    file_stamp: None,
                });
            }
            (Auth::AppRole { .. }, None) => self.login()?,
            _ => {}
        }
        if self.token.as_ref().is_some_and(|t| t.ttl.is_none()) {
            self.lookup()?;
        }
        if self.renew_at().is_some_and(|t| Instant::now() >= t) {
            self.renew()?;
        }
        Ok(())
    }

    fn login(&mut self) -> Result<(), Failure> {
        let Auth::AppRole { role_id, secret_id } = &self.auth else {
            return Ok(());
        };
        // {"role_id":"…","secret_id":"…"} built in a zeroizing buffer.
        let mut body = SecretBuf::with_capacity(64 + role_id.len() + secret_id.len());
        body.extend(b"{\"role_id\":");
        json_string(&mut body, role_id.expose());
        body.extend(b",\"secret_id\":");
        json_string(&mut body, secret_id.expose());
        body.extend(b"}");
        let reply = self.call(
            Method::POST,
            "auth/approle/login",
            Some(body.as_slice()),
            false,
        )?;
        drop(body);
        match reply.status {
            200 => {}
            400 | 401 | 403 => {
                return Err(Failure::Refused(format!(
                    "AppRole login refused (HTTP {}): the role or secret ID was revoked, has \
                     expired or is wrong; store new ones with `hushfs source set P --approle`",
                    reply.status
                )));
            }
            404 => {
                return Err(Failure::Invalid(
                    "AppRole is not enabled at auth/approle on the server (HTTP 404)".into(),
                ));
            }
            s => {
                return Err(Failure::Invalid(format!("AppRole login answered HTTP {s}")));
            }
        }
        let a: AuthAnswer = serde_json::from_slice(reply.body.as_slice())
            .map_err(|_| Failure::Invalid("the AppRole login answer has no token".into()))?;
        let value = a
            .auth
            .client_token
            .ok_or_else(|| Failure::Invalid("the AppRole login answer has no token".into()))?
            .0;
        let ttl = Duration::from_secs(a.auth.lease_duration);
        self.token = Some(Token {
            value,
            obtained: Instant::now(),
            ttl: Some(ttl),
            renewable: a.auth.renewable,
            login_ttl: Some(ttl),
            file_stamp: None,
        });
        log::info!("logged in with AppRole (token TTL {}s)", ttl.as_secs());
        Ok(())
    }

    fn lookup(&mut self) -> Result<(), Failure> {
        let reply = self.call(Method::GET, "auth/token/lookup-self", None, true)?;
        match reply.status {
            200 => {}
            403 => {
                self.token = None;
                return Err(token_refused());
            }
            s => {
                return Err(Failure::Invalid(format!("token lookup answered HTTP {s}")));
            }
        }
        let a: LookupAnswer = serde_json::from_slice(reply.body.as_slice())
            .map_err(|_| Failure::Invalid("the token lookup answer is not understood".into()))?;
        if let Some(t) = self.token.as_mut() {
            t.obtained = Instant::now();
            t.ttl = Some(Duration::from_secs(a.data.ttl));
            t.renewable = a.data.renewable;
        }
        Ok(())
    }

    fn renew(&mut self) -> Result<(), Failure> {
        let is_approle = matches!(self.auth, Auth::AppRole { .. });
        let reply = match self.call(Method::POST, "auth/token/renew-self", Some(b"{}"), true) {
            Ok(r) => r,
            // A token at the end of its life can make the server fail the
            // renewal itself (HTTP 500): with AppRole, log in afresh.
            Err(Failure::Unreachable(_)) if is_approle => {
                self.token = None;
                return self.login();
            }
            Err(e) => return Err(e),
        };
        if reply.status != 200 {
            if is_approle {
                self.token = None;
                return self.login();
            }
            if reply.status == 403 {
                self.token = None;
                return Err(Failure::Refused(
                    "the server refused to renew the token (HTTP 403): it was revoked or has \
                     expired; store a new one with `hushfs source set`"
                        .into(),
                ));
            }
            // Not renewable after all: keep using it until it expires.
            if let Some(t) = self.token.as_mut() {
                t.renewable = false;
            }
            return Ok(());
        }
        let a: AuthAnswer = serde_json::from_slice(reply.body.as_slice())
            .map_err(|_| Failure::Invalid("the token renewal answer is not understood".into()))?;
        let ttl = Duration::from_secs(a.auth.lease_duration);
        let login_ttl = self.token.as_ref().and_then(|t| t.login_ttl);
        if is_approle && login_ttl.is_some_and(|l| ttl < l) {
            // The token's max TTL is near: a fresh login keeps us going.
            self.token = None;
            return self.login();
        }
        if let Some(t) = self.token.as_mut() {
            t.obtained = Instant::now();
            t.ttl = Some(ttl);
            t.renewable = a.auth.renewable && !ttl.is_zero();
        }
        log::info!("renewed the token (TTL {}s)", ttl.as_secs());
        Ok(())
    }

    /// Sends one request, trying the preferred address first and then the
    /// others in their configured order. A node that is down, sealed,
    /// without a leader or overloaded (transport error, 5xx, 429) is
    /// skipped; a redirect is followed when it points at a configured
    /// address. Any other status is the answer.
    fn call(
        &mut self,
        method: Method,
        api: &str,
        body: Option<&[u8]>,
        with_token: bool,
    ) -> Result<Reply, Failure> {
        if self
            .leader_checked
            .is_none_or(|t| t.elapsed() >= LEADER_RECHECK)
        {
            self.find_leader();
        }
        let mut order: Vec<usize> = std::iter::once(self.preferred)
            .chain((0..self.addrs.len()).filter(|&i| i != self.preferred))
            .collect();
        let mut tried: Vec<usize> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut redirects = 0;
        while let Some(i) = order.first().copied() {
            order.remove(0);
            if tried.contains(&i) {
                continue;
            }
            tried.push(i);
            let addr = self.addrs[i].clone();
            match self.attempt(&addr, method.clone(), api, body, with_token) {
                Err(e) => notes.push(format!("{}: {e}", addr.url)),
                Ok(Attempt::Redirect(to)) => {
                    match self.addrs.iter().position(|a| a.same_origin(&to)) {
                        Some(j) if redirects < MAX_REDIRECTS && !tried.contains(&j) => {
                            redirects += 1;
                            order.insert(0, j);
                        }
                        _ => notes.push(format!(
                            "{}: redirected to {}, which is not a configured address",
                            addr.url, to.url
                        )),
                    }
                }
                Ok(Attempt::Unavailable(status)) => {
                    notes.push(format!("{}: HTTP {status} on {api}", addr.url));
                }
                Ok(Attempt::Answer(reply)) => {
                    if i != self.preferred {
                        // Failed over: find the leader again next time.
                        self.preferred = i;
                        self.leader_checked = None;
                    }
                    return Ok(reply);
                }
            }
        }
        Err(Failure::Unreachable(notes.join("; ")))
    }

    /// Finds the cluster's leader through the unauthenticated
    /// `sys/leader` and prefers it: standbys answer reads themselves and
    /// may lag behind (a path they have not caught up with answers 400 or
    /// 404), so answers should come from the leader. A leader is trusted
    /// once it says so itself; during an election none is, and this runs
    /// again before the next request.
    fn find_leader(&mut self) {
        let order: Vec<usize> = std::iter::once(self.preferred)
            .chain((0..self.addrs.len()).filter(|&i| i != self.preferred))
            .collect();
        for i in order {
            match self.leader_of(i) {
                None => continue,
                Some(Leader::Itself) => {
                    if i != self.preferred || self.leader_checked.is_none() {
                        log::info!("following {}", self.addrs[i].url);
                    }
                    self.preferred = i;
                    self.leader_checked = Some(Instant::now());
                    return;
                }
                Some(Leader::Elsewhere(j)) => {
                    if matches!(self.leader_of(j), Some(Leader::Itself)) {
                        log::info!("following the leader {}", self.addrs[j].url);
                        self.preferred = j;
                        self.leader_checked = Some(Instant::now());
                        return;
                    }
                    // A leader that does not answer: an election is under
                    // way; another node may already lead.
                }
                Some(Leader::Unknown) => {}
            }
        }
    }

    /// What node `i` says about leadership; `None` when it cannot be asked.
    fn leader_of(&self, i: usize) -> Option<Leader> {
        let addr = &self.addrs[i];
        let Ok(Attempt::Answer(r)) = self.attempt(addr, Method::GET, "sys/leader", None, false)
        else {
            return None;
        };
        let l = match serde_json::from_slice::<LeaderAnswer>(r.body.as_slice()) {
            // Not a cluster, or a server that does not say: take it as it is.
            Ok(l) if r.status == 200 && l.ha_enabled => l,
            _ => return Some(Leader::Itself),
        };
        if l.is_self {
            return Some(Leader::Itself);
        }
        Some(
            Addr::parse(&l.leader_address)
                .ok()
                .and_then(|leader| self.addrs.iter().position(|a| a.same_origin(&leader)))
                .filter(|&j| j != i)
                .map_or(Leader::Unknown, Leader::Elsewhere),
        )
    }

    fn attempt(
        &self,
        addr: &Addr,
        method: Method,
        api: &str,
        body: Option<&[u8]>,
        with_token: bool,
    ) -> Result<Attempt, String> {
        let url = format!("{}/v1/{api}", addr.url);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.as_str());
        }
        if with_token {
            let t = self.token.as_ref().ok_or("no token")?;
            // The http crate keeps header values in its own (unwiped)
            // buffer until the request is dropped; that copy cannot be
            // avoided with any HTTP client. `sensitive` keeps it out of
            // Debug output.
            let mut v = HeaderValue::from_bytes(t.value.expose())
                .map_err(|_| "the token holds bytes a header cannot carry".to_string())?;
            v.set_sensitive(true);
            req = req.header("X-Vault-Token", v);
        }
        let resp = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(b)
                    .map_err(|e| e.to_string())?;
                self.agent.run(req)
            }
            None => {
                let req = req.body(()).map_err(|e| e.to_string())?;
                self.agent.run(req)
            }
        };
        let mut resp = resp.map_err(describe_error)?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let to = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.parse::<Uri>().ok())
                .and_then(|u| {
                    let origin = format!("{}://{}", u.scheme_str()?, u.authority()?.as_str());
                    Addr::parse(&origin).ok()
                });
            return match to {
                Some(a) => Ok(Attempt::Redirect(a)),
                None => Ok(Attempt::Unavailable(status)),
            };
        }
        if status == 429 || status >= 500 {
            return Ok(Attempt::Unavailable(status));
        }
        // ureq reads the body through its own buffers, which are not
        // wiped; our copy is.
        let mut reader = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY as u64)
            .reader();
        let body = SecretBuf::read_limited(&mut reader, MAX_BODY)
            .map_err(|e| format!("reading the answer: {}", e.kind()))?;
        Ok(Attempt::Answer(Reply { status, body }))
    }
}

/// The same words whichever request found out, so that a mount that keeps
/// asking reports (and audits) one reason, not two alternating ones.
fn token_refused() -> Failure {
    Failure::Refused(
        "the server no longer accepts the token (HTTP 403): it was revoked, has expired or is \
         mistyped; store a new one with `hushfs source set`"
            .into(),
    )
}

enum Leader {
    /// This node leads (or is not part of a cluster).
    Itself,
    /// This node is a standby; the leader is configured address `j`.
    Elsewhere(usize),
    /// A standby that knows no configured leader.
    Unknown,
}

enum Attempt {
    Answer(Reply),
    Redirect(Addr),
    Unavailable(u16),
}

/// A transport error in a few words (ureq's own messages name the
/// address and the OS error, never a header or a body).
fn describe_error(e: ureq::Error) -> String {
    let m = match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    };
    if m.contains("certificate") {
        format!("{m}; is --ca-file the CA that signed the server's certificate?")
    } else {
        m
    }
}

/// Appends `s` as a JSON string literal (the credentials we send are
/// plain ASCII, but escape what JSON requires anyway).
fn json_string(out: &mut SecretBuf, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend(b"\\\""),
            b'\\' => out.extend(b"\\\\"),
            0..=0x1f => {
                let hex = b"0123456789abcdef";
                out.extend(b"\\u00");
                out.push(hex[usize::from(b >> 4)]);
                out.push(hex[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn read_ca(p: &Path) -> Result<Vec<Certificate<'static>>, Failure> {
    let pem = std::fs::read(p)
        .map_err(|e| Failure::Invalid(format!("cannot read CA file {}: {e}", p.display())))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Failure::Invalid(format!(
            "CA file {} holds no PEM certificate",
            p.display()
        )));
    }
    Ok(certs)
}

fn file_stamp(p: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Reads a token file: its bytes, surrounding whitespace removed.
fn read_token_file(p: &Path) -> Result<SecretBytes, Failure> {
    let mut f = std::fs::File::open(p)
        .map_err(|e| Failure::Invalid(format!("cannot open token file {}: {e}", p.display())))?;
    let buf = SecretBuf::read_limited(&mut f, MAX_TOKEN)
        .map_err(|e| Failure::Invalid(format!("cannot read token file {}: {e}", p.display())))?;
    let t = trim(buf.as_slice());
    if t.is_empty() {
        return Err(Failure::Invalid(format!(
            "token file {} is empty",
            p.display()
        )));
    }
    Ok(SecretBytes::copy_from(t))
}

/// `b` without leading and trailing ASCII whitespace.
pub fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let a = Addr::parse("https://bao.example.com:8200/").unwrap();
        assert_eq!(a.url, "https://bao.example.com:8200");
        assert_eq!(a.port, 8200);
        Addr::parse("http://127.0.0.1:8200").unwrap();
        Addr::parse("http://localhost:8200").unwrap();
        Addr::parse("http://[::1]:8200").unwrap();
        for bad in [
            "bao.example.com:8200",
            "ftp://x",
            "http://bao.example.com:8200",
            "https://user:pw@bao.example.com",
            "https://bao.example.com/v1",
            "https://bao.example.com?x=1",
            "https://",
        ] {
            assert!(Addr::parse(bad).is_err(), "{bad} accepted");
        }
        // Same origin: default ports are made explicit.
        assert!(
            Addr::parse("https://h")
                .unwrap()
                .same_origin(&Addr::parse("https://H:443").unwrap())
        );
    }

    #[test]
    fn kv_answer_values_become_secret_bytes() {
        let body = br#"{"request_id":"x","data":{"data":{"A":"plain","B":"with \"escape\"\n","N":42,"F":1.5,"T":true,"Z":null,"O":{"k":[1,"v"]}},"metadata":{"version":7,"destroyed":false}},"auth":null}"#;
        let a: KvAnswer = serde_json::from_slice(body).unwrap();
        assert_eq!(a.data.metadata.unwrap().version, 7);
        let d = a.data.data.unwrap();
        let get = |k: &str| d[k].0.expose().to_vec();
        assert_eq!(get("A"), b"plain");
        assert_eq!(get("B"), b"with \"escape\"\n");
        assert_eq!(get("N"), b"42");
        assert_eq!(get("F"), b"1.5");
        assert_eq!(get("T"), b"true");
        assert_eq!(get("Z"), b"");
        assert_eq!(get("O"), br#"{"k":[1,"v"]}"#);
    }

    #[test]
    fn deleted_version_has_no_data() {
        let body = br#"{"data":{"data":null,"metadata":{"version":3,"deletion_time":"2024-01-01T00:00:00Z"}}}"#;
        let a: KvAnswer = serde_json::from_slice(body).unwrap();
        assert!(a.data.data.is_none());
    }

    #[test]
    fn login_body_is_json() {
        let mut b = SecretBuf::default();
        json_string(&mut b, b"a\"b\\c\n");
        assert_eq!(b.as_slice(), br#""a\"b\\c\u000a""#);
        let v: String = serde_json::from_slice(b.as_slice()).unwrap();
        assert_eq!(v, "a\"b\\c\n");
    }

    #[test]
    fn token_renewal_time() {
        let now = Instant::now();
        let mut t = Token {
            value: SecretBytes::copy_from(b"t"),
            obtained: now,
            ttl: Some(Duration::from_secs(30)),
            renewable: true,
            login_ttl: None,
            file_stamp: None,
        };
        assert_eq!(t.renew_at(), Some(now + Duration::from_secs(20)));
        t.ttl = Some(Duration::ZERO);
        assert_eq!(t.renew_at(), None, "a token without TTL never renews");
        assert_eq!(t.expires_at(), None);
        t.ttl = Some(Duration::from_secs(30));
        t.renewable = false;
        assert_eq!(t.renew_at(), None);
    }

    #[test]
    fn trim_whitespace() {
        assert_eq!(trim(b"  tok\n"), b"tok");
        assert_eq!(trim(b"\n\n"), b"");
    }

    #[test]
    fn unreachable_lists_every_address() {
        // Ports from a socket we close at once: nothing listens there.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let addrs = vec![
            format!("http://127.0.0.1:{}", free()),
            format!("http://127.0.0.1:{}", free()),
        ];
        let mut c = Client::new(
            &addrs,
            None,
            None,
            Auth::Token(SecretBytes::copy_from(b"s.secret-token")),
        )
        .unwrap();
        match c.read_kv("secret", "app") {
            Err(Failure::Unreachable(m)) => {
                assert!(m.contains(&addrs[0]) && m.contains(&addrs[1]), "{m}");
                assert!(!m.contains("secret-token"), "{m}");
            }
            _ => panic!("expected Unreachable"),
        }
    }
}
