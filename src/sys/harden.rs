//! Process hardening applied at start: no core dumps, no ptrace attach by
//! same-uid processes, and memory locking where the limit allows.

use std::io;

/// Makes this process non-dumpable (its /proc/PID/mem and environ become
/// root-only, ptrace attach by the same uid fails) and disables core files.
pub fn no_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_SET_DUMPABLE takes an integer argument; no pointers involved.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when this process is non-dumpable.
pub fn is_non_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 }
}

/// `MCL_ONFAULT` locks pages as they are touched instead of populating every
/// mapping at once: without it each thread's 8 MiB stack and each malloc
/// arena became resident (a 10-secret mount held 60 MiB).
const LOCK_FLAGS: i32 = libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT;

/// Locks current and future pages in memory so secrets never reach swap,
/// when the limit allows it: RLIMIT_MEMLOCK unlimited, or root (whose
/// CAP_IPC_LOCK ignores the limit). Otherwise a large allocation could fail
/// under MCL_FUTURE; callers then lock the secret buffers one by one
/// (`mlock_slice`) as far as the limit goes. Returns whether all memory is
/// now locked.
pub fn lock_memory_if_allowed() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // SAFETY: mlockall takes flags only.
        return unsafe { libc::mlockall(LOCK_FLAGS) == 0 };
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid rlimit struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return false;
    }
    if lim.rlim_cur != libc::RLIM_INFINITY {
        return false;
    }
    // SAFETY: mlockall takes flags only.
    unsafe { libc::mlockall(LOCK_FLAGS) == 0 }
}

/// Best-effort mlock of one buffer (used for secret values when
/// `lock_memory_if_allowed` could not lock everything).
pub fn mlock_slice(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    // SAFETY: the pointer and length describe memory owned by `buf`; mlock
    // does not access the memory, it only pins the pages.
    unsafe { libc::mlock(buf.as_ptr().cast(), buf.len()) == 0 }
}

/// One malloc arena for the whole process. glibc gives threads arenas of
/// their own; under mlockall every page one of them ever touched stays
/// resident, and a 10,000-secret mount held 39 MiB instead of 30 MiB.
/// Threads still allocate small blocks from their own caches (tcache), so
/// the shared arena's lock is rarely taken on the request path.
pub fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable of glibc's allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// For `pre_exec`: puts `src` at `dst` for the program about to be
/// executed. `dup2` onto itself is a no-op that keeps close-on-exec (the
/// fd would vanish at exec), so then only that flag is cleared.
/// Async-signal-safe.
pub fn inherit_as(src: i32, dst: i32) -> io::Result<()> {
    // SAFETY: fcntl and dup2 on descriptors the caller owns; no memory is
    // passed to the kernel.
    let r = unsafe {
        if src == dst {
            libc::fcntl(dst, libc::F_SETFD, 0)
        } else {
            libc::dup2(src, dst)
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
