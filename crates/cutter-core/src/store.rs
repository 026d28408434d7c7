//! The backups directory: final names, crash-safe commits, start-up recovery,
//! listing and checksum verification.
//!
//! A commit writes `.<run_id>.sql.gpg.partial` and `.<run_id>.manifest.json.partial`
//! (both fsynced), renames the artifact, then the manifest, then fsyncs the
//! directory. A run_id never starts with '.', so partials never collide with
//! final names. After a crash, [`Store::recover`] rolls a renamed artifact
//! forward with its partial manifest and deletes every other partial, so the
//! final names hold either a complete pair or nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encrypt::hex;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// Suffix of an artifact.
pub const ARTIFACT_SUFFIX: &str = ".sql.gpg";
/// Suffix of a manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of a pin marker (`cutterctl pin`): prune never deletes that run.
pub const PIN_SUFFIX: &str = ".pinned";
const PARTIAL_SUFFIX: &str = ".partial";
/// Prefix of the writability probe (removed at start-up if left behind).
pub const PROBE_PREFIX: &str = ".probe-";

/// The backups directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The state of one run's files.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Artifact and manifest both present (checksum not checked here).
    Complete(Box<Manifest>),
    /// An artifact without a readable manifest.
    Orphan {
        /// The run_id from the file name.
        run_id: String,
        /// Why it is not complete.
        reason: String,
        /// Artifact size if it exists.
        size_bytes: u64,
    },
}

impl Entry {
    /// The run_id.
    pub fn run_id(&self) -> &str {
        match self {
            Entry::Complete(m) => &m.run_id,
            Entry::Orphan { run_id, .. } => run_id,
        }
    }
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Partial files deleted.
    pub removed: Vec<PathBuf>,
    /// Runs whose manifest was rolled forward.
    pub completed: Vec<String>,
}

impl Store {
    /// A store rooted at `dir` (made absolute, so envelopes carry absolute paths).
    pub fn new(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir).map_err(|e| Error::io("resolve", dir, e))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<run_id>.sql.gpg`.
    pub fn artifact_path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}{ARTIFACT_SUFFIX}"))
    }

    /// `<dir>/<run_id>.manifest.json`.
    pub fn manifest_path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}{MANIFEST_SUFFIX}"))
    }

    fn partial_of(final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        final_path.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
    }

    /// Creates (truncating) the partial artifact for `run_id`, mode 0600.
    pub fn create_partial_artifact(&self, run_id: &str) -> Result<PartialFile> {
        let path = Self::partial_of(&self.artifact_path(run_id));
        let file = create_0600(&path)?;
        Ok(PartialFile {
            path: Some(path),
            file: Some(file),
        })
    }

    /// Publishes a finished artifact and its manifest under the final names.
    pub fn commit(&self, mut artifact: PartialFile, manifest: &Manifest) -> Result<()> {
        let run_id = &manifest.run_id;
        let manifest_final = self.manifest_path(run_id);
        let manifest_partial = Self::partial_of(&manifest_final);
        let mut json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Io {
            action: "serialise manifest",
            path: manifest_final.clone(),
            source: e.into(),
        })?;
        json.push(b'\n');
        let mut f = create_0600(&manifest_partial)?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &manifest_partial, e))?;
        drop(f);
        let artifact_partial = artifact.path.take().unwrap_or_default();
        let artifact_final = self.artifact_path(run_id);
        fs::rename(&artifact_partial, &artifact_final)
            .map_err(|e| Error::io("rename into place", &artifact_final, e))?;
        fs::rename(&manifest_partial, &manifest_final)
            .map_err(|e| Error::io("rename into place", &manifest_final, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    /// Reads `<run_id>.manifest.json` if it exists.
    pub fn read_manifest(&self, run_id: &str) -> Result<Option<Manifest>> {
        read_manifest_file(&self.manifest_path(run_id))
    }

    /// Returns the manifest of a complete artifact for `run_id` whose bytes
    /// match it; `None` when nothing is there; an error when something is
    /// there that does not verify (never silently overwritten).
    pub fn existing_verified(&self, run_id: &str) -> Result<Option<Manifest>> {
        let artifact = self.artifact_path(run_id);
        let manifest = self.read_manifest(run_id);
        if !artifact.exists() {
            return match manifest {
                Ok(None) => Ok(None),
                _ => Err(Error::CorruptArtifact {
                    path: self.manifest_path(run_id),
                    reason: "manifest without its artifact".into(),
                }),
            };
        }
        let corrupt = |reason: String| Error::CorruptArtifact {
            path: artifact.clone(),
            reason,
        };
        let m = manifest
            .map_err(|e| corrupt(e.to_string()))?
            .ok_or_else(|| corrupt("no manifest".into()))?;
        let (sha, size) = hash_file(&artifact)?;
        if size != m.size_bytes || sha != m.sha256 {
            return Err(corrupt(format!(
                "sha256 {sha} / {size} bytes, manifest says {} / {} bytes",
                m.sha256, m.size_bytes
            )));
        }
        Ok(Some(m))
    }

    /// Finishes or removes what a crash left behind. Run before serving.
    pub fn recover(&self) -> Result<Recovery> {
        let mut rec = Recovery::default();
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(PROBE_PREFIX) {
                remove(&path, &mut rec)?;
                continue;
            }
            let Some(stem) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
            else {
                continue;
            };
            if let Some(run_id) = stem.strip_suffix(MANIFEST_SUFFIX)
                && self.roll_forward(run_id, &path)?
            {
                rec.completed.push(run_id.to_owned());
                continue;
            }
            remove(&path, &mut rec)?;
        }
        if !rec.removed.is_empty() || !rec.completed.is_empty() {
            self.sync_dir()?;
        }
        Ok(rec)
    }

    /// A partial manifest whose artifact was already renamed completes the pair.
    fn roll_forward(&self, run_id: &str, partial: &Path) -> Result<bool> {
        let artifact = self.artifact_path(run_id);
        let manifest_final = self.manifest_path(run_id);
        if !artifact.exists() || manifest_final.exists() {
            return Ok(false);
        }
        let Ok(Some(m)) = read_manifest_file(partial) else {
            return Ok(false);
        };
        let (sha, size) = hash_file(&artifact)?;
        if sha != m.sha256 || size != m.size_bytes {
            return Ok(false);
        }
        fs::rename(partial, &manifest_final)
            .map_err(|e| Error::io("rename into place", &manifest_final, e))?;
        Ok(true)
    }

    /// `<dir>/<run_id>.pinned`.
    pub fn pin_path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}{PIN_SUFFIX}"))
    }

    /// True when `run_id` is pinned.
    pub fn is_pinned(&self, run_id: &str) -> bool {
        self.pin_path(run_id).exists()
    }

    /// Exempts `run_id` from prune; `note` says why (a run under investigation).
    pub fn pin(&self, run_id: &str, note: &str) -> Result<()> {
        if !self.artifact_path(run_id).exists() {
            return Err(Error::io(
                "pin",
                self.artifact_path(run_id),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such artifact"),
            ));
        }
        let path = self.pin_path(run_id);
        let mut f = create_0600(&path)?;
        f.write_all(format!("{note}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &path, e))?;
        self.sync_dir()
    }

    /// Lifts a pin (no error when there was none).
    pub fn unpin(&self, run_id: &str) -> Result<()> {
        match fs::remove_file(self.pin_path(run_id)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("unpin", self.pin_path(run_id), e)),
        }
    }

    /// Deletes a run: manifest first (a crash leaves an orphan artifact,
    /// which list reports, not a manifest that promises missing bytes).
    pub fn remove_run(&self, run_id: &str) -> Result<()> {
        for path in [
            self.manifest_path(run_id),
            self.artifact_path(run_id),
            self.pin_path(run_id),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        }
        self.sync_dir()
    }

    /// Every run in the directory, sorted by run_id.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run_id) = name.strip_suffix(ARTIFACT_SUFFIX) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let size_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(match self.read_manifest(run_id) {
                Ok(Some(m)) => Entry::Complete(Box::new(m)),
                Ok(None) => Entry::Orphan {
                    run_id: run_id.to_owned(),
                    reason: "no manifest".into(),
                    size_bytes,
                },
                Err(e) => Entry::Orphan {
                    run_id: run_id.to_owned(),
                    reason: e.to_string(),
                    size_bytes,
                },
            });
        }
        out.sort_by(|a, b| a.run_id().cmp(b.run_id()));
        Ok(out)
    }
}

/// A partial artifact; removed on drop unless committed.
#[derive(Debug)]
pub struct PartialFile {
    path: Option<PathBuf>,
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
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn create_0600(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

fn remove(path: &Path, rec: &mut Recovery) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("remove leftover", path, e))?;
    rec.removed.push(path.to_owned());
    Ok(())
}

fn read_manifest_file(path: &Path) -> Result<Option<Manifest>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Io {
            action: "parse manifest",
            path: path.to_owned(),
            source: e.into(),
        })
}

/// sha256 (lowercase hex) and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
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

    fn manifest(run_id: &str, sha256: String, size_bytes: u64) -> Manifest {
        Manifest {
            format: FORMAT,
            run_id: run_id.into(),
            created_at: "2026-11-29T00:00:00Z".into(),
            artifact: format!("{run_id}{ARTIFACT_SUFFIX}"),
            sha256,
            size_bytes,
            gpg_fpr: "F".repeat(40),
            recipients: Vec::new(),
            tables: Vec::new(),
            plaintext_bytes: 0,
            compression: "none".into(),
            server_version: String::new(),
            pg_dump_version: String::new(),
            producer: String::new(),
            duration_ms: 0,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path()).expect("store");
        (dir, store)
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(store.dir())
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_publishes_both_files_and_a_dropped_partial_leaves_nothing() {
        let (_d, store) = store();
        let mut p = store.create_partial_artifact("r1").expect("partial");
        let mut f = p.take_file().expect("file");
        f.write_all(b"ciphertext").expect("write");
        drop(f);
        let (sha, size) = hash_file(&store.dir().join(".r1.sql.gpg.partial")).expect("hash");
        store.commit(p, &manifest("r1", sha, size)).expect("commit");
        assert_eq!(names(&store), ["r1.manifest.json", "r1.sql.gpg"]);
        assert!(store.existing_verified("r1").expect("verifies").is_some());

        let p = store.create_partial_artifact("r2").expect("partial");
        drop(p);
        assert_eq!(names(&store), ["r1.manifest.json", "r1.sql.gpg"]);
    }

    #[test]
    fn recovery_deletes_partials_and_probes() {
        let (_d, store) = store();
        for leftover in [
            ".crashed.sql.gpg.partial",
            ".probe-abc123",
            ".other.manifest.json.partial",
        ] {
            fs::write(store.dir().join(leftover), b"x").expect("write");
        }
        let rec = store.recover().expect("recover");
        assert_eq!(rec.removed.len(), 3);
        assert!(names(&store).is_empty());
    }

    #[test]
    fn recovery_rolls_forward_a_crash_between_the_renames() {
        let (_d, store) = store();
        fs::write(store.artifact_path("r"), b"ciphertext").expect("artifact");
        let (sha, size) = hash_file(&store.artifact_path("r")).expect("hash");
        let json = serde_json::to_vec(&manifest("r", sha, size)).expect("json");
        fs::write(store.dir().join(".r.manifest.json.partial"), json).expect("partial manifest");
        let rec = store.recover().expect("recover");
        assert_eq!(rec.completed, ["r"]);
        assert_eq!(names(&store), ["r.manifest.json", "r.sql.gpg"]);
        assert!(store.existing_verified("r").expect("verifies").is_some());
    }

    #[test]
    fn a_changed_artifact_is_never_returned_as_existing() {
        let (_d, store) = store();
        fs::write(store.artifact_path("r"), b"ciphertext").expect("artifact");
        let json = serde_json::to_vec(&manifest("r", "0".repeat(64), 10)).expect("json");
        fs::write(store.manifest_path("r"), json).expect("manifest");
        assert!(matches!(
            store.existing_verified("r"),
            Err(Error::CorruptArtifact { .. })
        ));
    }
}
