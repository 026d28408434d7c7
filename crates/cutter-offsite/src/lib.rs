//! cutter-offsite: the S3-compatible backend of cutter-backup's offsite
//! copies (aws-sdk-s3 with rustls/ring), behind `cutter_core::offsite::Backend`.
//! The layout is `<prefix>/<host>/<run_id>.sql.gpg`, `.manifest.json`,
//! `.manifest.json.sig`; an upload sends the artifact, the signature, then
//! the manifest last, so a manifest in the bucket means the run is complete.
//! In `required` mode the artifact streams up while the dump runs
//! ([`stream`]); a committed run is sent whole ([`S3::upload`]).
//!
//! Remote bytes are untrusted: a fetched run is believed only when its
//! manifest carries a good signature by a pinned signer, names this run,
//! and the downloaded artifact hashes to the manifest's sha256 and size.
//! Whoever can write the bucket can therefore delete copies (which
//! write-only credentials and Object Lock prevent) but not forge one.

pub mod s3;
mod stream;

use std::fs::File;
use std::io::{Seek, Write};
use std::sync::Arc;

use cutter_core::config::{LockMode, OffsiteConfig, OffsiteMode};
use cutter_core::encrypt::HashingWriter;
use cutter_core::manifest::{MAX_BYTES, Manifest, SignedManifest};
use cutter_core::offsite::{
    Backend, BoxFuture, FetchRequest, Fetched, Probe, RemoteRun, Streaming, Uploaded,
};
use cutter_core::runid::RunId;
use cutter_core::signer::Cert;
use cutter_core::store::{ARTIFACT_SUFFIX, MANIFEST_SUFFIX, SIGNATURE_SUFFIX, Store};

pub use s3::Bucket;

/// At most this many versions of one artifact are downloaded by a fetch.
const MAX_DOWNLOADS: usize = 8;

/// The largest signature object a fetch reads: ours is one Ed25519
/// signature packet (~120 bytes); a bigger one only costs verifications.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The name of the probe object selftest writes under this host's prefix.
pub const PROBE_NAME: &str = ".cutter-probe";

/// The S3 backend: a bucket client and this host's name.
#[derive(Debug, Clone)]
pub struct S3 {
    /// The bucket.
    pub bucket: Bucket,
    /// This host's segment in the keys.
    pub host: String,
    /// The config.
    pub config: OffsiteConfig,
}

/// The [`cutter_core::offsite::Connect`] the daemon hands to the core.
pub fn connect(cfg: &OffsiteConfig) -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(S3::new(cfg)?))
}

impl S3 {
    /// Builds the client; reads the credentials now.
    pub fn new(cfg: &OffsiteConfig) -> Result<Self, String> {
        let host = match &cfg.host {
            Some(h) => h.clone(),
            None => cutter_core::offsite::system_host()?,
        };
        cutter_core::config::check_host(&host)?;
        Ok(Self {
            bucket: Bucket::new(cfg)?,
            host,
            config: cfg.clone(),
        })
    }

    /// The key of `<run_id><suffix>` under `host`.
    pub fn key(&self, host: &str, id: &RunId, suffix: &str) -> String {
        self.bucket.key(&format!("{host}/{id}{suffix}"))
    }

    /// Uploads the committed run `id` from `store` (what is already there
    /// and confirmed is not sent again) and confirms it with HEAD: size,
    /// and the server's checksum when it reports one.
    ///
    /// The local files are re-read here, and anyone who can write the
    /// backups directory could have swapped them since the backup: the
    /// manifest must be signed by this daemon (`own`) and, when the caller
    /// knows it (`expected`, the manifest the envelope was made from), be
    /// exactly that one; the artifact must hash to it while it streams up.
    pub async fn upload(
        &self,
        store: &Store,
        id: &RunId,
        own: Option<&Cert>,
        expected: Option<&Manifest>,
    ) -> Result<Uploaded, String> {
        let local = self.local(store, id, own, expected)?;
        if let Some(info) = self.already_there(&local).await? {
            return Ok(Uploaded {
                url: self.bucket.url(&local.akey),
                version: info.version_id,
            });
        }
        let started = std::time::Instant::now();
        let m = &local.signed.manifest;
        let file = store.open_artifact(id).map_err(|e| e.to_string())?;
        let size = file
            .metadata()
            .map_err(|e| format!("stat the local artifact: {e}"))?
            .len();
        if size != m.size_bytes {
            return Err(format!(
                "the local artifact is {size} bytes, its manifest says {}: run `cutterctl verify {id}`; nothing was uploaded",
                m.size_bytes
            ));
        }
        let retention = self.bucket.retention().await?;
        let up = self
            .bucket
            .put_file(&local.akey, file, size, &m.sha256, retention.as_ref())
            .await?;
        self.complete(&local, &up, retention.as_ref(), started)
            .await
    }

    /// The committed run's signed manifest, checked before anything is sent.
    fn local(
        &self,
        store: &Store,
        id: &RunId,
        own: Option<&Cert>,
        expected: Option<&Manifest>,
    ) -> Result<Local, String> {
        let signed = store
            .read_manifest(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} has no local manifest to upload"))?;
        let own = own.ok_or_else(|| {
            format!("{id}: the daemon's signing key is unusable, so the local manifest cannot be authenticated; nothing was uploaded")
        })?;
        cutter_core::verify::authenticate(id, &signed, std::slice::from_ref(own)).map_err(|e| {
            format!("{id}: the local manifest is not this daemon's ({e}); nothing was uploaded")
        })?;
        if expected.is_some_and(|want| *want != signed.manifest) {
            return Err(format!(
                "{id}: the local manifest changed since the backup; nothing was uploaded: run `cutterctl verify {id}`"
            ));
        }
        let signature = signed
            .signature
            .clone()
            .ok_or_else(|| format!("{id}: the local manifest is unsigned; not uploaded"))?;
        let m = &signed.manifest;
        if !m.host.is_empty() && m.host != self.host {
            return Err(format!(
                "{id} was made on host {:?}, but offsite.host is now {:?}, under whose prefix it would not restore: set offsite.host back to {:?} to upload it; nothing was uploaded",
                m.host, self.host, m.host
            ));
        }
        Ok(Local {
            id: id.clone(),
            akey: self.key(&self.host, id, ARTIFACT_SUFFIX),
            mkey: self.key(&self.host, id, MANIFEST_SUFFIX),
            skey: self.key(&self.host, id, SIGNATURE_SUFFIX),
            signature,
            signed,
        })
    }

    /// After the artifact: the HEAD that confirms the version this upload
    /// made (a newer one written meanwhile by someone else is neither
    /// confirmed nor blamed on us), then the signature, then the manifest
    /// (last: a manifest in the bucket means the run is complete and
    /// confirmed).
    async fn complete(
        &self,
        local: &Local,
        up: &s3::Uploaded,
        retention: Option<&s3::Retention>,
        started: std::time::Instant,
    ) -> Result<Uploaded, String> {
        let m = &local.signed.manifest;
        let url = self.bucket.url(&local.akey);
        let info = self
            .bucket
            .head_or_current(&local.akey, up.version_id.as_deref())
            .await?
            .ok_or_else(|| format!("{url} is missing right after its upload"))?;
        confirm(&info, m, Some(&up.checksum)).map_err(|e| format!("{url}: {e}"))?;
        self.bucket
            .put_small(&local.skey, local.signature.clone(), retention)
            .await?;
        self.bucket
            .put_small(&local.mkey, local.signed.bytes.clone(), retention)
            .await?;
        let id = &local.id;
        let size = m.size_bytes;
        tracing::info!(
            run_id = %id,
            offsite_ref = %url,
            version = up.version_id.as_deref().unwrap_or(""),
            bytes = size,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "offsite copy confirmed run_id={id} size={size}"
        );
        // The version the upload itself answered with: when reading a
        // version is denied, HEAD answers for the current one, which may
        // be someone else's.
        Ok(Uploaded {
            url,
            version: up.version_id.clone(),
        })
    }

    /// True when the run's three objects are in the bucket as we would
    /// upload them: the artifact by the server's own full-object sha256
    /// (our metadata header can be set by anyone who can put objects; a
    /// multipart object's checksum cannot be derived from the manifest, so
    /// such a copy is sent again), the manifest and signature byte for byte.
    async fn already_there(&self, local: &Local) -> Result<Option<s3::ObjectInfo>, String> {
        let m = &local.signed.manifest;
        let Some(info) = self.bucket.head(&local.akey, None).await? else {
            return Ok(None);
        };
        let whole = hex_to_bytes(&m.sha256).map(|b| openssl::base64::encode_block(&b));
        if info.size != m.size_bytes
            || whole.is_none()
            || info.checksum_sha256.as_deref() != whole.as_deref()
        {
            return Ok(None);
        }
        let manifest = &local.signed.bytes;
        for (key, want) in [(&local.skey, &local.signature), (&local.mkey, manifest)] {
            let mut got = Vec::new();
            let cap = u64::try_from(want.len()).unwrap_or(u64::MAX);
            match self.bucket.get_into(key, None, &mut got, cap).await {
                Ok(Some(_)) if got == **want => {}
                // Missing, different or oversized: send ours again.
                Ok(_) | Err(_) => return Ok(None),
            }
        }
        Ok(Some(info))
    }

    /// Downloads `host`'s run `id` and authenticates it: the manifest's
    /// signature by one of `signers`, then the artifact (streamed into an
    /// unnamed temp file, `O_TMPFILE`) against the manifest's sha256 and
    /// size, and its OpenPGP structure. The file is returned rewound.
    /// `expect_sha256` (the envelope's) picks the run when the bucket holds
    /// two different signed manifests for it.
    ///
    /// On a versioned bucket every version is a candidate, newest first
    /// (at most [`s3::MAX_VERSIONS`] of each key): whoever can put objects
    /// can write a newer version over a run, and the genuine one below it
    /// must still restore.
    ///
    /// With `version` (the envelope's), only that version of the artifact
    /// is a candidate.
    pub async fn fetch(&self, req: FetchRequest<'_>) -> Result<Fetched, String> {
        let FetchRequest {
            host,
            id,
            signers,
            expect_sha256,
            version,
        } = req;
        let (manifest, mut warnings) = self
            .fetch_manifest(host, id, signers, expect_sha256)
            .await?;
        let akey = self.key(host, id, ARTIFACT_SUFFIX);
        let url = self.bucket.url(&akey);
        let want = hex_to_bytes(&manifest.sha256).map(|b| openssl::base64::encode_block(&b));
        let mut first_error = None;
        let mut downloads = 0;
        // The envelope's version is read directly: however many versions
        // were written over it since, it is the one the record names.
        let candidates = match version {
            Some(want) => vec![s3::Version {
                id: Some(want.to_owned()),
                size: None,
                modified: None,
            }],
            None => self.bucket.candidates(&akey).await?,
        };
        for (newer, v) in candidates.into_iter().enumerate() {
            if v.size.is_some_and(|n| n != manifest.size_bytes) {
                first_error.get_or_insert_with(|| {
                    format!(
                        "{url}: the object's size is not the manifest's {} bytes",
                        manifest.size_bytes
                    )
                });
                continue;
            }
            if v.id.is_some() {
                match self.bucket.head(&akey, v.id.as_deref()).await {
                    // The server's own full-object sha256 rules it out.
                    Ok(Some(info))
                        if info.checksum_sha256.as_ref().is_some_and(|sum| {
                            !sum.contains('-') && Some(sum) != want.as_ref()
                        }) =>
                    {
                        first_error.get_or_insert_with(|| {
                            format!(
                                "{url}: the server's sha256 of the object is not the manifest's"
                            )
                        });
                        continue;
                    }
                    Ok(_) => {}
                    // One unreadable version (a planted SSE-C object, say)
                    // is passed over, not the end of the walk.
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
            }
            if downloads == MAX_DOWNLOADS {
                break;
            }
            downloads += 1;
            match self.download(&akey, v.id.as_deref(), &manifest).await {
                Ok(Some(file)) => {
                    if newer > 0 {
                        warnings.push(format!(
                            "the genuine artifact is an older version ({}); {newer} newer version(s) do not match its signed manifest: someone wrote over this run in the bucket",
                            v.id.as_deref().unwrap_or("?")
                        ));
                    }
                    return Ok(Fetched {
                        manifest,
                        file,
                        version: v.id,
                        warnings,
                        url,
                    });
                }
                Ok(None) => {
                    first_error
                        .get_or_insert_with(|| format!("{url} does not exist (the manifest does)"));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| format!("{url} does not exist (the manifest does)")))
    }

    /// Downloads one version of an artifact and checks it against `manifest`.
    async fn download(
        &self,
        akey: &str,
        version: Option<&str>,
        manifest: &Manifest,
    ) -> Result<Option<File>, String> {
        let url = self.bucket.url(akey);
        let file = tempfile::tempfile().map_err(|e| format!("creating a temp file: {e}"))?;
        let mut w = HashingWriter::new(file);
        if self
            .bucket
            .get_into(akey, version, &mut w, manifest.size_bytes)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        w.flush().map_err(|e| format!("{url}: {e}"))?;
        let (mut file, sha, size) = w.finish();
        manifest
            .check_bytes(&sha, size)
            .map_err(|e| format!("{url}: {e}"))?;
        file.rewind().map_err(|e| e.to_string())?;
        cutter_core::verify::check_structure(&file, manifest).map_err(|e| format!("{url}: {e}"))?;
        file.rewind().map_err(|e| e.to_string())?;
        Ok(Some(file))
    }

    /// The authenticated manifest of `host`'s run `id`, and warnings.
    ///
    /// Every version of the manifest is tried against every version of its
    /// signature. Exactly one signed manifest must name this run and
    /// `host` (so a run copied under another host's prefix is refused):
    /// two different ones mean someone with the signing key wrote a second
    /// run under the same id, and then only `expect_sha256` can say which
    /// is the one the orchestrator was given.
    pub async fn fetch_manifest(
        &self,
        host: &str,
        id: &RunId,
        signers: &[Cert],
        expect_sha256: Option<&str>,
    ) -> Result<(Manifest, Vec<String>), String> {
        let mkey = self.key(host, id, MANIFEST_SUFFIX);
        let skey = self.key(host, id, SIGNATURE_SUFFIX);
        // A version that cannot be read (oversized, say: anyone who can put
        // objects can plant one) is passed over, not the end of the walk.
        let mut first_error = None;
        let mut signatures: Vec<Vec<u8>> = Vec::new();
        for v in self.bucket.candidates(&skey).await? {
            let mut sig = Vec::new();
            match self
                .bucket
                .get_into(&skey, v.id.as_deref(), &mut sig, MAX_SIGNATURE_BYTES)
                .await
            {
                Ok(Some(_)) if !signatures.contains(&sig) => signatures.push(sig),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut found = false;
        let mut seen: Vec<Vec<u8>> = Vec::new();
        // (position among the manifest's versions, manifest)
        let mut genuine: Vec<(usize, Manifest)> = Vec::new();
        for (at, v) in self.bucket.candidates(&mkey).await?.into_iter().enumerate() {
            let mut bytes = Vec::new();
            match self
                .bucket
                .get_into(&mkey, v.id.as_deref(), &mut bytes, MAX_BYTES)
                .await
            {
                Ok(Some(_)) => found = true,
                Ok(None) => continue,
                Err(e) => {
                    found = true;
                    first_error.get_or_insert(e);
                    continue;
                }
            }
            if seen.contains(&bytes) {
                continue;
            }
            seen.push(bytes.clone());
            let manifest = match Manifest::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{}: {e}", self.bucket.url(&mkey)));
                    continue;
                }
            };
            let tries: Vec<Option<Vec<u8>>> = if signatures.is_empty() {
                vec![None]
            } else {
                signatures.iter().cloned().map(Some).collect()
            };
            for signature in tries {
                let signed = SignedManifest {
                    manifest: manifest.clone(),
                    bytes: bytes.clone(),
                    signature,
                };
                match cutter_core::verify::authenticate(id, &signed, signers) {
                    Ok(m) if m.host.is_empty() || m.host == host => {
                        genuine.push((at, m));
                        break;
                    }
                    Ok(m) => {
                        first_error.get_or_insert_with(|| {
                            format!(
                                "{}: the signed manifest was made on host {:?}, not {host:?}: a copy moved between host prefixes is not restored",
                                self.bucket.url(&mkey),
                                m.host
                            )
                        });
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if !found {
            return Err(format!(
                "no manifest at {}: was {id} uploaded from host {host}? (`cutterctl list --offsite`)",
                self.bucket.url(&mkey)
            ));
        }
        if let Some(want) = expect_sha256 {
            genuine.retain(|(_, m)| m.sha256.eq_ignore_ascii_case(want));
            if genuine.is_empty() {
                return Err(first_error.map_or_else(
                    || format!("{id}: no signed manifest in the bucket has the recorded envelope's sha256 {want}"),
                    |e| format!("{id}: no signed manifest in the bucket has the recorded envelope's sha256 {want} ({e})"),
                ));
            }
        }
        match genuine.as_slice() {
            [] => Err(first_error
                .unwrap_or_else(|| format!("{id}: no version of its manifest authenticates"))),
            [(at, m)] => {
                let mut warnings = Vec::new();
                if *at > 0 {
                    warnings.push(format!(
                        "{at} newer version(s) of {} do not authenticate: someone wrote over this run in the bucket",
                        self.bucket.url(&mkey)
                    ));
                }
                Ok((m.clone(), warnings))
            }
            several => Err(format!(
                "{id}: the bucket holds {} different signed manifests for this run ({}): whoever holds the signing key wrote a second one; pass --expect-sha256 with the envelope's sha256 to choose",
                several.len(),
                several
                    .iter()
                    .map(|(_, m)| format!("sha256 {} made {}", m.sha256, m.created_at))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Places (or lifts) a legal hold on every version of `id`'s three
    /// objects (the newest [`s3::MAX_VERSIONS`] of each; the bucket must
    /// have Object Lock): a genuine version under a newer planted one is
    /// held too. A version that refuses goes on to the others and is
    /// reported at the end. `Ok(false)`: no copy, or no Object Lock.
    pub async fn hold(&self, id: &RunId, on: bool) -> Result<bool, String> {
        let akey = self.key(&self.host, id, ARTIFACT_SUFFIX);
        let present = match self.bucket.versions(&akey).await? {
            Some(versions) => !versions.is_empty(),
            None => self.bucket.head(&akey, None).await?.is_some(),
        };
        if !present || !self.bucket.info().await?.object_lock {
            return Ok(false);
        }
        let mut errors = Vec::new();
        for suffix in [ARTIFACT_SUFFIX, SIGNATURE_SUFFIX, MANIFEST_SUFFIX] {
            let key = self.key(&self.host, id, suffix);
            for v in self.bucket.candidates(&key).await? {
                if let Err(e) = self.bucket.legal_hold(&key, v.id.as_deref(), on).await {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(true)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Deletes this host's copy of `id` unless any version of its objects
    /// is locked (retention or legal hold): `Ok(Some(why))` when left
    /// alone. Locks are read with GetObjectRetention and GetObjectLegalHold
    /// (HEAD hides them from callers without those permissions), and a lock
    /// that cannot be read counts as a lock.
    pub async fn prune(&self, id: &RunId) -> Result<Option<String>, String> {
        let keys: Vec<String> = [ARTIFACT_SUFFIX, SIGNATURE_SUFFIX, MANIFEST_SUFFIX]
            .iter()
            .map(|s| self.key(&self.host, id, s))
            .collect();
        if self.bucket.info().await?.object_lock {
            for k in &keys {
                for v in self.bucket.candidates(k).await? {
                    match self.bucket.lock_of(k, v.id.as_deref()).await {
                        Ok(None) => {}
                        Ok(Some(why)) => return Ok(Some(why)),
                        Err(e) => return Ok(Some(format!("its lock cannot be read ({e})"))),
                    }
                }
            }
        }
        // The manifest first: a run without it is incomplete, never restored.
        for k in keys.iter().rev() {
            self.bucket.delete(k).await?;
        }
        Ok(None)
    }

    /// The selftest's findings: endpoint, credentials, bucket, probe write
    /// (or HEAD), versioning and Object Lock.
    pub async fn probe(&self) -> Result<Probe, String> {
        self.bucket.head_bucket().await?;
        let probe = if self.config.probe {
            let key = self.bucket.key(&format!("{}/{PROBE_NAME}", self.host));
            self.bucket
                .put_probe(
                    &key,
                    format!(
                        "cutter-backupd probe {}\n",
                        cutter_core::offsite::queue::now()
                    )
                    .into_bytes(),
                )
                .await
                .map_err(|e| format!("probe write failed: {e}"))?;
            "probe written"
        } else {
            "bucket HEAD ok (offsite.probe = false)"
        };
        let mut notes = Vec::new();
        let lock = match self.bucket.info().await {
            Ok(i) => {
                if self.config.lock_days > 0 && !i.object_lock {
                    notes.push(format!(
                        "offsite.lock_days = {} but bucket {} has no Object Lock: copies are not retention-protected (Object Lock can only be enabled when the bucket is created)",
                        self.config.lock_days, self.bucket.bucket
                    ));
                }
                let lock = if i.object_lock {
                    if self.config.lock_days > 0 {
                        format!(
                            "Object Lock on ({} {} d per object)",
                            match self.config.lock_mode {
                                LockMode::Compliance => "COMPLIANCE",
                                LockMode::Governance => "GOVERNANCE",
                            },
                            self.config.lock_days
                        )
                    } else {
                        "Object Lock on (bucket default retention)".to_owned()
                    }
                } else {
                    "Object Lock off".to_owned()
                };
                if self.config.probe && i.versioning == "Enabled" {
                    let key = self.bucket.key(&format!("{}/{PROBE_NAME}", self.host));
                    if !self.bucket.reads_versions(&key).await.unwrap_or(false) {
                        notes.push(
                            "the credentials cannot list or read object versions (s3:ListBucketVersions, s3:GetObjectVersion): a run someone wrote over would not restore from its genuine version without them (docs/offsite.md)".to_owned(),
                        );
                    }
                }
                format!("versioning {}, {lock}", i.versioning)
            }
            Err(e) => format!("versioning/Object Lock unknown ({e})"),
        };
        if let Some(e) = &self.config.endpoint
            && e.starts_with("http://")
            && !is_loopback(e)
        {
            notes.push(format!("offsite.endpoint {e} is plain http: use https"));
        }
        let detail = format!(
            "{} at {}: credentials ok, {probe}, {lock}, mode {}",
            self.bucket
                .url(&self.bucket.key(&format!("{}/", self.host))),
            self.bucket.endpoint,
            match self.config.mode {
                OffsiteMode::Required => "required",
                OffsiteMode::Async => "async",
            }
        );
        Ok(Probe {
            detail,
            warnings: notes,
        })
    }

    /// The runs under `host` (every host when `None`), by (host, run_id):
    /// only host and run names our rules allow (key names are the bucket
    /// writer's to choose).
    pub async fn runs(&self, host: Option<&str>) -> Result<Vec<RemoteRun>, String> {
        let listed = self.bucket.list(host.unwrap_or("")).await?;
        let mut out = Vec::new();
        for (h, objects) in s3::by_host(&self.bucket, &listed) {
            if cutter_core::config::check_host(&h).is_err() {
                continue;
            }
            let base = self.bucket.key(&format!("{h}/"));
            let names: Vec<(&str, &s3::Listed)> = objects
                .iter()
                .filter_map(|l| l.key.strip_prefix(&base).map(|n| (n, *l)))
                .collect();
            for (name, l) in &names {
                let Some(id) = name.strip_suffix(ARTIFACT_SUFFIX) else {
                    continue;
                };
                if RunId::parse(id).is_err() {
                    continue;
                }
                let manifest = format!("{id}{MANIFEST_SUFFIX}");
                out.push(RemoteRun {
                    host: h.clone(),
                    run_id: id.to_owned(),
                    size_bytes: l.size,
                    modified_unix: l.modified,
                    complete: names.iter().any(|(n, _)| *n == manifest),
                });
            }
        }
        Ok(out)
    }
}

impl Backend for S3 {
    fn host(&self) -> &str {
        &self.host
    }

    fn artifact_url(&self, host: &str, id: &RunId) -> String {
        self.bucket.url(&self.key(host, id, ARTIFACT_SUFFIX))
    }

    fn upload<'a>(
        &'a self,
        store: &'a Store,
        id: &'a RunId,
        own: Option<&'a Cert>,
        expected: Option<&'a Manifest>,
    ) -> BoxFuture<'a, Result<Uploaded, String>> {
        Box::pin(S3::upload(self, store, id, own, expected))
    }

    fn stream(&self, id: &RunId, file: File) -> Option<Box<dyn Streaming>> {
        Some(Box::new(stream::Streamed::start(
            self.clone(),
            id.clone(),
            file,
        )))
    }

    fn fetch<'a>(&'a self, req: FetchRequest<'a>) -> BoxFuture<'a, Result<Fetched, String>> {
        Box::pin(S3::fetch(self, req))
    }

    fn list<'a>(&'a self, host: Option<&'a str>) -> BoxFuture<'a, Result<Vec<RemoteRun>, String>> {
        Box::pin(self.runs(host))
    }

    fn hold<'a>(&'a self, id: &'a RunId, on: bool) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(S3::hold(self, id, on))
    }

    fn prune<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(S3::prune(self, id))
    }

    fn probe(&self) -> BoxFuture<'_, Result<Probe, String>> {
        Box::pin(S3::probe(self))
    }

    fn endpoint(&self) -> String {
        self.bucket.endpoint.clone()
    }
}

/// The committed run as an upload reads it: its checked signed manifest
/// and the three keys.
struct Local {
    id: RunId,
    akey: String,
    mkey: String,
    skey: String,
    signature: Vec<u8>,
    signed: SignedManifest,
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Confirms a HEAD against the manifest: its size, then the server's
/// sha256 checksum when it reports one in a form we can compare (ours
/// exactly: the whole object's, or for a multipart upload the sha256 of
/// the parts' sha256s with `-N`; or a full-object sha256 equal to the
/// manifest's), else our sha256 in the object's metadata. A streamed
/// upload carries no metadata (its sha256 was not known when it began), so
/// a service that reports no comparable checksum cannot confirm it.
fn confirm(info: &s3::ObjectInfo, m: &Manifest, checksum: Option<&str>) -> Result<(), String> {
    if info.size != m.size_bytes {
        return Err(format!(
            "the server holds {} bytes, the manifest says {}",
            info.size, m.size_bytes
        ));
    }
    let whole = hex_to_bytes(&m.sha256).map(|b| openssl::base64::encode_block(&b));
    if let Some(got) = &info.checksum_sha256 {
        if Some(got.as_str()) == checksum || Some(got) == whole.as_ref() {
            return Ok(());
        }
        // Both composite (any part count) or both whole: comparable, and
        // different.
        if let Some(want) = checksum
            && got.contains('-') == want.contains('-')
        {
            return Err(format!(
                "the server's sha256 checksum is {got}, we sent {want}"
            ));
        }
    }
    match &info.meta_sha256 {
        Some(s) if s.eq_ignore_ascii_case(&m.sha256) => Ok(()),
        Some(_) => Err("the object does not carry this manifest's sha256".into()),
        None => Err(format!(
            "the service reports no sha256 checksum comparable with ours ({}) and the object has no sha256 metadata: the copy cannot be confirmed; use an S3 service that returns x-amz-checksum-sha256 on HEAD with checksum mode enabled",
            info.checksum_sha256.as_deref().unwrap_or("none")
        )),
    }
}

/// The bytes of a lowercase or uppercase hex string (`None` if it is not hex).
fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_confirms_size_and_checksum() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 2, "run_id": "r", "created_at": "", "artifact": "r.sql.gpg",
            "sha256": "ab", "size_bytes": 10, "gpg_fpr": "", "recipients": [], "tables": [],
            "plaintext_bytes": 0, "compression": "", "server_version": "",
            "pg_dump_version": "", "producer": "", "duration_ms": 0
        }))
        .expect("manifest");
        let info = |size, sum: Option<&str>, meta: Option<&str>| s3::ObjectInfo {
            size,
            checksum_sha256: sum.map(str::to_owned),
            meta_sha256: meta.map(str::to_owned),
            ..s3::ObjectInfo::default()
        };
        assert!(confirm(&info(10, Some("X"), Some("ab")), &m, Some("X")).is_ok());
        assert!(confirm(&info(9, Some("X"), Some("ab")), &m, Some("X")).is_err());
        assert!(confirm(&info(10, Some("Y"), Some("ab")), &m, Some("X")).is_err());
        assert!(confirm(&info(10, Some("Y-3"), Some("ab")), &m, Some("X-3")).is_err());
        // Another part count is a different object, whatever the metadata.
        assert!(confirm(&info(10, Some("Y-4"), Some("ab")), &m, Some("X-3")).is_err());
        // Another form for a multipart object: size and metadata decide.
        assert!(confirm(&info(10, Some("Y"), Some("ab")), &m, Some("X-3")).is_ok());
        // A streamed upload has no metadata: its composite checksum, or a
        // full-object sha256 equal to the manifest's, confirms it.
        assert!(confirm(&info(10, Some("X-3"), None), &m, Some("X-3")).is_ok());
        assert!(confirm(&info(10, Some("qw=="), None), &m, Some("X-3")).is_ok());
        assert!(confirm(&info(10, Some("Y"), None), &m, Some("X-3")).is_err());
        assert!(confirm(&info(10, None, None), &m, Some("X-3")).is_err());
        assert!(confirm(&info(10, None, Some("cd")), &m, None).is_err());
        assert!(confirm(&info(10, None, None), &m, Some("X")).is_err());
    }

    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:8333"));
        assert!(is_loopback("http://localhost:9000/"));
        assert!(!is_loopback("http://s3.example.com"));
    }
}
