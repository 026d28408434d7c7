//! What a backups directory holds, counted once and then kept in memory, so
//! a backup, a selftest or a Status costs the same with 10,000 runs kept as
//! with one: the metrics' artifact count and bytes and Status's newest run
//! come from here, not from listing the directory.
//!
//! When it is right: the count is taken by one full listing, under the
//! census lock, the first time anyone asks after [`Store::new`] (daemon
//! start, every reload) or after [`Census::forget`]. From then on every
//! change this process makes goes through the store, which records it
//! after the files changed: a commit adds its run, `remove_run` (prune)
//! removes one, start-up recovery and any commit or removal that failed
//! half-way forget the count, so the next reader lists again. Adding and
//! removing are by run_id, so recording a change the listing already saw
//! changes nothing. Every full listing (`list`, `verify --all`, prune)
//! replaces the count with what it saw, unless a change was recorded while
//! it ran. So files changed by hand behind the daemon's back show up at the
//! next list, prune, reload or restart.
//!
//! Every [`Store`] of one directory path in a process shares one census, so
//! a backup still running under the config a reload replaced records its
//! commit where the new config's store sees it.
//!
//! [`Store`]: super::Store
//! [`Store::new`]: super::Store::new

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use crate::runid::RunId;

/// How many runs a directory holds and their bytes: artifacts (regular
/// files named `<run_id>.sql.gpg`), whatever their manifest says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Artifacts.
    pub runs: u64,
    /// Their sizes on disk, summed.
    pub bytes: u64,
}

/// One run as counted.
#[derive(Debug, Clone)]
struct Run {
    size_bytes: u64,
    /// Its manifest's `created_at` when the manifest was there and named it.
    created_at: Option<String>,
}

/// The runs of one directory.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    by_id: BTreeMap<RunId, Run>,
    /// (created_at, run_id) of every run with a manifest, oldest first.
    by_time: BTreeSet<(String, RunId)>,
    bytes: u64,
}

impl Runs {
    /// Records that `id`'s artifact stands with `size_bytes` (replacing
    /// what was recorded for it).
    pub fn insert(&mut self, id: RunId, size_bytes: u64, created_at: Option<String>) {
        self.remove(&id);
        self.bytes = self.bytes.saturating_add(size_bytes);
        if let Some(t) = &created_at {
            self.by_time.insert((t.clone(), id.clone()));
        }
        self.by_id.insert(
            id,
            Run {
                size_bytes,
                created_at,
            },
        );
    }

    /// Records that `id` is gone (nothing when it was not there).
    pub fn remove(&mut self, id: &RunId) {
        if let Some(old) = self.by_id.remove(id) {
            self.bytes = self.bytes.saturating_sub(old.size_bytes);
            if let Some(t) = old.created_at {
                self.by_time.remove(&(t, id.clone()));
            }
        }
    }

    /// Count and bytes.
    pub fn tally(&self) -> Tally {
        Tally {
            runs: self.by_id.len() as u64,
            bytes: self.bytes,
        }
    }

    /// The newest run with a manifest (by `created_at`, then run_id) that
    /// sorts before `before`; the newest of all without one.
    pub fn newest_before(&self, before: Option<&(String, RunId)>) -> Option<(String, RunId)> {
        match before {
            None => self.by_time.iter().next_back(),
            Some(b) => self.by_time.range(..b).next_back(),
        }
        .cloned()
    }
}

#[derive(Debug, Default)]
struct State {
    /// `None` until counted, and again after [`Census::forget`].
    runs: Option<Runs>,
    /// Bumped by every recorded change, so a listing that ran without the
    /// lock knows whether it may replace the count.
    changes: u64,
}

/// One directory's runs as this process knows them.
#[derive(Debug, Default)]
pub struct Census {
    state: Mutex<State>,
}

/// Every live census, by directory path.
static CENSUSES: LazyLock<Mutex<HashMap<PathBuf, Weak<Census>>>> = LazyLock::new(Mutex::default);

impl Census {
    /// The census of `dir` every store of that path shares, forgotten, so
    /// the next reader counts afresh.
    pub fn of(dir: &Path) -> Arc<Census> {
        let mut all = CENSUSES.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, c| c.strong_count() > 0);
        let census = match all.get(dir).and_then(Weak::upgrade) {
            Some(c) => c,
            None => {
                let c = Arc::new(Census::default());
                all.insert(dir.to_owned(), Arc::downgrade(&c));
                c
            }
        };
        census.forget();
        census
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `f` of the runs, counted first by `count` (called with the lock
    /// held, so no change slips in between the listing and its use) when
    /// they are not known.
    pub fn with<T, E>(
        &self,
        count: impl FnOnce() -> Result<Runs, E>,
        f: impl FnOnce(&Runs) -> T,
    ) -> Result<T, E> {
        let mut st = self.lock();
        let runs = match st.runs.take() {
            Some(r) => r,
            None => count()?,
        };
        let out = f(&runs);
        st.runs = Some(runs);
        Ok(out)
    }

    /// Records a change made on disk (after it was made).
    pub fn record(&self, change: impl FnOnce(&mut Runs)) {
        let mut st = self.lock();
        st.changes += 1;
        if let Some(runs) = st.runs.as_mut() {
            change(runs);
        }
    }

    /// Drops the count: the next reader lists the directory.
    pub fn forget(&self) {
        let mut st = self.lock();
        st.changes += 1;
        st.runs = None;
    }

    /// The change counter, read before a listing without the lock.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Replaces the count with a listing's, unless a change was recorded
    /// since `changes` was read before it began. True when replaced.
    pub fn replace(&self, changes: u64, runs: Runs) -> bool {
        let mut st = self.lock();
        if st.changes != changes {
            return false;
        }
        st.runs = Some(runs);
        true
    }

    /// True when a count is held (for tests).
    #[cfg(test)]
    pub fn is_counted(&self) -> bool {
        self.lock().runs.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RunId {
        RunId::parse(s).expect("valid run_id")
    }

    #[test]
    fn insert_and_remove_are_by_run_id_and_keep_count_bytes_and_order() {
        let mut r = Runs::default();
        r.insert(id("a"), 10, Some("2026-01-01T00:00:00Z".into()));
        r.insert(id("b"), 20, Some("2026-01-03T00:00:00Z".into()));
        r.insert(id("c"), 5, None);
        // Recording what is already recorded changes nothing.
        r.insert(id("a"), 10, Some("2026-01-01T00:00:00Z".into()));
        assert_eq!(r.tally(), Tally { runs: 3, bytes: 35 });
        // A roll-forward: the same run, now with a manifest and its size.
        r.insert(id("c"), 7, Some("2026-01-02T00:00:00Z".into()));
        assert_eq!(r.tally(), Tally { runs: 3, bytes: 37 });
        let newest = r.newest_before(None).expect("newest");
        assert_eq!(newest.1, id("b"));
        let next = r.newest_before(Some(&newest)).expect("next");
        assert_eq!(next.1, id("c"));
        let last = r.newest_before(Some(&next)).expect("last");
        assert_eq!(last.1, id("a"));
        assert_eq!(r.newest_before(Some(&last)), None);
        r.remove(&id("b"));
        r.remove(&id("b"));
        r.remove(&id("never"));
        assert_eq!(r.tally(), Tally { runs: 2, bytes: 17 });
        assert_eq!(r.newest_before(None).map(|n| n.1), Some(id("c")));
        r.remove(&id("a"));
        r.remove(&id("c"));
        assert_eq!(r.tally(), Tally::default());
        assert_eq!(r.newest_before(None), None);
    }

    #[test]
    fn a_listing_replaces_the_count_only_when_nothing_changed_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Census::of(dir.path());
        assert!(!c.is_counted());
        let listed = |n: u64| {
            let mut r = Runs::default();
            for i in 0..n {
                r.insert(id(&format!("r{i}")), 1, None);
            }
            r
        };
        // First use counts, under the lock.
        let t = c.with(|| Ok::<_, ()>(listed(2)), Runs::tally);
        assert_eq!(t, Ok(Tally { runs: 2, bytes: 2 }));
        // Known now: no second listing.
        let t = c.with(|| Err("listed again"), Runs::tally);
        assert_eq!(t, Ok(Tally { runs: 2, bytes: 2 }));
        // A listing that a commit overlapped is not installed...
        let before = c.changes();
        c.record(|r| r.insert(id("new"), 1, None));
        assert!(!c.replace(before, listed(2)));
        assert_eq!(
            c.with(|| Err(()), Runs::tally),
            Ok(Tally { runs: 3, bytes: 3 })
        );
        // ...one nothing overlapped is.
        let before = c.changes();
        assert!(c.replace(before, listed(5)));
        assert_eq!(
            c.with(|| Err(()), Runs::tally),
            Ok(Tally { runs: 5, bytes: 5 })
        );
        // Forgotten: a change is not recorded into nothing, the next reader lists.
        c.forget();
        c.record(|r| r.insert(id("lost"), 1, None));
        assert_eq!(c.with(|| Err("must list"), Runs::tally), Err("must list"));
        assert!(!c.is_counted());
    }

    #[test]
    fn stores_of_one_path_share_a_census_and_a_new_one_recounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Census::of(dir.path());
        a.with(|| Ok::<_, ()>(Runs::default()), Runs::tally)
            .expect("count");
        assert!(a.is_counted());
        let b = Census::of(dir.path());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!a.is_counted(), "a new store (start, reload) counts afresh");
        let other = tempfile::tempdir().expect("tempdir");
        assert!(!Arc::ptr_eq(&a, &Census::of(other.path())));
    }
}
