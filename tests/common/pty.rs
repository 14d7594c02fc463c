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
