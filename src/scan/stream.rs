//! Matching over a stream that arrives in chunks (a child's output, a large
//! file): a match split across chunk boundaries is found exactly as if the
//! input had come in one piece.
//!
//! After each chunk, only the longest suffix that could still grow into a
//! match is kept back (at most longest pattern − 1 bytes, and usually
//! nothing); everything before it is final and handed out at once, so
//! interactive output is not delayed. The carry-over holds bytes that may
//! begin a secret, so it lives in zeroizing buffers.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Encoding, Matcher, run_at_end};

/// A stretch of the stream: bytes without secrets, or one occurrence.
pub enum Piece<'a> {
    Plain(&'a [u8]),
    Secret {
        secret: usize,
        encoding: Encoding,
        bytes: &'a [u8],
    },
}

pub struct Stream {
    m: Arc<Matcher>,
    carry: Zeroizing<Vec<u8>>,
    work: Zeroizing<Vec<u8>>,
    /// Base64 characters at the end of what was handed out (up to
    /// `WRAP_MIN`): whether a line break in the next chunk wraps a blob
    /// depends on them.
    run: usize,
}

/// Replaces `buf`'s contents with the concatenation of `parts`, growing by
/// a fresh zeroizing allocation (the old one is wiped when dropped) so no
/// copy is left behind by a reallocation.
fn fill(buf: &mut Zeroizing<Vec<u8>>, parts: &[&[u8]]) {
    let need: usize = parts.iter().map(|p| p.len()).sum();
    if need > buf.capacity() {
        *buf = Zeroizing::new(Vec::with_capacity(need.max(buf.capacity() * 2)));
    } else {
        zeroize::Zeroize::zeroize(&mut **buf);
    }
    for p in parts {
        buf.extend_from_slice(p);
    }
}

impl Stream {
    pub fn new(m: Arc<Matcher>) -> Stream {
        Stream {
            m,
            carry: Zeroizing::new(Vec::new()),
            work: Zeroizing::new(Vec::new()),
            run: 0,
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.m
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn held(&self) -> usize {
        self.carry.len()
    }

    /// Feeds a chunk; `f` receives every piece that is now final, in order.
    pub fn push(&mut self, chunk: &[u8], f: impl FnMut(Piece)) {
        if self.carry.is_empty() {
            let used = emit(&self.m, chunk, self.run, false, f);
            self.run = run_at_end(&chunk[..used], self.run);
            fill(&mut self.carry, &[&chunk[used..]]);
        } else {
            fill(&mut self.work, &[&self.carry, chunk]);
            let used = emit(&self.m, &self.work, self.run, false, f);
            self.run = run_at_end(&self.work[..used], self.run);
            fill(&mut self.carry, &[&self.work[used..]]);
        }
    }

    /// End of input: hands out what was held back.
    pub fn finish(&mut self, f: impl FnMut(Piece)) {
        if !self.carry.is_empty() {
            fill(&mut self.work, &[&self.carry]);
            emit(&self.m, &self.work, self.run, true, f);
            fill(&mut self.carry, &[]);
        }
    }
}

/// Emits the final pieces of `buf` (which follows `before` base64
/// characters); returns how many bytes were consumed.
fn emit(
    m: &Matcher,
    buf: &[u8],
    before: usize,
    last_chunk: bool,
    mut f: impl FnMut(Piece),
) -> usize {
    let hold = if last_chunk {
        buf.len()
    } else {
        m.live_suffix_start_after(buf, before)
    };
    let mut done = 0;
    // A hit that starts before `hold` is final: were it able to grow, its
    // start would begin a live suffix longer than the one at `hold`.
    m.find_each_after(buf, before, |h| {
        if h.start >= hold {
            return false;
        }
        if h.start > done {
            f(Piece::Plain(&buf[done..h.start]));
        }
        f(Piece::Secret {
            secret: h.secret,
            encoding: h.encoding,
            bytes: &buf[h.start..h.end],
        });
        done = h.end;
        true
    });
    if done < hold {
        f(Piece::Plain(&buf[done..hold]));
        done = hold;
    }
    done
}

/// A stream whose secrets become `[hushfs:NAME]`; every other byte passes
/// unchanged.
pub struct Redactor {
    s: Stream,
    out: Vec<u8>,
}

impl Redactor {
    pub fn new(m: Arc<Matcher>) -> Redactor {
        Redactor {
            s: Stream::new(m),
            out: Vec::new(),
        }
    }

    /// The redacted bytes that can be written now.
    pub fn push(&mut self, chunk: &[u8]) -> &[u8] {
        self.out.clear();
        let (s, out) = (&mut self.s, &mut self.out);
        let m = s.m.clone();
        s.push(chunk, |p| put(&m, out, p));
        &self.out
    }

    /// The rest, at end of input.
    pub fn finish(&mut self) -> &[u8] {
        self.out.clear();
        let (s, out) = (&mut self.s, &mut self.out);
        let m = s.m.clone();
        s.finish(|p| put(&m, out, p));
        &self.out
    }

    pub fn held(&self) -> usize {
        self.s.held()
    }
}

fn put(m: &Matcher, out: &mut Vec<u8>, p: Piece) {
    match p {
        Piece::Plain(b) => out.extend_from_slice(b),
        Piece::Secret { secret, .. } => m.write_marker(secret, out),
    }
}
