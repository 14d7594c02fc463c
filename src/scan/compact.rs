//! The same patterns as [`Matcher`](super::Matcher), looked up by their
//! first `MIN_LEN` bytes in a hash table instead of run through an
//! automaton: for short texts (command lines, grant labels) the mount daemon
//! takes values out of before recording them. An automaton over 10,000
//! secrets took 0.5 s to build and 70 MiB to hold; this takes the pattern
//! bytes plus a table entry each, and a text of n bytes costs n lookups.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::{Encoding, MIN_LEN, View, value_patterns, without_cr};

pub struct Compact {
    /// Every pattern, back to back.
    bytes: Zeroizing<Vec<u8>>,
    /// (offset in `bytes`, length, secret), grouped by first `MIN_LEN`
    /// bytes, longest first within a group.
    pats: Vec<(u32, u32, u32)>,
    /// First `MIN_LEN` bytes → the range of `pats` starting with them.
    index: HashMap<[u8; MIN_LEN], (u32, u32)>,
    labels: Vec<String>,
    max_len: usize,
}

impl Compact {
    /// From (label, value) pairs, like `Matcher::new`.
    pub fn new<'a, I>(secrets: I) -> Compact
    where
        I: IntoIterator<Item = (String, &'a [u8])>,
    {
        // Encoded straight into one buffer: a separate allocation per
        // pattern (60,000 for 10,000 secrets) left megabytes of freed heap
        // that a daemon under mlockall cannot hand back.
        let secrets: Vec<(String, &[u8])> = secrets.into_iter().collect();
        // Sized first: a growing buffer would leave copies behind unwiped.
        let total: usize = secrets
            .iter()
            .filter(|(_, v)| v.len() >= MIN_LEN)
            .flat_map(|(_, v)| value_patterns(v))
            .map(|(p, _)| p.len())
            .sum();
        let mut bytes = Zeroizing::new(Vec::with_capacity(total));
        let mut labels = Vec::new();
        // (offset, length, secret, encoding), as `Patterns::of` orders them.
        let mut all: Vec<(u32, u32, u32, Encoding)> = Vec::new();
        for (label, value) in secrets {
            if value.len() < MIN_LEN {
                continue;
            }
            let secret = labels.len() as u32;
            labels.push(label);
            for (p, encoding) in value_patterns(value) {
                all.push((bytes.len() as u32, p.len() as u32, secret, encoding));
                bytes.extend_from_slice(&p);
            }
        }
        let pat = |p: &(u32, u32, u32, Encoding)| &bytes[p.0 as usize..(p.0 + p.1) as usize];
        all.sort_by(|a, b| pat(a).cmp(pat(b)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
        all.dedup_by(|b, a| pat(a) == pat(b));
        let mut list: Vec<(u32, u32, u32)> = all.iter().map(|p| (p.0, p.1, p.2)).collect();
        drop(all);
        debug_assert_eq!(bytes.len(), total);
        // Sorted by bytes, so equal prefixes are adjacent; order
        // each group longest first (leftmost-longest, like the Matcher).
        let key = |b: &[u8], p: &(u32, u32, u32)| -> [u8; MIN_LEN] {
            b[p.0 as usize..p.0 as usize + MIN_LEN]
                .try_into()
                .expect("patterns have at least MIN_LEN bytes")
        };
        let mut index = HashMap::new();
        let mut i = 0;
        while i < list.len() {
            let k = key(&bytes, &list[i]);
            let mut j = i + 1;
            while j < list.len() && key(&bytes, &list[j]) == k {
                j += 1;
            }
            list[i..j].sort_by_key(|p| std::cmp::Reverse(p.1));
            index.insert(k, (i as u32, j as u32));
            i = j;
        }
        let max_len = list.iter().map(|p| p.1 as usize).max().unwrap_or(0);
        Compact {
            bytes,
            pats: list,
            index,
            labels,
            max_len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    fn pattern(&self, p: &(u32, u32, u32)) -> &[u8] {
        &self.bytes[p.0 as usize..(p.0 + p.1) as usize]
    }

    fn candidates(&self, at: &[u8]) -> &[(u32, u32, u32)] {
        let Some(k) = at.get(..MIN_LEN) else {
            return &[];
        };
        let k: [u8; MIN_LEN] = k.try_into().expect("MIN_LEN bytes");
        match self.index.get(&k) {
            Some(&(a, b)) => &self.pats[a as usize..b as usize],
            None => &[],
        }
    }

    /// Replaces every value (leftmost-longest) with `[hushfs:LABEL]`: the
    /// same output as `Matcher::redact` for the same secrets.
    pub fn redact(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        // Line breaks that wrap a blob are skipped, as the Matcher does.
        let view = View::new(input, 0);
        let text = view.bytes();
        let (mut i, mut last) = (0, 0);
        while i + MIN_LEN <= text.len() {
            let rest = &text[i..];
            if let Some(p) = self
                .candidates(rest)
                .iter()
                .find(|p| rest.starts_with(self.pattern(p)))
            {
                out.extend_from_slice(&input[last..view.orig(i)]);
                out.extend_from_slice(b"[hushfs:");
                out.extend_from_slice(self.labels[p.2 as usize].as_bytes());
                out.push(b']');
                i += p.1 as usize;
                last = view.orig_end(i);
            } else {
                i += 1;
            }
        }
        out.extend_from_slice(&input[last..]);
        out
    }

    /// Where a suffix of `hay` that could be the start of a value begins
    /// (`hay.len()` when none could), for text that was cut short. A suffix
    /// shorter than `MIN_LEN` counts as one: every short tail is the start
    /// of some value when there are many.
    pub fn live_suffix_start(&self, hay: &[u8]) -> usize {
        if self.is_empty() {
            return hay.len();
        }
        let view = View::new(without_cr(hay, 0), 0);
        let text = view.bytes();
        let from = text.len().saturating_sub(self.max_len.saturating_sub(1));
        let live = (from..text.len())
            .find(|&j| {
                let tail = &text[j..];
                tail.len() < MIN_LEN
                    || self
                        .candidates(tail)
                        .iter()
                        .any(|p| self.pattern(p).starts_with(tail))
            })
            .unwrap_or(text.len());
        view.orig(live)
    }
}
