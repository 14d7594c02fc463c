//! `scan`: look for managed secret values (and their encodings) in staged
//! changes, a range of commits, files or stdin. Reports file, line, secret
//! name and encoding, never the value; exits 1 when anything is found.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use zeroize::Zeroizing;

use super::{Ctx, out};
use crate::error::{Error, Result};
use crate::scan::{Matcher, Piece, Stream, git};
use crate::vault::{names, unlock};

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The added lines of the staged changes (what a commit would record)
    #[arg(long, conflicts_with_all = ["range", "paths"])]
    pub staged: bool,
    /// The added lines of every commit in A..B (what a push would send)
    #[arg(long, value_name = "A..B", conflicts_with = "paths")]
    pub range: Option<String>,
    /// Files or directories to scan; `-` reads stdin
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub values: ValueArgs,
}

/// Which values to look for, and what to do when they cannot be had.
#[derive(Args, Debug, Clone)]
pub struct ValueArgs {
    /// Only this project's values [default: every project's]
    #[arg(long, short)]
    pub project: Option<String>,
    /// When the vault is locked, warn and exit 0 instead of failing
    #[arg(long)]
    pub allow_locked: bool,
}

/// The matcher over the values to look for, and the audit writer the scan
/// is recorded with; `None` when the vault is locked and `--allow-locked`
/// lets that pass (after a warning).
pub fn matcher(ctx: &Ctx, v: &ValueArgs) -> Result<Option<(Matcher, crate::audit::Writer)>> {
    if let Some(p) = &v.project {
        names::validate("project", p)?;
    }
    let vault = match unlock::open(&ctx.vault, &ctx.keys) {
        Ok(vault) => vault,
        Err(Error::Locked | Error::NoVault(_)) if v.allow_locked => {
            eprintln!(
                "hushfs: warning: the vault is locked or missing: NOT scanned for secrets (--allow-locked)"
            );
            return Ok(None);
        }
        Err(Error::Locked) => {
            return Err(Error::Denied(
                "the vault is locked and scanning needs the values: run `hushfs unlock` first \
                 (or pass --allow-locked to let this through unscanned)"
                    .into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let s = &vault.secrets;
    if let Some(p) = &v.project
        && s.project(p).is_none()
    {
        return Err(Error::NotFound(format!(
            "no project {p}: `hushfs ls` lists them"
        )));
    }
    let m = Matcher::new(
        s.projects
            .iter()
            .filter(|(name, _)| v.project.as_deref().is_none_or(|p| p == name.as_str()))
            .flat_map(|(pname, p)| {
                p.secrets
                    .iter()
                    .map(move |(n, e)| (format!("{pname}/{n}"), e.value.expose()))
            }),
    );
    if !m.unscannable().is_empty() {
        eprintln!(
            "hushfs: warning: not scanned, shorter than {} bytes: {}",
            crate::scan::MIN_LEN,
            m.unscannable().join(", ")
        );
    }
    Ok(Some((m, super::audit::recorder(&vault)?)))
}

/// Every scan is in the audit log with what it looked at and how many
/// values it found (never which input): a scan answers "is this a value?",
/// so repeated guessing through it shows up. A scan the log cannot record
/// is refused.
pub fn record_scan(w: &mut crate::audit::Writer, what: &str, hits: usize) -> Result<()> {
    let mut ev = super::audit::event("scan");
    ev.reason = Some(format!("{what}: {hits} managed value(s) found"));
    super::audit::record(w, ev)
}

/// One finding, as printed.
fn line(m: &Matcher, at: &str, line: u64, secret: usize, enc: crate::scan::Encoding) -> String {
    format!("{at}:{line}: {} ({enc})\n", m.label(secret))
}

/// The added lines of a patch; returns how many findings were printed.
pub fn report_added(m: &Matcher, added: &git::Added) -> Result<usize> {
    let mut text = String::new();
    let mut n = 0;
    for b in &added.blocks {
        for h in m.find_all(added.bytes(b)) {
            let at = match &b.commit {
                Some(c) => format!("{}:{}", &c[..c.len().min(12)], b.path),
                None => b.path.clone(),
            };
            text.push_str(&line(
                m,
                &at,
                added.line_of(b, h.start),
                h.secret,
                h.encoding,
            ));
            n += 1;
        }
    }
    out(&text)?;
    Ok(n)
}

/// Streams `r` through the matcher, counting lines.
fn scan_reader(m: &Arc<Matcher>, name: &str, r: &mut dyn Read) -> std::io::Result<Vec<String>> {
    let mut s = Stream::new(m.clone());
    let mut found = Vec::new();
    let mut lineno = 1u64;
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut on_piece = |p: Piece| match p {
        Piece::Plain(b) => lineno += b.iter().filter(|&&c| c == b'\n').count() as u64,
        Piece::Secret {
            secret,
            encoding,
            bytes,
        } => {
            found.push(line(m, name, lineno, secret, encoding));
            lineno += bytes.iter().filter(|&&c| c == b'\n').count() as u64;
        }
    };
    loop {
        let n = match r.read(&mut buf[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s.push(&buf[..n], &mut on_piece);
    }
    s.finish(&mut on_piece);
    Ok(found)
}

/// Files under `p` (directories walked, `.git` skipped, symlinks not
/// followed).
fn files(p: &Path, acc: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(p)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name() == ".git" {
                continue;
            }
            files(&e.path(), acc)?;
        }
    } else if meta.is_file() {
        acc.push(p.to_path_buf());
    }
    Ok(())
}

/// Scans paths; returns (findings, whether a file could not be read).
fn report_paths(m: &Arc<Matcher>, paths: &[PathBuf]) -> Result<(usize, bool)> {
    let mut n = 0;
    let mut failed = false;
    for p in paths {
        if p.as_os_str() == "-" {
            let found = scan_reader(m, "<stdin>", &mut std::io::stdin().lock())
                .map_err(|e| Error::Other(format!("cannot read stdin: {e}")))?;
            n += found.len();
            out(&found.concat())?;
            continue;
        }
        let mut all = Vec::new();
        if let Err(e) = files(p, &mut all) {
            eprintln!("hushfs: cannot read {}: {e}", p.display());
            failed = true;
            continue;
        }
        for f in all {
            let name = f.display().to_string();
            match std::fs::File::open(&f).and_then(|mut fh| scan_reader(m, &name, &mut fh)) {
                Ok(found) => {
                    n += found.len();
                    out(&found.concat())?;
                }
                Err(e) => {
                    eprintln!("hushfs: cannot read {name}: {e}");
                    failed = true;
                }
            }
        }
    }
    Ok((n, failed))
}

/// `--range A..B` as git arguments, refusing what git would take for an
/// option.
pub fn range_revs(r: &str) -> Result<Vec<String>> {
    if r.is_empty() || r.starts_with('-') || r.chars().any(char::is_whitespace) {
        return Err(Error::usage(format!(
            "--range {r:?}: give a revision range such as origin/main..HEAD"
        )));
    }
    Ok(vec![r.to_string()])
}

pub fn summary(n: usize, what: &str) {
    if n > 0 {
        eprintln!(
            "hushfs: {n} managed secret value(s) found in {what} (listed above; values are never shown): remove them"
        );
    }
}

pub fn scan(ctx: &Ctx, a: ScanArgs) -> Result<i32> {
    if !a.staged && a.range.is_none() && a.paths.is_empty() {
        return Err(Error::usage(
            "what should be scanned? pass --staged, --range A..B, or files (`-` for stdin)",
        ));
    }
    let revs = a.range.as_deref().map(range_revs).transpose()?;
    let Some((m, mut rec)) = matcher(ctx, &a.values)? else {
        return Ok(0);
    };
    let (n, what, failed) = if a.staged {
        (
            report_added(&m, &git::staged(None)?)?,
            "the staged changes",
            false,
        )
    } else if let Some(revs) = revs {
        let revs: Vec<&str> = revs.iter().map(String::as_str).collect();
        (
            report_added(&m, &git::commits(None, &revs)?)?,
            "the commits",
            false,
        )
    } else {
        let (n, failed) = report_paths(&Arc::new(m), &a.paths)?;
        (n, "the files", failed)
    };
    record_scan(&mut rec, what, n)?;
    summary(n, what);
    Ok(if n > 0 {
        1
    } else if failed {
        2
    } else {
        0
    })
}
