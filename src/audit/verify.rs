//! `hushfs audit verify`: walks every file of the log in chain order and
//! checks that entry 0 is the genesis of this vault, seqs are contiguous,
//! every prev links to the mac before it, every mac verifies under the
//! evolved key of its seq, and the anchors kept outside the log match.
//! Stops at the first bad entry and names its seq.
//!
//! Keys: the vault's current data key gives the root of the newest epoch;
//! each epoch start (after a rekey) carries a bridge to the root before it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memchr::memmem;

use super::Anchor;
use super::chain::{self, Mac32, Torn, VaultId, ct_eq};
use super::log::{Files, read_file_into};
use crate::error::Result;
use crate::secret::Key32;

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The first seq that is not as it should be.
    pub seq: u64,
    pub file: PathBuf,
    /// 1-based line number in `file` (0 when the problem is the file's end).
    pub line: u64,
    pub what: String,
}

/// A last line without its newline: a write was interrupted.
#[derive(Clone, Debug, PartialEq)]
pub struct Incomplete {
    pub file: PathBuf,
    pub line: u64,
    pub bytes: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AnchorCheck {
    pub source: String,
    pub anchor: Anchor,
    /// `None` when verification stopped before the anchor's seq.
    pub ok: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact,
    /// Intact up to a torn last line.
    Incomplete,
    Tampered,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub files: Vec<PathBuf>,
    /// Entries that verified.
    pub entries: u64,
    /// The last entry that verified.
    pub head: Option<Anchor>,
    /// Key epochs seen (1 + rekeys).
    pub epochs: u64,
    /// Seqs of `recover` entries that account for a torn line.
    pub recovered: Vec<u64>,
    pub problem: Option<Problem>,
    pub incomplete: Option<Incomplete>,
    pub anchors: Vec<AnchorCheck>,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self.problem.is_some() {
            Verdict::Tampered
        } else if self.incomplete.is_some() {
            Verdict::Incomplete
        } else {
            Verdict::Intact
        }
    }
}

struct EpochStart {
    bridge: String,
    canonical: Vec<u8>,
    mac: Mac32,
}

/// Complete lines of a file, each with its 1-based number.
type Lines<'a> = Vec<(u64, &'a [u8])>;

/// Complete lines of a file, and the torn tail.
fn split(data: &[u8]) -> (Lines<'_>, Option<&[u8]>) {
    let mut lines = Vec::new();
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', data).enumerate() {
        lines.push((n as u64 + 1, &data[start..end]));
        start = end + 1;
    }
    let torn = (start < data.len()).then(|| &data[start..]);
    (lines, torn)
}

/// The torn-line mark of a recover entry, if `line` is one.
fn torn_mark(finder: &memmem::Finder, line: &[u8]) -> Option<Torn> {
    finder.find(line)?;
    chain::parse_line(line)?.entry.torn
}

/// Roots of every epoch reachable from the current data key, by start seq.
fn epoch_roots(
    id: &VaultId,
    data_key: &Key32,
    starts: &BTreeMap<u64, EpochStart>,
) -> HashMap<u64, Key32> {
    let mut roots = HashMap::new();
    // The newest epoch start that this data key authenticates.
    let current = starts
        .iter()
        .rev()
        .find(|(s, e)| {
            let root = chain::epoch_root(data_key, id, **s);
            ct_eq(&chain::entry_mac(&root, &e.canonical), &e.mac)
        })
        .map_or(0, |(s, _)| *s);
    roots.insert(current, chain::epoch_root(data_key, id, current));
    let mut s = current;
    while s != 0 {
        let Some(e) = starts.get(&s) else { break };
        let Some((prev, root)) = chain::open_bridge(&roots[&s], id, s, &e.bridge) else {
            break;
        };
        if prev >= s {
            break;
        }
        roots.insert(prev, root);
        s = prev;
    }
    roots
}

/// Verifies the log of vault `id` under `data_key`, against `anchors`
/// (source name, anchor) kept elsewhere.
pub fn verify(
    id: &VaultId,
    data_key: &Key32,
    files: &Files,
    anchors: &[(String, Anchor)],
) -> Result<Report> {
    let paths = files.all()?;
    // One file in memory at a time (a log may be many 64 MiB files).
    let mut data = Vec::new();

    // Pass 1: epoch starts after a rekey (they carry a bridge).
    let finder = memmem::Finder::new(b"\"bridge\":\"");
    let torn_finder = memmem::Finder::new(b"\"torn\":{");
    let mut starts = BTreeMap::new();
    for p in &paths {
        read_file_into(p, &mut data)?;
        for (_, line) in split(&data).0 {
            if finder.find(line).is_none() {
                continue;
            }
            if let Some(p) = chain::parse_line(line)
                && p.entry.starts_epoch()
                && let Some(bridge) = p.entry.bridge
            {
                starts.insert(
                    p.entry.seq,
                    EpochStart {
                        bridge,
                        canonical: p.canonical,
                        mac: p.mac,
                    },
                );
            }
        }
    }
    let roots = epoch_roots(id, data_key, &starts);

    let mut w = Walk {
        id,
        roots: &roots,
        want: anchors.iter().map(|(_, a)| a.seq).collect(),
        macs: HashMap::new(),
        next: None,
        entries: 0,
        epochs: 0,
        head: None,
        recovered: Vec::new(),
    };
    let mut problem = None;
    let mut incomplete = None;
    'files: for (i, path) in paths.iter().enumerate() {
        read_file_into(path, &mut data)?;
        let (lines, torn) = split(&data);
        // A line followed by a recover entry that names it by hash was torn
        // by an interrupted write: skipped, and bound to the chain by that
        // entry (whether or not its bytes happen to parse).
        let mut skipped: Option<&[u8]> = None;
        for (k, (n, line)) in lines.iter().enumerate() {
            if lines
                .get(k + 1)
                .and_then(|(_, l)| torn_mark(&torn_finder, l))
                .is_some_and(|m| m == Torn::of(line))
            {
                skipped = Some(line);
                continue;
            }
            let r = match chain::parse_line(line) {
                None => Err(w.bad_line(path, *n)),
                Some(p) => w.entry(path, *n, p, skipped.take()),
            };
            if let Err(p) = r {
                problem = Some(p);
                break 'files;
            }
        }
        if let Some(t) = torn {
            let line = lines.len() as u64 + 1;
            if i + 1 == paths.len() {
                incomplete = Some(Incomplete {
                    file: path.clone(),
                    line,
                    bytes: t.len(),
                });
            } else {
                problem = Some(Problem {
                    seq: w.expected(),
                    file: path.clone(),
                    line,
                    what: "a rotated file ends inside a line".into(),
                });
                break;
            }
        }
    }

    let mut checks = Vec::new();
    for (source, a) in anchors {
        let ok = match (w.head, w.macs.get(&a.seq)) {
            (_, Some(m)) => Some(ct_eq(m, &a.mac)),
            (Some(h), None) if problem.is_none() && a.seq > h.seq => Some(false),
            (None, None) if problem.is_none() => Some(false),
            _ => None,
        };
        if ok == Some(false) && problem.is_none() {
            let (file, seq) = (
                paths.last().cloned().unwrap_or_else(|| files.active()),
                w.expected(),
            );
            let what = if a.seq >= seq {
                format!(
                    "the log ends before seq {}, which the anchor from {source} records: the newest entries were cut off or the log deleted",
                    a.seq
                )
            } else {
                format!("entry {} differs from the anchor from {source}", a.seq)
            };
            problem = Some(Problem {
                seq: seq.min(a.seq),
                file,
                line: 0,
                what,
            });
        }
        checks.push(AnchorCheck {
            source: source.clone(),
            anchor: *a,
            ok,
        });
    }

    Ok(Report {
        files: paths,
        entries: w.entries,
        head: w.head,
        epochs: w.epochs,
        recovered: w.recovered,
        problem,
        incomplete,
        anchors: checks,
    })
}

/// Where the walk is: the next expected seq, its prev, key and epoch.
struct Next {
    seq: u64,
    prev: Mac32,
    key: Key32,
    epoch: u64,
}

struct Walk<'a> {
    id: &'a VaultId,
    roots: &'a HashMap<u64, Key32>,
    want: Vec<u64>,
    macs: HashMap<u64, Mac32>,
    next: Option<Next>,
    entries: u64,
    epochs: u64,
    head: Option<Anchor>,
    recovered: Vec<u64>,
}

impl Walk<'_> {
    fn expected(&self) -> u64 {
        self.next.as_ref().map_or(0, |n| n.seq)
    }

    fn bad_line(&self, file: &Path, line: u64) -> Problem {
        Problem {
            seq: self.expected(),
            file: file.to_path_buf(),
            line,
            what: "the line is not an audit entry (edited, truncated or inserted)".into(),
        }
    }

    fn entry(
        &mut self,
        file: &Path,
        line: u64,
        p: chain::Parsed,
        torn_before: Option<&[u8]>,
    ) -> Result<(), Problem> {
        let e = &p.entry;
        let fail = |seq: u64, what: String| Problem {
            seq,
            file: file.to_path_buf(),
            line,
            what,
        };
        let exp = self.expected();
        if torn_before.is_none() && e.torn.is_some() {
            return Err(fail(
                e.seq,
                "the torn line this recover entry accounts for was removed".into(),
            ));
        }
        if self.next.is_none() && e.seq != 0 {
            return Err(fail(
                0,
                format!(
                    "the log starts at seq {}: entries before it are missing",
                    e.seq
                ),
            ));
        }
        if e.seq != exp {
            let what = if e.seq > exp {
                format!(
                    "seq {} where seq {exp} belongs: entries were deleted or reordered",
                    e.seq
                )
            } else {
                format!(
                    "seq {} where seq {exp} belongs: entries were reordered, duplicated or inserted",
                    e.seq
                )
            };
            return Err(fail(exp, what));
        }
        let (key, prev, epoch) = if e.starts_epoch() {
            if e.seq != 0 && e.bridge.is_none() {
                return Err(fail(e.seq, "an epoch start without a bridge".into()));
            }
            let Some(root) = self.roots.get(&e.seq) else {
                return Err(fail(
                    e.seq,
                    "this entry starts a key epoch that the vault's data key cannot reach: it was forged, or the vault is older than the log (restored before a rekey)".into(),
                ));
            };
            let prev = match &self.next {
                None => chain::genesis_prev(root, self.id),
                Some(n) => n.prev,
            };
            (root.clone(), prev, e.seq)
        } else {
            let Some(n) = &self.next else {
                unreachable!("entry 0 always starts an epoch")
            };
            if e.epoch != n.epoch || e.bridge.is_some() {
                return Err(fail(
                    e.seq,
                    "the entry's key epoch is not the current one".into(),
                ));
            }
            (n.key.clone(), n.prev, n.epoch)
        };
        if chain::unhex32(&e.prev).is_none_or(|p| !ct_eq(&p, &prev)) {
            let what = if e.seq == 0 {
                "entry 0 is not the genesis of this vault's log"
            } else {
                "prev does not link to the entry before it"
            };
            return Err(fail(e.seq, what.into()));
        }
        if !ct_eq(&chain::entry_mac(&key, &p.canonical), &p.mac) {
            return Err(fail(
                e.seq,
                "the mac does not verify: the entry was altered".into(),
            ));
        }
        if e.starts_epoch() {
            self.epochs += 1;
        }
        if e.torn.is_some() {
            self.recovered.push(e.seq);
        }
        if self.want.contains(&e.seq) {
            self.macs.insert(e.seq, p.mac);
        }
        self.entries += 1;
        self.head = Some(Anchor {
            seq: e.seq,
            mac: p.mac,
        });
        self.next = Some(Next {
            seq: e.seq + 1,
            prev: p.mac,
            key: chain::evolve(&key),
            epoch,
        });
        Ok(())
    }
}

/// The human summary `hushfs audit verify` prints.
pub fn describe(r: &Report) -> String {
    let mut s = String::new();
    match r.files.as_slice() {
        [] => s.push_str("log:      none yet\n"),
        [one] => s.push_str(&format!("log:      {}\n", one.display())),
        many => s.push_str(&format!(
            "log:      {} (+{} rotated files)\n",
            many.last().expect("non-empty").display(),
            many.len() - 1
        )),
    }
    match r.head {
        Some(h) => s.push_str(&format!(
            "entries:  {} verified, seq 0..={}, {} key epoch{}\n",
            r.entries,
            h.seq,
            r.epochs,
            if r.epochs == 1 { "" } else { "s" }
        )),
        None => s.push_str("entries:  none verified\n"),
    }
    for seq in &r.recovered {
        s.push_str(&format!(
            "note:     seq {seq} records a line torn by an interrupted write (kept, not tampering)\n"
        ));
    }
    for a in &r.anchors {
        let state = match a.ok {
            Some(true) => "matches",
            Some(false) => "DOES NOT MATCH",
            None => "not reached",
        };
        s.push_str(&format!(
            "anchor:   {} (seq {}): {state}\n",
            a.source, a.anchor.seq
        ));
    }
    match (&r.problem, &r.incomplete) {
        (Some(p), _) => s.push_str(&format!(
            "result:   TAMPERED at seq {} ({} line {}): {}\n",
            p.seq,
            p.file.display(),
            p.line,
            p.what
        )),
        (None, Some(i)) => s.push_str(&format!(
            "result:   INCOMPLETE: the last line ({} line {}, {} bytes) was torn by an interrupted write; everything before it verifies\n",
            i.file.display(),
            i.line,
            i.bytes
        )),
        (None, None) => s.push_str(
            "result:   OK: every entry authenticates and links; no edit, deletion, reordering or insertion; nothing cut off before the newest anchor\n",
        ),
    }
    s
}
