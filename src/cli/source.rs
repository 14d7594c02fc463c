//! `source set|show|clear`: where a project's values come from — the local
//! vault (default) or a KV v2 path on an OpenBao / HashiCorp Vault server.
//! Settings go into the project's settings in the vault; credentials into
//! the vault as `.source.*` entries, read from stdin or a prompt (never
//! argv).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::mount::load_config;
use super::{Ctx, out};
use crate::error::{Error, Result};
use crate::secret::{SecretBuf, SecretBytes};
use crate::source::openbao::{self, Settings};
use crate::source::{self as src, Spec, Stored};
use crate::vault::{Secrets, names, unlock};

#[derive(Args, Debug)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub cmd: SourceCmd,
}

#[derive(Subcommand, Debug)]
pub enum SourceCmd {
    /// Serve a project from an OpenBao/Vault KV v2 path (or the local vault)
    Set(SetArgs),
    /// Where a project's values come from (never a credential)
    Show(ShowArgs),
    /// Back to the local vault: remove the setting and the credentials
    Clear(ClearArgs),
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The project
    pub project: String,
    /// Server address, e.g. https://bao.example.com:8200; repeat for each
    /// node of a cluster (tried in order)
    #[arg(long = "openbao", value_name = "URL")]
    pub addresses: Vec<String>,
    /// KV v2 path: MOUNT/PATH, e.g. secret/myapp
    #[arg(long, value_name = "MOUNT/PATH")]
    pub path: Option<String>,
    /// The KV mount when it has several components (e.g. team/kv)
    #[arg(long, value_name = "MOUNT")]
    pub kv_mount: Option<String>,
    /// PEM file of the CA that signed the server's certificate
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Namespace (X-Vault-Namespace)
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// How often to fetch again [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub refresh: Option<String>,
    /// How long to serve values from memory while no server answers;
    /// 0 serves nothing stale [default: 15m]
    #[arg(long, value_name = "DURATION")]
    pub max_stale: Option<String>,
    /// Store a token, read from stdin (or typed at a prompt)
    #[arg(long, group = "auth")]
    pub token: bool,
    /// Store AppRole credentials: role ID and secret ID, one per line on
    /// stdin (or typed at prompts)
    #[arg(long, group = "auth")]
    pub approle: bool,
    /// Read the token from this file at each fetch (e.g. ~/.vault-token)
    #[arg(long, group = "auth", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve the local vault's secrets, even if hushfs.toml names a server
    #[arg(long, conflicts_with_all = ["addresses", "path", "kv_mount", "ca_file", "namespace",
        "refresh", "max_stale", "token", "approle", "token_file"])]
    pub local: bool,
    /// hushfs.toml whose [source] to start from [default: found from here up]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The project [default: `project` in hushfs.toml]
    pub project: Option<String>,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// hushfs.toml to consider [default: found from here up]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ClearArgs {
    /// The project
    pub project: String,
}

pub fn source(ctx: &Ctx, a: SourceArgs) -> Result<i32> {
    match a.cmd {
        SourceCmd::Set(a) => set(ctx, a),
        SourceCmd::Show(a) => show(ctx, a),
        SourceCmd::Clear(a) => clear(ctx, a),
    }
}

/// Credentials as typed or piped, in zeroizing buffers.
enum NewCreds {
    Token(SecretBytes),
    AppRole(SecretBytes, SecretBytes),
}

/// A token, role ID or secret ID: printable ASCII without spaces, so it
/// can go into an HTTP header or JSON as it is. The message never quotes it.
fn check_credential(what: &str, b: &[u8]) -> Result<()> {
    if b.is_empty() {
        return Err(Error::usage(format!(
            "the {what} is empty: pipe it on stdin, e.g. `bao print token | hushfs source set P --token`"
        )));
    }
    if !b.iter().all(|c| c.is_ascii_graphic()) {
        return Err(Error::usage(format!(
            "the {what} holds spaces, control characters or non-ASCII bytes: check what was piped in"
        )));
    }
    Ok(())
}

fn prompt(text: &str) -> Result<SecretBytes> {
    let s = Zeroizing::new(
        rpassword::prompt_password(text)
            .map_err(|e| Error::usage(format!("cannot read from the terminal: {e}")))?,
    );
    Ok(SecretBytes::copy_from(src::client::trim(s.as_bytes())))
}

fn read_stdin() -> Result<SecretBuf> {
    SecretBuf::read_limited(&mut std::io::stdin().lock(), 64 * 1024)
        .map_err(|e| Error::usage(format!("cannot read stdin: {e}")))
}

fn read_creds(a: &SetArgs) -> Result<Option<NewCreds>> {
    let tty = std::io::stdin().is_terminal();
    if a.token {
        let t = if tty {
            prompt(&format!("Token for {}: ", a.project))?
        } else {
            SecretBytes::copy_from(src::client::trim(read_stdin()?.as_slice()))
        };
        check_credential("token", t.expose())?;
        return Ok(Some(NewCreds::Token(t)));
    }
    if a.approle {
        let (role, secret) = if tty {
            (prompt("AppRole role ID: ")?, prompt("AppRole secret ID: ")?)
        } else {
            let buf = read_stdin()?;
            let mut lines = buf
                .as_slice()
                .split(|&b| b == b'\n')
                .map(src::client::trim)
                .filter(|l| !l.is_empty());
            let (Some(r), Some(s), None) = (lines.next(), lines.next(), lines.next()) else {
                return Err(Error::usage(
                    "--approle reads two lines on stdin: the role ID, then the secret ID",
                ));
            };
            (SecretBytes::copy_from(r), SecretBytes::copy_from(s))
        };
        check_credential("role ID", role.expose())?;
        check_credential("secret ID", secret.expose())?;
        return Ok(Some(NewCreds::AppRole(role, secret)));
    }
    Ok(None)
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io("cannot resolve", p, e))
}

/// Builds the settings to store from the flags, starting from the stored
/// ones or hushfs.toml's (from scratch when --openbao is given). `None`:
/// no setting flag was given.
fn settings_from_flags(a: &SetArgs, base: Option<Settings>) -> Result<Option<Settings>> {
    let any = !a.addresses.is_empty()
        || a.path.is_some()
        || a.kv_mount.is_some()
        || a.ca_file.is_some()
        || a.namespace.is_some()
        || a.refresh.is_some()
        || a.max_stale.is_some()
        || a.token_file.is_some();
    if !any {
        return Ok(None);
    }
    let usage = |e: String| Error::usage(format!("source of {}: {e}", a.project));
    // New addresses describe a new server: start afresh rather than carry
    // over a CA file or namespace meant for another one.
    let base = if a.addresses.is_empty() { base } else { None };
    let mut s = match base {
        Some(b) => b,
        None => {
            if a.addresses.is_empty() || a.path.is_none() {
                return Err(Error::usage(format!(
                    "{} has no server yet: give --openbao https://HOST:8200 and --path MOUNT/PATH",
                    a.project
                )));
            }
            Settings {
                addresses: Vec::new(),
                kv_mount: String::new(),
                path: String::new(),
                ca_file: None,
                namespace: None,
                token_file: None,
                refresh_secs: openbao::DEFAULT_REFRESH.as_secs(),
                max_stale_secs: openbao::DEFAULT_MAX_STALE.as_secs(),
            }
        }
    };
    if !a.addresses.is_empty() {
        s.addresses = openbao::dedup_addresses(&a.addresses).map_err(usage)?;
    }
    if let Some(p) = &a.path {
        let (m, p) = openbao::split_path(p, a.kv_mount.as_deref()).map_err(usage)?;
        s.kv_mount = m;
        s.path = p;
    } else if a.kv_mount.is_some() {
        return Err(Error::usage("--kv-mount goes with --path MOUNT/PATH"));
    }
    if let Some(f) = &a.ca_file {
        s.ca_file = Some(absolute(f)?);
    }
    if let Some(ns) = &a.namespace {
        s.namespace = (!ns.is_empty()).then(|| ns.clone());
    }
    if let Some(r) = &a.refresh {
        s.refresh_secs = openbao::parse_secs(r).map_err(|e| usage(format!("--refresh {e}")))?;
    }
    if let Some(m) = &a.max_stale {
        s.max_stale_secs = openbao::parse_secs(m).map_err(|e| usage(format!("--max-stale {e}")))?;
    }
    if let Some(f) = &a.token_file {
        s.token_file = Some(absolute(f)?);
    }
    if a.token || a.approle {
        s.token_file = None;
    }
    s.check().map_err(usage)?;
    Ok(Some(s))
}

fn stored_setting(v: &Secrets, project: &str) -> Result<Option<Stored>> {
    match v.project(project) {
        Some(p) => src::stored(&p.meta, project),
        None => Ok(None),
    }
}

fn set_setting(v: &mut Secrets, project: &str, s: Stored) {
    let value = serde_json::to_value(s).expect("settings serialise");
    v.projects
        .entry(project.to_string())
        .or_default()
        .meta
        .fields
        .insert(src::FIELD.to_string(), value);
}

/// What a stored credential is trusted to: the servers it is sent to. (A
/// new CA file for the same servers keeps them: reaching another host
/// needs a new address.)
fn trust_of(s: &src::openbao::Settings) -> Vec<String> {
    s.addresses.clone()
}

/// Removes the credentials that `keep` does not use.
fn prune_credentials(v: &mut Secrets, project: &str, keep: &[&str]) -> bool {
    let Some(p) = v.projects.get_mut(project) else {
        return false;
    };
    let before = p.credentials.len();
    p.credentials.retain(|k, _| keep.contains(&k.as_str()));
    let changed = p.credentials.len() != before;
    v.drop_if_empty(project);
    changed
}

pub fn set(ctx: &Ctx, a: SetArgs) -> Result<i32> {
    names::validate("project", &a.project)?;
    let (config, _) = load_config(a.config.as_deref())?;
    // Credentials are read before the vault lock is taken: a slow typist
    // must not block other writers.
    let creds = read_creds(&a)?;
    let project = a.project.clone();
    // Checked on the vault as saved: reopening it would need the
    // passphrase a second time (--passphrase-fd is read once).
    let checked = |v: &Secrets| -> Result<(Spec, Option<String>)> {
        let spec = src::resolve(v, &project, &config)?;
        let warn = match &spec {
            Spec::OpenBao { .. } => src::check(v, &project, &config)
                .err()
                .map(|e| e.to_string()),
            Spec::Local => None,
        };
        Ok((spec, warn))
    };
    let mut dropped = false;
    let ((spec, warning), mut rec) = unlock::modify(&ctx.vault, &ctx.keys, |v| {
        let rec = super::audit::recorder(v)?;
        let mut changed = false;
        if a.local {
            set_setting(&mut v.secrets, &project, Stored::Local);
            prune_credentials(&mut v.secrets, &project, &[]);
            return Ok(((checked(&v.secrets)?, rec), true));
        }
        let base = match stored_setting(&v.secrets, &project)? {
            Some(Stored::Openbao(s)) => Some(s),
            _ => config.remote.clone(),
        };
        let before = base.as_ref().map(trust_of);
        if let Some(s) = settings_from_flags(&a, base)? {
            // Credentials stored for one server never go to another: new
            // addresses drop them unless new ones come with
            // it (the agent runs `source set` on the cached key, so this is
            // what keeps a same-uid process from re-pointing the token).
            if before.as_ref() != Some(&trust_of(&s)) && creds.is_none() {
                dropped = prune_credentials(&mut v.secrets, &project, &[]);
            }
            set_setting(&mut v.secrets, &project, Stored::Openbao(s));
            changed = true;
        }
        match creds {
            Some(NewCreds::Token(t)) => {
                changed |= v.secrets.set_credential(&project, src::TOKEN, t)?;
                changed |= prune_credentials(&mut v.secrets, &project, &[src::TOKEN]);
            }
            Some(NewCreds::AppRole(r, s)) => {
                changed |= v.secrets.set_credential(&project, src::ROLE_ID, r)?;
                changed |= v.secrets.set_credential(&project, src::SECRET_ID, s)?;
                changed |=
                    prune_credentials(&mut v.secrets, &project, &[src::ROLE_ID, src::SECRET_ID]);
            }
            None if a.token_file.is_some() => {
                changed |= prune_credentials(&mut v.secrets, &project, &[]);
            }
            None => {}
        }
        if !changed {
            return Err(Error::usage(
                "nothing to set: give --openbao URL --path MOUNT/PATH, --token, --approle, \
                 --token-file FILE or --local (see `hushfs source set --help`)",
            ));
        }
        Ok(((checked(&v.secrets)?, rec), changed))
    })?;
    let mut ev = super::audit::event("source-set");
    ev.project = Some(project.clone());
    ev.reason = Some(describe_spec(&spec));
    super::audit::record(&mut rec, ev)?;
    out(&format!("source of {project}: {}\n", describe_spec(&spec)))?;
    if dropped {
        eprintln!(
            "hushfs: the stored credentials of {project} were removed: they were for another \
             server; give them again with `hushfs source set {project} --token` (or --approle)"
        );
    }
    // Saved either way (credentials may follow in a second step), but say
    // now what a mount would stumble on.
    if let Some(w) = warning {
        eprintln!("hushfs: warning: {w}");
    }
    Ok(0)
}

fn describe_spec(spec: &Spec) -> String {
    match spec {
        Spec::Local => "the local vault".to_string(),
        Spec::OpenBao { settings, origin } => format!(
            "OpenBao {} at {} ({})",
            settings.shown_path(),
            settings.addresses.join(", "),
            if origin == "vault" {
                "set in the vault".to_string()
            } else {
                format!("from {origin}")
            }
        ),
    }
}

#[derive(serde::Serialize)]
struct ShowJson {
    project: String,
    /// "local" or "openbao"
    kind: &'static str,
    /// "default", "vault" or the hushfs.toml path
    origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<Settings>,
    /// "token", "approle", "token_file" or "none"
    auth: String,
}

pub fn show(ctx: &Ctx, a: ShowArgs) -> Result<i32> {
    let (config, _) = load_config(a.config.as_deref())?;
    let project = super::mount::resolve_project(a.project, &config)?;
    let v = unlock::open(&ctx.vault, &ctx.keys)?;
    let spec = src::resolve(&v.secrets, &project, &config)?;
    let local_explicit = matches!(stored_setting(&v.secrets, &project)?, Some(Stored::Local));
    let (kind, origin, settings, auth) = match &spec {
        Spec::Local => (
            "local",
            if local_explicit { "vault" } else { "default" }.to_string(),
            None,
            "none".to_string(),
        ),
        Spec::OpenBao { settings, origin } => {
            let auth = match src::credentials(&v.secrets, &project, settings) {
                Ok(src::client::Auth::Token(_)) => "token",
                Ok(src::client::Auth::AppRole { .. }) => "approle",
                Ok(src::client::Auth::TokenFile(_)) => "token_file",
                Err(_) => "none",
            };
            (
                "openbao",
                origin.clone(),
                Some(settings.clone()),
                auth.to_string(),
            )
        }
    };
    if a.json {
        let j = ShowJson {
            project,
            kind,
            origin,
            settings,
            auth,
        };
        out(&(serde_json::to_string_pretty(&j).expect("serialises") + "\n"))?;
        return Ok(0);
    }
    let mut s = format!("project:   {project}\n");
    match settings {
        None => s.push_str(&format!(
            "source:    the local vault ({})\n",
            if local_explicit {
                "set with `hushfs source set --local`"
            } else {
                "default"
            }
        )),
        Some(st) => {
            let from = if origin == "vault" {
                "set in the vault".to_string()
            } else {
                format!("from {origin}")
            };
            s.push_str(&format!("source:    OpenBao/Vault KV v2 ({from})\n"));
            s.push_str(&format!("addresses: {}\n", st.addresses.join(", ")));
            s.push_str(&format!(
                "path:      {} (mount {}, read at {}/data/{})\n",
                st.shown_path(),
                st.kv_mount,
                st.kv_mount,
                st.path
            ));
            if let Some(ns) = &st.namespace {
                s.push_str(&format!("namespace: {ns}\n"));
            }
            if let Some(ca) = &st.ca_file {
                s.push_str(&format!("ca file:   {}\n", ca.display()));
            }
            let auth_line = match auth.as_str() {
                "token" => "a token stored in the vault".to_string(),
                "approle" => "AppRole role and secret ID stored in the vault".to_string(),
                "token_file" => format!(
                    "the token in {}",
                    st.token_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
                _ => format!("none yet: `hushfs source set {project} --token`"),
            };
            s.push_str(&format!("auth:      {auth_line}\n"));
            s.push_str(&format!(
                "refresh:   {}\nmax stale: {}\n",
                humantime::format_duration(st.refresh()),
                humantime::format_duration(st.max_stale())
            ));
        }
    }
    out(&s)?;
    Ok(0)
}

pub fn clear(ctx: &Ctx, a: ClearArgs) -> Result<i32> {
    names::validate("project", &a.project)?;
    let project = a.project.clone();
    let (existed, mut rec) = unlock::modify(&ctx.vault, &ctx.keys, |v| {
        let rec = super::audit::recorder(v)?;
        let Some(p) = v.secrets.projects.get_mut(&project) else {
            return Ok(((false, rec), false));
        };
        let had = p.meta.fields.remove(src::FIELD).is_some();
        let had_creds = v.secrets.clear_credentials(&project);
        v.secrets.drop_if_empty(&project);
        Ok(((had || had_creds, rec), had || had_creds))
    })?;
    if !existed {
        return Err(Error::NotFound(format!(
            "{project} has no source setting or credentials in the vault: `hushfs source show {project}`"
        )));
    }
    let mut ev = super::audit::event("source-clear");
    ev.project = Some(project.clone());
    super::audit::record(&mut rec, ev)?;
    let (config, _) = load_config(None)?;
    let mut msg = format!("source of {project}: setting and credentials removed from the vault\n");
    if config.remote.is_some() {
        msg.push_str(&format!(
            "note: {} still names a server for this directory; `hushfs source set {project} --local` overrides it\n",
            config.source_name()
        ));
    }
    out(&msg)?;
    Ok(0)
}
