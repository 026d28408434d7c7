//! The async mode's upload queue: one small JSON file per pending run in
//! `offsite.queue_dir` (0700), written to a temp name, fsynced and renamed,
//! so a queued upload survives a crash or restart. A file's name is its
//! run_id (validated); anything else in the directory is ignored.
//!
//! What the directory holds decides what prune keeps and what the lag check
//! sees, so it is read like the backups directory: it must be writable by
//! the daemon's uid only (refused at open, naming the fix); entries are
//! opened through the directory's fd, never through a link, only as regular
//! files of at most [`MAX_ENTRY_BYTES`] (anything else is ignored with one
//! warning); and a time no entry of ours can carry is not believed: a
//! queue date in the future counts from the file's last change, which
//! nobody can set ahead of the clock, and a retry later than any backoff
//! is due at once (see [`Pending::due`]).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runid::RunId;
use crate::store::at;

/// The largest entry read: ours are a few hundred bytes, a few KiB with
/// the longest error kept.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;
/// How far ahead of the clock an entry's queue date may lie (clock steps).
pub const MAX_AHEAD_SECS: u64 = 60;
/// Names warned about at most, so a directory full of junk cannot grow
/// memory; past it, junk is ignored silently.
const MAX_WARNED: usize = 1024;

/// One pending upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The run.
    pub run_id: String,
    /// When it was queued (unix seconds).
    pub enqueued_at: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last attempt's error ("" before the first).
    pub last_error: String,
    /// Not before this time (unix seconds): the backoff.
    pub next_at: u64,
}

impl Pending {
    /// Whether an attempt is due at `now` under a backoff of at most
    /// `max_backoff` seconds. A `next_at` beyond any such backoff was not
    /// written by [`Queue::failed`]: it is due, so a planted date cannot
    /// postpone the upload.
    pub fn due(&self, now: u64, max_backoff: u64) -> bool {
        let latest = now
            .saturating_add(max_backoff.max(1))
            .saturating_add(MAX_AHEAD_SECS);
        self.next_at <= now || self.next_at > latest
    }
}

/// `p` as far as it can be believed at `now`: a queue date after `now` +
/// [`MAX_AHEAD_SECS`] is replaced by `changed` (the file's last status
/// change, at most `now`), so the entry ages and the lag check sees it.
/// True when the date was replaced.
fn believable(mut p: Pending, now: u64, changed: u64) -> (Pending, bool) {
    if p.enqueued_at <= now.saturating_add(MAX_AHEAD_SECS) {
        return (p, false);
    }
    p.enqueued_at = changed.min(now);
    (p, true)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Backoff after `attempts` failures: 1, 2, 4 … seconds, at most `max`.
pub fn backoff(attempts: u32, max: u64) -> u64 {
    1u64.checked_shl(attempts.min(30))
        .unwrap_or(u64::MAX)
        .min(max.max(1))
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    /// Names already warned about: one warning per name, not one a second.
    warned: Arc<Mutex<HashSet<String>>>,
}

impl Queue {
    /// Opens (creating, mode 0700) the queue directory; refuses one that
    /// anyone but the daemon's uid can write.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let cannot = |e: std::io::Error| {
            format!(
                "offsite.queue_dir {}: {e} (the daemon must be able to create and write it)",
                dir.display()
            )
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(cannot)?;
        let meta = std::fs::metadata(dir).map_err(cannot)?;
        at::only_daemon_writes(dir, meta.uid(), meta.mode())
            .map_err(|why| format!("offsite.queue_dir {why}"))?;
        Ok(Self {
            dir: dir.to_owned(),
            warned: Arc::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, e: std::io::Error) -> String {
        format!("offsite queue {}: {e}", self.dir.display())
    }

    pub(crate) fn write(&self, p: &Pending) -> Result<(), String> {
        let id = RunId::parse(&p.run_id).map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec(p).map_err(|e| e.to_string())?;
        let dir = at::open_dir(&self.dir).map_err(|e| self.io(e))?;
        let tmp = format!(".{id}.tmp");
        at::remove(&dir, &tmp).map_err(|e| self.io(e))?;
        let mut f = at::create_new(&dir, &tmp).map_err(|e| self.io(e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io(e))?;
        at::rename(&dir, &tmp, id.as_str()).map_err(|e| self.io(e))?;
        at::sync(&dir).map_err(|e| self.io(e))
    }

    /// Queues `id` (kept as it is when already queued).
    pub fn push(&self, id: &RunId) -> Result<(), String> {
        if self.get(id).is_some() {
            return Ok(());
        }
        let t = now();
        self.write(&Pending {
            run_id: id.to_string(),
            enqueued_at: t,
            attempts: 0,
            last_error: String::new(),
            next_at: t,
        })
    }

    /// The entry for `id`, if queued.
    pub fn get(&self, id: &RunId) -> Option<Pending> {
        let dir = at::open_dir(&self.dir).ok()?;
        self.read(&dir, id, now())
    }

    /// Every pending upload, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        let (Ok(dir), Ok(names)) = (at::open_dir(&self.dir), std::fs::read_dir(&self.dir)) else {
            return Vec::new();
        };
        let t = now();
        let mut out: Vec<Pending> = names
            .flatten()
            .filter_map(|e| {
                let id = RunId::parse(e.file_name().to_str()?).ok()?;
                self.read(&dir, &id, t)
            })
            .collect();
        out.sort_by(|a, b| (a.enqueued_at, &a.run_id).cmp(&(b.enqueued_at, &b.run_id)));
        out
    }

    /// The entry named `id` as far as it can be believed at `now`; what
    /// cannot be an entry of ours is ignored, with one warning.
    fn read(&self, dir: impl AsFd, id: &RunId, now: u64) -> Option<Pending> {
        let name = id.as_str();
        let (bytes, changed) = match read_entry(dir, name) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(why) => {
                self.warn_once(name, &format!("offsite queue entry {name} ignored: {why}"));
                return None;
            }
        };
        let Some(p) = serde_json::from_slice::<Pending>(&bytes)
            .ok()
            .filter(|p| p.run_id == name)
        else {
            self.warn_once(
                name,
                &format!("offsite queue entry {name} ignored: not a queue entry for this run"),
            );
            return None;
        };
        let (p, redated) = believable(p, now, changed);
        if redated {
            self.warn_once(
                name,
                &format!("offsite queue entry {name} is dated in the future: its wait counts from the file's last change"),
            );
        }
        Some(p)
    }

    fn warn_once(&self, name: &str, message: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < MAX_WARNED && warned.insert(name.to_owned()) {
            tracing::warn!(queue_dir = %self.dir.display(), run_id = name, "{message}");
        }
    }

    /// Records a failed attempt and schedules the next one.
    pub fn failed(&self, p: &Pending, error: &str, max_backoff: u64) -> Result<(), String> {
        let attempts = p.attempts.saturating_add(1);
        self.write(&Pending {
            attempts,
            last_error: error.chars().take(2000).collect(),
            next_at: now() + backoff(attempts, max_backoff),
            ..p.clone()
        })
    }

    /// Removes `id` once its upload is confirmed.
    pub fn done(&self, id: &RunId) -> Result<(), String> {
        let dir = at::open_dir(&self.dir).map_err(|e| self.io(e))?;
        at::remove(&dir, id.as_str())
            .map(|_| ())
            .map_err(|e| self.io(e))
    }
}

/// The bytes of the entry `name` and when its inode last changed (unix
/// seconds); `None` when there is none. Not a regular file, a link, or
/// larger than [`MAX_ENTRY_BYTES`]: an error, and nothing is read.
fn read_entry(dir: impl AsFd, name: &str) -> Result<Option<(Vec<u8>, u64)>, String> {
    let f = match at::open_regular(dir, name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    let too_big = |size: u64| {
        format!("{size} bytes, larger than an entry can be ({MAX_ENTRY_BYTES}); not read")
    };
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(Some((bytes, u64::try_from(meta.ctime()).unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(
            (0..6).map(|a| backoff(a, 10)).collect::<Vec<_>>(),
            [1, 2, 4, 8, 10, 10]
        );
        assert_eq!(backoff(200, 300), 300);
    }

    #[test]
    fn the_queue_survives_reopening_and_ignores_strangers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&dir.path().join("q")).expect("open");
        let a = RunId::parse("run-a").expect("id");
        q.push(&a).expect("push");
        std::fs::write(dir.path().join("q").join("..evil"), b"{}").expect("write");
        let p = q.list();
        assert_eq!(p.len(), 1);
        q.failed(&p[0], "down", 300).expect("fail");
        q.push(&a).expect("push again keeps the entry");
        let q2 = Queue::open(&dir.path().join("q")).expect("reopen");
        let p2 = q2.list();
        assert_eq!(
            (p2.len(), p2[0].attempts, p2[0].last_error.as_str()),
            (1, 1, "down")
        );
        q2.done(&a).expect("done");
        assert!(q2.list().is_empty());
    }

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&dir.path().join("q")).expect("open");
        (dir, q)
    }

    fn entry(run_id: &str, enqueued_at: u64) -> Vec<u8> {
        serde_json::to_vec(&Pending {
            run_id: run_id.into(),
            enqueued_at,
            attempts: 0,
            last_error: String::new(),
            next_at: enqueued_at,
        })
        .expect("json")
    }

    #[test]
    fn links_fifos_and_directories_are_not_entries() {
        let (d, q) = queue();
        let real = RunId::parse("real").expect("id");
        q.push(&real).expect("push");
        // A genuine-looking entry elsewhere, reached through a link.
        let outside = d.path().join("outside");
        std::fs::write(&outside, entry("linked", 1)).expect("outside");
        std::os::unix::fs::symlink(&outside, q.dir().join("linked")).expect("symlink");
        // A FIFO would block a reader that opened it blocking.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            q.dir().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        std::fs::create_dir(q.dir().join("dir")).expect("mkdir");
        let listed: Vec<String> = q.list().into_iter().map(|p| p.run_id).collect();
        assert_eq!(listed, ["real"]);
        for name in ["linked", "fifo", "dir"] {
            assert!(q.get(&RunId::parse(name).expect("id")).is_none(), "{name}");
        }
        // Queuing over a planted link replaces the link, never its target.
        q.push(&RunId::parse("linked").expect("id")).expect("push");
        assert_eq!(
            std::fs::read(&outside).expect("outside"),
            entry("linked", 1)
        );
        assert_eq!(q.list().len(), 2);
    }

    #[test]
    fn an_entry_larger_than_the_cap_is_ignored() {
        let (_d, q) = queue();
        let padded = |run_id: &str, size: u64| {
            let mut bytes = entry(run_id, now());
            let len = usize::try_from(size).expect("size");
            bytes.resize(len, b' ');
            std::fs::write(q.dir().join(run_id), bytes).expect("write");
        };
        padded("at-cap", MAX_ENTRY_BYTES);
        padded("over-cap", MAX_ENTRY_BYTES + 1);
        let listed: Vec<String> = q.list().into_iter().map(|p| p.run_id).collect();
        assert_eq!(listed, ["at-cap"]);
        let e =
            read_entry(at::open_dir(q.dir()).expect("dir"), "over-cap").expect_err("over the cap");
        assert!(e.contains("65537 bytes") && e.contains("not read"), "{e}");
    }

    #[test]
    fn a_directory_others_can_write_is_refused_naming_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let q = dir.path().join("q");
        Queue::open(&q).expect("a new directory is the daemon's");
        for (mode, says) in [(0o770, "group-writable"), (0o703, "world-writable")] {
            std::fs::set_permissions(&q, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = Queue::open(&q).expect_err("refused");
            assert!(
                e.starts_with("offsite.queue_dir ")
                    && e.contains(says)
                    && e.contains(&format!("chmod 0700 {}", q.display())),
                "{e}"
            );
        }
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(Queue::open(&q).is_ok());
    }

    #[test]
    fn a_date_no_entry_of_ours_can_carry_is_not_believed() {
        let now = 1_000_000;
        let p = |enqueued_at, next_at| Pending {
            run_id: "r".into(),
            enqueued_at,
            attempts: 1,
            last_error: String::new(),
            next_at,
        };
        // (enqueued_at, file changed at, believed enqueued_at)
        for (enqueued, changed, believed) in [
            (now - 500, now - 10, now - 500),
            (now + MAX_AHEAD_SECS, now, now + MAX_AHEAD_SECS),
            (now + MAX_AHEAD_SECS + 1, now - 30, now - 30),
            (u64::MAX, now - 30, now - 30),
            (u64::MAX, now + 999, now),
        ] {
            let (got, redated) = believable(p(enqueued, now), now, changed);
            assert_eq!(got.enqueued_at, believed, "{enqueued}");
            assert_eq!(redated, believed != enqueued, "{enqueued}");
        }
        // (next_at, max backoff, due)
        for (next_at, max, due) in [
            (now, 300, true),
            (now + 1, 300, false),
            (now + 300 + MAX_AHEAD_SECS, 300, false),
            (now + 301 + MAX_AHEAD_SECS, 300, true),
            (u64::MAX, 300, true),
            (now + 120, 0, true),
        ] {
            assert_eq!(p(now, next_at).due(now, max), due, "{next_at} {max}");
        }
    }

    #[test]
    fn a_planted_future_date_ages_from_when_it_was_planted() {
        let (_d, q) = queue();
        let far = now() + 10 * 365 * 24 * 3600;
        std::fs::write(q.dir().join("planted"), entry("planted", far)).expect("plant");
        let first = q.list();
        assert_eq!(first.len(), 1);
        assert!(first[0].enqueued_at <= now(), "{first:?}");
        // Read again once the clock has moved past that date (whole
        // seconds), it is the same date: the wait keeps growing. A reader
        // that re-dated the entry to the time of each read would move it.
        while now() <= first[0].enqueued_at {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let again = q.list();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].enqueued_at, first[0].enqueued_at, "{again:?}");
        let id = RunId::parse("planted").expect("id");
        assert_eq!(
            q.get(&id).map(|p| p.enqueued_at),
            Some(first[0].enqueued_at)
        );
        assert!(again[0].enqueued_at < now(), "{again:?}");
    }
}
