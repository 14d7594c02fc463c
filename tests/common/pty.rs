//! What a command writes to a pseudo-terminal, collected as it comes.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads the master until every slave is closed (EIO), into `seen`.
pub fn collect(master: &OwnedFd) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(master.try_clone().unwrap());
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (seen, reader)
}

/// Waits until `what` shows up in `seen`, failing after `limit`.
pub fn wait_for(seen: &Mutex<Vec<u8>>, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in {:?}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `c` on a fresh pseudo-terminal as its controlling terminal (so
/// prompts find /dev/tty) and answers each prompt: waits for the text
/// `.0` (its n-th occurrence for the n-th pair with that text), then types
/// `.1` and Enter. Returns the exit code and everything the terminal showed.
pub fn converse(mut c: std::process::Command, script: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    c.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // and an ioctl making the pty on stdin the controlling terminal.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    // The command holds copies of the slave: only with every copy closed
    // does the master see the end.
    drop(c);
    drop(pty.slave);
    let (seen, reader) = collect(&pty.master);
    let mut master = std::fs::File::from(pty.master);
    let mut asked = std::collections::HashMap::<&str, usize>::new();
    for (prompt, answer) in script {
        let n = asked.entry(prompt).or_default();
        *n += 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while String::from_utf8_lossy(&seen.lock().unwrap())
            .matches(prompt)
            .count()
            < *n
        {
            assert!(
                Instant::now() < deadline,
                "no prompt {prompt:?}: {:?}",
                String::from_utf8_lossy(&seen.lock().unwrap())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        master.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let status = child.wait().unwrap();
    drop(master);
    reader.join().unwrap();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).replace("\r\n", "\n");
    (status.code(), out)
}

/// Gives the terminal behind `fd` (a pty master) a window size.
pub fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the struct we pass; fd is our pty master.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}
