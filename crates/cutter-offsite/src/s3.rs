//! The S3 client behind the offsite copy (aws-sdk-s3 with rustls/ring):
//! streaming uploads that send the sha256 for the server to verify
//! (`x-amz-checksum-sha256`, per part above the multipart threshold), HEAD
//! to confirm, streamed downloads, listing, Object Lock retention and legal
//! holds, and errors that say which setting to fix.
//!
//! Secrets: the key id and secret go into the SDK's credentials provider and
//! nowhere else; no message here formats them (the SDK's errors do not
//! carry them either).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, SdkBody};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload,
    CompletedPart, ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus,
    ObjectLockMode,
};
use sha2::{Digest, Sha256};

use cutter_core::config::{LockMode, OffsiteConfig, S3Url};
use cutter_core::encrypt::hex;

/// The user metadata key our sha256 (hex) rides in, echoed by HEAD.
const META_SHA256: &str = "cutter-sha256";

/// A key id and secret; `Debug` shows neither.
pub struct Keys {
    id: String,
    secret: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Reads an AWS-style credentials file (`aws_access_key_id = …`,
/// `aws_secret_access_key = …`; `[profile]` headers and comments ignored,
/// the first value of each wins). It must be a regular file only its owner
/// can read (or a systemd credential). Errors name the file, never a value.
pub fn read_keys(path: &Path) -> Result<Keys, String> {
    let f = std::fs::File::open(path).map_err(|e| {
        format!(
            "offsite.credentials_file {}: {e} (deploy it with LoadCredential= or as a mode 0600 file)",
            path.display()
        )
    })?;
    cutter_core::signer::check_secret_mode(&f, path)
        .map_err(|e| format!("offsite.credentials_file: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&f, 64 * 1024), &mut text).map_err(
        |e| {
            format!(
                "offsite.credentials_file {}: {e} (it must be UTF-8 text)",
                path.display()
            )
        },
    )?;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';', '[']) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" if id.is_none() => id = Some(v),
            "aws_secret_access_key" if secret.is_none() => secret = Some(v),
            _ => {}
        }
    }
    match (
        id.filter(|v| !v.is_empty()),
        secret.filter(|v| !v.is_empty()),
    ) {
        (Some(id), Some(secret)) => Ok(Keys { id, secret }),
        _ => Err(format!(
            "offsite.credentials_file {} needs both aws_access_key_id = … and aws_secret_access_key = … lines",
            path.display()
        )),
    }
}

/// What HEAD says about an object.
#[derive(Debug, Clone, Default)]
pub struct ObjectInfo {
    /// Content length.
    pub size: u64,
    /// The server's `x-amz-checksum-sha256` (base64, `-N` for multipart).
    pub checksum_sha256: Option<String>,
    /// Our sha256 (hex) from the object's metadata.
    pub meta_sha256: Option<String>,
    /// Object Lock retention end, if any.
    pub retain_until: Option<SystemTime>,
    /// Legal hold on.
    pub legal_hold: bool,
    /// The version HEAD answered for, on a versioned bucket.
    pub version_id: Option<String>,
}

impl ObjectInfo {
    /// True while retention or a legal hold protects the object.
    pub fn locked(&self, now: SystemTime) -> bool {
        self.legal_hold || self.retain_until.is_some_and(|t| t > now)
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Size.
    pub size: u64,
    /// Last modified (unix seconds).
    pub modified: i64,
}

/// Versioning and Object Lock of the bucket.
#[derive(Debug, Clone, Default)]
pub struct BucketInfo {
    /// "Enabled", "Suspended" or "off".
    pub versioning: String,
    /// Object Lock enabled on the bucket.
    pub object_lock: bool,
}

/// A bucket and prefix on an S3-compatible service.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    /// The bucket.
    pub bucket: String,
    /// Key prefix (no leading or trailing '/'), maybe empty.
    pub prefix: String,
    /// For messages: the endpoint (or "AWS S3 <region>").
    pub endpoint: String,
    credentials_file: PathBuf,
    part_size: u64,
    lock: (LockMode, u32),
}

impl Bucket {
    /// A client for `cfg`; reads the credentials file now.
    pub fn new(cfg: &OffsiteConfig) -> Result<Self, String> {
        let url = S3Url::parse(&cfg.url)?;
        let keys = read_keys(&cfg.credentials_file)?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(
                keys.id,
                keys.secret,
                None,
                None,
                "cutter-offsite",
            ))
            .force_path_style(cfg.path_style)
            .http_client(http)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(cfg.max_attempts)
                    .with_initial_backoff(Duration::from_millis(500))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(cfg.request_timeout_secs))
                    .build(),
            )
            // We send the sha256 ourselves and check downloads ourselves;
            // the SDK's own CRC trailers are not understood everywhere.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &cfg.endpoint {
            conf = conf.endpoint_url(e);
        }
        Ok(Self {
            client: Client::from_conf(conf.build()),
            bucket: url.bucket,
            prefix: url.prefix,
            endpoint: cfg
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS S3 {}", cfg.region)),
            credentials_file: cfg.credentials_file.clone(),
            part_size: cfg.part_size_mib * 1024 * 1024,
            lock: (cfg.lock_mode, cfg.lock_days),
        })
    }

    /// `<prefix>/<rest>` (or `<rest>` without a prefix).
    pub fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// `s3://bucket/key`, for envelopes and messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Turns an SDK error into what an operator can act on.
    pub fn explain<E>(
        &self,
        what: &str,
        e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let creds = self.credentials_file.display();
        match e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
                "{what}: cannot reach {} ({}): is the service up, and are offsite.endpoint and the network right?",
                self.endpoint,
                DisplayErrorContext(e)
            ),
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let msg = se.err().message().unwrap_or("");
                match (code, status) {
                    ("InvalidAccessKeyId", _)
                    | ("SignatureDoesNotMatch", _)
                    | ("InvalidToken", _)
                    | ("ExpiredToken", _) => format!(
                        "{what}: {} rejected the credentials ({code}): fix aws_access_key_id / aws_secret_access_key in offsite.credentials_file {creds}",
                        self.endpoint
                    ),
                    ("NoSuchBucket", _) | ("", 404) if what.contains("bucket") => format!(
                        "{what}: bucket {} does not exist at {}: create it (with Object Lock, see docs/offsite.md) or fix offsite.url",
                        self.bucket, self.endpoint
                    ),
                    ("AccessDenied", _) | ("", 403) => format!(
                        "{what}: access denied ({code} {msg}): the credentials in {creds} are wrong or lack this permission on bucket {} (see the bucket policy in docs/offsite.md)",
                        self.bucket
                    ),
                    ("BadDigest", _) | ("XAmzContentSHA256Mismatch", _) => format!(
                        "{what}: the server computed another sha256 than we sent ({code}): the bytes changed in transit or on disk"
                    ),
                    _ => format!("{what}: HTTP {status} {code} {msg}"),
                }
            }
            other => format!("{what}: {}", DisplayErrorContext(other)),
        }
    }

    /// HEAD the bucket: endpoint, credentials and bucket in one request.
    pub async fn head_bucket(&self) -> Result<(), String> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.explain("HEAD bucket", &e))
    }

    /// Versioning and Object Lock state.
    pub async fn info(&self) -> Result<BucketInfo, String> {
        let v = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.explain("GetBucketVersioning on the bucket", &e))?;
        let versioning = match v.status() {
            Some(BucketVersioningStatus::Enabled) => "Enabled".to_owned(),
            Some(BucketVersioningStatus::Suspended) => "Suspended".to_owned(),
            _ => "off".to_owned(),
        };
        let object_lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(SdkError::ServiceError(se))
                if se.err().code() == Some("ObjectLockConfigurationNotFoundError")
                    || se.raw().status().as_u16() == 404 =>
            {
                false
            }
            Err(e) => return Err(self.explain("GetObjectLockConfiguration on the bucket", &e)),
        };
        Ok(BucketInfo {
            versioning,
            object_lock,
        })
    }

    /// Retention to set on new objects: only when configured and the
    /// bucket has Object Lock (S3 refuses the headers otherwise). Asked
    /// once per run's upload and passed to each PUT.
    pub async fn retention(&self) -> Result<Option<Retention>, String> {
        let (mode, days) = self.lock;
        if days == 0 || !self.info().await?.object_lock {
            return Ok(None);
        }
        let until = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        let mode = match mode {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        };
        Ok(Some((mode, DateTime::from(until))))
    }

    /// Uploads `data` (a manifest, a signature) in one PUT, with the
    /// configured retention.
    pub async fn put_small(
        &self,
        key: &str,
        data: Vec<u8>,
        retention: Option<&Retention>,
    ) -> Result<(), String> {
        self.put_one(key, data, retention).await
    }

    /// Uploads a probe: never with our retention (selftest runs every
    /// minute; each probe would otherwise be a version locked for days).
    pub async fn put_probe(&self, key: &str, data: Vec<u8>) -> Result<(), String> {
        self.put_one(key, data, None).await
    }

    async fn put_one(
        &self,
        key: &str,
        data: Vec<u8>,
        retention: Option<&Retention>,
    ) -> Result<(), String> {
        let digest = Sha256::digest(&data);
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(openssl::base64::encode_block(&digest))
            .metadata(META_SHA256, hex(&digest))
            .body(ByteStream::from(data));
        if let Some((mode, until)) = retention {
            req = req
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(*until);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| self.explain(&format!("PUT {}", self.url(key)), &e))
    }

    /// Streams `file` (`size` bytes, which must hash to `sha256_hex`) to
    /// `key`: one PUT up to the part size, multipart above it (parts grow
    /// so a file never needs more than S3's 10,000). Memory stays flat:
    /// each range is hashed through a small buffer, then sent as a body
    /// that reads it again from the open file (so the SDK can retry it)
    /// and hashes what it sent. Every request carries the sha256 of its
    /// range for the server to verify, and what was sent must hash to it
    /// too (for services that do not check); the whole file's
    /// sha256 is checked against `sha256_hex` before the object is
    /// completed, so a file changed under us never becomes a complete
    /// object. Returns what HEAD must show: the checksum, and the version
    /// id on a versioned bucket.
    pub async fn put_file(
        &self,
        key: &str,
        file: std::fs::File,
        size: u64,
        sha256_hex: &str,
        retention: Option<&Retention>,
    ) -> Result<Uploaded, String> {
        let source = Source::new(file);
        let part_size = part_size_for(size, self.part_size);
        if size <= part_size {
            let mut whole = Sha256::new();
            let digest = source.hash(0, size, &mut whole).await?;
            check_whole(whole, sha256_hex, "nothing was uploaded")?;
            let sum = openssl::base64::encode_block(&digest);
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&sum)
                .metadata(META_SHA256, sha256_hex)
                .body(source.body(0, size));
            if let Some((mode, until)) = retention {
                req = req
                    .object_lock_mode(mode.clone())
                    .object_lock_retain_until_date(*until);
            }
            let out = req
                .send()
                .await
                .map_err(|e| self.explain(&format!("PUT {}", self.url(key)), &e))?;
            if !source.sent_matches(0, &digest) {
                return Err(changed_while_sent(&self.url(key)));
            }
            return Ok(Uploaded {
                checksum: sum,
                version_id: real_version(out.version_id()),
            });
        }
        let upload_id = self
            .create_multipart(key, Some(sha256_hex), retention)
            .await?;
        let result = self
            .upload_parts(key, &upload_id, &source, size, part_size, sha256_hex)
            .await;
        if result.is_err() {
            self.abort_multipart(key, &upload_id).await;
        }
        result
    }

    /// Starts a multipart upload of `key` (sha256 per part), with our
    /// sha256 in its metadata when it is known now; returns its id.
    pub async fn create_multipart(
        &self,
        key: &str,
        sha256_hex: Option<&str>,
        retention: Option<&Retention>,
    ) -> Result<String, String> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some(sum) = sha256_hex {
            create = create.metadata(META_SHA256, sum);
        }
        if let Some((mode, until)) = retention {
            create = create
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(*until);
        }
        let upload = create
            .send()
            .await
            .map_err(|e| self.explain(&format!("CreateMultipartUpload {}", self.url(key)), &e))?;
        Ok(upload
            .upload_id()
            .ok_or("the server returned no multipart upload id")?
            .to_owned())
    }

    /// Sends part `number` (`len` bytes of `source` at `offset`, whose
    /// sha256 is `digest`) and checks that what went out hashed to it.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        (source, offset, len): (&Source, u64, u64),
        digest: &[u8; 32],
    ) -> Result<CompletedPart, String> {
        let sum = openssl::base64::encode_block(digest);
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sum)
            .body(source.body(offset, len))
            .send()
            .await
            .map_err(|e| self.explain(&format!("UploadPart {number} of {}", self.url(key)), &e))?;
        if !source.sent_matches(offset, digest) {
            return Err(changed_while_sent(&self.url(key)));
        }
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(sum)
            .build())
    }

    /// Completes a multipart upload from its parts (in order); returns
    /// what HEAD must show: `base64(sha256 of the parts' sha256s)-N`.
    pub(crate) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        digests: &[[u8; 32]],
    ) -> Result<Uploaded, String> {
        let mut composite = Sha256::new();
        for d in digests {
            composite.update(d);
        }
        let n = parts.len();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.explain(&format!("CompleteMultipartUpload {}", self.url(key)), &e))?;
        Ok(Uploaded {
            checksum: format!(
                "{}-{n}",
                openssl::base64::encode_block(&composite.finalize())
            ),
            version_id: real_version(out.version_id()),
        })
    }

    /// Aborts a multipart upload, best effort: an abandoned upload only
    /// costs storage until the bucket's AbortIncompleteMultipartUpload
    /// rule removes it.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                key,
                error = %self.explain(&format!("AbortMultipartUpload {}", self.url(key)), &e),
                "an incomplete multipart upload was left behind"
            );
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        source: &Source,
        size: u64,
        part_size: u64,
        sha256_hex: &str,
    ) -> Result<Uploaded, String> {
        let mut whole = Sha256::new();
        let mut digests = Vec::new();
        let mut parts = Vec::new();
        let mut offset = 0u64;
        for number in 1i32.. {
            if offset >= size {
                break;
            }
            let len = part_size.min(size - offset);
            let digest = source.hash(offset, len, &mut whole).await?;
            parts.push(
                self.upload_part(key, upload_id, number, (source, offset, len), &digest)
                    .await?,
            );
            digests.push(digest);
            offset += len;
        }
        check_whole(whole, sha256_hex, "the upload was aborted")?;
        self.complete_multipart(key, upload_id, parts, &digests)
            .await
    }

    /// HEAD an object (its current version, or `version`); `None` when it
    /// does not exist.
    pub async fn head(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<ObjectInfo>, String> {
        self.head_sdk(key, version)
            .await
            .map_err(|e| self.explain(&format!("HEAD {}", self.url(key)), &e))
    }

    /// HEAD of `version`, or of the current version where reading a
    /// version is denied (credentials without `s3:GetObjectVersion`).
    pub async fn head_or_current(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<ObjectInfo>, String> {
        match self.head_sdk(key, version).await {
            Err(SdkError::ServiceError(se)) if version.is_some() && denied(se.raw()) => {
                self.head(key, None).await
            }
            r => r.map_err(|e| self.explain(&format!("HEAD {}", self.url(key)), &e)),
        }
    }

    async fn head_sdk(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<
        Option<ObjectInfo>,
        SdkError<
            aws_sdk_s3::operation::head_object::HeadObjectError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    > {
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(o) => o,
            Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(ObjectInfo {
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            checksum_sha256: out.checksum_sha256().map(str::to_owned),
            meta_sha256: out
                .metadata()
                .and_then(|m| m.get(META_SHA256))
                .map(|s| s.to_owned()),
            retain_until: out
                .object_lock_retain_until_date()
                .and_then(|d| SystemTime::try_from(*d).ok()),
            legal_hold: out
                .object_lock_legal_hold_status()
                .is_some_and(|s| *s == ObjectLockLegalHoldStatus::On),
            version_id: real_version(out.version_id()),
        }))
    }

    /// Streams an object (its current version, or `version`) into `out`,
    /// at most `cap` bytes (more is an error). `None` when it does not exist.
    pub async fn get_into(
        &self,
        key: &str,
        version: Option<&str>,
        out: &mut impl Write,
        cap: u64,
    ) -> Result<Option<u64>, String> {
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(r) => r,
            Err(SdkError::ServiceError(se))
                if se.raw().status().as_u16() == 404 || se.err().code() == Some("NoSuchKey") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.explain(&format!("GET {}", self.url(key)), &e)),
        };
        let mut body = resp.body;
        let mut n = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| format!("GET {}: {}", self.url(key), DisplayErrorContext(&e)))?
        {
            n += chunk.len() as u64;
            if n > cap {
                return Err(format!(
                    "{} is larger than the {cap} bytes expected",
                    self.url(key)
                ));
            }
            out.write_all(&chunk)
                .map_err(|e| format!("writing {} locally: {e}", self.url(key)))?;
        }
        Ok(Some(n))
    }

    /// Every object under `<prefix>/<sub>` (`sub` may be empty).
    pub async fn list(&self, sub: &str) -> Result<Vec<Listed>, String> {
        let mut prefix = self.key(sub);
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.explain(&format!("LIST {}", self.url(&prefix)), &e))?;
            if out.len() + page.contents().len() > MAX_LISTED {
                return Err(format!(
                    "more than {MAX_LISTED} objects under {}: list one host at a time (--host), or expire old copies with a lifecycle rule",
                    self.url(&prefix)
                ));
            }
            for o in page.contents() {
                if let Some(key) = o.key() {
                    out.push(Listed {
                        key: key.to_owned(),
                        size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        modified: o.last_modified().map(|d| d.secs()).unwrap_or(0),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The versions of `key`, newest first, at most [`MAX_VERSIONS`]
    /// (delete markers are left out). `None` when the service or the
    /// credentials do not allow listing versions: then only the current
    /// version can be read.
    pub async fn versions(&self, key: &str) -> Result<Option<Vec<Version>>, String> {
        let mut out: Vec<Version> = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        for _page in 0..MAX_VERSION_PAGES {
            let page = match self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(SdkError::ServiceError(se))
                    if matches!(se.raw().status().as_u16(), 403 | 405 | 501)
                        || se.err().code() == Some("NotImplemented") =>
                {
                    tracing::debug!(
                        key,
                        "listing versions is not allowed here; reading the current version only"
                    );
                    return Ok(None);
                }
                Err(e) => {
                    return Err(self.explain(&format!("ListObjectVersions {}", self.url(key)), &e));
                }
            };
            for v in page.versions() {
                if v.key() != Some(key) {
                    continue;
                }
                out.push(Version {
                    // "null" is the version made while versioning was off;
                    // only when it is the current one is "no id" the same.
                    id: v
                        .version_id()
                        .filter(|id| *id != "null" || v.is_latest() != Some(true))
                        .map(str::to_owned),
                    size: v.size().and_then(|n| u64::try_from(n).ok()),
                    modified: v.last_modified().map(|d| (d.secs(), d.subsec_nanos())),
                });
            }
            if out.len() >= MAX_VERSIONS || page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        // Newest first, whatever order the service listed them in.
        out.sort_by_key(|v| std::cmp::Reverse(v.modified));
        out.truncate(MAX_VERSIONS);
        Ok(Some(out))
    }

    /// The versions of `key` to try, newest first: listed, or just the
    /// current one where versions cannot be listed.
    ///
    /// Also just the current one when the listing is empty (a service that
    /// lists no versions), or when the newest listed version cannot be read
    /// by its id (credentials without `s3:GetObjectVersion`).
    pub async fn candidates(&self, key: &str) -> Result<Vec<Version>, String> {
        Ok(self.readable_versions(key).await?.unwrap_or_else(|| {
            vec![Version {
                id: None,
                size: None,
                modified: None,
            }]
        }))
    }

    /// Whether these credentials can list `key`'s versions and read one by
    /// its id (`s3:ListBucketVersions`, `s3:GetObjectVersion`): what a
    /// fetch needs to reach a genuine version under a newer planted one.
    pub async fn reads_versions(&self, key: &str) -> Result<bool, String> {
        Ok(self
            .readable_versions(key)
            .await?
            .is_some_and(|l| l.first().is_some_and(|v| v.id.is_some())))
    }

    /// The listed versions of `key`, or `None` when there are none to go
    /// by: listing is not allowed or lists nothing, or the newest version
    /// cannot be read by its id.
    async fn readable_versions(&self, key: &str) -> Result<Option<Vec<Version>>, String> {
        let Some(listed) = self.versions(key).await?.filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        if let Some(id) = listed.first().and_then(|v| v.id.as_deref())
            && let Err(SdkError::ServiceError(se)) = self.head_sdk(key, Some(id)).await
            && denied(se.raw())
        {
            tracing::debug!(key, "reading versions by id is denied");
            return Ok(None);
        }
        Ok(Some(listed))
    }

    /// Whether Object Lock protects `key` (its current version, or
    /// `version`), asked explicitly (HEAD shows retention and legal hold
    /// only to callers allowed to read them). An error is `Err`: the
    /// caller must treat it as locked.
    pub async fn lock_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, String> {
        let now = SystemTime::now();
        let none = |code: Option<&str>, status: u16| {
            code == Some("NoSuchObjectLockConfiguration") || status == 404
        };
        match self
            .client
            .get_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(o) => {
                if let Some(until) = o
                    .retention()
                    .and_then(|r| r.retain_until_date())
                    .and_then(|d| SystemTime::try_from(*d).ok())
                    && until > now
                {
                    return Ok(Some(format!(
                        "locked until {}",
                        cutter_core::time::rfc3339(until)
                    )));
                }
            }
            Err(SdkError::ServiceError(se))
                if none(se.err().code(), se.raw().status().as_u16()) => {}
            Err(e) => {
                return Err(self.explain(&format!("GetObjectRetention {}", self.url(key)), &e));
            }
        }
        match self
            .client
            .get_object_legal_hold()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(o)
                if o.legal_hold()
                    .and_then(|h| h.status())
                    .is_some_and(|s| *s == ObjectLockLegalHoldStatus::On) =>
            {
                Ok(Some("under legal hold".to_owned()))
            }
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(se))
                if none(se.err().code(), se.raw().status().as_u16()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.explain(&format!("GetObjectLegalHold {}", self.url(key)), &e)),
        }
    }

    /// Deletes an object (a delete marker on a versioned bucket).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.explain(&format!("DELETE {}", self.url(key)), &e))
    }

    /// Places (or lifts) a legal hold on an object (its current version,
    /// or `version`).
    pub async fn legal_hold(
        &self,
        key: &str,
        version: Option<&str>,
        on: bool,
    ) -> Result<(), String> {
        let status = if on {
            ObjectLockLegalHoldStatus::On
        } else {
            ObjectLockLegalHoldStatus::Off
        };
        self.client
            .put_object_legal_hold()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .legal_hold(ObjectLockLegalHold::builder().status(status).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.explain(&format!("PutObjectLegalHold {}", self.url(key)), &e))
    }
}

/// At most this many versions of one key are considered (newest first):
/// a bucket writer can add versions, and each may cost a download.
pub const MAX_VERSIONS: usize = 50;

/// Pages of ListObjectVersions read for one key (its prefix also matches
/// longer keys, which a bucket writer could plant).
const MAX_VERSION_PAGES: usize = 10;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its id; `None` on an unversioned bucket (the current object).
    pub id: Option<String>,
    /// Its size, when listed.
    pub size: Option<u64>,
    /// Last modified (seconds, nanoseconds), when listed.
    pub modified: Option<(i64, u32)>,
}

/// An Object Lock mode and the date retention ends.
pub type Retention = (ObjectLockMode, DateTime);

/// What an upload left in the bucket, for the HEAD that confirms it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The checksum the server must report (base64, `-N` for multipart).
    pub checksum: String,
    /// The version the upload made, on a versioned bucket.
    pub version_id: Option<String>,
}

/// A version id as S3 reports it, `None` for none, empty or `"null"` (an
/// unversioned bucket's answer).
fn real_version(v: Option<&str>) -> Option<String> {
    v.filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_owned)
}

/// The most objects one listing gathers (a bucket writer can plant keys).
const MAX_LISTED: usize = 1_000_000;

/// A 403: the credentials lack the permission.
fn denied(raw: &aws_sdk_s3::config::http::HttpResponse) -> bool {
    raw.status().as_u16() == 403
}

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a `size`-byte file: the configured one, grown (in
/// whole MiB) when the file would otherwise need more than 10,000 parts.
fn part_size_for(size: u64, configured: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    configured.max(needed)
}

fn changed_while_sent(url: &str) -> String {
    format!(
        "the local artifact changed while it was sent to {url}: run `cutterctl verify`; this copy is not confirmed"
    )
}

fn check_whole(whole: Sha256, want: &str, outcome: &str) -> Result<(), String> {
    let got = hex(&whole.finalize());
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!(
            "the local artifact hashes to sha256 {got}, its manifest says {want}: run `cutterctl verify`; {outcome}"
        ))
    }
}

/// The open local artifact an upload reads: hashed range by range through
/// a small buffer, then sent as a [`RangeBody`] that reads the same open
/// file (never a path, so nothing in the directory can change which file
/// is sent) and hashes what it sends, for [`Source::sent_matches`].
#[derive(Clone)]
pub(crate) struct Source {
    file: Arc<std::fs::File>,
    /// The sha256 of the last complete pass of each range's body, by offset.
    sent: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
}

/// The read buffer for hashing a range, and for sending it.
const HASH_BUF: usize = 256 * 1024;

impl Source {
    pub(crate) fn new(file: std::fs::File) -> Self {
        Self {
            file: Arc::new(file),
            sent: Arc::default(),
        }
    }

    /// The sha256 of `len` bytes at `offset`, also fed to `whole`.
    async fn hash(&self, offset: u64, len: u64, whole: &mut Sha256) -> Result<[u8; 32], String> {
        let file = Arc::clone(&self.file);
        let carried = whole.clone();
        let (digest, carried) = tokio::task::spawn_blocking(move || {
            let mut part = Sha256::new();
            let mut carried = carried;
            let mut buf = vec![0u8; HASH_BUF];
            let (mut at, end) = (offset, offset + len);
            while at < end {
                let n = read_at(&file, &mut buf, at, end)?;
                part.update(&buf[..n]);
                carried.update(&buf[..n]);
                at += n as u64;
            }
            Ok::<_, String>((<[u8; 32]>::from(part.finalize()), carried))
        })
        .await
        .map_err(|e| format!("hashing the local artifact: {e}"))??;
        *whole = carried;
        Ok(digest)
    }

    /// A retryable request body: `len` bytes at `offset`.
    fn body(&self, offset: u64, len: u64) -> ByteStream {
        let (file, sent) = (Arc::clone(&self.file), Arc::clone(&self.sent));
        ByteStream::new(SdkBody::retryable(move || {
            SdkBody::from_body_1_x(RangeBody {
                file: Arc::clone(&file),
                start: offset,
                at: offset,
                end: offset + len,
                hash: Sha256::new(),
                sent: Arc::clone(&sent),
                reading: None,
            })
        }))
    }

    /// True when the last body sent for the range at `offset` hashed to
    /// `digest`: the bytes on the wire were the bytes hashed, whether or
    /// not the service checks `x-amz-checksum-sha256`.
    fn sent_matches(&self, offset: u64, digest: &[u8; 32]) -> bool {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&offset)
            == Some(digest)
    }
}

/// Reads into `buf` at `at`, at most up to `end`; a short file is an error.
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64, end: u64) -> Result<usize, String> {
    use std::os::unix::fs::FileExt;
    let want = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
    let n = file
        .read_at(&mut buf[..want], at)
        .map_err(|e| format!("reading the local artifact: {e}"))?;
    if n == 0 {
        return Err(format!(
            "the local artifact ended at byte {at}, its manifest says {end} or more: run `cutterctl verify`; the upload was aborted"
        ));
    }
    Ok(n)
}

/// One request's body: a byte range of the open artifact, read in
/// [`HASH_BUF`] chunks on the blocking pool. Each (re)try is a fresh body.
struct RangeBody {
    file: Arc<std::fs::File>,
    start: u64,
    at: u64,
    end: u64,
    hash: Sha256,
    sent: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
    reading: Option<tokio::task::JoinHandle<Result<Vec<u8>, String>>>,
}

impl http_body::Body for RangeBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(reading) = this.reading.as_mut() {
                let done = match std::pin::Pin::new(reading).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                this.reading = None;
                let buf = match done {
                    Ok(Ok(buf)) => buf,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    Err(e) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                };
                this.at += buf.len() as u64;
                this.hash.update(&buf);
                if this.at == this.end {
                    let digest = <[u8; 32]>::from(this.hash.clone().finalize());
                    this.sent
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(this.start, digest);
                }
                return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(buf)))));
            }
            if this.at >= this.end {
                return Poll::Ready(None);
            }
            let (file, at, end) = (Arc::clone(&this.file), this.at, this.end);
            this.reading = Some(tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; HASH_BUF];
                let n = read_at(&file, &mut buf, at, end)?;
                buf.truncate(n);
                Ok(buf)
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.end && self.reading.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.end - self.at)
    }
}

/// Groups listed keys `<prefix>/<host>/<name>` by host, for `list --offsite`.
pub fn by_host<'a>(bucket: &Bucket, listed: &'a [Listed]) -> BTreeMap<String, Vec<&'a Listed>> {
    let strip = if bucket.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", bucket.prefix)
    };
    let mut out: BTreeMap<String, Vec<&Listed>> = BTreeMap::new();
    for l in listed {
        if let Some((host, _)) = l.key.strip_prefix(&strip).and_then(|r| r.split_once('/')) {
            out.entry(host.to_owned()).or_default().push(l);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parts_grow_so_no_file_needs_more_than_ten_thousand() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size_for(1, 16 * MIB), 16 * MIB);
        assert_eq!(part_size_for(100_000 * MIB, 16 * MIB), 16 * MIB);
        for size in [160_001 * MIB, 1 << 40, 5 << 40] {
            let part = part_size_for(size, 16 * MIB);
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size}: {part}");
            assert_eq!(part % MIB, 0);
        }
    }

    #[test]
    fn credentials_files_are_parsed_and_guarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "[default]\n# c\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key=s3cr3t/x+y\n",
        )
        .expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let k = read_keys(&p).expect("parse");
        assert_eq!(
            (k.id.as_str(), k.secret.as_str()),
            ("AKIDEXAMPLE", "s3cr3t/x+y")
        );
        assert!(!format!("{k:?}").contains("s3cr3t"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read_keys(&p).expect_err("world-readable");
        assert!(e.contains("chmod 600") && !e.contains("s3cr3t"), "{e}");
        std::fs::write(&p, "aws_access_key_id = only\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = read_keys(&p).expect_err("no secret");
        assert!(e.contains("aws_secret_access_key"), "{e}");
    }
}
