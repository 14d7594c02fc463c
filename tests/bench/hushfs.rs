//! hushfs's benchmark harness: what users feel, measured side by side with
//! the bare mechanism and the alternatives, printed as Markdown tables.
//!
//!   cargo bench --bench hushfs                # everything (about 10 min)
//!   cargo bench --bench hushfs -- --quick     # fewer iterations
//!   cargo bench --bench hushfs -- --only 1,4  # some sections
//!
//! docs/BENCHMARKS.md has the method and the latest table. Needs root (or
//! fusermount3) and /dev/fuse, like the mount tests.

mod agent;
mod bare;
mod files;
mod guards;
mod helper;
mod scale;
mod setup;
mod stats;

use std::collections::BTreeSet;

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How hard to try: `--quick` divides iteration counts.
#[derive(Clone, Copy)]
pub struct Effort {
    pub quick: bool,
}

impl Effort {
    pub fn n(&self, full: usize) -> usize {
        if self.quick { (full / 10).max(3) } else { full }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("helper") {
        std::process::exit(helper::main(&args[1..]));
    }
    let effort = Effort {
        quick: args.iter().any(|a| a == "--quick"),
    };
    let only: BTreeSet<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| (1..=9).collect());

    let b = setup::Bench::new();
    println!("{}", b.machine());
    if only.contains(&1) || only.contains(&2) {
        files::latency(&b, effort);
    }
    if only.contains(&3) {
        files::concurrency(&b, effort);
    }
    if only.contains(&4) {
        scale::projects(&b, effort);
    }
    if only.contains(&5) {
        scale::run_overhead(&b, effort);
    }
    if only.contains(&6) {
        scale::unlock(&b, effort);
    }
    if only.contains(&7) {
        guards::scanner(&b, effort);
    }
    if only.contains(&8) {
        guards::audit(&b, effort);
    }
    if only.contains(&9) {
        agent::agent(&b, effort);
    }
}
