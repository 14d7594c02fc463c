//! `hushfs audit show` and `tail`: filters over the log's lines and their
//! rendering. Reading needs no key (integrity is `verify`'s job).
//!
//! Speed: a filter first looks for the bytes a match must contain (the
//! JSON field as the writer spells it) and parses only lines that pass, so
//! most of a million lines cost one substring search.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use memchr::memmem;
use serde::Deserialize;

use super::log::{Files, read_file_into};
use crate::error::{Error, Result};

/// Which entries to show. Empty means all.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Entries at or after this time (RFC 3339 UTC with microseconds).
    pub since: Option<String>,
    /// A secret name, optionally with its project.
    pub secret: Option<(Option<String>, String)>,
    /// A pid or tgid.
    pub pid: Option<u32>,
    pub denied: bool,
}

impl Filter {
    /// `--since`: a duration back from now (`1h`) or an RFC 3339 time.
    pub fn parse_since(s: &str) -> std::result::Result<String, String> {
        let t = match humantime::parse_duration(s) {
            Ok(d) => SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
                format!(
                    "{s:?} is neither a duration (30m, 1h, 2d) nor a time (2026-01-31T12:00:00Z)"
                )
            })?,
        };
        Ok(humantime::format_rfc3339_micros(t).to_string())
    }

    /// `--secret`: `NAME` or `PROJECT/NAME`.
    pub fn parse_secret(s: &str) -> (Option<String>, String) {
        match s.split_once('/') {
            Some((p, n)) => (Some(p.to_string()), n.to_string()),
            None => (None, s.to_string()),
        }
    }

    pub fn matcher(&self) -> Matcher<'_> {
        Matcher {
            f: self,
            deny: memmem::Finder::new(b"\"decision\":\"deny\""),
            time: memmem::Finder::new(b"\"time\":\""),
            pid: self
                .pid
                .map(|p| memmem::Finder::new(format!(":{p},").as_bytes()).into_owned()),
            name: self.secret.as_ref().map(|(_, n)| {
                memmem::Finder::new(format!("\"{}\"", n.replace('"', "\\\"")).as_bytes())
                    .into_owned()
            }),
        }
    }
}

/// The fields `show` displays or filters on, borrowed from the line when
/// they need no unescaping.
#[derive(Debug, Deserialize)]
pub struct Row<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow, default)]
    pub decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub project: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub file: Option<Cow<'a, str>>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub tgid: Option<u32>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(borrow, default)]
    pub exe: Option<Cow<'a, str>>,
}

pub struct Matcher<'f> {
    f: &'f Filter,
    deny: memmem::Finder<'static>,
    time: memmem::Finder<'static>,
    pid: Option<memmem::Finder<'static>>,
    name: Option<memmem::Finder<'static>>,
}

impl Matcher<'_> {
    /// The row, when `line` (without newline) matches the filter.
    pub fn matches<'l>(&self, line: &'l [u8]) -> Option<Row<'l>> {
        let f = self.f;
        if f.denied && self.deny.find(line).is_none() {
            return None;
        }
        if let Some(since) = &f.since {
            // The time sits near the start and has a fixed width.
            let head = &line[..line.len().min(96)];
            let at = self.time.find(head)? + 8;
            let t = line.get(at..at + since.len())?;
            if t < since.as_bytes() {
                return None;
            }
        }
        if let Some(p) = &self.pid
            && p.find(line).is_none()
        {
            return None;
        }
        if let Some(n) = &self.name
            && n.find(line).is_none()
        {
            return None;
        }
        let row: Row = serde_json::from_slice(line).ok()?;
        if f.denied && row.decision.as_deref() != Some("deny") {
            return None;
        }
        if let Some(p) = f.pid
            && row.pid != Some(p)
            && row.tgid != Some(p)
        {
            return None;
        }
        if let Some((proj, name)) = &f.secret {
            if !row.secrets.iter().any(|s| s == name) {
                return None;
            }
            if proj
                .as_deref()
                .is_some_and(|p| row.project.as_deref() != Some(p))
            {
                return None;
            }
        }
        Some(row)
    }
}

pub const TABLE_HEADER: &str =
    "TIME                  DECISION  EVENT     PROCESS                   FILE / SECRETS\n";

/// One table row (with newline).
pub fn render(r: &Row) -> String {
    // Seconds are enough on screen; `--json` has the full time.
    let time = r.time.get(..19).map_or(r.time.as_ref(), |t| t);
    let proc_name = r
        .exe
        .as_deref()
        .map(|e| e.rsplit('/').next().unwrap_or(e))
        .unwrap_or("-");
    let process = match r.tgid.or(r.pid) {
        Some(p) => format!("{proc_name}[{p}]"),
        None => proc_name.to_string(),
    };
    let what = match (&r.file, &r.project) {
        (Some(f), _) => f.to_string(),
        (None, Some(p)) if !r.secrets.is_empty() => format!("{p}/{}", r.secrets.join(",")),
        (None, Some(p)) => p.to_string(),
        (None, None) => r.secrets.join(","),
    };
    let mut s = format!(
        "{time}Z  {:<8}  {:<8}  {:<24}  {what}",
        r.decision.as_deref().unwrap_or("-"),
        r.event,
        process
    );
    if let Some(reason) = &r.reason {
        s.push_str(&format!("  ({reason})"));
    }
    s.push('\n');
    s
}

/// Complete lines of `data`; a torn last line is left out.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data).filter_map(move |end| {
        let l = &data[start..end];
        start = end + 1;
        (!l.is_empty()).then_some(l)
    })
}

/// Calls `emit` with every matching line (and its row) of every file, in
/// chain order.
pub fn scan(
    files: &Files,
    filter: &Filter,
    mut emit: impl FnMut(&[u8], &Row) -> Result<()>,
) -> Result<()> {
    let m = filter.matcher();
    let mut data = Vec::new();
    for p in files.all()? {
        read_file_into(&p, &mut data)?;
        for line in lines(&data) {
            if let Some(row) = m.matches(line) {
                emit(line, &row)?;
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

/// What `follow` has shown: entries are passed on once each, in seq order,
/// whichever file they are read from.
struct Follower<'a, E> {
    files: &'a Files,
    m: Matcher<'a>,
    last: Option<u64>,
    emit: E,
}

impl<E: FnMut(&[u8], &Row) -> Result<()>> Follower<'_, E> {
    fn feed(&mut self, line: &[u8]) -> Result<()> {
        let Some(seq) = seq_of(line) else {
            return Ok(());
        };
        if self.last.is_some_and(|l| seq <= l) {
            return Ok(());
        }
        if let Some(l) = self.last
            && seq > l + 1
        {
            self.catch_up(seq)?;
        }
        self.pass(seq, line)
    }

    fn pass(&mut self, seq: u64, line: &[u8]) -> Result<()> {
        self.last = Some(seq);
        if let Some(row) = self.m.matches(line) {
            (self.emit)(line, &row)?;
        }
        Ok(())
    }

    /// Entries before `upto` that went by in files rotated away between
    /// two looks (more than one rotation per poll).
    fn catch_up(&mut self, upto: u64) -> Result<()> {
        let rotated = self.files.rotated_by_seq()?;
        for (i, (first, p)) in rotated.iter().enumerate() {
            let next_first = rotated.get(i + 1).map(|(f, _)| *f);
            let after_last = self.last.map_or(0, |l| l + 1);
            if *first >= upto || next_first.is_some_and(|n| n <= after_last) {
                continue;
            }
            let mut data = Vec::new();
            read_file_into(p, &mut data)?;
            for line in lines(&data) {
                if let Some(seq) = seq_of(line)
                    && self.last.is_none_or(|l| seq > l)
                    && seq < upto
                {
                    self.pass(seq, line)?;
                }
            }
        }
        Ok(())
    }
}

/// Follows the log: prints the last `last` matching entries of the active
/// file, then every new one as it is written, across rotations, until
/// `emit` fails (a closed pipe) or `keep_going` says stop.
pub fn follow(
    files: &Files,
    filter: &Filter,
    last: usize,
    poll: Duration,
    mut keep_going: impl FnMut() -> bool,
    emit: impl FnMut(&[u8], &Row) -> Result<()>,
) -> Result<()> {
    let active = files.active();
    let open = |keep_going: &mut dyn FnMut() -> bool| -> Result<Option<(File, u64)>> {
        loop {
            match File::open(&active) {
                Ok(f) => {
                    let ino = f
                        .metadata()
                        .map_err(|e| Error::io("cannot inspect", &active, e))?
                        .ino();
                    return Ok(Some((f, ino)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !keep_going() {
                        return Ok(None);
                    }
                    std::thread::sleep(poll);
                }
                Err(e) => return Err(Error::io("cannot open", &active, e)),
            }
        }
    };
    let Some((mut f, mut ino)) = open(&mut keep_going)? else {
        return Ok(());
    };
    let mut fw = Follower {
        files,
        m: filter.matcher(),
        last: None,
        emit,
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read", &active, e))?;
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let recent: Vec<&[u8]> = lines(&buf[..end])
        .filter(|l| fw.m.matches(l).is_some())
        .collect();
    for l in &recent[recent.len().saturating_sub(last)..] {
        let row = fw.m.matches(l).expect("matched above");
        (fw.emit)(l, &row)?;
    }
    fw.last = lines(&buf[..end]).filter_map(seq_of).last();
    // Bytes of a line whose newline has not arrived yet.
    let mut partial = buf.split_off(end);
    loop {
        let rotated = std::fs::metadata(&active).is_ok_and(|md| md.ino() != ino);
        // Read after looking: whatever the writer appended to the old file
        // before renaming it is read here, before switching.
        f.read_to_end(&mut partial)
            .map_err(|e| Error::io("cannot read", &active, e))?;
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let rest = partial.split_off(end + 1);
            for l in lines(&partial) {
                fw.feed(l)?;
            }
            partial = rest;
        }
        if rotated {
            let Some((nf, ni)) = open(&mut keep_going)? else {
                return Ok(());
            };
            (f, ino) = (nf, ni);
            partial.clear();
            continue;
        }
        if !keep_going() {
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &[u8] = br#"{"seq":4,"time":"2026-03-01T10:00:00.000000Z","event":"open","decision":"deny","project":"app","file":".env","secrets":["DB_PASSWORD","API_KEY"],"pid":77,"tgid":70,"uid":1000,"exe":"/usr/bin/cat","prev":"00","mac":"11"}"#;
    const SET: &[u8] = br#"{"seq":5,"time":"2026-03-01T11:00:00.000000Z","event":"set","project":"other","secrets":["API_KEY"],"pid":70,"tgid":70,"prev":"00","mac":"11"}"#;

    fn hits(f: &Filter) -> Vec<u64> {
        let m = f.matcher();
        [DENY, SET]
            .iter()
            .filter_map(|l| m.matches(l).map(|r| r.seq))
            .collect()
    }

    #[test]
    fn filters() {
        assert_eq!(hits(&Filter::default()), [4, 5]);
        let denied = Filter {
            denied: true,
            ..Filter::default()
        };
        assert_eq!(hits(&denied), [4]);
        let pid = |p| Filter {
            pid: Some(p),
            ..Filter::default()
        };
        assert_eq!(hits(&pid(77)), [4]);
        assert_eq!(hits(&pid(70)), [4, 5], "tgid matches too");
        assert_eq!(hits(&pid(7)), Vec::<u64>::new());
        let secret = |s| Filter {
            secret: Some(Filter::parse_secret(s)),
            ..Filter::default()
        };
        assert_eq!(hits(&secret("API_KEY")), [4, 5]);
        assert_eq!(hits(&secret("other/API_KEY")), [5]);
        assert_eq!(
            hits(&secret("DB_PASS")),
            Vec::<u64>::new(),
            "whole names only"
        );
        let since = Filter {
            since: Some(Filter::parse_since("2026-03-01T10:30:00Z").unwrap()),
            ..Filter::default()
        };
        assert_eq!(hits(&since), [5]);
        assert!(Filter::parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn table_row() {
        let r: Row = serde_json::from_slice(DENY).unwrap();
        let s = render(&r);
        assert!(s.starts_with("2026-03-01T10:00:00Z  deny"), "{s}");
        assert!(s.contains("cat[70]") && s.contains(".env"), "{s}");
        let r: Row = serde_json::from_slice(SET).unwrap();
        assert!(render(&r).contains("other/API_KEY"));
    }

    #[test]
    fn torn_last_line_is_not_shown() {
        let data = b"{\"a\":1}\n{\"b\":2}\n{\"c\":";
        assert_eq!(lines(data).count(), 2);
    }
}
