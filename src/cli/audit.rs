//! `hushfs audit verify | anchor | show | tail`, and the helpers the other
//! commands use to record what they did.

use clap::{Args, Subcommand};

use super::{Ctx, out};
use crate::audit::verify::{self, Report, Verdict};
use crate::audit::{self, Anchor, Event, Files, Options, Record, VaultId, Writer, query};
use crate::error::{Error, Result};
use crate::vault::{Sealed, Vault, unlock};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every entry's MAC, the chain and the anchors (exit 1: tampered, 2: torn last line)
    Verify(VerifyArgs),
    /// Print the current anchor (last seq and MAC) to keep somewhere off this machine
    Anchor,
    /// Show entries as a table, or as JSON lines with --json
    Show(ShowArgs),
    /// Follow new entries as they are written, across rotations
    Tail(TailArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// An anchor printed earlier by `hushfs audit anchor`
    #[arg(long, value_name = "ANCHOR")]
    pub anchor: Option<String>,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Only entries newer than this: a duration (30m, 1h, 2d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN", value_parser = query::Filter::parse_since)]
    pub since: Option<String>,
    /// Only entries naming this secret (NAME or PROJECT/NAME)
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Only entries of this process (pid or tgid)
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Only denials
    #[arg(long)]
    pub denied: bool,
}

impl FilterArgs {
    fn filter(&self) -> query::Filter {
        query::Filter {
            since: self.since.clone(),
            secret: self.secret.as_deref().map(query::Filter::parse_secret),
            pid: self.pid,
            denied: self.denied,
        }
    }
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The log's own JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The log's own JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
    /// Matching entries to show from before now
    #[arg(short = 'n', long, default_value_t = 10, value_name = "N")]
    pub lines: usize,
}

pub fn audit(ctx: &Ctx, a: AuditArgs) -> Result<i32> {
    match a.command {
        AuditCommand::Verify(v) => verify_cmd(ctx, v),
        AuditCommand::Anchor => anchor(ctx),
        AuditCommand::Show(s) => show(ctx, s),
        AuditCommand::Tail(t) => tail(ctx, t),
    }
}

fn files_of(id: &VaultId) -> Files {
    Files::new(&audit::log_dir(), id)
}

/// Verifies with the vault's key against every anchor there is.
fn run_verify(ctx: &Ctx, extra: Option<&str>) -> Result<(VaultId, Report)> {
    let v = unlock::open(&ctx.vault, &ctx.keys)?;
    let id = v.header.vault_id;
    let mut anchors = Vec::new();
    if let Some(s) = extra {
        anchors.push((
            "--anchor".to_string(),
            Anchor::parse(s, &id).map_err(Error::usage)?,
        ));
    }
    if let Some(a) = audit::header_anchor(&v.header) {
        anchors.push(("the vault header".to_string(), a));
    }
    if let Some(a) = audit::keychain_anchor(&id) {
        anchors.push(("the keychain".to_string(), a));
    }
    let r = verify::verify(&id, v.key(), &files_of(&id), &anchors)?;
    Ok((id, r))
}

fn verify_cmd(ctx: &Ctx, a: VerifyArgs) -> Result<i32> {
    let (_, r) = run_verify(ctx, a.anchor.as_deref())?;
    out(&verify::describe(&r))?;
    match (r.verdict(), &r.problem) {
        (Verdict::Intact, _) => Ok(0),
        (Verdict::Tampered, Some(p)) => Err(Error::Denied(format!(
            "the audit log was tampered with: first bad seq {}: {}",
            p.seq, p.what
        ))),
        _ => Err(Error::Other(
            "the audit log's last line is incomplete (an interrupted write); everything before it verifies".into(),
        )),
    }
}

fn anchor(ctx: &Ctx) -> Result<i32> {
    // The keychain's anchor is the writers' own record: no key needed.
    let id = Sealed::read(&ctx.vault)?.header().vault_id;
    let a = match audit::keychain_anchor(&id) {
        Some(a) => a,
        None => {
            let (_, r) = run_verify(ctx, None)?;
            if let (Verdict::Tampered, Some(p)) = (r.verdict(), &r.problem) {
                return Err(Error::Denied(format!(
                    "no anchor: the audit log fails verification at seq {}: {}",
                    p.seq, p.what
                )));
            }
            r.head.ok_or_else(|| {
                Error::NotFound("the audit log has no entries yet: nothing to anchor".into())
            })?
        }
    };
    out(&format!("{}\n", a.to_text(&id)))?;
    Ok(0)
}

fn show(ctx: &Ctx, a: ShowArgs) -> Result<i32> {
    let id = Sealed::read(&ctx.vault)?.header().vault_id;
    let filter = a.filter.filter();
    let mut buf = String::new();
    if !a.json {
        buf.push_str(query::TABLE_HEADER);
    }
    query::scan(&files_of(&id), &filter, |line, row| {
        if a.json {
            buf.push_str(&String::from_utf8_lossy(line));
            buf.push('\n');
        } else {
            buf.push_str(&query::render(row));
        }
        if buf.len() >= 64 * 1024 {
            out(&buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    out(&buf)?;
    Ok(0)
}

fn tail(ctx: &Ctx, a: TailArgs) -> Result<i32> {
    let id = Sealed::read(&ctx.vault)?.header().vault_id;
    if !a.json {
        out(query::TABLE_HEADER)?;
    }
    query::follow(
        &files_of(&id),
        &a.filter.filter(),
        a.lines,
        std::time::Duration::from_millis(200),
        || true,
        |line, row| {
            if a.json {
                out(&format!("{}\n", String::from_utf8_lossy(line)))
            } else {
                out(&query::render(row))
            }
        },
    )?;
    Ok(0)
}

/// The audit writer for a command that is about to change something,
/// opened before the change: when the log cannot record it, the change is
/// refused (fail closed).
pub(super) fn recorder(v: &Vault) -> Result<Writer> {
    Writer::open(&v.header.vault_id, Some(v.key()), &Options::default()).map_err(refused)
}

pub(super) fn refused(e: Error) -> Error {
    Error::Denied(format!(
        "refused: the audit log cannot record this ({e}); `hushfs status` shows the log"
    ))
}

/// An event about this CLI process.
pub(super) fn event(kind: &str) -> Event {
    Event::for_this_process(kind)
}

/// Records what a command did, after it succeeded.
pub(super) fn record(w: &mut Writer, ev: Event) -> Result<()> {
    let what = ev.event.clone();
    w.append(&[Record::now(ev)]).map(|_| ()).map_err(|e| {
        Error::Other(format!(
            "`{what}` took effect, but the audit log could not record it: {e}"
        ))
    })
}
