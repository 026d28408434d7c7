//! Offsite copies, as the core sees them: the [`Backend`] trait a storage
//! crate implements (`cutter-offsite` for S3-compatible object storage),
//! the [`Offsite`] the daemon and cutterctl hand to the core (a backend,
//! its config and the async mode's queue), and the types that cross the
//! boundary. The core never names a storage service: a second backend
//! (GCS, Azure, SFTP) is a new crate that implements [`Backend`].
//!
//! What every backend promises: remote bytes are untrusted, so a fetched
//! run is believed only when its manifest carries a good signature by a
//! pinned signer, names this run and host, and the downloaded artifact
//! hashes to the manifest's sha256 and size; an upload sends the manifest
//! last, so a manifest in the bucket means the run is complete.

pub mod queue;

use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sequoia_openpgp::Cert;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::OffsiteConfig;
use crate::manifest::Manifest;
use crate::runid::RunId;
use crate::store::Store;

pub use queue::{Pending, Queue};

/// A boxed future, so [`Backend`] stays object-safe without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An offsite store of runs under `<host>/<run_id>…`.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// This host's segment in the keys.
    fn host(&self) -> &str;

    /// Where `host`'s run `id` lives (`s3://bucket/prefix/host/id.sql.gpg`):
    /// the envelope's `offsite_ref`.
    fn artifact_url(&self, host: &str, id: &RunId) -> String;

    /// Uploads the committed run `id` from `store` (what is already there
    /// and confirmed is not sent again) and confirms it. The local files
    /// are re-read: the manifest must be signed by `own` and, when given,
    /// be exactly `expected`; the artifact must hash to it.
    fn upload<'a>(
        &'a self,
        store: &'a Store,
        id: &'a RunId,
        own: Option<&'a Cert>,
        expected: Option<&'a Manifest>,
    ) -> BoxFuture<'a, Result<Uploaded, String>>;

    /// Starts sending run `id`'s artifact while the backup writes it to
    /// `file` (the same open file, read at offsets as parts complete).
    /// `None` when this backend cannot stream; the caller then uploads
    /// after the commit.
    fn stream(&self, id: &RunId, file: File) -> Option<Box<dyn Streaming>>;

    /// Downloads `host`'s run `id` and authenticates it against `signers`
    /// (`expect_sha256` picks between two signed manifests; `version`
    /// fetches exactly that version of the artifact).
    fn fetch<'a>(&'a self, req: FetchRequest<'a>) -> BoxFuture<'a, Result<Fetched, String>>;

    /// The runs under `host` (every host when `None`), listed, not verified.
    fn list<'a>(&'a self, host: Option<&'a str>) -> BoxFuture<'a, Result<Vec<RemoteRun>, String>>;

    /// Places (`on`) or lifts a legal hold on this host's copy of `id`:
    /// `Ok(false)` when there is no copy or the store has no holds.
    fn hold<'a>(&'a self, id: &'a RunId, on: bool) -> BoxFuture<'a, Result<bool, String>>;

    /// Deletes this host's copy of `id` unless it is locked:
    /// `Ok(Some(why))` when it was left alone.
    fn prune<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<String>, String>>;

    /// Checks endpoint, credentials and write access: what was found, or
    /// why the copy cannot be made. Callers bound it in time.
    fn probe(&self) -> BoxFuture<'_, Result<Probe, String>>;

    /// The endpoint, for messages.
    fn endpoint(&self) -> String;
}

/// What [`Backend::fetch`] fetches.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    /// Whose run.
    pub host: &'a str,
    /// Which run.
    pub id: &'a RunId,
    /// Pinned manifest signers.
    pub signers: &'a [Cert],
    /// The envelope's sha256, when the caller has it.
    pub expect_sha256: Option<&'a str>,
    /// The envelope's object version, when the caller has it.
    pub version: Option<&'a str>,
}

/// A probe's findings: `warnings` make the check WARN.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// What was checked and found.
    pub detail: String,
    /// What works but needs the operator's attention.
    pub warnings: Vec<String>,
}

/// What an upload left offsite, as the envelope names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// `s3://…` of the artifact.
    pub url: String,
    /// The artifact's version id, on a versioned bucket.
    pub version: Option<String>,
}

/// A run fetched from offsite and authenticated.
#[derive(Debug)]
pub struct Fetched {
    /// Its signed manifest.
    pub manifest: Manifest,
    /// The artifact, in an unnamed temp file, rewound.
    pub file: File,
    /// The artifact's version id (on a versioned bucket).
    pub version: Option<String>,
    /// What the operator must know although the copy is good (newer
    /// versions passed over because they do not authenticate).
    pub warnings: Vec<String>,
    /// Where it was fetched from.
    pub url: String,
}

/// One run in a listing (listed, not verified).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteRun {
    /// The host prefix it is under.
    pub host: String,
    /// The run.
    pub run_id: String,
    /// The artifact's size.
    pub size_bytes: u64,
    /// When the artifact was written (Unix seconds).
    #[serde(skip)]
    pub modified_unix: i64,
    /// The manifest is there too.
    #[serde(skip)]
    pub complete: bool,
}

/// One cut part of an artifact being written: `len` bytes at `offset`
/// are in the file, and hash to `sha256` (computed in the same pass as
/// the artifact's own sha256, never by reading them back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// 1-based.
    pub number: u32,
    /// Where it starts in the artifact.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Its sha256.
    pub sha256: [u8; 32],
}

/// An upload that runs while the artifact is written.
pub trait Streaming: Send {
    /// Where the writer cuts parts, and where it hands them over.
    fn parts(&self) -> PartPlan;

    /// After the local commit of `manifest`: waits for the parts, completes
    /// the object (or, when no part was cut, sends the small artifact
    /// whole from `store`), then the signature and manifest, and confirms.
    fn finish<'a>(
        self: Box<Self>,
        store: &'a Store,
        manifest: &'a Manifest,
        own: Option<&'a Cert>,
    ) -> BoxFuture<'a, Result<Uploaded, String>>;

    /// The backup failed: stops sending and removes what was sent, so no
    /// incomplete upload is left behind.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Where parts are cut: part `n` is `base << ((n - 1) / 1000)` bytes (at
/// most 5 GiB)
/// (doubling every thousand parts keeps an artifact of any size inside
/// S3's 10,000 parts), handed to `to`. The last, shorter part is cut when
/// the writer finishes, and only when at least one full part was.
#[derive(Debug, Clone)]
pub struct PartPlan {
    /// The first thousand parts' size.
    pub base: u64,
    /// Where cut parts go.
    pub to: UnboundedSender<Part>,
}

impl PartPlan {
    /// The size of part `number` (1-based), at most S3's 5 GiB.
    pub fn size_of(&self, number: u32) -> u64 {
        let shift = ((number.max(1) - 1) / 1000).min(8);
        (self.base << shift).min(5 << 30)
    }
}

/// The configured offsite copy: a backend, its config, the async queue.
#[derive(Debug, Clone)]
pub struct Offsite {
    /// The store.
    pub backend: Arc<dyn Backend>,
    /// The config.
    pub config: OffsiteConfig,
    /// The async mode's queue (`None` in operator tools).
    pub queue: Option<Queue>,
}

/// Makes the backend for an `[offsite]` section (reads its credentials).
pub type Connect = fn(&OffsiteConfig) -> Result<Arc<dyn Backend>, String>;

impl Offsite {
    /// Connects the backend and opens the queue.
    pub fn new(cfg: &OffsiteConfig, connect: Connect) -> Result<Self, String> {
        Ok(Self {
            backend: connect(cfg)?,
            config: cfg.clone(),
            queue: Some(Queue::open(&cfg.queue_dir)?),
        })
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`).
pub fn system_host() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("reading the host name: {e}; set offsite.host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_double_every_thousand_and_fit_s3_limits() {
        let (to, _rx) = tokio::sync::mpsc::unbounded_channel();
        let plan = PartPlan { base: 16 << 20, to };
        assert_eq!(plan.size_of(1), 16 << 20);
        assert_eq!(plan.size_of(1000), 16 << 20);
        assert_eq!(plan.size_of(1001), 32 << 20);
        let total: u64 = (1..=10_000).map(|n| plan.size_of(n)).sum();
        // 10,000 parts of 16 MiB and up hold over 8 TiB.
        assert!(total > 1 << 43, "{total}");
        // S3's largest part is 5 GiB.
        assert!(plan.size_of(10_000) <= 5 << 30);
    }
}
