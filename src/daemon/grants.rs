//! The daemon's grants: requests to authorize a process tree (`run`'s own,
//! `allow --pid`) or a cgroup (`allow --cgroup`), and the watcher that
//! revokes a grant when its root exits or its time is up.

use super::*;

impl Daemon {
    pub(super) fn grant_self(
        &self,
        peer: control::Peer,
        label: String,
        fds: Vec<OwnedFd>,
    ) -> Response {
        let Some(fd) = fds.into_iter().next() else {
            return Response::err("grant_self needs the caller's pidfd");
        };
        let pidfd = PidFd::from_owned(fd);
        // The label is the command line `run` was given, which may hold a
        // value: the grant keeps (and status, the logs show) it redacted.
        let label = self
            .fs
            .redact_text(&label, crate::broker::LABEL_MAX)
            .unwrap_or_else(|| "run: (command not recorded: the mount is locked)".into());
        // The pidfd must name the connected peer itself: a process can
        // grant its own tree, not somebody else's.
        if pidfd.pid() != Some(peer.pid) {
            return Response::err("the pidfd does not belong to the connecting process");
        }
        let Some(st) = ProcFs.stat(peer.pid) else {
            return Response::err("the process is gone");
        };
        if !pidfd.is_alive() {
            return Response::err("the process is gone");
        }
        let id = self.authz.add(
            GrantKind::Tree {
                pid: peer.pid,
                starttime: st.starttime,
                root: Box::new(pidfd),
            },
            label.clone(),
            None,
        );
        if let Err(why) = self.granted(peer, id, &label, "run") {
            return Response::err(why);
        }
        Response {
            grant: Some(id),
            ..Response::ok()
        }
    }

    /// Records a new grant; a grant that cannot be recorded is withdrawn
    /// (fail closed) and the request answered with the reason.
    fn granted(
        &self,
        peer: control::Peer,
        id: u64,
        label: &str,
        event: &str,
    ) -> Result<(), String> {
        let (exe, cmdline) = ProcFs.describe(peer.pid);
        let cmdline =
            cmdline.and_then(|l| self.fs.redact_text(&l, crate::authz::proc::CMDLINE_MAX));
        let recorded = self.audit.record(Event {
            pid: Some(peer.pid),
            uid: Some(peer.uid),
            exe,
            cmdline,
            grant: Some(id.to_string()),
            reason: Some(label.to_string()),
            ..self.event(event)
        });
        if let Err(why) = recorded {
            self.authz.revoke(id);
            return Err(format!(
                "the audit log cannot record the grant ({why}): refused"
            ));
        }
        self.granted_once.store(true, Ordering::Release);
        self.wake_watcher();
        log::info!("grant {id}: {label} (asked by pid {})", peer.pid);
        Ok(())
    }

    /// `hushfs allow DIR --pid PID`: a tree that run did not start, such as
    /// a container's init. The pidfd is opened here, so the grant is
    /// anchored to the process that exists now.
    pub(super) fn grant_pid(&self, peer: control::Peer, pid: u32, ttl: Option<u64>) -> Response {
        let pidfd = match PidFd::open(pid) {
            Ok(p) => p,
            Err(e) => return Response::err(format!("no process {pid}: {e}")),
        };
        let Some(st) = ProcFs.stat(pid) else {
            return Response::err(format!("no process {pid}"));
        };
        if !pidfd.is_alive() {
            return Response::err(format!("process {pid} exited"));
        }
        let (exe, _) = ProcFs.describe(pid);
        let label = format!("pid {pid} ({})", exe.as_deref().unwrap_or("?"));
        let id = self.authz.add_grant(
            GrantKind::Tree {
                pid,
                starttime: st.starttime,
                root: Box::new(pidfd),
            },
            label.clone(),
            ttl.map(Duration::from_secs),
            self.authz.uids().allow_other,
        );
        if let Err(why) = self.granted(peer, id, &label, "grant") {
            return Response::err(why);
        }
        Response {
            grant: Some(id),
            ..Response::ok()
        }
    }

    /// `hushfs allow DIR --cgroup PATH`: every process in a container's
    /// cgroup. A group the requester can write into is refused unless asked
    /// for: any of its processes could move itself in.
    pub(super) fn grant_cgroup(
        &self,
        peer: control::Peer,
        path: &str,
        ttl: Option<u64>,
        allow_writable: bool,
    ) -> Response {
        if !path.starts_with('/')
            || path.split('/').any(|c| c == ".." || c == ".")
            || path.contains('\0')
        {
            return Response::err(format!(
                "{path:?} is not a cgroup path: give it as on the 0:: line of /proc/PID/cgroup, e.g. /system.slice/docker-ID.scope"
            ));
        }
        let Some(root) = crate::authz::proc::cgroup2_root() else {
            return Response::err("no cgroup v2 hierarchy is mounted");
        };
        let dir = root.join(path.trim_start_matches('/'));
        let anchor = match CgroupAnchor::new(dir.clone()) {
            Ok(a) => a,
            Err(e) => return Response::err(format!("no cgroup {path} ({}): {e}", dir.display())),
        };
        let procs = dir.join("cgroup.procs");
        let writable = nix::unistd::access(&procs, nix::unistd::AccessFlags::W_OK).is_ok();
        let mut warning = None;
        if writable {
            if peer.uid == 0 {
                warning = Some(format!(
                    "root can move any process into {path}; grant only groups no untrusted root process writes to"
                ));
            } else if !allow_writable {
                return Response::err(format!(
                    "cgroup {path} is writable by uid {}: any of your processes could move itself in and read; grant a group owned by root (the container runtime's), or pass --allow-writable-cgroup",
                    peer.uid
                ));
            } else {
                warning = Some(format!(
                    "cgroup {path} is writable by uid {}: any of your processes can join it and read",
                    peer.uid
                ));
            }
        }
        let label = format!("cgroup {path}");
        let id = self.authz.add_grant(
            GrantKind::Cgroup {
                path: path.to_string(),
                anchor: Box::new(anchor),
            },
            label.clone(),
            ttl.map(Duration::from_secs),
            self.authz.uids().allow_other,
        );
        if let Err(why) = self.granted(peer, id, &label, "grant") {
            return Response::err(why);
        }
        Response {
            grant: Some(id),
            warning,
            ..Response::ok()
        }
    }
}

/// Revokes grants whose root exited (their pidfd became readable) or whose
/// time is up; woken early by `wake_watcher`.
pub(super) fn watch_grants(d: Arc<Daemon>, wake_read: OwnedFd) {
    loop {
        let (fds, expiry) = d.authz.watch_set();
        let mut pfds: Vec<libc::pollfd> = std::iter::once(wake_read.as_raw_fd())
            .chain(fds)
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = match expiry {
            Some(t) => (t.saturating_sub(crate::authz::grants::now_secs()))
                .saturating_mul(1000)
                .clamp(10, 1000) as i32,
            None => 1000,
        };
        // SAFETY: pfds is a valid, exclusively borrowed array of pollfd of
        // the given length; poll only writes revents.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n > 0 && pfds[0].revents & libc::POLLIN != 0 {
            let mut buf = [0u8; 64];
            let _ = nix::unistd::read(&wake_read, &mut buf);
        }
        d.reap();
    }
}
