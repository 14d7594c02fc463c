//! The processes a benchmark measures from: the harness re-executes itself
//! as `helper MODE ...`, so each reader is a fresh process whose place in
//! the process tree (under `hushfs run`, or outside any grant) is chosen by
//! how it is started. Timings are taken inside the reader and printed, one
//! number per line, for the harness to collect.

use std::ffi::CString;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Iterations discarded before timing (page faults, first lookups).
const WARMUP: usize = 200;

pub fn main(args: &[String]) -> i32 {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<usize>().expect("helper: number");
    match arg(0) {
        "loop" => open_loop(arg(1), num(2), arg(3)),
        "chain" => chain(num(1), arg(2), num(3), arg(4) == "deny"),
        "once" => once(arg(1)),
        "readers" => readers(num(1), arg(2), num(3)),
        "fifo-writer" => fifo_writer(arg(1), arg(2).as_bytes()),
        "bare-fs" => crate::bare::serve(arg(1), num(2)),
        "ticker" => ticker(num(1), Duration::from_micros(num(2) as u64)),
        m => {
            eprintln!("helper: unknown mode {m:?}");
            2
        }
    }
}

/// open + read to EOF + close, with raw syscalls (no std buffering).
/// Returns the bytes read, or the errno.
fn read_file(path: &CString, buf: &mut Vec<u8>) -> Result<usize, i32> {
    // SAFETY: `path` is NUL-terminated; the flags ask for nothing unusual.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let mut total = 0;
    let result = loop {
        if total == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        // SAFETY: the destination is the unused tail of `buf`, in bounds.
        let n = unsafe { libc::read(fd, buf[total..].as_mut_ptr().cast(), buf.len() - total) };
        match n {
            0 => break Ok(total),
            n if n < 0 => {
                break Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            n => total += n as usize,
        }
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

/// `n` timed opens of `path` by this one process (one thread): the steady
/// state, where a decision cache would help. `expect` says what counts as
/// success: `deny` (EACCES), `len:N` (exactly N bytes), or anything else
/// (the same bytes as the first read).
fn open_loop(path: &str, n: usize, expect: &str) -> i32 {
    let deny = expect == "deny";
    let want_len: Option<usize> = expect.strip_prefix("len:").and_then(|l| l.parse().ok());
    let c = CString::new(path).expect("path");
    let mut buf = vec![0u8; 1 << 16];
    let mut first: Option<Vec<u8>> = None;
    let mut errors = 0u64;
    let mut out = String::with_capacity(n * 8);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        let r = read_file(&c, &mut buf);
        let dt = t.elapsed();
        let ok = match (r, deny) {
            (Err(libc::EACCES), true) => true,
            (Ok(len), false) if want_len.is_some_and(|w| w != len) => false,
            (Ok(len), false) => match &first {
                None => {
                    first = Some(buf[..len].to_vec());
                    true
                }
                Some(f) => f[..] == buf[..len],
            },
            _ => false,
        };
        if i >= WARMUP {
            errors += u64::from(!ok);
            out += &format!("{}\n", dt.as_nanos());
        }
    }
    let bytes = first.map_or(0, |f| f.len());
    print!("{out}errors {errors}\nbytes {bytes}\n");
    0
}

/// Starts a chain of `depth` helper processes, each the child of the one
/// before; the last forks `k` short-lived children that each time one
/// first open + read + close. Each of those is a new process `depth + 1`
/// generations below whoever started the chain.
fn chain(depth: usize, path: &str, k: usize, deny: bool) -> i32 {
    if depth > 1 {
        let exe = std::env::current_exe().expect("own path");
        let mut c = std::process::Command::new(exe);
        c.args([
            "helper",
            "chain",
            &(depth - 1).to_string(),
            path,
            &k.to_string(),
        ]);
        if deny {
            c.arg("deny");
        }
        return c.status().map_or(1, |s| s.code().unwrap_or(1));
    }
    let c = CString::new(path).expect("path");
    let mut out = String::new();
    let mut errors = 0;
    for _ in 0..k {
        let (ns, ok) = in_child(|| {
            let mut buf = vec![0u8; 4096];
            let t = Instant::now();
            let r = read_file(&c, &mut buf);
            let dt = t.elapsed().as_nanos() as u64;
            let ok = match r {
                Err(libc::EACCES) => deny,
                Ok(_) => !deny,
                Err(_) => false,
            };
            (dt, ok)
        });
        if !ok {
            errors += 1;
        }
        out += &format!("{ns}\n");
    }
    println!("{out}errors {errors}");
    0
}

/// This process's first open + read + close of `path`, timed: a freshly
/// exec'd process (for depth 1, `hushfs run` starts one per sample).
fn once(path: &str) -> i32 {
    let c = CString::new(path).expect("path");
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    let r = read_file(&c, &mut buf);
    let dt = t.elapsed().as_nanos();
    let errors = u32::from(r.is_err());
    println!("{dt}\nerrors {errors}");
    0
}

/// Runs `f` in a forked child and returns what it computed.
fn in_child(f: impl FnOnce() -> (u64, bool)) -> (u64, bool) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the helper is single-threaded, so the child may run anything.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let (ns, ok) = f();
        let mut msg = [0u8; 9];
        msg[..8].copy_from_slice(&ns.to_le_bytes());
        msg[8] = ok as u8;
        // SAFETY: writes our own buffer to our pipe, then leaves without
        // running the parent's exit handlers.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: the write end belongs to the child now.
    unsafe { libc::close(fds[1]) };
    let mut msg = [0u8; 9];
    // SAFETY: the read end is ours; wrapping it closes it once.
    let mut r = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let got = r.read_exact(&mut msg).is_ok();
    let mut status = 0;
    // SAFETY: reaps the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let ns = u64::from_le_bytes(msg[..8].try_into().unwrap());
    (ns, got && msg[8] == 1)
}

/// `n` reader processes start together and each does `iters` opens of
/// `path`; prints the wall time, errors, whether every read returned the
/// same bytes, and every latency.
fn readers(n: usize, path: &str, iters: usize) -> i32 {
    let c = CString::new(path).expect("path");
    let mut go = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let mut kids = Vec::new();
    for _ in 0..n {
        let mut fds = [0; 2];
        // SAFETY: room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: single-threaded helper.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut byte = [0u8; 1];
            // SAFETY: blocks until the parent closes the go pipe (EOF).
            unsafe {
                libc::close(go[1]);
                libc::read(go[0], byte.as_mut_ptr().cast(), 1);
            }
            let mut buf = vec![0u8; 1 << 16];
            let mut first: Option<Vec<u8>> = None;
            let mut errors = 0u32;
            let mut mismatched = 0u32;
            let mut lat = Vec::with_capacity(iters * 8);
            for _ in 0..iters {
                let t = Instant::now();
                let r = read_file(&c, &mut buf);
                lat.extend_from_slice(&(t.elapsed().as_nanos() as u64).to_le_bytes());
                match r {
                    Ok(len) => match &first {
                        None => first = Some(buf[..len].to_vec()),
                        Some(f) if f[..] != buf[..len] => mismatched += 1,
                        Some(_) => {}
                    },
                    Err(_) => errors += 1,
                }
            }
            let digest = first.map_or(0, |f| fnv(&f));
            let mut msg = Vec::new();
            msg.extend_from_slice(&errors.to_le_bytes());
            msg.extend_from_slice(&mismatched.to_le_bytes());
            msg.extend_from_slice(&digest.to_le_bytes());
            msg.extend_from_slice(&lat);
            // SAFETY: the pipe is ours; the harness bounds `iters` so the
            // message fits the pipe buffer... but write_all loops anyway.
            let mut w = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
            let _ = w.write_all(&msg);
            drop(w);
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: the child owns the write end.
        unsafe { libc::close(fds[1]) };
        kids.push((pid, fds[0]));
    }
    let t = Instant::now();
    // SAFETY: closing the go pipe's write end releases every reader at once.
    unsafe {
        libc::close(go[1]);
        libc::close(go[0]);
    }
    // Drain every pipe concurrently so no child blocks on a full pipe.
    let msgs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = kids
            .iter()
            .map(|&(_, fd)| {
                s.spawn(move || {
                    // SAFETY: the read end is ours; wrapping closes it once.
                    let mut r =
                        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    let mut v = Vec::new();
                    let _ = r.read_to_end(&mut v);
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for &(pid, _) in &kids {
        let mut status = 0;
        // SAFETY: reaps our own children.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    let wall = t.elapsed();
    let (mut errors, mut mismatched) = (0u64, 0u64);
    let mut digests = std::collections::HashSet::new();
    let mut out = String::new();
    for m in &msgs {
        if m.len() < 16 {
            errors += iters as u64;
            continue;
        }
        errors += u64::from(u32::from_le_bytes(m[0..4].try_into().unwrap()));
        mismatched += u64::from(u32::from_le_bytes(m[4..8].try_into().unwrap()));
        digests.insert(u64::from_le_bytes(m[8..16].try_into().unwrap()));
        for c in m[16..].chunks_exact(8) {
            out += &format!("{}\n", u64::from_le_bytes(c.try_into().unwrap()));
        }
    }
    let identical = mismatched == 0 && digests.len() == 1;
    print!(
        "{out}errors {errors}\nidentical {identical}\nwall {}\n",
        wall.as_nanos()
    );
    0
}

/// FNV-1a: enough to tell whether readers saw the same bytes.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

/// Feeds a FIFO the way a .env-over-FIFO tool does: each reader's open is
/// met by one write of the content and a close (EOF).
fn fifo_writer(path: &str, content: &[u8]) -> i32 {
    loop {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) else {
            return 1;
        };
        if f.write_all(content).is_err() {
            continue;
        }
    }
}

/// Prints `n` lines, each carrying CLOCK_MONOTONIC at the moment it is
/// written, `every` apart, flushing each: the harness reads them through
/// `hushfs run` and measures how late each arrives.
fn ticker(n: usize, every: Duration) -> i32 {
    let mut out = std::io::stdout().lock();
    for _ in 0..n {
        let line = format!(
            "tick {} some ordinary log output of a test runner, nothing secret here\n",
            crate::mono_ns()
        );
        if out
            .write_all(line.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return 1;
        }
        std::thread::sleep(every);
    }
    0
}
