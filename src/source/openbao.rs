//! A project whose values live at a KV v2 path on an OpenBao or HashiCorp
//! Vault server (same HTTP API). Values are fetched when the mount starts
//! and every `refresh` after, kept in memory only, and served from memory
//! for at most `max_stale` while no server answers. A refused token or
//! permission, or a deleted path, stops serving at once: central
//! revocation must take effect on the developer machine, not wait out the
//! staleness window (docs/TEAMS.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::{Auth, Client, Failure};
use super::{Notice, Served, Source, SourceStatus, StopKind, Values};
use crate::error::Error;
use crate::vault::{MAX_VALUE, Secrets, names};

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(15 * 60);
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const MAX_MAX_STALE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a project's values are on the server, and how often to look.
/// Nothing here is secret: it is stored in the project's settings or in
/// hushfs.toml. Credentials are kept apart (`super::TOKEN` and friends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Server addresses, tried in this order (several for a cluster).
    pub addresses: Vec<String>,
    /// The KV v2 mount, e.g. `secret`.
    pub kv_mount: String,
    /// The secret's path below the mount, e.g. `myapp`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Read the token from this file instead of the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub refresh_secs: u64,
    pub max_stale_secs: u64,
}

impl Settings {
    /// Checks every field; messages say what to write instead.
    pub fn check(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err("no server address: give --openbao https://HOST:8200".into());
        }
        for a in &self.addresses {
            super::client::Addr::parse(a)?;
        }
        check_path("KV mount", &self.kv_mount)?;
        check_path("path", &self.path)?;
        if let Some(ns) = &self.namespace {
            check_path("namespace", ns)?;
        }
        let refresh = Duration::from_secs(self.refresh_secs);
        if !(MIN_REFRESH..=MAX_REFRESH).contains(&refresh) {
            return Err("refresh must be between 1s and 24h".into());
        }
        if Duration::from_secs(self.max_stale_secs) > MAX_MAX_STALE {
            return Err("max_stale must be at most 7 days (0 serves nothing stale)".into());
        }
        Ok(())
    }

    /// `mount/path` as users write it.
    pub fn shown_path(&self) -> String {
        format!("{}/{}", self.kv_mount, self.path)
    }

    pub fn refresh(&self) -> Duration {
        Duration::from_secs(self.refresh_secs)
    }

    pub fn max_stale(&self) -> Duration {
        Duration::from_secs(self.max_stale_secs)
    }

    /// Reads the `[source]` table of hushfs.toml. Paths in it are relative
    /// to `base_dir` (the file's directory); `~/` is the home directory.
    pub fn from_toml(t: &toml::Table, base_dir: &Path) -> Result<Settings, String> {
        const KNOWN: &str =
            "openbao, path, kv_mount, ca_file, namespace, token_file, refresh, max_stale";
        for key in t.keys() {
            match key.as_str() {
                "openbao" | "path" | "kv_mount" | "ca_file" | "namespace" | "token_file"
                | "refresh" | "max_stale" => {}
                "token" | "role_id" | "secret_id" | "approle" | "password" => {
                    return Err(format!(
                        "{key} does not belong in hushfs.toml (it is shared, and plaintext): \
                         store credentials in the vault with `hushfs source set PROJECT --token` \
                         or `--approle`, or name a token_file"
                    ));
                }
                other => return Err(format!("unknown key {other:?}; known keys: {KNOWN}")),
            }
        }
        let string = |k: &str| -> Result<Option<String>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(format!("{k} must be a string, not {}", v.type_str())),
            }
        };
        let addresses = match t.get("openbao") {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    v => Err(format!(
                        "openbao lists addresses as strings, not {}",
                        v.type_str()
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(format!(
                    "openbao must be an address or a list of them, not {}",
                    v.type_str()
                ));
            }
            None => {
                return Err(
                    "openbao = \"https://HOST:8200\" (or a list of addresses) is missing".into(),
                );
            }
        };
        let path =
            string("path")?.ok_or("path = \"MOUNT/PATH\" (e.g. \"secret/myapp\") is missing")?;
        let (kv_mount, path) = split_path(&path, string("kv_mount")?.as_deref())?;
        let file = |k: &str| -> Result<Option<PathBuf>, String> {
            Ok(string(k)?.map(|s| expand_path(&s, base_dir)))
        };
        let duration = |k: &str, default: Duration| -> Result<u64, String> {
            match string(k)? {
                None => Ok(default.as_secs()),
                Some(s) => parse_secs(&s).map_err(|e| format!("{k}: {e}")),
            }
        };
        let s = Settings {
            addresses: dedup_addresses(&addresses)?,
            kv_mount,
            path,
            ca_file: file("ca_file")?,
            namespace: string("namespace")?,
            token_file: file("token_file")?,
            refresh_secs: duration("refresh", DEFAULT_REFRESH)?,
            max_stale_secs: duration("max_stale", DEFAULT_MAX_STALE)?,
        };
        s.check()?;
        Ok(s)
    }
}

/// Normalized addresses without duplicates, in the given order.
pub fn dedup_addresses(addrs: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for a in addrs {
        let url = super::client::Addr::parse(a)?.url;
        if !out.contains(&url) {
            out.push(url);
        }
    }
    Ok(out)
}

/// A duration such as `30s`, `15m` or `0`, in whole seconds.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    humantime::parse_duration(s.trim())
        .map(|d| d.as_secs())
        .map_err(|e| format!("{s:?}: {e} (write e.g. 30s, 15m, 1h)"))
}

fn expand_path(s: &str, base: &Path) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(s)
}

/// Splits `secret/myapp` into mount `secret` and path `myapp`. With
/// `kv_mount` the path must start with it (for mounts such as `team/kv`).
pub fn split_path(full: &str, kv_mount: Option<&str>) -> Result<(String, String), String> {
    let full = full.trim_matches('/');
    let (mount, rest) = match kv_mount {
        Some(m) => {
            let m = m.trim_matches('/');
            let rest = full
                .strip_prefix(m)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| {
                    format!(
                        "path {full:?} does not start with the KV mount {m:?}: write the full path, \
                         e.g. {m}/myapp"
                    )
                })?;
            (m.to_string(), rest.to_string())
        }
        None => match full.split_once('/') {
            Some((m, r)) => (m.to_string(), r.to_string()),
            None => {
                return Err(format!(
                    "path {full:?} needs the KV mount first, e.g. secret/{full}"
                ));
            }
        },
    };
    check_path("KV mount", &mount)?;
    check_path("path", &rest)?;
    Ok((mount, rest))
}

/// Path components of `[A-Za-z0-9_.@+-]`, no `.`/`..`, none empty.
fn check_path(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "the {what} {p:?} has an empty, '.' or '..' component"
            ));
        }
        if let Some(bad) = c
            .chars()
            .find(|&ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '@' | '+' | '-')))
        {
            return Err(format!(
                "the {what} {p:?} contains {bad:?}: use A-Z a-z 0-9 _ . @ + - and /"
            ));
        }
    }
    Ok(())
}

/// Values as last fetched, in memory only.
struct Cache {
    values: Values,
    at: Instant,
    unix: u64,
    version: u64,
}

enum State {
    /// Nothing fetched yet.
    Starting,
    Fresh,
    /// The servers stopped answering at `since` (Unix seconds).
    Stale {
        since: u64,
    },
    /// Serving nothing, for this reason.
    Stopped {
        kind: StopKind,
        why: String,
    },
}

pub struct OpenBao {
    project: String,
    settings: Settings,
    /// Where the settings came from, for status.
    origin: String,
    auth: Auth,
    client: Client,
    cache: Option<Cache>,
    state: State,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    skipped: Vec<String>,
    notices: Vec<Notice>,
}

impl OpenBao {
    pub fn new(
        project: &str,
        settings: Settings,
        origin: String,
        auth: Auth,
    ) -> Result<OpenBao, Error> {
        let client = Client::new(
            &settings.addresses,
            settings.ca_file.as_deref(),
            settings.namespace.as_deref(),
            auth.clone(),
        )
        .map_err(|f| Error::usage(format!("source of {project}: {f}")))?;
        Ok(OpenBao {
            project: project.to_string(),
            settings,
            origin,
            auth,
            client,
            cache: None,
            state: State::Starting,
            last_attempt: None,
            last_error: None,
            skipped: Vec::new(),
            notices: Vec::new(),
        })
    }

    /// Whether this instance was built from the same settings and
    /// credentials (otherwise the caller builds a new one).
    pub fn same(&self, settings: &Settings, origin: &str, auth: &Auth) -> bool {
        self.settings == *settings && self.origin == origin && self.auth.same_as(auth)
    }

    fn notice(&mut self, event: &'static str, reason: String, secrets: Vec<String>) {
        self.notices.push(Notice {
            event,
            reason,
            secrets,
        });
    }

    fn due(&self) -> bool {
        self.next_poll().is_none_or(|t| Instant::now() >= t)
    }

    /// Fetches now and decides what to serve.
    fn poll(&mut self) -> Result<Served, Error> {
        self.last_attempt = Some(Instant::now());
        match self
            .client
            .read_kv(&self.settings.kv_mount, &self.settings.path)
        {
            Ok(kv) => Ok(self.fetched(kv.values, kv.version)),
            Err(Failure::Unreachable(m)) => self.unreachable(m),
            Err(Failure::Refused(m)) => Err(self.stop(StopKind::Denied, m)),
            Err(Failure::NotFound(m)) => Err(self.stop(StopKind::NotFound, m)),
            Err(Failure::Invalid(m)) => Err(self.stop(StopKind::Invalid, m)),
        }
    }

    fn fetched(&mut self, raw: Values, version: u64) -> Served {
        let mut values = Values::new();
        let mut skipped = Vec::new();
        for (name, v) in raw {
            if names::validate("secret", &name).is_ok() && v.len() <= MAX_VALUE {
                values.insert(name, v);
            } else {
                skipped.push(name);
            }
        }
        if !skipped.is_empty() && skipped != self.skipped {
            log::warn!(
                "{}: not served (not a valid secret name, or over 1 MiB): {}",
                self.settings.shown_path(),
                skipped.join(", ")
            );
        }
        self.skipped = skipped;
        // Pinned like the rendered files (a no-op under mlockall).
        for v in values.values() {
            crate::sys::harden::mlock_slice(v.expose());
        }
        let changed: Vec<String> = match &self.cache {
            None => values.keys().cloned().collect(),
            Some(c) => {
                let mut n: Vec<String> = values
                    .iter()
                    .filter(|(k, v)| c.values.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                n.extend(
                    c.values
                        .keys()
                        .filter(|k| !values.contains_key(*k))
                        .cloned(),
                );
                n.sort();
                n
            }
        };
        let was_serving = matches!(self.state, State::Fresh | State::Stale { .. });
        if matches!(self.state, State::Stale { .. } | State::Stopped { .. }) {
            self.notice(
                "source_recovered",
                format!("{} answers again", self.client.address()),
                Vec::new(),
            );
        }
        if !changed.is_empty() || self.cache.is_none() {
            self.notice(
                "source_fetch",
                format!(
                    "version {version} of {} from {}",
                    self.settings.shown_path(),
                    self.client.address()
                ),
                changed.clone(),
            );
        }
        let served = Served {
            values: values.clone(),
            changed: !changed.is_empty() || !was_serving,
            warning: None,
        };
        self.cache = Some(Cache {
            values,
            at: Instant::now(),
            unix: crate::vault::secrets::now(),
            version,
        });
        self.state = State::Fresh;
        self.last_error = None;
        served
    }

    fn unreachable(&mut self, m: String) -> Result<Served, Error> {
        self.last_error = Some(m.clone());
        if self.cache.is_none() {
            let why = format!(
                "cannot reach the OpenBao server for {} ({m}): check that it runs and \
                 `hushfs source show {}`",
                self.project, self.project
            );
            return Err(self.stop(StopKind::Unavailable, why));
        }
        if !matches!(self.state, State::Stale { .. }) {
            self.state = State::Stale {
                since: crate::vault::secrets::now(),
            };
            let reason = format!(
                "no server answers ({m}); serving the values of {} from memory for at most {}",
                self.fetched_at(),
                humantime::format_duration(self.settings.max_stale())
            );
            log::warn!("{reason}");
            self.notice("source_stale", reason, Vec::new());
        }
        self.serve_cached()
    }

    fn fetched_at(&self) -> String {
        self.cache
            .as_ref()
            .map(|c| super::rfc3339(c.unix))
            .unwrap_or_default()
    }

    /// The cached values while they are young enough; otherwise they are
    /// dropped and serving stops.
    fn serve_cached(&mut self) -> Result<Served, Error> {
        let Some(c) = &self.cache else {
            return Err(self.stop(StopKind::Unavailable, "no values fetched yet".to_string()));
        };
        if c.at.elapsed() > self.settings.max_stale() {
            let why = format!(
                "no OpenBao server has answered since {} and the values fetched then are older \
                 than max_stale {}: they were dropped from memory (last error: {})",
                self.fetched_at(),
                humantime::format_duration(self.settings.max_stale()),
                self.last_error.as_deref().unwrap_or("none")
            );
            return Err(self.stop(StopKind::Unavailable, why));
        }
        let warning = match &self.state {
            State::Stale { since } => Some(format!(
                "stale: no OpenBao server has answered since {} ({}); the values fetched at {} \
                 are served until they are {} old",
                super::rfc3339(*since),
                self.last_error.as_deref().unwrap_or("unreachable"),
                self.fetched_at(),
                humantime::format_duration(self.settings.max_stale())
            )),
            _ => None,
        };
        Ok(Served {
            values: c.values.clone(),
            changed: false,
            warning,
        })
    }

    /// Drops the cached values and records why nothing is served.
    fn stop(&mut self, kind: StopKind, why: String) -> Error {
        self.cache = None;
        let already = matches!(&self.state, State::Stopped { why: w, .. } if *w == why);
        if !already {
            log::warn!("not serving {}: {why}", self.project);
            self.notice("source_stopped", why.clone(), Vec::new());
        }
        self.last_error = Some(why.clone());
        self.state = State::Stopped {
            kind: kind.clone(),
            why: why.clone(),
        };
        kind.error(why)
    }
}

impl Source for OpenBao {
    fn current(&mut self, _vault: &Secrets) -> Result<Served, Error> {
        if self.due() {
            return self.poll();
        }
        match &self.state {
            State::Stopped { kind, why } => Err(kind.clone().error(why.clone())),
            _ => self.serve_cached(),
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        let mut t = self.last_attempt? + self.settings.refresh();
        if let Some(r) = self.client.renew_at() {
            t = t.min(r);
        }
        if let (State::Stale { .. }, Some(c)) = (&self.state, &self.cache) {
            t = t.min(c.at + self.settings.max_stale() + Duration::from_millis(1));
        }
        Some(t)
    }

    fn status(&self) -> Option<SourceStatus> {
        let state = match &self.state {
            State::Starting => "starting",
            State::Fresh => "fresh",
            State::Stale { .. } => "stale",
            State::Stopped { .. } => "not serving",
        };
        Some(SourceStatus {
            kind: "openbao".into(),
            address: self.client.address().to_string(),
            addresses: self.settings.addresses.clone(),
            path: self.settings.shown_path(),
            origin: self.origin.clone(),
            auth: self.auth.describe(),
            state: state.into(),
            fetched: self.cache.as_ref().map(|c| c.unix),
            version: self.cache.as_ref().map(|c| c.version),
            error: self.last_error.clone(),
            skipped: self.skipped.clone(),
            token_expires: self.client.token_expires(),
            refresh_secs: self.settings.refresh_secs,
            max_stale_secs: self.settings.max_stale_secs,
        })
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn toml_source_is_read_and_checked() {
        let s = Settings::from_toml(
            &table(
                r#"openbao = ["https://a:8200", "https://b:8200/", "https://a:8200"]
                path = "secret/myapp"
                ca_file = "ca.pem"
                refresh = "10s"
                max_stale = "0""#,
            ),
            Path::new("/repo"),
        )
        .unwrap();
        assert_eq!(s.addresses, ["https://a:8200", "https://b:8200"]);
        assert_eq!((s.kv_mount.as_str(), s.path.as_str()), ("secret", "myapp"));
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/repo/ca.pem")));
        assert_eq!((s.refresh_secs, s.max_stale_secs), (10, 0));

        for (bad, says) in [
            (
                r#"openbao = "https://a"
                path = "secret/x"
                token = "s.abc""#,
                "does not belong in hushfs.toml",
            ),
            (r#"path = "secret/x""#, "openbao ="),
            (
                r#"openbao = "http://10.0.0.1:8200"
                path = "secret/x""#,
                "in clear",
            ),
            (
                r#"openbao = "https://a"
                path = "x""#,
                "needs the KV mount",
            ),
            (
                r#"openbao = "https://a"
                path = "secret/../x""#,
                "'..'",
            ),
            (
                r#"openbao = "https://a"
                path = "secret/x"
                refresh = "0""#,
                "between 1s",
            ),
            (
                r#"openbao = "https://a"
                path = "secret/x"
                colour = "x""#,
                "unknown key",
            ),
        ] {
            let e = Settings::from_toml(&table(bad), Path::new("/r")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("s.abc"), "{e}");
        }
    }

    #[test]
    fn kv_mount_with_slashes() {
        assert_eq!(
            split_path("team/kv/app/db", Some("team/kv")).unwrap(),
            ("team/kv".into(), "app/db".into())
        );
        assert!(split_path("other/app", Some("team/kv")).is_err());
        assert_eq!(
            split_path("/secret/app/", None).unwrap(),
            ("secret".into(), "app".into())
        );
    }

    #[test]
    fn stored_settings_refuse_unknown_fields() {
        let s = Settings {
            addresses: vec!["https://a".into()],
            kv_mount: "secret".into(),
            path: "x".into(),
            ca_file: None,
            namespace: None,
            token_file: None,
            refresh_secs: 30,
            max_stale_secs: 60,
        };
        let mut v = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<Settings>(v.clone()).unwrap(), s);
        v["pin"] = "x".into();
        assert!(serde_json::from_value::<Settings>(v).is_err());
    }
}
