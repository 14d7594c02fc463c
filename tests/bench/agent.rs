//! Section 9: what going through the per-user agent costs while unlocked —
//! a command handed to the agent and run as its child, against running
//! `env true` — and the agent's own memory.

use std::process::Command;

use crate::Effort;
use crate::setup::{Bench, rss};
use crate::stats::{Table, mib, time};

/// The agent serving this bench's runtime directory.
fn agent_pid(b: &Bench) -> Option<u32> {
    let want = format!("XDG_RUNTIME_DIR={}", b.tmp.path().join("run").display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let has = env.split(|&c| c == 0).any(|v| v == want.as_bytes());
        (cmd.ends_with(b"__agent\0") && has).then_some(pid)
    })
}

pub fn agent(b: &Bench, e: Effort) {
    let reps = e.n(40);
    let mnt = b.mnt.to_str().unwrap().to_string();
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let cases: Vec<(&str, Option<u64>, Make)> = vec![
        (
            "`env true`",
            None,
            Box::new(|| {
                let mut c = Command::new("env");
                c.arg("true");
                c
            }),
        ),
        (
            "`hushfs ls` (whole command)",
            Some(5_000_000),
            Box::new(|| b.hushfs(&["ls"])),
        ),
        (
            "`hushfs run --mount DIR -- true`",
            Some(10_000_000),
            Box::new(|| b.hushfs(&["run", "--mount", &mnt, "--", "true"])),
        ),
        (
            "`hushfs run -p app -- true` (private mount)",
            Some(15_000_000),
            Box::new(|| b.hushfs(&["run", "-p", "app", "--", "true"])),
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
    let make: Vec<&dyn Fn() -> Command> = cases.iter().map(|(_, _, c)| c.as_ref()).collect();
    let s = crate::setup::interleaved(&names, &make, reps);
    let mut t = Table::new(
        "9. through the agent (unlocked): commands run as the agent's children",
        &[
            "command",
            "median",
            "p99",
            "added over `env true`",
            "target",
            "met",
        ],
    );
    let base = s[0].median();
    for (i, (name, target, _)) in cases.iter().enumerate() {
        // `ls` is judged whole (the "≤ 5 ms"), `run` by what it adds.
        let judged = if i == 1 {
            s[i].median()
        } else {
            s[i].median().saturating_sub(base)
        };
        t.row(vec![
            name.to_string(),
            time(s[i].median()),
            time(s[i].p99()),
            if i == 0 {
                "-".into()
            } else {
                time(s[i].median().saturating_sub(base))
            },
            target.map_or("-".into(), |x| format!("≤ {}", time(x))),
            target.map_or("-".into(), |x| {
                if judged <= x { "yes" } else { "**no**" }.into()
            }),
        ]);
    }
    match agent_pid(b) {
        Some(pid) => {
            let (now, peak) = rss(pid);
            t.note(format!(
                "Agent RSS {} (peak {}), target ≤ 16 MiB with no mount of its own: {}.",
                mib(now),
                mib(peak),
                if now <= 16 << 20 { "met" } else { "**missed**" }
            ));
        }
        None => t.note("No agent found for this bench: the rows above ran without it."),
    }
    t.print();
}
