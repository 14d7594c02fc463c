//! The mechanism's own cost (the floor of issue 13): a bare fuser
//! filesystem with one 64-byte file and no authorization, no audit, no
//! snapshots, mounted with the same options and thread settings as the
//! hushfs daemon (two threads, one cloned /dev/fuse descriptor each,
//! FOPEN_DIRECT_IO on every open). It has no flush handler: fuser answers
//! FLUSH with ENOSYS and the kernel stops sending it, so a close costs one
//! request (RELEASE), not two.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

const TTL: Duration = Duration::from_secs(1);
const FILE: u64 = 2;

struct Bare {
    content: Vec<u8>,
    uid: u32,
    gid: u32,
}

impl Bare {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == 1;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.content.len() as u64 },
            blocks: 1,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o500 } else { 0o400 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Bare {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == "SECRET" {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(1), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let start = (offset as usize).min(self.content.len());
        let end = (start + size as usize).min(self.content.len());
        reply.data(&self.content[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
}

/// Mounts at `dir` with a `size`-byte file `SECRET`, says "ready" on
/// stdout, and unmounts when stdin closes.
pub fn serve(dir: &str, size: usize) -> i32 {
    let fs = Bare {
        content: vec![b'x'; size],
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoAtime,
        fuser::MountOption::FSName("bare".into()),
        fuser::MountOption::Subtype("bare".into()),
    ];
    cfg.n_threads = Some(2);
    cfg.clone_fd = true;
    let session = match fuser::Session::new(fs, dir, &cfg).and_then(|s| s.spawn()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bare fs: cannot mount {dir}: {e}");
            return 1;
        }
    };
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    drop(session);
    0
}
