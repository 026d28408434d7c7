//! File operations relative to a directory's fd (the backups directory,
//! the offsite queue): nothing here follows a link, opens anything but a
//! regular file, or creates a file that already exists. Names are built
//! from a validated run_id, so they never contain '/'. Also the one check
//! that such a directory can be written by the daemon's uid only.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

/// Opens the directory itself. The configured path is the operator's and
/// may be a link; what is inside it is never followed.
pub fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Refuses a directory (owned by `owner`, with `mode`) that someone but the
/// daemon's uid could plant files in: owned by another uid, or writable by
/// its group or by everyone. The message names the command that fixes it.
pub fn only_daemon_writes(dir: &Path, owner: u32, mode: u32) -> Result<(), String> {
    let d = dir.display();
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(format!(
            "{d} is world-writable (mode {mode:04o}): anyone could plant files; run `chmod 0700 {d}`"
        ));
    }
    if mode & 0o020 != 0 {
        return Err(format!(
            "{d} is group-writable (mode {mode:04o}): a group member could plant files; run `chmod 0700 {d}`"
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(format!(
            "{d} is owned by uid {owner}, the daemon runs as uid {me}: run `chown {me} {d}`"
        ));
    }
    Ok(())
}

/// Opens `name` for reading: no links, and only a regular file (a planted
/// FIFO or device would otherwise block or feed us forever).
pub fn open_regular(dir: impl AsFd, name: &str) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => io::Error::other(format!("{name} is a symbolic link")),
        e => e.into(),
    })?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other(format!("{name} is not a regular file")));
    }
    Ok(File::from(fd))
}

/// Reads a regular file of at most `cap` bytes.
pub fn read_capped(dir: impl AsFd, name: &str, cap: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(dir, name)?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::other(format!(
            "{name} is larger than {cap} bytes, not a file cutter-backupd wrote"
        )));
    }
    Ok(bytes)
}

/// Creates `name` (mode 0600), failing when anything, a link included, is
/// already there. Opened for reading too: a streamed offsite upload reads
/// the parts back from this very file as they are written.
pub fn create_new(dir: impl AsFd, name: &str) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Removes `name` itself (a link is removed, never its target); absent is fine.
pub fn remove(dir: impl AsFd, name: &str) -> io::Result<bool> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Renames within the directory, never replacing what is at `to`.
pub fn rename_new(dir: impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let d = dir.as_fd();
    Ok(rustix::fs::renameat_with(
        d,
        from,
        d,
        to,
        RenameFlags::NOREPLACE,
    )?)
}

/// Renames within the directory, replacing `to`.
pub fn rename(dir: impl AsFd, from: &str, to: &str) -> io::Result<()> {
    let d = dir.as_fd();
    Ok(rustix::fs::renameat(d, from, d, to)?)
}

/// What is at `name`, without following a link; `None` when nothing is.
pub fn kind(dir: impl AsFd, name: &str) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when `name` is a regular file (not a link to one).
pub fn is_regular(dir: impl AsFd, name: &str) -> bool {
    matches!(kind(dir, name), Ok(Some(FileType::RegularFile)))
}

/// fsync of the directory, so renames and removals survive a crash.
pub fn sync(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_the_daemon_alone_can_write_passes() {
        let me = rustix::process::geteuid().as_raw();
        let dir = Path::new("/var/lib/cutter/q");
        assert!(only_daemon_writes(dir, me, 0o40700).is_ok());
        assert!(only_daemon_writes(dir, me, 0o40755).is_ok());
        // (owner, mode, what the message must say)
        let refused = [
            (me, 0o40770, "group-writable (mode 0770)"),
            (me, 0o40702, "world-writable (mode 0702)"),
            (me, 0o41777, "world-writable (mode 1777)"),
            (me.wrapping_add(1), 0o40700, "owned by uid"),
        ];
        for (owner, mode, says) in refused {
            let e = only_daemon_writes(dir, owner, mode).expect_err("refused");
            assert!(e.contains(says) && e.contains("/var/lib/cutter/q"), "{e}");
            assert!(
                e.contains("run `chmod 0700") || e.contains("run `chown"),
                "{e}"
            );
        }
    }
}
