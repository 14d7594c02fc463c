//! What the hooks scan, from the `git` binary: the added lines of the staged
//! changes, or of every commit in a range. Consecutive added lines form one
//! block, so a multi-line value (a PEM key) added at once is found whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A run of consecutive added lines.
pub struct Block {
    /// The commit that added it (range scans only).
    pub commit: Option<String>,
    pub path: String,
    /// Line number of the first line in the new file.
    pub first_line: u64,
    /// Its lines in `Added::text`, each followed by '\n'.
    pub range: std::ops::Range<usize>,
}

/// The added lines of a patch: one buffer, cut into blocks.
pub struct Added {
    pub text: Zeroizing<Vec<u8>>,
    pub blocks: Vec<Block>,
}

impl Added {
    pub fn bytes(&self, b: &Block) -> &[u8] {
        &self.text[b.range.clone()]
    }

    /// The line of byte `offset` of block `b`.
    pub fn line_of(&self, b: &Block, offset: usize) -> u64 {
        let t = self.bytes(b);
        let nl = t[..offset.min(t.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        b.first_line + nl as u64
    }
}

/// Options that make the patch text predictable whatever the user's
/// configuration: no colour, no external diff or textconv, binary files as
/// text, fixed prefixes, no context lines.
const DIFF_OPTS: &[&str] = &[
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--text",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--unified=0",
];

fn git(dir: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    // git runs what a repository configures (hooks, fsmonitor, filters):
    // it must possess none of the agent's keys.
    c.env_remove(crate::agent::server::KEYRING_ENV);
    // SAFETY: runs in the forked child before exec and only makes the
    // keyctl syscall.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, crate::sys::keyring::detach_in_child);
    }
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    // Paths with non-ASCII bytes come out unquoted.
    c.args(["-c", "core.quotePath=false"]);
    c
}

fn output(mut c: Command, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let o = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Other(format!("cannot run git ({what}): {e}: is git installed?")))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Err(Error::usage(format!("git {what} failed: {first}")));
    }
    Ok(Zeroizing::new(o.stdout))
}

/// The added lines of the staged changes (what `git commit` would record).
pub fn staged(dir: Option<&Path>) -> Result<Added> {
    let mut c = git(dir);
    c.args(["diff", "--cached"]).args(DIFF_OPTS);
    Ok(parse_patch(&output(c, "diff --cached")?, false))
}

/// The added lines of every commit in `revs` (`A..B`, or `SHA --not
/// --remotes=R`); a merge is compared with its first parent.
pub fn commits(dir: Option<&Path>, revs: &[&str]) -> Result<Added> {
    let mut c = git(dir);
    c.args(["log", "-p", "--reverse", "--diff-merges=first-parent"])
        .args(DIFF_OPTS)
        .arg("--format=format:%x00%H")
        .args(revs)
        .arg("--");
    Ok(parse_patch(&output(c, "log")?, true))
}

/// Whether `rev` names a commit in this repository.
pub fn has_commit(dir: Option<&Path>, rev: &str) -> bool {
    let mut c = git(dir);
    c.args(["cat-file", "-e", &format!("{rev}^{{commit}}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The directory git runs `name` hooks from (core.hooksPath respected).
pub fn hooks_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let mut c = git(dir);
    c.args(["rev-parse", "--path-format=absolute", "--git-path", "hooks"]);
    let out = output(c, "rev-parse")?;
    let s = String::from_utf8_lossy(&out).trim().to_string();
    if s.is_empty() {
        return Err(Error::usage("git did not name a hooks directory"));
    }
    Ok(PathBuf::from(s))
}

/// Undoes git's C-style quoting of an unusual path ("a\tb", "\303\251").
fn unquote(s: &[u8]) -> Vec<u8> {
    let Some(inner) = s.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) else {
        return s.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != b'\\' || i + 1 == inner.len() {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let c = inner[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    if let Some(d @ b'0'..=b'7') = inner.get(i) {
                        v = v * 8 + u32::from(d - b'0');
                        i += 1;
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// The new file's path from a `+++ b/PATH` line; `None` for /dev/null.
fn new_path(rest: &[u8]) -> Option<String> {
    // git appends a tab after a name that contains a space.
    let rest = rest.strip_suffix(b"\t").unwrap_or(rest);
    if rest == b"/dev/null" {
        return None;
    }
    let p = unquote(rest);
    let p = p.strip_prefix(b"b/").unwrap_or(&p);
    Some(String::from_utf8_lossy(p).into_owned())
}

/// "@@ -a,b +c,d @@": (old count, new start, new count).
fn hunk_header(line: &[u8]) -> Option<(u64, u64, u64)> {
    let s = std::str::from_utf8(line.strip_prefix(b"@@ ")?).ok()?;
    let mut it = s.split(' ');
    let old = it.next()?.strip_prefix('-')?;
    let new = it.next()?.strip_prefix('+')?;
    let count = |r: &str| -> Option<(u64, u64)> {
        match r.split_once(',') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (_, old_n) = count(old)?;
    let (new_start, new_n) = count(new)?;
    Some((old_n, new_start, new_n))
}

/// Collects the added lines of a patch (`git diff -U0` or `git log -p`
/// with a NUL-prefixed commit id before each commit).
pub fn parse_patch(out: &[u8], with_commits: bool) -> Added {
    // Added text is never longer than the patch: no reallocation, so no
    // stray copy of it is left in freed memory.
    let mut text = Zeroizing::new(Vec::with_capacity(out.len()));
    let mut blocks: Vec<Block> = Vec::new();
    let mut commit: Option<String> = None;
    let mut path: Option<String> = None;
    // Lines of the current hunk still to come: (old, new).
    let mut left = (0u64, 0u64);
    let mut line_no = 0u64;
    // Whether the last line was added (the next one extends its block).
    let mut open = false;
    for line in out.split(|&b| b == b'\n') {
        if left.0 > 0 || left.1 > 0 {
            match line.first() {
                Some(b'+') if left.1 > 0 => {
                    left.1 -= 1;
                    if let Some(p) = &path {
                        if !open {
                            blocks.push(Block {
                                commit: commit.clone(),
                                path: p.clone(),
                                first_line: line_no,
                                range: text.len()..text.len(),
                            });
                        }
                        text.extend_from_slice(&line[1..]);
                        text.push(b'\n');
                        blocks.last_mut().expect("a block is open").range.end = text.len();
                        open = true;
                    }
                    line_no += 1;
                }
                Some(b'-') if left.0 > 0 => {
                    left.0 -= 1;
                    open = false;
                }
                Some(b' ') => {
                    left.0 = left.0.saturating_sub(1);
                    left.1 = left.1.saturating_sub(1);
                    line_no += 1;
                    open = false;
                }
                // "\ No newline at end of file"
                Some(b'\\') => {}
                _ => {
                    // Malformed: stop the hunk here rather than misread.
                    left = (0, 0);
                    open = false;
                }
            }
            continue;
        }
        open = false;
        if with_commits && line.first() == Some(&0) {
            commit = Some(String::from_utf8_lossy(&line[1..]).trim().to_string());
            path = None;
        } else if line.starts_with(b"diff --git ") {
            path = None;
        } else if let Some(rest) = line.strip_prefix(b"+++ ") {
            path = new_path(rest);
        } else if line.starts_with(b"@@ ")
            && let Some((old_n, start, new_n)) = hunk_header(line)
        {
            left = (old_n, new_n);
            line_no = start;
        }
    }
    Added { text, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_lines_blocks_and_numbers() {
        let patch = b"diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n\
@@ -1,0 +2,2 @@ ctx\n+one\n+two\n@@ -10 +12 @@\n-old\n+new\n\
diff --git a/gone b/gone\n--- a/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n\
diff --git \"a/sp ace\\303\\251\" \"b/sp ace\\303\\251\"\n--- a/y\n+++ \"b/sp ace\\303\\251\"\n@@ -0,0 +1 @@\n++++ not a header\n\\ No newline at end of file\n";
        let a = parse_patch(patch, false);
        let b = &a.blocks;
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].path.as_str(), b[0].first_line), ("x", 2));
        assert_eq!(a.bytes(&b[0]), b"one\ntwo\n");
        assert_eq!(a.line_of(&b[0], 4), 3);
        assert_eq!((b[1].first_line, a.bytes(&b[1])), (12, &b"new\n"[..]));
        assert_eq!(b[2].path, "sp aceé");
        assert_eq!(a.bytes(&b[2]), b"+++ not a header\n");
    }

    #[test]
    fn commits_are_named() {
        let patch = b"\0aaaa\n\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -0,0 +1 @@\n+x\n\0bbbb\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+y\n";
        let a = parse_patch(patch, true);
        let b = &a.blocks;
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].commit.as_deref(), Some("aaaa"));
        assert_eq!(b[1].commit.as_deref(), Some("bbbb"));
        assert_eq!(a.bytes(&b[1]), b"y\n");
    }
}
