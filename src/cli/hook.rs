//! `hook install|uninstall`: git hooks that refuse commits and pushes
//! carrying a managed secret value. An existing hook is kept beside ours as
//! `HOOK.hushfs-chained` and runs after ours; uninstall puts it back.
//! `hook run` (hidden) is what the installed scripts call.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::Ctx;
use super::scan::{ValueArgs, matcher, report_added, summary};
use crate::error::{Error, Result};
use crate::scan::git;

#[derive(Subcommand, Debug)]
pub enum HookCmd {
    /// Install the hooks in this repository (both unless one is named)
    Install(InstallArgs),
    /// Remove hushfs's hooks and put back the ones they chained
    Uninstall(UninstallArgs),
    /// What the installed hooks run
    #[command(hide = true)]
    Run(RunHookArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The pre-commit hook (scans the staged changes)
    #[arg(long)]
    pub pre_commit: bool,
    /// The pre-push hook (scans the added lines of the pushed commits)
    #[arg(long)]
    pub pre_push: bool,
    #[command(flatten)]
    pub values: ValueArgs,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    #[arg(long)]
    pub pre_commit: bool,
    #[arg(long)]
    pub pre_push: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Kind {
    PreCommit,
    PrePush,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::PreCommit => "pre-commit",
            Kind::PrePush => "pre-push",
        }
    }
}

#[derive(Args, Debug)]
pub struct RunHookArgs {
    pub kind: Kind,
    /// What git passes to the hook (pre-push: remote name and URL)
    #[arg(allow_hyphen_values = true)]
    pub git_args: Vec<String>,
    #[command(flatten)]
    pub values: ValueArgs,
}

const MARKER: &str = "# hushfs hook:";

fn kinds(pre_commit: bool, pre_push: bool) -> Vec<Kind> {
    match (pre_commit, pre_push) {
        (false, false) | (true, true) => vec![Kind::PreCommit, Kind::PrePush],
        (true, false) => vec![Kind::PreCommit],
        (false, true) => vec![Kind::PrePush],
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn script(kind: Kind, exe: &Path, values: &ValueArgs) -> String {
    let name = kind.file();
    let mut args = String::new();
    if let Some(p) = &values.project {
        args.push_str(&format!(" --project {}", quote(p)));
    }
    if values.allow_locked {
        args.push_str(" --allow-locked");
    }
    let head = format!(
        "#!/bin/sh\n\
         {MARKER} {name}. Installed by `hushfs hook install`; `hushfs hook uninstall` removes it\n\
         # and puts back the hook that was here before (kept as {name}.hushfs-chained).\n\
         hushfs={exe}\n\
         command -v \"$hushfs\" >/dev/null 2>&1 || hushfs=hushfs\n\
         chained=\"$(dirname \"$0\")/{name}.hushfs-chained\"\n",
        exe = quote(&exe.display().to_string()),
    );
    let body = match kind {
        Kind::PreCommit => format!(
            "\"$hushfs\" hook run pre-commit{args} || exit $?\n\
             if [ -x \"$chained\" ]; then exec \"$chained\" \"$@\"; fi\n"
        ),
        // git writes the refs being pushed on stdin: both hooks need them.
        Kind::PrePush => format!(
            "input=$(cat)\n\
             feed() {{ [ -z \"$input\" ] || printf '%s\\n' \"$input\"; }}\n\
             feed | \"$hushfs\" hook run pre-push{args} -- \"$@\" || exit $?\n\
             if [ -x \"$chained\" ]; then feed | \"$chained\" \"$@\"; exit $?; fi\n"
        ),
    };
    head + &body
}

fn is_ours(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).contains(MARKER))
}

fn chained_path(dir: &Path, kind: Kind) -> PathBuf {
    dir.join(format!("{}.hushfs-chained", kind.file()))
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn write_hook(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".hushfs-hook-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot write a hook in", dir, e))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(|e| Error::io("cannot write hook", path, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("cannot make executable", path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("cannot install hook", path, e.error))?;
    Ok(())
}

pub fn hook(ctx: &Ctx, cmd: HookCmd) -> Result<i32> {
    match cmd {
        HookCmd::Install(a) => install(a),
        HookCmd::Uninstall(a) => uninstall(a),
        HookCmd::Run(a) => run(ctx, a),
    }
}

fn install(a: InstallArgs) -> Result<i32> {
    if let Some(p) = &a.values.project {
        crate::vault::names::validate("project", p)?;
    }
    let dir = git::hooks_dir(None)?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot find the hushfs binary: {e}")))?;
    for kind in kinds(a.pre_commit, a.pre_push) {
        let path = dir.join(kind.file());
        let chained = chained_path(&dir, kind);
        let mut note = "";
        if exists(&path) && !is_ours(&path) {
            if exists(&chained) {
                return Err(Error::usage(format!(
                    "{} and {} both exist: move one of them away, then install again",
                    path.display(),
                    chained.display()
                )));
            }
            std::fs::rename(&path, &chained)
                .map_err(|e| Error::io("cannot move the existing hook", &path, e))?;
            note = "; the hook that was there runs after it";
        } else if exists(&chained) {
            note = "; the chained hook runs after it";
        }
        write_hook(&path, &script(kind, &exe, &a.values))?;
        eprintln!("installed {}{note}", path.display());
    }
    Ok(0)
}

fn uninstall(a: UninstallArgs) -> Result<i32> {
    let dir = git::hooks_dir(None)?;
    let mut removed = 0;
    for kind in kinds(a.pre_commit, a.pre_push) {
        let path = dir.join(kind.file());
        let chained = chained_path(&dir, kind);
        if !is_ours(&path) {
            if exists(&path) {
                eprintln!("{} is not a hushfs hook: left alone", path.display());
            }
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))?;
        removed += 1;
        if exists(&chained) {
            std::fs::rename(&chained, &path)
                .map_err(|e| Error::io("cannot restore the chained hook", &chained, e))?;
            eprintln!(
                "removed the hushfs {} hook and restored the one it chained",
                kind.file()
            );
        } else {
            eprintln!("removed {}", path.display());
        }
    }
    if removed == 0 {
        return Err(Error::NotFound(format!(
            "no hushfs hook in {}",
            dir.display()
        )));
    }
    Ok(0)
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// The revisions a pre-push must scan, from the lines git writes on stdin:
/// `<local ref> <local sha> <remote ref> <remote sha>`.
fn push_revs(remote: &str, input: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for l in input.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [_, local, _, remote_sha] = f[..] else {
            continue;
        };
        if is_zero(local) {
            continue; // a deletion sends nothing
        }
        if !is_zero(remote_sha) && git::has_commit(None, remote_sha) {
            out.push(vec![format!("{remote_sha}..{local}")]);
        } else {
            // A new branch (or a remote tip we do not have): everything
            // not already on that remote.
            let mut revs = vec![local.to_string(), "--not".to_string()];
            if !remote.is_empty() && !remote.starts_with('-') {
                revs.push(format!("--remotes={remote}"));
            }
            out.push(revs);
        }
    }
    out
}

fn run(ctx: &Ctx, a: RunHookArgs) -> Result<i32> {
    let (what, revsets) = match a.kind {
        Kind::PreCommit => ("commit", None),
        Kind::PrePush => {
            let mut input = String::new();
            for l in std::io::stdin().lock().lines() {
                let l =
                    l.map_err(|e| Error::Other(format!("cannot read the refs from git: {e}")))?;
                input.push_str(&l);
                input.push('\n');
            }
            let remote = a.git_args.first().map(String::as_str).unwrap_or("");
            ("push", Some(push_revs(remote, &input)))
        }
    };
    let Some((m, mut rec)) = matcher(ctx, &a.values)? else {
        return Ok(0);
    };
    let n = match revsets {
        None => report_added(&m, &git::staged(None)?)?,
        Some(sets) => {
            let mut n = 0;
            for revs in sets {
                let revs: Vec<&str> = revs.iter().map(String::as_str).collect();
                n += report_added(&m, &git::commits(None, &revs)?)?;
            }
            n
        }
    };
    super::scan::record_scan(&mut rec, &format!("{what} hook"), n)?;
    if n > 0 {
        summary(
            n,
            if what == "commit" {
                "the staged changes"
            } else {
                "the commits to push"
            },
        );
        eprintln!(
            "hushfs: {what} blocked: take the values out (e.g. read them from a hushfs mount) and try again"
        );
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ranges() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let v = push_revs(
            "origin",
            &format!("refs/heads/x {a} refs/heads/x {z}\nrefs/heads/y {z} refs/heads/y {a}\n"),
        );
        assert_eq!(
            v,
            vec![vec![a.clone(), "--not".into(), "--remotes=origin".into()]]
        );
    }

    #[test]
    fn script_quotes_and_chains() {
        let s = script(
            Kind::PrePush,
            Path::new("/opt/it's/hushfs"),
            &ValueArgs {
                project: Some("app".into()),
                allow_locked: true,
            },
        );
        assert!(s.starts_with("#!/bin/sh\n# hushfs hook: pre-push."));
        assert!(s.contains("hushfs='/opt/it'\\''s/hushfs'"));
        assert!(s.contains("hook run pre-push --project 'app' --allow-locked -- \"$@\""));
        assert!(s.contains("pre-push.hushfs-chained"));
    }
}
