//! `set`, `ls`, `rm`, `import`: managing the secrets of a project.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Seek, Write};
use std::path::PathBuf;

use clap::Args;
use zeroize::Zeroizing;

use super::{Ctx, audit, out, rfc3339};
use crate::error::{Error, Result};
use crate::secret::{SecretBuf, SecretBytes};
use crate::vault::names::{self, SecretRef};
use crate::vault::{MAX_VALUE, unlock};

#[derive(Args, Debug)]
pub struct SetArgs {
    /// PROJECT/NAME
    pub secret: String,
    /// Read the value from this file, byte for byte
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Keep a trailing newline read from stdin
    #[arg(long)]
    pub raw: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only this project
    pub project: Option<String>,
    /// One JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// PROJECT/NAME
    pub secret: String,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Project to import into
    pub project: String,
    /// The dotenv file
    pub file: PathBuf,
    /// Overwrite and delete the file once the vault is saved
    #[arg(long)]
    pub shred: bool,
}

fn read_value(a: &SetArgs, r: &SecretRef) -> Result<SecretBytes> {
    let too_big = |n: String| {
        Error::usage(format!(
            "value of {r} is {n}; the limit is {MAX_VALUE} bytes (1 MiB): serve larger files another way"
        ))
    };
    if let Some(p) = &a.from_file {
        let mut f = File::open(p).map_err(|e| Error::io("cannot open", p, e))?;
        let buf = SecretBuf::read_limited(&mut f, MAX_VALUE).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => too_big("larger".into()),
            _ => Error::io("cannot read", p, e),
        })?;
        return Ok(buf.into_secret());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let s = Zeroizing::new(
            rpassword::prompt_password(format!("Value for {r}: "))
                .map_err(|e| Error::usage(format!("cannot read the value: {e}")))?,
        );
        return Ok(SecretBytes::copy_from(s.as_bytes()));
    }
    let mut buf =
        SecretBuf::read_limited(&mut stdin.lock(), MAX_VALUE + 1).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => too_big("larger".into()),
            _ => Error::Other(format!("cannot read stdin: {e}")),
        })?;
    if !a.raw {
        buf.strip_suffix_byte(b'\n');
    }
    if buf.len() > MAX_VALUE {
        return Err(too_big(format!("{} bytes", buf.len())));
    }
    Ok(buf.into_secret())
}

pub fn set(ctx: &Ctx, a: SetArgs) -> Result<i32> {
    let r = SecretRef::parse(&a.secret)?;
    // Read the value before taking the lock: a slow typist must not block
    // other writers.
    let value = read_value(&a, &r)?;
    let len = value.len();
    let (changed, mut rec) = unlock::modify(&ctx.vault, &ctx.keys, |v| {
        let rec = audit::recorder(v)?;
        let c = v.secrets.set(&r.project, &r.name, value)?;
        Ok(((c, rec), c))
    })?;
    let mut ev = audit::event("set");
    ev.project = Some(r.project.clone());
    ev.secrets = vec![r.name.clone()];
    if !changed {
        ev.reason = Some("unchanged".into());
    }
    audit::record(&mut rec, ev)?;
    let what = if changed { "stored" } else { "unchanged" };
    eprintln!("{what} {r} ({len} bytes)");
    Ok(0)
}

#[derive(serde::Serialize)]
struct LsRow<'a> {
    project: &'a str,
    name: &'a str,
    size: usize,
    modified: String,
}

pub fn ls(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    if let Some(p) = &a.project {
        names::validate("project", p)?;
    }
    let v = unlock::open(&ctx.vault, &ctx.keys)?;
    if let Some(p) = &a.project
        && v.secrets.project(p).is_none()
    {
        return Err(Error::NotFound(format!(
            "no project {p} in {}: `hushfs ls` lists them all",
            ctx.vault.display()
        )));
    }
    let rows: Vec<LsRow> = v
        .secrets
        .projects
        .iter()
        .filter(|(name, _)| a.project.as_deref().is_none_or(|p| p == name.as_str()))
        .flat_map(|(pname, p)| {
            p.secrets.iter().map(move |(n, e)| LsRow {
                project: pname,
                name: n,
                size: e.value.len(),
                modified: rfc3339(e.modified),
            })
        })
        .collect();
    if a.json {
        out(&(serde_json::to_string_pretty(&rows).expect("rows serialise") + "\n"))?;
        return Ok(0);
    }
    let width = rows
        .iter()
        .map(|r| r.project.len() + 1 + r.name.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut s = format!("{:<width$}  {:>8}  MODIFIED\n", "SECRET", "SIZE");
    for r in &rows {
        let full = format!("{}/{}", r.project, r.name);
        s.push_str(&format!("{full:<width$}  {:>8}  {}\n", r.size, r.modified));
    }
    out(&s)?;
    Ok(0)
}

pub fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let r = SecretRef::parse(&a.secret)?;
    let (existed, mut rec) = unlock::modify(&ctx.vault, &ctx.keys, |v| {
        let rec = audit::recorder(v)?;
        let e = v.secrets.remove(&r.project, &r.name);
        Ok(((e, rec), e))
    })?;
    if !existed {
        return Err(Error::NotFound(format!(
            "no secret {r}: `hushfs ls {}` shows what is there",
            r.project
        )));
    }
    let mut ev = audit::event("rm");
    ev.project = Some(r.project.clone());
    ev.secrets = vec![r.name.clone()];
    audit::record(&mut rec, ev)?;
    eprintln!("removed {r}");
    Ok(0)
}

/// Parses a dotenv file with dotenvy (export prefix, quotes, escapes,
/// multi-line values, comments, CRLF). dotenvy hands out `String`s; each is
/// moved into a zeroizing wrapper at once and copied into a secret buffer.
fn parse_dotenv(path: &PathBuf) -> Result<Vec<(String, SecretBytes)>> {
    let f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut out = Vec::new();
    for (i, item) in dotenvy::from_read_iter(f).enumerate() {
        let (k, v) = item.map_err(|e| {
            // dotenvy's parse errors quote the offending line, which may hold
            // a value: report only the position.
            let pos = match &e {
                dotenvy::Error::LineParse(_, idx) => format!(" near character {idx}"),
                _ => String::new(),
            };
            Error::usage(format!(
                "{}: entry {} cannot be parsed{pos}: check its quoting",
                path.display(),
                i + 1
            ))
        })?;
        let v = Zeroizing::new(v);
        names::validate("secret", &k)
            .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        out.push((k, SecretBytes::copy_from(v.as_bytes())));
    }
    Ok(out)
}

/// Overwrites the file's bytes with zeros, syncs, then unlinks it. On
/// copy-on-write filesystems and SSDs old blocks may survive; the docs say so.
fn shred(path: &PathBuf) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    f.rewind()?;
    let zeros = [0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(path)
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    names::validate("project", &a.project)?;
    let entries = parse_dotenv(&a.file)?;
    let n = entries.len();
    let names: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let mut rec = unlock::modify(&ctx.vault, &ctx.keys, |v| {
        let rec = audit::recorder(v)?;
        for (k, val) in entries {
            v.secrets.set(&a.project, &k, val)?;
        }
        Ok((rec, n > 0))
    })?;
    let mut ev = audit::event("import");
    ev.project = Some(a.project.clone());
    ev.secrets = names;
    ev.file = Some(a.file.display().to_string());
    audit::record(&mut rec, ev)?;
    eprintln!(
        "imported {n} secrets into {} from {}",
        a.project,
        a.file.display()
    );
    if a.shred {
        shred(&a.file).map_err(|e| Error::io("vault saved, but cannot shred", &a.file, e))?;
        eprintln!("shredded {}", a.file.display());
    }
    Ok(0)
}
