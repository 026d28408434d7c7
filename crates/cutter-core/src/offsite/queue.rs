//! The async mode's upload queue: one small JSON file per pending run in
//! `offsite.queue_dir` (0700), written to a temp name, fsynced and renamed,
//! so a queued upload survives a crash or restart. A file's name is its
//! run_id (validated); anything else in the directory is ignored.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runid::RunId;

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
}

impl Queue {
    /// Opens (creating, mode 0700) the queue directory.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                format!(
                    "offsite.queue_dir {}: {e} (the daemon must be able to create and write it)",
                    dir.display()
                )
            })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn write(&self, p: &Pending) -> Result<(), String> {
        let io = |e: std::io::Error| format!("offsite queue {}: {e}", self.dir.display());
        let tmp = self.dir.join(format!(".{}.tmp", p.run_id));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io)?;
        let bytes = serde_json::to_vec(p).map_err(|e| e.to_string())?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, self.dir.join(&p.run_id)).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
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
        let bytes = std::fs::read(self.dir.join(id.as_str())).ok()?;
        serde_json::from_slice::<Pending>(&bytes)
            .ok()
            .filter(|p| p.run_id == id.as_str())
    }

    /// Every pending upload, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        let mut out: Vec<Pending> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name();
                        let id = RunId::parse(name.to_str()?).ok()?;
                        self.get(&id)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.enqueued_at, &a.run_id).cmp(&(b.enqueued_at, &b.run_id)));
        out
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
        match std::fs::remove_file(self.dir.join(id.as_str())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("offsite queue {}: {e}", self.dir.display())),
        }
    }
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
}
