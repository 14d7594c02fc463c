//! One matcher for every managed value and its common encodings, shared by
//! the commit hooks (`hushfs scan`) and output redaction (`hushfs run`).
//!
//! Each value of at least `MIN_LEN` bytes becomes a set of patterns: the raw
//! bytes (and the value without a trailing newline), base64 standard and
//! URL-safe at all three byte alignments (so a value inside a longer base64
//! blob is found, padded or not), hex in both cases, URL-encoding in the
//! variants encoders produce, and JSON-string escaping. Line breaks that
//! wrap an encoded blob (after `WRAP_MIN` or more base64 characters) are
//! skipped, so wrapped base64 and hex are found at any width from there. All patterns go into
//! one Aho-Corasick automaton (leftmost-longest) that reads the input once.
//! A hit names the secret and the encoding and gives a position, never the
//! value.
//!
//! Memory: the patterns are built in zeroizing buffers and wiped once the
//! automaton is built. The aho-corasick crate keeps what it needs to match
//! in its own, ordinary memory for the matcher's lifetime: the transition
//! table (equivalent to the patterns' bytes, as a trie), the pattern
//! lengths, and its prefilter's copies of leading bytes (for small sets,
//! of whole patterns). That memory is not wiped when the matcher is
//! dropped; the processes that build matchers are non-dumpable (see
//! sys/harden.rs), and the matcher lives only as long as the command.

mod compact;
pub mod git;
pub mod stream;

use aho_corasick::automaton::Automaton;
use aho_corasick::{Anchored, Input, MatchKind, StartKind, dfa, nfa::contiguous};
use base64::Engine;
use zeroize::Zeroizing;

pub use compact::Compact;
pub use stream::{Piece, Redactor, Stream};

/// Values shorter than this are not matched: too many false hits.
pub const MIN_LEN: usize = 6;

/// A line break (LF or CR LF) right after at least this many base64
/// characters wraps an encoded blob (`base64` wraps at 76, PEM at 64,
/// `xxd -p` at 60) and is skipped when matching, in the input and in the
/// patterns alike. Shorter lines keep their breaks: ordinary text ending a
/// line with a short word would otherwise be held back by the redactor
/// until more output came.
pub const WRAP_MIN: usize = 16;

/// The characters of base64 (both alphabets and padding) and of hex.
fn is_wrap_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// How many wrap characters end `bytes` (at most `WRAP_MIN`), counting
/// `before` more when all of `bytes` are.
fn run_at_end(bytes: &[u8], before: usize) -> usize {
    let tail = bytes
        .iter()
        .rev()
        .take(WRAP_MIN)
        .take_while(|b| is_wrap_char(**b))
        .count();
    if tail == bytes.len() {
        (before + tail).min(WRAP_MIN)
    } else {
        tail
    }
}

/// Text as the automaton reads it: without the line breaks that wrap an
/// encoded blob, with a map back to the original positions. Borrowed when
/// nothing is skipped (most text). The copy holds the input, which may
/// hold values, so it is zeroizing.
struct View<'a> {
    text: Option<Zeroizing<Vec<u8>>>,
    orig: &'a [u8],
    /// Per skipped break: (view index of the byte after it, its original
    /// index).
    jumps: Vec<(usize, usize)>,
}

impl<'a> View<'a> {
    /// `before`: wrap characters just before `hay` (a stream's earlier
    /// output), up to `WRAP_MIN`.
    fn new(hay: &'a [u8], before: usize) -> View<'a> {
        View::with(hay, skips(hay, before))
    }

    /// The view of `hay` without the breaks `skips(hay, ..)` found.
    fn with(hay: &'a [u8], skip: Vec<(usize, usize)>) -> View<'a> {
        if skip.is_empty() {
            return View {
                text: None,
                orig: hay,
                jumps: Vec::new(),
            };
        }
        let removed: usize = skip.iter().map(|(a, b)| b - a).sum();
        let mut text = Zeroizing::new(Vec::with_capacity(hay.len() - removed));
        let mut jumps = Vec::with_capacity(skip.len());
        let mut from = 0;
        for (a, b) in skip {
            text.extend_from_slice(&hay[from..a]);
            jumps.push((text.len(), b));
            from = b;
        }
        text.extend_from_slice(&hay[from..]);
        View {
            text: Some(text),
            orig: hay,
            jumps,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.text.as_deref().map_or(self.orig, |t| t.as_slice())
    }

    /// The original index of view byte `v` (`v` = the view's length: the
    /// original's).
    fn orig(&self, v: usize) -> usize {
        if v >= self.bytes().len() {
            return self.orig.len();
        }
        match self.jumps.partition_point(|j| j.0 <= v) {
            0 => v,
            i => self.jumps[i - 1].1 + (v - self.jumps[i - 1].0),
        }
    }

    /// The original end of a view range ending at `v_end` (exclusive): a
    /// skipped break right after it stays outside.
    fn orig_end(&self, v_end: usize) -> usize {
        if v_end == 0 {
            0
        } else {
            self.orig(v_end - 1) + 1
        }
    }
}

/// The line breaks of `hay` (after `before` wrap characters) that wrap a
/// blob, as (start, end) ranges.
fn skips(hay: &[u8], before: usize) -> Vec<(usize, usize)> {
    let mut skip = Vec::new();
    for nl in memchr::memchr_iter(b'\n', hay) {
        let start = if nl > 0 && hay[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if run_at_end(&hay[..start], before) >= WRAP_MIN {
            skip.push((start, nl + 1));
        }
    }
    skip
}

/// Above this size an input is matched window by window, as a stream is,
/// so one with wrapping breaks is not copied whole without them (a 100 MiB
/// copy, and its wiping, halved the scanner's speed).
const VIEW_WHOLE_MAX: usize = 1 << 20;
const VIEW_WINDOW: usize = 64 * 1024;

/// A CR at the end of `hay` after a long run may be the first half of a
/// wrapping CR LF whose LF comes with the next chunk: liveness is judged
/// without it (as if skipped), and it is held back. Returns the text to
/// judge; the CR, if any, starts at its end.
fn without_cr(hay: &[u8], before: usize) -> &[u8] {
    match hay.split_last() {
        Some((b'\r', rest)) if run_at_end(rest, before) >= WRAP_MIN => rest,
        _ => hay,
    }
}

/// Up to this many pattern bytes the matcher is a DFA; above, a compact NFA.
/// The DFA's table takes up to ~1 KiB per pattern byte (states × byte
/// classes × 4, and twice for the anchored start) but reads ~3× faster:
/// measured with 1,000 32-byte secrets (6,000 patterns, 190 KiB), 275-390
/// MB/s over source-like text against ~100 MB/s for the NFA, with a 260 MiB
/// table built in 0.6-1.1 s. Above the limit, a small DFA of pattern
/// prefixes finds where the NFA needs to look (see `Matcher::pre`).
const DFA_MAX_PATTERN_BYTES: usize = 256 * 1024;

/// Most distinct 6-byte prefixes the prefilter DFA is built for (~32 MiB).
const PREFILTER_MAX_PREFIXES: usize = 16 * 1024;

/// How a value appeared in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    Raw,
    Json,
    Url,
    Hex,
    HexUpper,
    Base64,
    Base64Url,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Json => "json-escaped",
            Encoding::Url => "url-encoded",
            Encoding::Hex => "hex",
            Encoding::HexUpper => "HEX",
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One occurrence: which secret (an index into the matcher's labels), in
/// which encoding, at which byte range of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub secret: usize,
    pub encoding: Encoding,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Copy)]
struct PatMeta {
    secret: u32,
    encoding: Encoding,
}

enum Aut {
    Nfa(contiguous::NFA),
    Dfa(dfa::DFA),
}

/// Runs `$body` with `$a` bound to the concrete automaton (the search
/// methods need a sized type).
macro_rules! with_aut {
    ($self:expr, $a:ident => $body:expr) => {
        match &$self.aut {
            Some(Aut::Nfa($a)) => Some($body),
            Some(Aut::Dfa($a)) => Some($body),
            None => None,
        }
    };
}

pub struct Matcher {
    aut: Option<Aut>,
    /// With the NFA: a DFA of every pattern's first `MIN_LEN` bytes, which
    /// finds where a match could start ~3× faster than the NFA scans (the
    /// NFA then only confirms those places). Measured with 1,000 secrets:
    /// 530 MB/s against 176 MB/s, for 11 MiB.
    pre: Option<dfa::DFA>,
    pats: Vec<PatMeta>,
    labels: Vec<String>,
    unscannable: Vec<String>,
    max_len: usize,
}

/// Every pattern to look for, sorted by bytes and deduplicated: the same
/// bytes from two encodings (hex of digits is the same in both cases) or
/// two secrets count once, for the first secret and the plainest encoding.
struct Patterns {
    labels: Vec<String>,
    unscannable: Vec<String>,
    pats: Vec<(Zeroizing<Vec<u8>>, PatMeta)>,
}

impl Patterns {
    fn of<'a, I>(secrets: I) -> Patterns
    where
        I: IntoIterator<Item = (String, &'a [u8])>,
    {
        let mut labels = Vec::new();
        let mut unscannable = Vec::new();
        let mut pats: Vec<(Zeroizing<Vec<u8>>, PatMeta)> = Vec::new();
        for (label, value) in secrets {
            if value.len() < MIN_LEN {
                unscannable.push(label);
                continue;
            }
            let secret = labels.len() as u32;
            labels.push(label);
            for (bytes, encoding) in value_patterns(value) {
                pats.push((bytes, PatMeta { secret, encoding }));
            }
        }
        // The same bytes can come from two encodings (hex of digits is the
        // same in both cases) or two secrets: keep one pattern, the first
        // secret and the plainest encoding. Sorting moves the buffers; no
        // copy of a pattern is left outside a zeroizing buffer.
        pats.sort_by(|a, b| {
            a.0.as_slice()
                .cmp(b.0.as_slice())
                .then(a.1.secret.cmp(&b.1.secret))
                .then(a.1.encoding.cmp(&b.1.encoding))
        });
        pats.dedup_by(|b, a| a.0.as_slice() == b.0.as_slice());
        Patterns {
            labels,
            unscannable,
            pats,
        }
    }
}

impl Matcher {
    /// Builds the matcher from (label, value) pairs. Labels are what hits
    /// and redactions show (`NAME` or `PROJECT/NAME`).
    pub fn new<'a, I>(secrets: I) -> Matcher
    where
        I: IntoIterator<Item = (String, &'a [u8])>,
    {
        let Patterns {
            labels,
            unscannable,
            pats,
        } = Patterns::of(secrets);
        let max_len = pats.iter().map(|p| p.0.len()).max().unwrap_or(0);
        let total: usize = pats.iter().map(|p| p.0.len()).sum();
        let aut = if pats.is_empty() {
            None
        } else {
            let refs: Vec<&[u8]> = pats.iter().map(|p| p.0.as_slice()).collect();
            // Both start kinds: unanchored for finding, anchored for the
            // redactor's "could a match still start here?" check.
            Some(if total <= DFA_MAX_PATTERN_BYTES {
                Aut::Dfa(
                    dfa::Builder::new()
                        .match_kind(MatchKind::LeftmostLongest)
                        .start_kind(StartKind::Both)
                        .build(&refs)
                        .expect("patterns are small enough for a DFA"),
                )
            } else {
                Aut::Nfa(
                    contiguous::NFA::builder()
                        .match_kind(MatchKind::LeftmostLongest)
                        .build(&refs)
                        .expect("patterns fit the NFA's state ids"),
                )
            })
        };
        let pre = match &aut {
            Some(Aut::Nfa(_)) => {
                // Every pattern has at least MIN_LEN bytes, so every prefix
                // has exactly MIN_LEN: a prefix match ending at e starts at
                // e - MIN_LEN, and matches come in order of their start.
                let mut prefixes: Vec<&[u8]> =
                    pats.iter().map(|p| &p.0.as_slice()[..MIN_LEN]).collect();
                prefixes.dedup();
                // About 2 KiB of table per prefix: beyond the cap (some
                // 2,500 secrets) the NFA scans alone, slower but bounded.
                (prefixes.len() <= PREFILTER_MAX_PREFIXES)
                    .then(|| {
                        dfa::Builder::new()
                            .match_kind(MatchKind::Standard)
                            .start_kind(StartKind::Unanchored)
                            .build(&prefixes)
                            .ok()
                    })
                    .flatten()
            }
            _ => None,
        };
        Matcher {
            aut,
            pre,
            pats: pats.iter().map(|p| p.1).collect(),
            labels,
            unscannable,
            max_len,
        }
    }

    /// The same matcher scanning with its automaton alone (tests compare).
    #[cfg(test)]
    pub(crate) fn without_prefilter(mut self) -> Matcher {
        self.pre = None;
        self
    }

    /// Hits of one pass over the whole view, and window by window.
    #[cfg(test)]
    pub(crate) fn find_all_both_ways(&self, hay: &[u8], window: usize) -> (Vec<Hit>, Vec<Hit>) {
        let view = View::new(hay, 0);
        let mut whole = Vec::new();
        self.find_each_in(view.bytes(), |h| {
            whole.push(Hit {
                start: view.orig(h.start),
                end: view.orig_end(h.end),
                ..h
            });
            true
        });
        let mut windowed = Vec::new();
        self.find_each_windowed(hay, 0, window, |h| {
            windowed.push(h);
            true
        });
        (whole, windowed)
    }

    /// Whether candidates are found by the prefix DFA.
    #[cfg(test)]
    pub(crate) fn has_prefilter(&self) -> bool {
        self.pre.is_some()
    }

    /// The label of hit's secret.
    pub fn label(&self, secret: usize) -> &str {
        &self.labels[secret]
    }

    /// Secrets that are matched.
    pub fn scannable(&self) -> usize {
        self.labels.len()
    }

    /// Secrets too short to match (under `MIN_LEN` bytes).
    pub fn unscannable(&self) -> &[String] {
        &self.unscannable
    }

    /// Nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.aut.is_none()
    }

    /// Number of distinct patterns (values × encodings × alignments).
    pub fn patterns(&self) -> usize {
        self.pats.len()
    }

    /// Heap bytes of the automata.
    pub fn memory_usage(&self) -> usize {
        with_aut!(self, a => a.memory_usage()).unwrap_or(0)
            + self.pre.as_ref().map_or(0, |p| p.memory_usage())
    }

    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Calls `f` for each non-overlapping hit in `hay`, leftmost-longest,
    /// while `f` returns true. Line breaks that wrap an encoded blob are
    /// skipped (a hit's range may span them).
    pub fn find_each(&self, hay: &[u8], f: impl FnMut(Hit) -> bool) {
        self.find_each_after(hay, 0, f)
    }

    /// `find_each` for text that follows `before` wrap characters (a
    /// stream's earlier output).
    fn find_each_after(&self, hay: &[u8], before: usize, mut f: impl FnMut(Hit) -> bool) {
        if hay.len() > VIEW_WHOLE_MAX {
            return self.find_each_windowed(hay, before, VIEW_WINDOW, f);
        }
        let view = View::new(hay, before);
        self.find_each_in(view.bytes(), |h| {
            f(Hit {
                start: view.orig(h.start),
                end: view.orig_end(h.end),
                ..h
            })
        })
    }

    /// `find_each_after` over a large input, a window at a time, by the
    /// rule a stream follows (stream.rs): a hit that starts before the
    /// window's live suffix is final, and the next window starts where
    /// the last final hit (or the live suffix) does.
    fn find_each_windowed(
        &self,
        hay: &[u8],
        before: usize,
        window: usize,
        mut f: impl FnMut(Hit) -> bool,
    ) {
        // Longer than any live suffix (at most max_len - 1 view bytes,
        // plus the breaks among them), so every window makes progress.
        let size = window.max(4 * self.max_len);
        let (mut start, mut run) = (0, before);
        while start < hay.len() {
            let end = (start + size).min(hay.len());
            let w = &hay[start..end];
            let hold = if end == hay.len() {
                w.len()
            } else {
                self.live_suffix_start_after(w, run)
            };
            let mut done = 0;
            let mut stop = false;
            let view = View::new(w, run);
            self.find_each_in(view.bytes(), |h| {
                let (hs, he) = (view.orig(h.start), view.orig_end(h.end));
                if hs >= hold {
                    return false;
                }
                done = he;
                stop = !f(Hit {
                    start: hs + start,
                    end: he + start,
                    ..h
                });
                !stop
            });
            if stop {
                return;
            }
            let done = done.max(hold);
            run = run_at_end(&w[..done], run);
            start += done;
        }
    }

    /// The automaton's hits in `hay` as it is.
    fn find_each_in(&self, hay: &[u8], mut f: impl FnMut(Hit) -> bool) {
        let pats = &self.pats;
        if let (Some(pre), Some(Aut::Nfa(nfa))) = (&self.pre, &self.aut) {
            // Candidates in order of start; at each, the longest match
            // starting there, if any: the same hits as a leftmost-longest
            // scan, since every match starts at a candidate.
            let input = Input::new(hay);
            let mut state = aho_corasick::automaton::OverlappingState::start();
            let mut resume = 0;
            loop {
                pre.try_find_overlapping(&input, &mut state)
                    .expect("unanchored overlapping search is supported");
                let Some(c) = state.get_match() else {
                    return;
                };
                if c.start() < resume {
                    continue;
                }
                let at = Input::new(hay).range(c.start()..).anchored(Anchored::Yes);
                let Some(m) = nfa.try_find(&at).expect("anchored search is supported") else {
                    continue;
                };
                resume = m.end();
                if !f(hit(pats, m)) {
                    return;
                }
            }
        }
        let _ = with_aut!(self, a => {
            let iter = a
                .try_find_iter(Input::new(hay))
                .expect("unanchored search is supported");
            for m in iter {
                if !f(hit(pats, m)) {
                    break;
                }
            }
        });
    }

    /// Every hit in `hay`.
    pub fn find_all(&self, hay: &[u8]) -> Vec<Hit> {
        let mut v = Vec::new();
        self.find_each(hay, |h| {
            v.push(h);
            true
        });
        v
    }

    /// Where the longest suffix of `hay` that could still grow into a match
    /// begins (`hay.len()` when none could): bytes before it are final.
    /// Only the last `max_pattern_len - 1` bytes need a look: a longer
    /// suffix that is a pattern prefix would be a complete longest pattern,
    /// which cannot grow.
    pub fn live_suffix_start(&self, hay: &[u8]) -> usize {
        self.live_suffix_start_after(hay, 0)
    }

    /// `live_suffix_start` for text that follows `before` wrap characters.
    fn live_suffix_start_after(&self, hay: &[u8], before: usize) -> usize {
        if self.aut.is_none() {
            return hay.len();
        }
        // Only the tail can be live: its view, with the run before it.
        let body = without_cr(hay, before);
        let mut cut = body.len().saturating_sub(2 * self.max_len + 2);
        if cut > 0 && body[cut] == b'\n' && body[cut - 1] == b'\r' {
            cut -= 1;
        }
        let view = View::new(&body[cut..], run_at_end(&body[..cut], before));
        let text = view.bytes();
        let from = text.len().saturating_sub(self.max_len.saturating_sub(1));
        let live = with_aut!(self, a => live_from(a, text, from)).unwrap_or(text.len());
        cut + view.orig(live)
    }

    /// Replaces every hit with `[hushfs:LABEL]` (whole input at once).
    pub fn redact(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut last = 0;
        self.find_each(input, |h| {
            out.extend_from_slice(&input[last..h.start]);
            self.write_marker(h.secret, &mut out);
            last = h.end;
            true
        });
        out.extend_from_slice(&input[last..]);
        out
    }

    /// Appends the replacement text for a secret.
    pub fn write_marker(&self, secret: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"[hushfs:");
        out.extend_from_slice(self.labels[secret].as_bytes());
        out.push(b']');
    }
}

fn hit(pats: &[PatMeta], m: aho_corasick::Match) -> Hit {
    let meta = pats[m.pattern().as_usize()];
    Hit {
        secret: meta.secret as usize,
        encoding: meta.encoding,
        start: m.start(),
        end: m.end(),
    }
}

/// The first position at or after `from` whose anchored walk to the end of
/// `hay` never dies, i.e. whose suffix is a prefix of some pattern.
fn live_from<A: Automaton>(a: &A, hay: &[u8], from: usize) -> usize {
    let start = a
        .start_state(Anchored::Yes)
        .expect("the automaton is built for anchored searches");
    'outer: for i in from..hay.len() {
        let mut s = start;
        for &b in &hay[i..] {
            s = a.next_state(Anchored::Yes, s, b);
            if a.is_dead(s) {
                continue 'outer;
            }
        }
        return i;
    }
    hay.len()
}

/// The value, and without its trailing newline: a value stored with one
/// usually appears without it (at the end of a file, before CRLF).
fn forms(value: &[u8]) -> Vec<&[u8]> {
    let trimmed = trim_newline(value);
    let mut forms = vec![value];
    if trimmed.len() != value.len() && trimmed.len() >= MIN_LEN {
        forms.push(trimmed);
    }
    forms
}

fn trim_newline(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// Every pattern of a value (of at least `MIN_LEN` bytes): each form in
/// each encoding, as a view would read it (see `View`). The first line
/// break of a pattern may follow a run that starts before the pattern in
/// the input, so that break is kept both skipped and not.
fn value_patterns(value: &[u8]) -> Vec<(Zeroizing<Vec<u8>>, Encoding)> {
    let mut out = Vec::new();
    for form in forms(value) {
        for (p, e) in encodings(form) {
            if !p.contains(&b'\n') {
                out.push((p, e));
                continue;
            }
            for before in [0, WRAP_MIN] {
                let v = View::new(&p, before);
                let bytes = Zeroizing::new(v.bytes().to_vec());
                if bytes.len() >= MIN_LEN && !out.iter().any(|(q, _)| q.as_slice() == &bytes[..]) {
                    out.push((bytes, e));
                }
            }
        }
    }
    out
}

/// Every encoded form of `v` to look for, each in a zeroizing buffer.
fn encodings(v: &[u8]) -> Vec<(Zeroizing<Vec<u8>>, Encoding)> {
    let mut out = vec![(Zeroizing::new(v.to_vec()), Encoding::Raw)];
    let mut push = |bytes: Zeroizing<Vec<u8>>, e: Encoding| {
        if bytes.len() >= MIN_LEN && bytes.as_slice() != v {
            out.push((bytes, e));
        }
    };
    for align in 0..3 {
        push(
            base64_core(v, align, &base64::engine::general_purpose::STANDARD_NO_PAD),
            Encoding::Base64,
        );
        push(
            base64_core(v, align, &base64::engine::general_purpose::URL_SAFE_NO_PAD),
            Encoding::Base64Url,
        );
    }
    push(hex(v, b"0123456789abcdef"), Encoding::Hex);
    push(hex(v, b"0123456789ABCDEF"), Encoding::HexUpper);
    // Percent-encoding as real encoders write it (each keeps RFC 3986's
    // unreserved characters and escapes in upper case unless noted):
    // - nothing more: Python quote(v, safe=""), and in lower case too;
    // - '/': Python quote(v) (its default safe="/");
    // - !'()*: JavaScript encodeURIComponent;
    // - those and ;/?:@&=+$,#: JavaScript encodeURI;
    // - $&+:=@: Go url.PathEscape;
    // - space as '+': Python quote_plus, Go url.QueryEscape;
    // - form encoding (URLSearchParams): alphanumerics and *-._, space '+'.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let py_quote = |b: u8| unreserved(b) || b == b'/';
    let js_component = |b: u8| unreserved(b) || b"!'()*".contains(&b);
    let js_uri = |b: u8| js_component(b) || b";/?:@&=+$,#".contains(&b);
    let go_path = |b: u8| unreserved(b) || b"$&+:=@".contains(&b);
    let form = |b: u8| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    push(url(v, unreserved, true, false), Encoding::Url);
    push(url(v, unreserved, false, false), Encoding::Url);
    push(url(v, py_quote, true, false), Encoding::Url);
    push(url(v, js_component, true, false), Encoding::Url);
    push(url(v, js_uri, true, false), Encoding::Url);
    push(url(v, go_path, true, false), Encoding::Url);
    push(url(v, unreserved, true, true), Encoding::Url);
    push(url(v, form, true, true), Encoding::Url);
    if let Ok(s) = std::str::from_utf8(v) {
        // As serde_json and JSON.stringify write it, as Python's json.dumps
        // does by default (non-ASCII as \u escapes), and with "\/" (PHP).
        for ascii in [false, true] {
            for slash in [false, true] {
                push(json(s, ascii, slash), Encoding::Json);
            }
        }
    }
    out
}

/// The base64 characters of `v` that do not depend on its neighbours when
/// it sits at byte offset ≡ `align` (mod 3) inside a longer encoded blob:
/// the characters touching the `align` filler bytes before it and the last
/// partial group after it are dropped.
fn base64_core(
    v: &[u8],
    align: usize,
    engine: &base64::engine::GeneralPurpose,
) -> Zeroizing<Vec<u8>> {
    let mut src = Zeroizing::new(vec![0u8; align + v.len()]);
    src[align..].copy_from_slice(v);
    let mut enc = Zeroizing::new(vec![
        0u8;
        base64::encoded_len(src.len(), false).unwrap_or(0)
    ]);
    let n = engine
        .encode_slice(src.as_slice(), enc.as_mut_slice())
        .expect("buffer sized by encoded_len");
    let front = [0, 2, 3][align];
    let back = usize::from(!src.len().is_multiple_of(3));
    if n < front + back {
        return Zeroizing::new(Vec::new());
    }
    Zeroizing::new(enc[front..n - back].to_vec())
}

fn hex(v: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 2));
    for &b in v {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    out
}

fn url(v: &[u8], keep: impl Fn(u8) -> bool, upper: bool, plus: bool) -> Zeroizing<Vec<u8>> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 3));
    for &b in v {
        if keep(b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

fn json(s: &str, ascii: bool, slash: bool) -> Zeroizing<Vec<u8>> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() + 8));
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(DIGITS[usize::from((u >> shift) & 15)]);
        }
    };
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if slash => out.extend_from_slice(b"\\/"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => unit(&mut out, c as u16),
            c if ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(&mut out, *u);
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    buf.fill(0);
    out
}

#[cfg(test)]
mod tests;
