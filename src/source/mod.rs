//! Where a project's values come from: the local vault (the default) or a
//! KV v2 path on an OpenBao / HashiCorp Vault server. The daemon asks a
//! `ProjectSource` for "the current values of project P" whenever the
//! vault changes and whenever the source asks to be polled again; the
//! answer is the values to serve, or why nothing may be served.
//!
//! The setting lives in the project's settings in the vault
//! (`ProjectMeta.fields["source"]`, set by `hushfs source set`) or in the
//! `[source]` table of hushfs.toml; the vault's setting wins. Credentials
//! are never in either: they are vault entries named `.source.token`,
//! `.source.role_id` and `.source.secret_id` (`names::CREDENTIAL_PREFIX`),
//! which no user secret can be named, and which are kept apart from the
//! project's secrets so they are never served, listed or exported.

pub mod client;
pub mod openbao;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::render::Config;
use crate::secret::SecretBytes;
use crate::vault::{ProjectMeta, Secrets};
use client::Auth;
use openbao::{OpenBao, Settings};

/// The key of the source setting in `ProjectMeta.fields`.
pub const FIELD: &str = "source";
/// Vault entry names of the credentials (see `vault::names::is_credential`).
pub const TOKEN: &str = ".source.token";
pub const ROLE_ID: &str = ".source.role_id";
pub const SECRET_ID: &str = ".source.secret_id";

/// Secret name → value.
pub type Values = BTreeMap<String, SecretBytes>;

/// The values to serve now.
pub struct Served {
    pub values: Values,
    /// False when these are exactly the values this source returned last
    /// time (the daemon then leaves the mount as it is).
    pub changed: bool,
    /// Served, but with a caveat for `status` (e.g. stale values).
    pub warning: Option<String>,
}

/// Why nothing is served; decides the exit code of a command that fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// The server refused the credentials or the permission.
    Denied,
    /// Nothing at the path.
    NotFound,
    /// No server answered.
    Unavailable,
    /// A setting or a local file is wrong.
    Invalid,
}

impl StopKind {
    pub fn error(self, why: String) -> Error {
        match self {
            StopKind::Denied => Error::Denied(why),
            StopKind::NotFound => Error::NotFound(why),
            StopKind::Unavailable => Error::Other(why),
            StopKind::Invalid => Error::Usage(why),
        }
    }
}

/// Something the audit log should hear about (no values, ever).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// source_fetch, source_stale, source_recovered, source_stopped.
    pub event: &'static str,
    pub reason: String,
    /// Names of the secrets that changed.
    pub secrets: Vec<String>,
}

/// A remote source as `hushfs status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceStatus {
    /// "openbao" (also for HashiCorp Vault).
    pub kind: String,
    /// The address asked first: the cluster's leader once known.
    pub address: String,
    pub addresses: Vec<String>,
    /// KV mount and path, e.g. "secret/myapp".
    pub path: String,
    /// "vault" (hushfs source set) or the hushfs.toml it came from.
    pub origin: String,
    /// The kind of credential; never its value.
    pub auth: String,
    /// "starting", "fresh", "stale" or "not serving".
    pub state: String,
    /// Unix seconds of the last successful fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
    /// KV version of the values held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The last failure, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys on the server that cannot be served (bad name, over 1 MiB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Unix seconds when the token expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires: Option<u64>,
    pub refresh_secs: u64,
    pub max_stale_secs: u64,
}

/// What the daemon asks of a source.
pub trait Source: Send {
    /// The project's current values, given the freshly opened vault (the
    /// local source's values; a remote source's credentials).
    fn current(&mut self, vault: &Secrets) -> Result<Served>;
    /// When to ask again without a vault change (refresh, token renewal,
    /// end of staleness); `None`: only when the vault changes.
    fn next_poll(&self) -> Option<Instant> {
        None
    }
    fn status(&self) -> Option<SourceStatus> {
        None
    }
    fn take_notices(&mut self) -> Vec<Notice> {
        Vec::new()
    }
}

/// The local vault: the project's own secrets.
pub struct LocalVault {
    project: String,
}

impl Source for LocalVault {
    fn current(&mut self, vault: &Secrets) -> Result<Served> {
        let p = vault.project(&self.project).ok_or_else(|| {
            Error::NotFound(format!(
                "no project {} in the vault: `hushfs ls` lists them",
                self.project
            ))
        })?;
        Ok(Served {
            values: p
                .secrets
                .iter()
                .map(|(n, e)| (n.clone(), e.value.clone()))
                .collect(),
            changed: true,
            warning: None,
        })
    }
}

/// The source setting as stored in a project's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Stored {
    /// The local vault, even if hushfs.toml names a server.
    Local,
    Openbao(Settings),
}

/// The project's stored setting, if any.
pub fn stored(meta: &ProjectMeta, project: &str) -> Result<Option<Stored>> {
    match meta.fields.get(FIELD) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            Error::usage(format!(
                "the source setting of {project} is not understood ({e}; written by a newer \
                 hushfs?): upgrade, or `hushfs source clear {project}`"
            ))
        }),
    }
}

/// Which source applies to a project, and where that was said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Local,
    OpenBao { settings: Settings, origin: String },
}

/// The vault's setting wins over hushfs.toml's `[source]`; neither means
/// the local vault.
pub fn resolve(vault: &Secrets, project: &str, config: &Config) -> Result<Spec> {
    let meta = vault.project(project).map(|p| &p.meta);
    match meta.map(|m| stored(m, project)).transpose()?.flatten() {
        Some(Stored::Local) => Ok(Spec::Local),
        Some(Stored::Openbao(settings)) => {
            settings.check().map_err(|e| {
                Error::usage(format!(
                    "the source setting of {project}: {e}: fix it with `hushfs source set {project}`"
                ))
            })?;
            Ok(Spec::OpenBao {
                settings,
                origin: "vault".into(),
            })
        }
        None => match &config.remote {
            // Run by the agent on the cached key, nobody typed anything: the
            // stored credentials go only to a server recorded in the vault
            // (`source set`, which needs the passphrase), never to one a
            // file in some directory names.
            Some(settings)
                if settings.token_file.is_none() && crate::vault::keychain::available() =>
            {
                Err(Error::Denied(format!(
                    "{} names the OpenBao server of {project}; with the cached key the vault's \
                     credentials go only to a server recorded in the vault: run `hushfs source set \
                     {project} --openbao URL --path P` once (it asks for the passphrase), or give \
                     --token-file in {}",
                    config.source_name(),
                    config.source_name()
                )))
            }
            Some(settings) => Ok(Spec::OpenBao {
                settings: settings.clone(),
                origin: config.source_name(),
            }),
            None => Ok(Spec::Local),
        },
    }
}

/// The credentials a remote source uses: the token file if the settings
/// name one, else AppRole or a token from the vault.
pub fn credentials(vault: &Secrets, project: &str, settings: &Settings) -> Result<Auth> {
    if let Some(f) = &settings.token_file {
        return Ok(Auth::TokenFile(f.clone()));
    }
    let creds = vault.project(project).map(|p| &p.credentials);
    let get = |n: &str| creds.and_then(|c| c.get(n)).map(|e| e.value.clone());
    match (get(ROLE_ID), get(SECRET_ID), get(TOKEN)) {
        (Some(role_id), Some(secret_id), _) => Ok(Auth::AppRole { role_id, secret_id }),
        (_, _, Some(t)) => Ok(Auth::Token(t)),
        _ => Err(Error::NotFound(format!(
            "no credentials for the OpenBao source of {project}: store them with \
             `hushfs source set {project} --token` (or --approle, or --token-file FILE)"
        ))),
    }
}

enum Active {
    None,
    Local(LocalVault),
    OpenBao(Box<OpenBao>),
}

/// A project's source as the daemon holds it: follows changes of the
/// setting and credentials in the vault, keeping a remote source's
/// connection and in-memory values while they stay the same.
pub struct ProjectSource {
    project: String,
    config: Config,
    active: Active,
}

impl ProjectSource {
    pub fn new(project: &str, config: &Config) -> ProjectSource {
        ProjectSource {
            project: project.to_string(),
            config: config.clone(),
            active: Active::None,
        }
    }

    /// Drops whatever a remote source holds (values, token): for `lock`.
    pub fn forget(&mut self) {
        self.active = Active::None;
    }

    fn select(&mut self, vault: &Secrets) -> Result<&mut dyn Source> {
        let spec = resolve(vault, &self.project, &self.config);
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                self.active = Active::None;
                return Err(e);
            }
        };
        match spec {
            Spec::Local => {
                if !matches!(self.active, Active::Local(_)) {
                    self.active = Active::Local(LocalVault {
                        project: self.project.clone(),
                    });
                }
            }
            Spec::OpenBao { settings, origin } => {
                let auth = match credentials(vault, &self.project, &settings) {
                    Ok(a) => a,
                    Err(e) => {
                        self.active = Active::None;
                        return Err(e);
                    }
                };
                let keep =
                    matches!(&self.active, Active::OpenBao(o) if o.same(&settings, &origin, &auth));
                if !keep {
                    // New server, path or credentials: values held for the
                    // old ones are dropped (wiped) here.
                    self.active = Active::None;
                    self.active = Active::OpenBao(Box::new(OpenBao::new(
                        &self.project,
                        settings,
                        origin,
                        auth,
                    )?));
                }
            }
        }
        Ok(match &mut self.active {
            Active::Local(l) => l,
            Active::OpenBao(o) => o.as_mut(),
            Active::None => unreachable!("set above"),
        })
    }
}

impl Source for ProjectSource {
    fn current(&mut self, vault: &Secrets) -> Result<Served> {
        self.select(vault)?.current(vault)
    }

    fn next_poll(&self) -> Option<Instant> {
        match &self.active {
            Active::OpenBao(o) => o.next_poll(),
            _ => None,
        }
    }

    fn status(&self) -> Option<SourceStatus> {
        match &self.active {
            Active::OpenBao(o) => o.status(),
            _ => None,
        }
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        match &mut self.active {
            Active::OpenBao(o) => o.take_notices(),
            _ => Vec::new(),
        }
    }
}

/// The project's values once, for a command (`run --env`, the check
/// before a mount).
pub fn values_now(vault: &Secrets, project: &str, config: &Config) -> Result<Values> {
    ProjectSource::new(project, config)
        .current(vault)
        .map(|s| s.values)
}

/// Checks what can be checked without asking a server: the setting, the
/// credentials, the CA file. For the local vault: the project exists.
pub fn check(vault: &Secrets, project: &str, config: &Config) -> Result<Spec> {
    let spec = resolve(vault, project, config)?;
    if let Spec::OpenBao { settings, origin } = &spec {
        let auth = credentials(vault, project, settings)?;
        OpenBao::new(project, settings.clone(), origin.clone(), auth)?;
    }
    Ok(spec)
}

/// Unix seconds as RFC 3339 UTC, for messages.
pub(crate) fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            addresses: vec!["https://bao.example.com:8200".into()],
            kv_mount: "secret".into(),
            path: "app".into(),
            ca_file: None,
            namespace: None,
            token_file: None,
            refresh_secs: 30,
            max_stale_secs: 900,
        }
    }

    fn vault_with(stored: Option<Stored>) -> Secrets {
        let mut s = Secrets::default();
        s.set("app", "LOCAL", SecretBytes::copy_from(b"l")).unwrap();
        if let Some(st) = stored {
            s.projects
                .get_mut("app")
                .unwrap()
                .meta
                .fields
                .insert(FIELD.into(), serde_json::to_value(st).unwrap());
        }
        s
    }

    #[test]
    fn vault_setting_wins_over_hushfs_toml() {
        let mut config = Config::default();
        assert_eq!(
            resolve(&vault_with(None), "app", &config).unwrap(),
            Spec::Local
        );
        config.remote = Some(settings());
        assert!(matches!(
            resolve(&vault_with(None), "app", &config).unwrap(),
            Spec::OpenBao { origin, .. } if origin == "the default configuration"
        ));
        assert_eq!(
            resolve(&vault_with(Some(Stored::Local)), "app", &config).unwrap(),
            Spec::Local
        );
        let mut other = settings();
        other.path = "other".into();
        assert_eq!(
            resolve(
                &vault_with(Some(Stored::Openbao(other.clone()))),
                "app",
                &config
            )
            .unwrap(),
            Spec::OpenBao {
                settings: other,
                origin: "vault".into()
            }
        );
    }

    #[test]
    fn stored_setting_round_trips_with_a_kind() {
        let v = serde_json::to_value(Stored::Openbao(settings())).unwrap();
        assert_eq!(v["kind"], "openbao");
        assert_eq!(v["kv_mount"], "secret");
        let back: Stored = serde_json::from_value(v).unwrap();
        assert_eq!(back, Stored::Openbao(settings()));
        let mut s = vault_with(None);
        s.projects
            .get_mut("app")
            .unwrap()
            .meta
            .fields
            .insert(FIELD.into(), serde_json::json!({"kind": "consul"}));
        let e = resolve(&s, "app", &Config::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer hushfs"), "{e}");
    }

    #[test]
    fn credentials_prefer_approle_then_token_and_need_one() {
        let mut s = vault_with(Some(Stored::Openbao(settings())));
        let e = credentials(&s, "app", &settings()).err().unwrap();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("--token"), "{e}");
        s.set_credential("app", TOKEN, SecretBytes::copy_from(b"t"))
            .unwrap();
        assert!(matches!(
            credentials(&s, "app", &settings()).unwrap(),
            Auth::Token(_)
        ));
        s.set_credential("app", ROLE_ID, SecretBytes::copy_from(b"r"))
            .unwrap();
        s.set_credential("app", SECRET_ID, SecretBytes::copy_from(b"s"))
            .unwrap();
        assert!(matches!(
            credentials(&s, "app", &settings()).unwrap(),
            Auth::AppRole { .. }
        ));
        let mut with_file = settings();
        with_file.token_file = Some("/run/tok".into());
        assert!(matches!(
            credentials(&s, "app", &with_file).unwrap(),
            Auth::TokenFile(_)
        ));
    }

    #[test]
    fn local_source_never_serves_credentials() {
        let mut s = vault_with(None);
        s.set_credential("app", TOKEN, SecretBytes::copy_from(b"t"))
            .unwrap();
        let v = values_now(&s, "app", &Config::default()).unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["LOCAL"]);
    }

    #[test]
    fn unreachable_server_without_values_is_an_error_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut st = settings();
        st.addresses = vec![format!("http://127.0.0.1:{port}")];
        let mut s = vault_with(Some(Stored::Openbao(st)));
        s.set_credential("app", TOKEN, SecretBytes::copy_from(b"s.tok"))
            .unwrap();
        let mut src = ProjectSource::new("app", &Config::default());
        let e = src.current(&s).err().expect("no server");
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
        assert!(!m.contains("s.tok"));
        let st = src.status().unwrap();
        assert_eq!(st.state, "not serving");
        let n = src.take_notices();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].event, "source_stopped");
        assert!(src.next_poll().is_some(), "it keeps trying");
    }
}
