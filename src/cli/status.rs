//! `status`: the vault, whether it is unlocked, its projects.

use clap::Args;

use super::{Ctx, out};
use crate::audit;
use crate::daemon::protocol::{MountStatus, Request};
use crate::daemon::{control, registry};
use crate::error::Result;
use crate::vault::{Sealed, keychain};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Status {
    vault: String,
    vault_id: String,
    unlocked: bool,
    unlock_expires_in_secs: Option<u64>,
    kdf: crate::vault::crypto::KdfParams,
    projects: Option<Vec<ProjectStatus>>,
    /// Live mounts (all vaults) and their grants.
    mounts: Vec<MountStatus>,
    audit: AuditStatus,
}

#[derive(serde::Serialize)]
struct AuditStatus {
    log: String,
    files: usize,
    /// Seq of the newest entry as the log states it (`audit verify` proves it).
    head_seq: Option<u64>,
    vault_anchor_seq: Option<u64>,
    keychain_anchor_seq: Option<u64>,
    /// "ok", or why accesses cannot be recorded (and are therefore denied).
    health: String,
}

fn audit_status(h: &crate::vault::format::Header) -> AuditStatus {
    let files = audit::Files::new(&audit::log_dir(), &h.vault_id);
    let health = match (audit::failure_note(&h.vault_id), audit::log::probe(&files)) {
        (Some(note), _) => format!("FAILING {note}"),
        (None, Err(why)) => format!("FAILING: {why}"),
        (None, Ok(())) => "ok".into(),
    };
    AuditStatus {
        log: files.active().display().to_string(),
        files: files.all().map(|f| f.len()).unwrap_or(0),
        head_seq: audit::log::last_seq(&files).ok().flatten(),
        vault_anchor_seq: audit::header_anchor(h).map(|a| a.seq),
        keychain_anchor_seq: audit::keychain_anchor(&h.vault_id).map(|a| a.seq),
        health,
    }
}

#[derive(serde::Serialize)]
struct ProjectStatus {
    name: String,
    secrets: usize,
}

pub fn status(ctx: &Ctx, a: StatusArgs) -> Result<i32> {
    // status never prompts: it reports what the cached key allows.
    let sealed = Sealed::read(&ctx.vault)?;
    let id = sealed.header().id_hex();
    let key = keychain::load(&id);
    let secrets = key.as_ref().and_then(|k| sealed.open(k).ok());
    let st = Status {
        vault: ctx.vault.display().to_string(),
        vault_id: id.clone(),
        unlocked: secrets.is_some(),
        unlock_expires_in_secs: secrets.as_ref().and_then(|_| keychain::expires_in(&id)),
        kdf: sealed.header().kdf,
        audit: audit_status(sealed.header()),
        projects: secrets.map(|s| {
            s.projects
                .iter()
                .map(|(n, p)| ProjectStatus {
                    name: n.clone(),
                    secrets: p.secrets.len(),
                })
                .collect()
        }),
        mounts: mounts(),
    };
    if a.json {
        out(&(serde_json::to_string_pretty(&st).expect("status serialises") + "\n"))?;
        return Ok(0);
    }
    let mut s = format!("vault:    {}\nid:       {}\n", st.vault, st.vault_id);
    match (st.unlocked, st.unlock_expires_in_secs) {
        (true, Some(secs)) => s.push_str(&format!(
            "state:    unlocked (for {})\n",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )),
        (true, None) => s.push_str("state:    unlocked\n"),
        (false, _) => s.push_str("state:    locked (run `hushfs unlock`)\n"),
    }
    s.push_str(&format!(
        "kdf:      Argon2id {} MiB, t={}, p={}\n",
        st.kdf.m_kib / 1024,
        st.kdf.t,
        st.kdf.p
    ));
    if let Some(ps) = &st.projects {
        if ps.is_empty() {
            s.push_str("projects: none yet (`hushfs set PROJECT/NAME`)\n");
        }
        for p in ps {
            s.push_str(&format!("project:  {} ({} secrets)\n", p.name, p.secrets));
        }
    }
    let au = &st.audit;
    s.push_str(&format!("audit:    {}", au.log));
    match au.head_seq {
        Some(seq) => s.push_str(&format!(" ({} entries, head seq {seq}", seq + 1)),
        None => s.push_str(" (no entries yet"),
    }
    if au.files > 1 {
        s.push_str(&format!(", {} files", au.files));
    }
    s.push_str(")\n");
    if au.health == "ok" {
        s.push_str("health:   ok\n");
    } else {
        s.push_str(&format!(
            "health:   {}\n          accesses that cannot be recorded are denied\n",
            au.health
        ));
    }
    for m in &st.mounts {
        s.push_str(&describe_mount(m));
    }
    out(&s)?;
    Ok(0)
}

/// Asks every live daemon for its status.
pub fn mounts() -> Vec<MountStatus> {
    registry::list()
        .iter()
        .filter_map(|e| control::call(&e.socket, &Request::Status, None).ok())
        .filter_map(|r| r.status)
        .collect()
}

fn describe_mount(m: &MountStatus) -> String {
    let stale = m.source.as_ref().is_some_and(|s| s.state == "stale");
    let state = match (&m.problem, m.locked) {
        (Some(p), false) if stale => format!("serving from memory, {p}"),
        (Some(p), _) => format!("NOT SERVING: {p}"),
        (None, true) => "locked".to_string(),
        (None, false) => "serving".to_string(),
    };
    let mut s = format!(
        "mount:    {} (project {}, pid {}, {} files, {state}{})\n",
        m.mountpoint,
        m.project,
        m.pid,
        m.files,
        if m.private { ", private to a run" } else { "" }
    );
    if let Some(src) = &m.source {
        let fetched = src
            .fetched
            .map(|t| format!(", fetched {}", super::rfc3339(t)))
            .unwrap_or_default();
        let version = src
            .version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  source: OpenBao {} via {} — {}{fetched}{version}\n",
            src.path, src.address, src.state
        ));
    }
    if m.grants.is_empty() {
        s.push_str("  grants: none (nothing can read; use `hushfs run --mount DIR -- CMD`)\n");
    }
    for g in &m.grants {
        let exp = g
            .expires
            .map(|t| format!(", expires {}", super::rfc3339(t)))
            .unwrap_or_default();
        s.push_str(&format!(
            "  grant {}: {} — {}{exp}\n",
            g.id, g.label, g.matches
        ));
    }
    s
}
