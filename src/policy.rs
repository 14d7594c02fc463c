//! Run policies: which commands `hushfs run` may authorize for a project,
//! and which of the mount's files each may read. A policy lives in the
//! vault (`ProjectMeta.fields["policy"]`) and changes only with the
//! passphrase (`hushfs policy`).
//!
//! It is checked twice: by `run` before it starts anything (a clear
//! refusal), and by the mount daemon on every open and read, against the
//! command process the grant's root started (`authz::Decision::command`),
//! so a process that skips the CLI and asks the daemon for a grant itself
//! is held to the same rules.
//!
//! A rule names a program and, optionally, the first arguments. The
//! program is resolved to an absolute path when the policy is set. What is
//! compared at read time: the executable the kernel reports for the command
//! process (`/proc/PID/exe`, which the process cannot fake) and its argument
//! vector (`/proc/PID/cmdline`, which it can rewrite: see docs/AGENTS.md).
//! A script is run by its interpreter, so for a script the kernel reports
//! the interpreter and the arguments `INTERPRETER [ARG] SCRIPT ARGS...`;
//! the interpreter is taken from the script's `#!` line when the policy is
//! set.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::authz::Subject;
use crate::error::{Error, Result};
use crate::vault::ProjectMeta;

/// The key in `ProjectMeta.fields`.
pub const FIELD: &str = "policy";
pub const VERSION: u32 = 1;
/// How long the daemon reuses what it found out about a command process.
const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 1024;

fn version() -> u32 {
    VERSION
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "version")]
    pub version: u32,
    /// The commands `run` may start. An empty list allows none.
    pub commands: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Program and leading arguments: the command must start with these.
    /// Stored with the program as an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Accepted on input as a shorthand for `argv: [EXE]` (any arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Filled in by hushfs when the program is a script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Interpreter>,
    /// Mount paths the command may read: globs where `*` and `?` stay
    /// within a directory and `**` spans directories.
    pub files: Vec<String>,
    /// If given, a file may be read only when every secret it contains is
    /// listed here (holds even if hushfs.toml maps a secret to another path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// May `hushfs run --env` pass values (those allowed by `secrets`)?
    #[serde(default, skip_serializing_if = "is_false")]
    pub env: bool,
    /// May `hushfs run --no-redact` show this command's output unredacted?
    #[serde(default, skip_serializing_if = "is_false")]
    pub unredacted: bool,
}

/// How the kernel starts a script: `exe` runs with `argv[0]` named `name`,
/// then `args`, then the script's path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interpreter {
    pub exe: String,
    pub name: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl Rule {
    fn argv(&self) -> &[String] {
        self.argv.as_deref().unwrap_or(&[])
    }

    /// The program as stored (absolute path).
    pub fn program(&self) -> &str {
        self.argv().first().map(String::as_str).unwrap_or("")
    }

    /// May a file with this path, holding these secrets, be read?
    pub fn allows_file(&self, path: &str, secrets: &[String]) -> bool {
        self.files
            .iter()
            .any(|g| glob(g.trim_start_matches('/').as_bytes(), path.as_bytes()))
            && self
                .secrets
                .as_ref()
                .is_none_or(|allowed| secrets.iter().all(|s| allowed.contains(s)))
    }

    /// May `--env` pass this secret?
    pub fn allows_env(&self, secret: &str) -> bool {
        self.env
            && self
                .secrets
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|a| a == secret))
    }

    /// One line for messages: the program and arguments.
    pub fn describe(&self) -> String {
        let mut s = self.argv().join(" ");
        if self.argv().len() == 1 {
            s.push_str(" (any arguments)");
        }
        if let Some(i) = &self.interpreter {
            s.push_str(&format!(" [a script run by {}]", i.exe));
        }
        s
    }
}

/// `*`, `?` within a path component; `**` across components.
fn glob(p: &[u8], s: &[u8]) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    if let Some(rest) = p.strip_prefix(b"**") {
        if let Some(r) = rest.strip_prefix(b"/")
            && glob(r, s)
        {
            return true;
        }
        return (0..=s.len()).any(|i| glob(rest, &s[i..]));
    }
    match p[0] {
        b'*' => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| glob(&p[1..], &s[i..])),
        b'?' => s.first().is_some_and(|&c| c != b'/') && glob(&p[1..], &s[1..]),
        c => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// Where the environment finds programs: PATH and the working directory.
pub struct Lookup {
    pub path: Option<OsString>,
    pub cwd: PathBuf,
}

impl Lookup {
    pub fn current() -> Lookup {
        Lookup {
            path: std::env::var_os("PATH"),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    /// The absolute path a program name runs (`execvp` rules): a name with
    /// a '/' is a path (relative to cwd); otherwise the first executable
    /// file of that name in PATH.
    pub fn resolve(&self, name: &OsStr) -> Option<PathBuf> {
        if name.is_empty() {
            return None;
        }
        if name.as_bytes().contains(&b'/') {
            let p = self.cwd.join(name);
            return is_executable(&p).then(|| normalize(&p));
        }
        let path = self.path.clone().unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| self.cwd.join(d).join(name))
            .find(|p| is_executable(p))
            .map(|p| normalize(&p))
    }
}

/// Removes `.` components (keeps `..` and symlinks, as the kernel would
/// see the path).
fn normalize(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `#!` line of a file: interpreter and its optional single argument
/// (Linux passes everything after the interpreter as one argument).
fn shebang(p: &Path) -> Option<(String, Option<String>)> {
    let mut f = std::fs::File::open(p).ok()?;
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = String::from_utf8_lossy(line);
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    let (interp, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim_matches([' ', '\t']).to_string())),
        None => (line, None),
    };
    Some((interp.to_string(), arg.filter(|a| !a.is_empty())))
}

fn base(s: &[u8]) -> &[u8] {
    s.rsplit(|&b| b == b'/').next().unwrap_or(s)
}

/// How the kernel will start `program` if it is a script; `None` for a
/// binary.
fn interpreter_of(program: &Path, lookup: &Lookup) -> Result<Option<Interpreter>> {
    let Some((interp, arg)) = shebang(program) else {
        return Ok(None);
    };
    let unsupported = |why: &str| {
        Error::usage(format!(
            "policy: cannot tell what runs the script {} ({why}): name its interpreter in a rule instead, \
             e.g. {{\"argv\": [\"/usr/bin/python3\", \"{}\"], ...}}",
            program.display(),
            program.display()
        ))
    };
    let i = if base(interp.as_bytes()) == b"env" {
        // `#!/usr/bin/env prog` runs prog through PATH; `env -S "prog a"`
        // splits the rest into prog and arguments.
        let arg = arg.ok_or_else(|| unsupported("`env` without a program"))?;
        let words: Vec<String> = match arg.strip_prefix("-S") {
            Some(rest) => rest.split_whitespace().map(str::to_string).collect(),
            None if arg.starts_with('-') || arg.contains([' ', '\t']) => {
                return Err(unsupported("`env` with options"));
            }
            None => vec![arg],
        };
        let (name, args) = words
            .split_first()
            .ok_or_else(|| unsupported("`env -S` without a program"))?;
        let exe = lookup
            .resolve(OsStr::new(name))
            .ok_or_else(|| unsupported(&format!("`{name}` is not in PATH")))?;
        Interpreter {
            exe: exe.display().to_string(),
            name: name.clone(),
            args: args.to_vec(),
        }
    } else {
        if !interp.starts_with('/') {
            return Err(unsupported("a relative interpreter path"));
        }
        Interpreter {
            exe: interp.clone(),
            name: String::from_utf8_lossy(base(interp.as_bytes())).into_owned(),
            args: arg.into_iter().collect(),
        }
    };
    if shebang(Path::new(&i.exe)).is_some() {
        return Err(unsupported("its interpreter is a script itself"));
    }
    Ok(Some(i))
}

impl Policy {
    /// The policy stored for a project, if any. A policy this version cannot
    /// read is an error, never "no policy" (fail closed).
    pub fn from_meta(meta: &ProjectMeta) -> std::result::Result<Option<Policy>, String> {
        let Some(v) = meta.fields.get(FIELD) else {
            return Ok(None);
        };
        let p: Policy = serde_json::from_value(v.clone())
            .map_err(|e| format!("the run policy cannot be read ({e}): upgrade hushfs"))?;
        p.validate()?;
        Ok(Some(p))
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a policy serialises")
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "the run policy has version {}, this hushfs knows version {VERSION}: upgrade hushfs",
                self.version
            ));
        }
        for (i, r) in self.commands.iter().enumerate() {
            let n = i + 1;
            if !r.program().starts_with('/') {
                return Err(format!(
                    "rule {n}: the program must be an absolute path (`hushfs policy set` resolves it)"
                ));
            }
            if r.exe.is_some() {
                return Err(format!("rule {n}: `exe` is stored as `argv`"));
            }
            if r.files.is_empty() || r.files.iter().any(|f| f.is_empty()) {
                return Err(format!(
                    "rule {n}: `files` must list the paths it may read, e.g. [\".env\"] or [\"**\"] for all"
                ));
            }
        }
        Ok(())
    }

    /// Parses a policy as the user writes it and resolves its programs:
    /// names through PATH, relative paths against the working directory,
    /// scripts to their interpreter.
    pub fn parse_input(text: &[u8], lookup: &Lookup) -> Result<Policy> {
        let mut p: Policy = serde_json::from_slice(text).map_err(|e| {
            Error::usage(format!(
                "policy: {e}; expected {{\"commands\": [{{\"argv\": [\"npm\", \"test\"], \"files\": [\".env\"]}}]}}"
            ))
        })?;
        for (i, r) in p.commands.iter_mut().enumerate() {
            let n = i + 1;
            let mut argv = match (r.argv.take(), r.exe.take()) {
                (Some(a), None) if !a.is_empty() => a,
                (None, Some(e)) => vec![e],
                _ => {
                    return Err(Error::usage(format!(
                        "policy: rule {n} needs either \"argv\": [PROGRAM, ARGS...] or \"exe\": PATH"
                    )));
                }
            };
            let prog = lookup.resolve(OsStr::new(&argv[0])).ok_or_else(|| {
                Error::usage(format!(
                    "policy: rule {n}: `{}` is not an executable file or in PATH: give its full path",
                    argv[0]
                ))
            })?;
            r.interpreter = interpreter_of(&prog, lookup)?;
            argv[0] = prog
                .to_str()
                .ok_or_else(|| Error::usage(format!("policy: rule {n}: the path is not UTF-8")))?
                .to_string();
            r.argv = Some(argv);
        }
        p.validate()
            .map_err(|e| Error::usage(format!("policy: {e}")))?;
        Ok(p)
    }

    pub fn compile(&self) -> Compiled {
        let canon = |p: &str| std::fs::canonicalize(p).ok();
        Compiled {
            rules: self
                .commands
                .iter()
                .map(|r| CompiledRule {
                    program_canon: canon(r.program()),
                    interp_canon: r.interpreter.as_ref().and_then(|i| canon(&i.exe)),
                    rule: r.clone(),
                })
                .collect(),
        }
    }
}

/// A command process as the policy sees it.
#[derive(Clone, Debug)]
pub struct CommandView {
    /// The executable (canonical, as the kernel reports it).
    pub exe: PathBuf,
    pub argv: Vec<Vec<u8>>,
}

impl CommandView {
    /// What the process will look like once `run` has started `cmd`
    /// (program resolved with `lookup`): the same shape the daemon later
    /// reads from /proc. Returns the resolved program too (run executes
    /// exactly that path).
    pub fn predict(cmd: &[OsString], lookup: &Lookup) -> Result<(PathBuf, CommandView)> {
        let first = cmd
            .first()
            .ok_or_else(|| Error::usage("no command given"))?;
        let program = lookup.resolve(first).ok_or_else(|| {
            Error::NotFound(format!(
                "{}: command not found (or not executable)",
                first.to_string_lossy()
            ))
        })?;
        let rest = cmd[1..].iter().map(|a| a.as_bytes().to_vec());
        let view = match interpreter_of(&program, lookup).ok().flatten() {
            None => CommandView {
                exe: std::fs::canonicalize(&program).unwrap_or_else(|_| program.clone()),
                argv: std::iter::once(first.as_bytes().to_vec())
                    .chain(rest)
                    .collect(),
            },
            Some(i) => CommandView {
                exe: std::fs::canonicalize(&i.exe).unwrap_or_else(|_| PathBuf::from(&i.exe)),
                argv: std::iter::once(i.name.into_bytes())
                    .chain(i.args.into_iter().map(String::into_bytes))
                    .chain(std::iter::once(program.as_os_str().as_bytes().to_vec()))
                    .chain(rest)
                    .collect(),
            },
        };
        Ok((program, view))
    }
}

pub struct CompiledRule {
    pub rule: Rule,
    program_canon: Option<PathBuf>,
    interp_canon: Option<PathBuf>,
}

impl CompiledRule {
    fn matches(&self, v: &CommandView) -> bool {
        let r = &self.rule;
        let argv = r.argv();
        let prefix = |from: usize| {
            let want = &argv[1..];
            v.argv.len() >= from + want.len()
                && want
                    .iter()
                    .zip(&v.argv[from..])
                    .all(|(w, a)| w.as_bytes() == a.as_slice())
        };
        let name_is = |want: &[u8]| v.argv.first().is_some_and(|a0| base(a0) == base(want));
        match &r.interpreter {
            None => {
                // argv[0] too: a multi-call binary (busybox) acts on it.
                self.program_canon.as_deref() == Some(v.exe.as_path())
                    && name_is(argv[0].as_bytes())
                    && prefix(1)
            }
            Some(i) => {
                let k = 1 + i.args.len();
                let script_ok = v.argv.get(k).is_some_and(|s| {
                    s.as_slice() == argv[0].as_bytes()
                        || self
                            .program_canon
                            .as_ref()
                            .is_some_and(|c| c.as_os_str().as_bytes() == s.as_slice())
                });
                self.interp_canon.as_deref() == Some(v.exe.as_path())
                    && name_is(i.name.as_bytes())
                    && v.argv.len() > k
                    && i.args
                        .iter()
                        .zip(&v.argv[1..k])
                        .all(|(w, a)| w.as_bytes() == a.as_slice())
                    && script_ok
                    && prefix(k + 1)
            }
        }
    }
}

/// A policy with its programs' canonical paths worked out.
pub struct Compiled {
    pub rules: Vec<CompiledRule>,
}

impl Compiled {
    /// The first rule that allows this command.
    pub fn find(&self, v: &CommandView) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(v)).map(|r| &r.rule)
    }

    fn find_index(&self, v: &CommandView) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(v))
    }
}

/// Reads a live process as a `CommandView`.
pub trait CommandSource: Send + Sync {
    /// `None` when the process is gone or is no longer the one that
    /// started at `starttime`.
    fn view(&self, pid: u32, starttime: u64) -> Option<CommandView>;
}

/// From /proc.
pub struct ProcCommands;

/// Longest command line read.
const CMDLINE_MAX: u64 = 128 * 1024;

impl CommandSource for ProcCommands {
    fn view(&self, pid: u32, starttime: u64) -> Option<CommandView> {
        let same = || {
            std::fs::read(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|b| crate::authz::proc::parse_stat(&b))
                .is_some_and(|s| s.starttime == starttime)
        };
        if !same() {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let mut cmdline = Vec::new();
        std::fs::File::open(format!("/proc/{pid}/cmdline"))
            .ok()?
            .take(CMDLINE_MAX)
            .read_to_end(&mut cmdline)
            .ok()?;
        // An exec between the two reads would change the executable; a
        // recycled pid, the start time.
        if std::fs::read_link(format!("/proc/{pid}/exe")).ok()? != exe || !same() {
            return None;
        }
        if cmdline.last() == Some(&0) {
            cmdline.pop();
        }
        let argv = cmdline.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
        Some(CommandView { exe, argv })
    }
}

/// (pid, start time) of a command process → the rule it matched, and when
/// that was found out.
type Seen = HashMap<(u32, u64), (Option<usize>, Instant)>;

/// The daemon's side: decides, for an access already allowed by the
/// grant, whether the policy allows it too.
pub struct Enforcer {
    compiled: Compiled,
    source: Box<dyn CommandSource>,
    cache: Mutex<Seen>,
}

impl Enforcer {
    pub fn new(p: &Policy) -> Enforcer {
        Self::with_source(p, Box::new(ProcCommands))
    }

    pub fn with_source(p: &Policy, source: Box<dyn CommandSource>) -> Enforcer {
        Enforcer {
            compiled: p.compile(),
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `command` is the process the grant's root started (`None` when the
    /// root itself reads). Returns why not, for the audit log.
    pub fn check(
        &self,
        command: Option<&Subject>,
        path: &str,
        secrets: &[String],
    ) -> std::result::Result<(), &'static str> {
        let Some(c) = command else {
            return Err("run policy: the grant's root may not read, only the command it started");
        };
        let now = Instant::now();
        let key = (c.tgid, c.starttime);
        let cached = self
            .cache
            .lock()
            .get(&key)
            .filter(|(_, t)| now.duration_since(*t) < CACHE_TTL)
            .map(|(r, _)| *r);
        let rule = match cached {
            Some(r) => r,
            None => {
                let r = self
                    .source
                    .view(c.tgid, c.starttime)
                    .and_then(|v| self.compiled.find_index(&v));
                let mut cache = self.cache.lock();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (r, now));
                r
            }
        };
        let Some(i) = rule else {
            return Err("run policy: the command is not allowed for this project");
        };
        if !self.compiled.rules[i].rule.allows_file(path, secrets) {
            return Err("run policy: the command may not read this file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
