//! The backups directory: final names, crash-safe commits, start-up recovery,
//! listing, pins.
//!
//! Anyone who can write this directory is treated as an attacker: every
//! operation goes through the directory's fd (see [`at`]) and never follows
//! a link, opens a non-regular file, reads an uncapped manifest, or creates
//! over an existing name. Names are built from a [`RunId`]; a run's id is
//! the one in its file name, and a manifest that names another is corrupt.
//!
//! A commit writes `.<run_id>.sql.gpg.partial`, `.<run_id>.manifest.json.partial`
//! and `.<run_id>.manifest.json.sig.partial` (all fsynced), renames the
//! artifact, the signature, then the manifest (none over an existing name),
//! then fsyncs the directory. A run_id never starts with '.', so partials
//! never collide with final names. After a crash, [`Store::recover`] rolls a
//! renamed artifact forward with its partial manifest and deletes every other
//! partial, so the final names hold either a complete run or nothing.
//!
//! How many runs there are, their bytes and the newest come from a
//! [`census`] kept in memory (one listing, then every commit and removal),
//! so what a backup or selftest costs does not grow with the runs kept.

pub(crate) mod at;
pub mod census;

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::encrypt::hex;
use crate::error::{Error, Result};
use crate::manifest::{MAX_BYTES, Manifest, SignedManifest};
use crate::runid::RunId;
pub use census::Tally;
use census::{Census, Runs};

/// Suffix of an artifact.
pub const ARTIFACT_SUFFIX: &str = ".sql.gpg";
/// Suffix of a manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of a manifest's detached signature.
pub const SIGNATURE_SUFFIX: &str = ".manifest.json.sig";
/// Suffix of a pin marker (`cutterctl pin`): prune never deletes that run.
pub const PIN_SUFFIX: &str = ".pinned";
/// Suffix of the marker a failed verify leaves (with its reason) until a
/// verify passes again, so `list` keeps showing the run as corrupt.
pub const FAILED_SUFFIX: &str = ".verify-failed";
/// The longest failure reason kept or read.
const MAX_REASON: u64 = 4096;
const PARTIAL_SUFFIX: &str = ".partial";
/// Prefix of the writability probe (removed at start-up if left behind).
pub const PROBE_PREFIX: &str = ".probe-";
/// The longest pin note kept.
const MAX_NOTE: usize = 1024;

/// The backups directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Shared by every store of this path in the process.
    census: Arc<Census>,
}

/// What is known about a run's manifest.
#[derive(Debug, Clone)]
pub enum ManifestState {
    /// Read and parsed, naming this run (not yet authenticated).
    Present(Box<SignedManifest>),
    /// No manifest file: an orphan artifact.
    Missing,
    /// There, but unreadable, oversized, not a regular file, or naming another run.
    Bad(String),
}

/// One run found in the directory (by its artifact's file name).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The run_id from the file name.
    pub run_id: RunId,
    /// The artifact's size on disk.
    pub size_bytes: u64,
    /// Its manifest.
    pub manifest: ManifestState,
    /// Pinned against prune.
    pub pinned: bool,
    /// The reason the last verify FAILED, until one passes again.
    pub verify_failed: Option<String>,
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Partial files deleted (names inside the directory).
    pub removed: Vec<String>,
    /// Runs whose manifest was rolled forward.
    pub completed: Vec<String>,
}

fn artifact_name(id: &RunId) -> String {
    format!("{id}{ARTIFACT_SUFFIX}")
}
fn manifest_name(id: &RunId) -> String {
    format!("{id}{MANIFEST_SUFFIX}")
}
fn signature_name(id: &RunId) -> String {
    format!("{id}{SIGNATURE_SUFFIX}")
}
fn pin_name(id: &RunId) -> String {
    format!("{id}{PIN_SUFFIX}")
}
fn failed_name(id: &RunId) -> String {
    format!("{id}{FAILED_SUFFIX}")
}
fn partial(name: &str) -> String {
    format!(".{name}{PARTIAL_SUFFIX}")
}

impl Store {
    /// A store rooted at `dir` (made absolute, so envelopes carry absolute
    /// paths). Its runs are counted afresh on first use (see [`census`]).
    pub fn new(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir).map_err(|e| Error::io("resolve", dir, e))?;
        let census = Census::of(&dir);
        Ok(Self { dir, census })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open(&self) -> Result<OwnedFd> {
        at::open_dir(&self.dir).map_err(|e| Error::io("open", &self.dir, e))
    }

    fn err(&self, action: &'static str, name: &str, e: std::io::Error) -> Error {
        Error::io(action, self.dir.join(name), e)
    }

    /// `<dir>/<run_id>.sql.gpg`.
    pub fn artifact_path(&self, id: &RunId) -> PathBuf {
        self.dir.join(artifact_name(id))
    }

    /// `<dir>/<run_id>.manifest.json`.
    pub fn manifest_path(&self, id: &RunId) -> PathBuf {
        self.dir.join(manifest_name(id))
    }

    /// `<dir>/<run_id>.manifest.json.sig`.
    pub fn signature_path(&self, id: &RunId) -> PathBuf {
        self.dir.join(signature_name(id))
    }

    /// True when anything (a link included) stands under the run's artifact
    /// or manifest name.
    pub fn has_any(&self, id: &RunId) -> Result<bool> {
        let dir = self.open()?;
        for name in [artifact_name(id), manifest_name(id)] {
            if at::kind(&dir, &name)
                .map_err(|e| self.err("inspect", &name, e))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Creates the partial artifact for `id`, mode 0600. Whatever stood
    /// under the partial name (a crashed run's file, a planted link) is
    /// removed first, never followed.
    pub fn create_partial_artifact(&self, id: &RunId) -> Result<PartialFile> {
        let dir = self.open()?;
        let name = partial(&artifact_name(id));
        at::remove(&dir, &name).map_err(|e| self.err("remove", &name, e))?;
        let file = at::create_new(&dir, &name).map_err(|e| self.err("create", &name, e))?;
        Ok(PartialFile {
            dir,
            name: Some(name),
            file: Some(file),
        })
    }

    /// Publishes a finished artifact, its manifest and the manifest's
    /// signature under the final names; on failure nothing stays under them.
    pub fn commit(
        &self,
        mut artifact: PartialFile,
        manifest: &Manifest,
        signature: &[u8],
    ) -> Result<()> {
        let id = RunId::parse(&manifest.run_id)?;
        let json = manifest.to_bytes().map_err(Error::Internal)?;
        let dir = &artifact.dir;
        let staged = [
            (
                partial(&signature_name(&id)),
                signature_name(&id),
                signature,
            ),
            (partial(&manifest_name(&id)), manifest_name(&id), &json[..]),
        ];
        for (tmp, _, bytes) in &staged {
            at::remove(dir, tmp).map_err(|e| self.err("remove", tmp, e))?;
            let mut f = at::create_new(dir, tmp).map_err(|e| self.err("create", tmp, e))?;
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| self.err("write", tmp, e))?;
        }
        let artifact_tmp = artifact.name.take().unwrap_or_default();
        crate::failpoint::hit("commit-before-renames");
        let mut placed = Vec::new();
        let mut result = at::rename_new(dir, &artifact_tmp, &artifact_name(&id))
            .map_err(|e| self.err("rename into place", &artifact_name(&id), e));
        if result.is_ok() {
            placed.push(artifact_name(&id));
            crate::failpoint::hit("commit-after-artifact-rename");
            for (tmp, fin, _) in &staged {
                result = at::rename_new(dir, tmp, fin)
                    .map_err(|e| self.err("rename into place", fin, e));
                if result.is_err() {
                    break;
                }
                placed.push(fin.clone());
                if *fin == signature_name(&id) {
                    crate::failpoint::hit("commit-after-signature-rename");
                }
            }
        }
        if result.is_err() {
            // Nothing half-committed stays under a final name.
            for name in placed.iter().chain(staged.iter().map(|(tmp, _, _)| tmp)) {
                let _ = at::remove(dir, name);
            }
            let _ = at::remove(dir, &artifact_tmp);
        }
        let result = result
            .and_then(|()| at::sync(dir).map_err(|e| Error::io("fsync directory", &self.dir, e)));
        // The size as `list` sees it, from the file that now stands there.
        let size = at::open_regular(dir, &artifact_name(&id)).and_then(|f| f.metadata());
        match (&result, size) {
            (Ok(()), Ok(meta)) => self
                .census
                .record(|runs| runs.insert(id, meta.len(), Some(manifest.created_at.clone()))),
            // Whatever a failure left, the next reader counts it.
            _ => self.census.forget(),
        }
        result
    }

    /// Reads `<run_id>.manifest.json` and its signature, if the manifest exists.
    pub fn read_manifest(&self, id: &RunId) -> Result<Option<SignedManifest>> {
        let dir = self.open()?;
        self.read_manifest_at(&dir, id, &manifest_name(id), &signature_name(id))
    }

    fn read_manifest_at(
        &self,
        dir: &OwnedFd,
        id: &RunId,
        manifest: &str,
        signature: &str,
    ) -> Result<Option<SignedManifest>> {
        let bytes = match at::read_capped(dir, manifest, MAX_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err("read", manifest, e)),
        };
        let parsed = Manifest::parse(&bytes).map_err(|reason| Error::CorruptArtifact {
            path: self.dir.join(manifest),
            reason,
        })?;
        if parsed.run_id != id.as_str() {
            return Err(Error::CorruptArtifact {
                path: self.dir.join(manifest),
                reason: format!(
                    "it names run_id {:?}, its file name says {id}",
                    parsed.run_id.escape_debug().to_string()
                ),
            });
        }
        let signature = match at::read_capped(dir, signature, MAX_BYTES) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.err("read", signature, e)),
        };
        Ok(Some(SignedManifest {
            manifest: parsed,
            bytes,
            signature,
        }))
    }

    /// Opens the artifact for reading (regular file, no link).
    pub fn open_artifact(&self, id: &RunId) -> Result<File> {
        let dir = self.open()?;
        let name = artifact_name(id);
        at::open_regular(&dir, &name).map_err(|e| self.err("open", &name, e))
    }

    /// sha256 (lowercase hex) and size of the artifact, streamed.
    pub fn hash_artifact(&self, id: &RunId) -> Result<(String, u64)> {
        let f = self.open_artifact(id)?;
        hash_reader(f).map_err(|e| self.err("read", &artifact_name(id), e))
    }

    /// Finishes or removes what a crash left behind. Run before serving.
    /// `accept` authenticates a partial manifest before it is rolled forward.
    pub fn recover(&self, accept: &dyn Fn(&SignedManifest) -> bool) -> Result<Recovery> {
        let recovered = self.recover_files(accept);
        // A rolled-forward run has a manifest now: counted afresh.
        self.census.forget();
        recovered
    }

    fn recover_files(&self, accept: &dyn Fn(&SignedManifest) -> bool) -> Result<Recovery> {
        let dir = self.open()?;
        let mut rec = Recovery::default();
        let names = self.names()?;
        // Roll forward first: a signature partial is needed by its manifest.
        for name in &names {
            if let Some(id) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
                .and_then(|n| n.strip_suffix(MANIFEST_SUFFIX))
                .and_then(|n| RunId::parse(n).ok())
                && self.roll_forward(&dir, &id, accept)?
            {
                rec.completed.push(id.to_string());
            }
        }
        for name in self.names()? {
            let leftover = name.starts_with(PROBE_PREFIX)
                || (name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX));
            if leftover
                && at::remove(&dir, &name).map_err(|e| self.err("remove leftover", &name, e))?
            {
                rec.removed.push(name);
            }
        }
        if !rec.removed.is_empty() || !rec.completed.is_empty() {
            at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(rec)
    }

    /// A partial manifest whose artifact was already renamed completes the
    /// run, when it authenticates and the artifact's bytes match it.
    fn roll_forward(
        &self,
        dir: &OwnedFd,
        id: &RunId,
        accept: &dyn Fn(&SignedManifest) -> bool,
    ) -> Result<bool> {
        let (m_tmp, s_tmp) = (partial(&manifest_name(id)), partial(&signature_name(id)));
        let sig_final = at::is_regular(dir, &signature_name(id));
        if !at::is_regular(dir, &artifact_name(id))
            || at::kind(dir, &manifest_name(id))
                .map_err(|e| self.err("inspect", &manifest_name(id), e))?
                .is_some()
        {
            return Ok(false);
        }
        let sig_name = if sig_final {
            signature_name(id)
        } else {
            s_tmp.clone()
        };
        let Ok(Some(signed)) = self.read_manifest_at(dir, id, &m_tmp, &sig_name) else {
            return Ok(false);
        };
        if !accept(&signed) {
            return Ok(false);
        }
        let (sha, size) = self.hash_artifact(id)?;
        if signed.manifest.check_bytes(&sha, size).is_err() {
            return Ok(false);
        }
        if !sig_final {
            at::rename_new(dir, &s_tmp, &signature_name(id))
                .map_err(|e| self.err("rename into place", &signature_name(id), e))?;
        }
        at::rename_new(dir, &m_tmp, &manifest_name(id))
            .map_err(|e| self.err("rename into place", &manifest_name(id), e))?;
        Ok(true)
    }

    /// Every file name in the directory.
    fn names(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        Ok(rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// True when `id` is pinned (a regular pin file, not a link).
    pub fn is_pinned(&self, id: &RunId) -> bool {
        self.open()
            .map(|dir| at::is_regular(&dir, &pin_name(id)))
            .unwrap_or(false)
    }

    /// Exempts `id` from prune; `note` says why (a run under investigation).
    pub fn pin(&self, id: &RunId, note: &str) -> Result<()> {
        let dir = self.open()?;
        if !at::is_regular(&dir, &artifact_name(id)) {
            return Err(self.err(
                "pin",
                &artifact_name(id),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such artifact"),
            ));
        }
        let name = pin_name(id);
        let tmp = partial(&name);
        at::remove(&dir, &tmp).map_err(|e| self.err("remove", &tmp, e))?;
        let mut f = at::create_new(&dir, &tmp).map_err(|e| self.err("create", &tmp, e))?;
        let note: String = note.chars().take(MAX_NOTE).collect();
        f.write_all(format!("{note}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.err("write", &tmp, e))?;
        // Replaces an older pin (or whatever a link stood there; never its target).
        at::rename(&dir, &tmp, &name).map_err(|e| self.err("rename into place", &name, e))?;
        at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Records that verify FAILED for `id` and why (replacing an older record).
    pub fn mark_verify_failed(&self, id: &RunId, reason: &str) -> Result<()> {
        let dir = self.open()?;
        let name = failed_name(id);
        let tmp = partial(&name);
        at::remove(&dir, &tmp).map_err(|e| self.err("remove", &tmp, e))?;
        let mut f = at::create_new(&dir, &tmp).map_err(|e| self.err("create", &tmp, e))?;
        let reason: String = reason.chars().take(MAX_REASON as usize / 4).collect();
        f.write_all(reason.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| self.err("write", &tmp, e))?;
        at::rename(&dir, &tmp, &name).map_err(|e| self.err("rename into place", &name, e))?;
        at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Clears the failure record after a verify passed.
    pub fn clear_verify_failed(&self, id: &RunId) -> Result<()> {
        let dir = self.open()?;
        if at::remove(&dir, &failed_name(id))
            .map_err(|e| self.err("remove", &failed_name(id), e))?
        {
            at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// Lifts a pin (no error when there was none).
    pub fn unpin(&self, id: &RunId) -> Result<()> {
        let dir = self.open()?;
        if at::remove(&dir, &pin_name(id)).map_err(|e| self.err("unpin", &pin_name(id), e))? {
            at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// Deletes a run: manifest first (a crash leaves an orphan artifact,
    /// which list reports, not a manifest that promises missing bytes).
    /// Only names inside this directory are removed, and a link is removed
    /// itself, never what it points at.
    pub fn remove_run(&self, id: &RunId) -> Result<()> {
        let removed = self.remove_files(id);
        match &removed {
            Ok(()) => self.census.record(|runs| runs.remove(id)),
            // Half removed (an orphan artifact, say): counted afresh.
            Err(_) => self.census.forget(),
        }
        removed
    }

    fn remove_files(&self, id: &RunId) -> Result<()> {
        let dir = self.open()?;
        for name in [
            manifest_name(id),
            signature_name(id),
            artifact_name(id),
            pin_name(id),
            failed_name(id),
        ] {
            at::remove(&dir, &name).map_err(|e| self.err("remove", &name, e))?;
        }
        at::sync(&dir).map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// How many runs (artifacts, complete or not) and their bytes, from the
    /// census: the directory is listed only when nothing is counted yet.
    pub fn tally(&self) -> Result<Tally> {
        self.census.with(|| self.count(), Runs::tally)
    }

    /// The newest run (by its manifest's `created_at`) whose manifest,
    /// read now, `accept` takes; older ones are tried only while the newer
    /// are refused, so this reads one manifest when the newest is good.
    pub fn newest(
        &self,
        accept: &dyn Fn(&RunId, &SignedManifest) -> bool,
    ) -> Result<Option<SignedManifest>> {
        let mut before = None;
        loop {
            let next = self
                .census
                .with(|| self.count(), |runs| runs.newest_before(before.as_ref()))?;
            let Some(next) = next else {
                return Ok(None);
            };
            if let Ok(Some(m)) = self.read_manifest(&next.1)
                && accept(&next.1, &m)
            {
                return Ok(Some(m));
            }
            before = Some(next);
        }
    }

    /// One full listing, for the census.
    fn count(&self) -> Result<Runs> {
        let mut runs = Runs::default();
        self.walk(|e| note(&mut runs, &e))?;
        Ok(runs)
    }

    /// Every run whose artifact is a regular file directly in the
    /// directory and whose file name is a valid run_id, sorted by run_id.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.each(|e| out.push(e))?;
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(out)
    }

    /// What [`Store::list`] holds, handed to `f` one run at a time as the
    /// directory is read (in no order), so nothing holds every manifest at
    /// once. The listing also re-syncs the census.
    pub fn each(&self, mut f: impl FnMut(Entry)) -> Result<()> {
        let changes = self.census.changes();
        let mut runs = Runs::default();
        self.walk(|e| {
            note(&mut runs, &e);
            f(e);
        })?;
        self.census.replace(changes, runs);
        Ok(())
    }

    fn walk(&self, mut f: impl FnMut(Entry)) -> Result<()> {
        let dir = self.open()?;
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(id) = name
                .strip_suffix(ARTIFACT_SUFFIX)
                .and_then(|stem| RunId::parse(stem).ok())
            else {
                continue;
            };
            // DirEntry::file_type does not follow links.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let size_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let manifest =
                match self.read_manifest_at(&dir, &id, &manifest_name(&id), &signature_name(&id)) {
                    Ok(Some(m)) => ManifestState::Present(Box::new(m)),
                    Ok(None) => ManifestState::Missing,
                    Err(e) => ManifestState::Bad(e.to_string()),
                };
            let pinned = at::is_regular(&dir, &pin_name(&id));
            // Only a regular file counts; a planted one only makes the run
            // look worse (list is a view: prune and restore verify in full).
            let verify_failed = at::read_capped(&dir, &failed_name(&id), MAX_REASON)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            f(Entry {
                run_id: id,
                size_bytes,
                manifest,
                pinned,
                verify_failed,
            });
        }
        Ok(())
    }
}

/// Counts one listed run.
fn note(runs: &mut Runs, e: &Entry) {
    let created_at = match &e.manifest {
        ManifestState::Present(m) => Some(m.manifest.created_at.clone()),
        ManifestState::Missing | ManifestState::Bad(_) => None,
    };
    runs.insert(e.run_id.clone(), e.size_bytes, created_at);
}

/// A partial artifact; removed on drop unless committed.
#[derive(Debug)]
pub struct PartialFile {
    dir: OwnedFd,
    name: Option<String>,
    file: Option<File>,
}

impl PartialFile {
    /// The open file, taken once by the writer.
    pub fn take_file(&mut self) -> Option<File> {
        self.file.take()
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let _ = at::remove(&self.dir, &name);
        }
    }
}

/// sha256 (lowercase hex) and byte count of everything `r` yields.
pub fn hash_reader(r: impl Read) -> std::io::Result<(String, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&h.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FORMAT;
    use std::fs;

    fn id(s: &str) -> RunId {
        RunId::parse(s).expect("valid run_id")
    }

    fn manifest(run_id: &str, sha256: String, size_bytes: u64) -> Manifest {
        Manifest {
            format: FORMAT,
            run_id: run_id.into(),
            created_at: "2026-11-29T00:00:00Z".into(),
            artifact: format!("{run_id}{ARTIFACT_SUFFIX}"),
            sha256,
            size_bytes,
            gpg_fpr: "F".repeat(40),
            ..Manifest::default()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path()).expect("store");
        (dir, store)
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v = store.names().expect("names");
        v.sort();
        v
    }

    fn hash(path: &Path) -> (String, u64) {
        hash_reader(File::open(path).expect("open")).expect("hash")
    }

    /// Count and bytes as a full listing sees them.
    fn listed(store: &Store) -> Tally {
        let entries = store.list().expect("list");
        Tally {
            runs: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size_bytes).sum(),
        }
    }

    fn commit(store: &Store, run: &str, bytes: &[u8], created_at: &str) {
        let mut p = store.create_partial_artifact(&id(run)).expect("partial");
        p.take_file()
            .expect("file")
            .write_all(bytes)
            .expect("write");
        let (sha, size) = hash(&store.dir().join(format!(".{run}.sql.gpg.partial")));
        let m = Manifest {
            created_at: created_at.into(),
            ..manifest(run, sha, size)
        };
        store.commit(p, &m, b"sig").expect("commit");
    }

    /// The newest run by the census, taking every manifest.
    fn newest(store: &Store) -> Option<String> {
        store
            .newest(&|_, _| true)
            .expect("newest")
            .map(|m| m.manifest.run_id)
    }

    #[test]
    fn the_census_equals_a_full_listing_across_commit_remove_recovery_and_restart() {
        let (_d, store) = store();
        let mut compared = 0;
        let mut check = |store: &Store, want: u64| {
            // From memory first: a listing would re-sync it.
            let counted = store.tally().expect("tally");
            assert_eq!(counted, listed(store));
            assert_eq!(counted.runs, want);
            compared += counted.runs;
        };
        check(&store, 0);
        commit(&store, "r1", b"one", "2026-11-01T00:00:00Z");
        check(&store, 1);
        commit(&store, "r2", b"twotwo", "2026-11-03T00:00:00Z");
        commit(&store, "r3", b"3", "2026-11-02T00:00:00Z");
        check(&store, 3);
        assert_eq!(store.tally().expect("tally").bytes, 10);
        assert_eq!(newest(&store).as_deref(), Some("r2"));
        // Only what `accept` takes is the newest.
        let not_r2 = store
            .newest(&|id, _| id.as_str() != "r2")
            .expect("newest")
            .map(|m| m.manifest.run_id);
        assert_eq!(not_r2.as_deref(), Some("r3"));

        store.remove_run(&id("r2")).expect("remove");
        check(&store, 2);
        assert_eq!(newest(&store).as_deref(), Some("r3"));
        // A failed commit leaves nothing and no stale count.
        let p = store.create_partial_artifact(&id("r1")).expect("partial");
        assert!(
            store
                .commit(p, &manifest("r1", "0".repeat(64), 0), b"sig")
                .is_err(),
            "r1 stands already"
        );
        check(&store, 2);

        // A crash between the renames: an orphan artifact, then recovery
        // rolls its manifest forward.
        fs::write(store.artifact_path(&id("r4")), b"four").expect("artifact");
        let (sha, size) = hash(&store.artifact_path(&id("r4")));
        let json = Manifest {
            created_at: "2026-11-04T00:00:00Z".into(),
            ..manifest("r4", sha, size)
        }
        .to_bytes()
        .expect("json");
        fs::write(store.dir().join(".r4.manifest.json.partial"), json).expect("partial");
        fs::write(store.dir().join(".r4.manifest.json.sig.partial"), b"sig").expect("sig");
        // A restart: a new store of the same directory counts afresh.
        let store = Store::new(store.dir()).expect("store");
        check(&store, 3);
        assert_eq!(
            newest(&store).as_deref(),
            Some("r3"),
            "r4 has no manifest yet"
        );
        store.recover(&|_| true).expect("recover");
        check(&store, 3);
        assert_eq!(newest(&store).as_deref(), Some("r4"));

        // Removed by hand: the next full listing re-syncs the count.
        fs::remove_file(store.artifact_path(&id("r1"))).expect("rm");
        assert_eq!(listed(&store).runs, 2);
        check(&store, 2);
        assert_eq!(compared, 16);
    }

    #[test]
    fn commit_publishes_the_run_and_a_dropped_partial_leaves_nothing() {
        let (_d, store) = store();
        let mut p = store.create_partial_artifact(&id("r1")).expect("partial");
        let mut f = p.take_file().expect("file");
        f.write_all(b"ciphertext").expect("write");
        drop(f);
        let (sha, size) = hash(&store.dir().join(".r1.sql.gpg.partial"));
        store
            .commit(p, &manifest("r1", sha.clone(), size), b"sig")
            .expect("commit");
        assert_eq!(
            names(&store),
            ["r1.manifest.json", "r1.manifest.json.sig", "r1.sql.gpg"]
        );
        let m = store.read_manifest(&id("r1")).expect("read").expect("some");
        assert_eq!(m.signature.as_deref(), Some(&b"sig"[..]));
        assert_eq!(store.hash_artifact(&id("r1")).expect("hash"), (sha, size));

        let p = store.create_partial_artifact(&id("r2")).expect("partial");
        drop(p);
        assert_eq!(names(&store).len(), 3);
    }

    #[test]
    fn recovery_deletes_partials_and_probes() {
        let (_d, store) = store();
        for leftover in [
            ".crashed.sql.gpg.partial",
            ".probe-abc123",
            ".other.manifest.json.partial",
            ".other.manifest.json.sig.partial",
        ] {
            fs::write(store.dir().join(leftover), b"x").expect("write");
        }
        let rec = store.recover(&|_| true).expect("recover");
        assert_eq!(rec.removed.len(), 4);
        assert!(names(&store).is_empty());
    }

    #[test]
    fn recovery_rolls_forward_only_an_accepted_manifest() {
        for accepted in [true, false] {
            let (_d, store) = store();
            fs::write(store.artifact_path(&id("r")), b"ciphertext").expect("artifact");
            let (sha, size) = hash(&store.artifact_path(&id("r")));
            let json = manifest("r", sha, size).to_bytes().expect("json");
            fs::write(store.dir().join(".r.manifest.json.partial"), json).expect("partial");
            fs::write(store.dir().join(".r.manifest.json.sig.partial"), b"sig").expect("sig");
            let rec = store.recover(&|_| accepted).expect("recover");
            if accepted {
                assert_eq!(rec.completed, ["r"]);
                assert_eq!(
                    names(&store),
                    ["r.manifest.json", "r.manifest.json.sig", "r.sql.gpg"]
                );
            } else {
                assert!(rec.completed.is_empty());
                assert_eq!(names(&store), ["r.sql.gpg"]);
            }
        }
    }

    #[test]
    fn a_planted_partial_link_is_replaced_never_followed() {
        let (d, store) = store();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        std::os::unix::fs::symlink(&victim, store.dir().join(".r3.sql.gpg.partial"))
            .expect("symlink");
        let mut p = store.create_partial_artifact(&id("r3")).expect("partial");
        p.take_file().expect("file").write_all(b"x").expect("write");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
    }

    #[test]
    fn links_fifos_and_oversized_manifests_are_not_read() {
        let (d, store) = store();
        let outside = d.path().join("outside.json");
        fs::write(
            &outside,
            manifest("r", "0".repeat(64), 1).to_bytes().expect("json"),
        )
        .expect("outside");
        std::os::unix::fs::symlink(&outside, store.manifest_path(&id("r"))).expect("symlink");
        assert!(store.read_manifest(&id("r")).is_err());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            store.manifest_path(&id("f")),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        assert!(store.read_manifest(&id("f")).is_err());
        fs::write(store.manifest_path(&id("big")), vec![b' '; 300 * 1024]).expect("big");
        assert!(store.read_manifest(&id("big")).is_err());
    }

    #[test]
    fn a_manifest_naming_another_run_is_corrupt() {
        let (_d, store) = store();
        let json = manifest("../outside/victim", "0".repeat(64), 1)
            .to_bytes()
            .expect("json");
        fs::write(store.artifact_path(&id("r")), b"x").expect("artifact");
        fs::write(store.manifest_path(&id("r")), json).expect("manifest");
        let entries = store.list().expect("list");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].run_id.as_str(), "r");
        assert!(matches!(entries[0].manifest, ManifestState::Bad(_)));
    }
}
