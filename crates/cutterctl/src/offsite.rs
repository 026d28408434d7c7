//! `cutterctl list --offsite` and `verify --offsite`: straight to the bucket
//! with the daemon's config and credentials, no daemon needed (a lost
//! host's replacement has none yet). Verify downloads each run into an
//! unnamed temp file while hashing it, and believes it only when the
//! manifest's signature is by a pinned signer and the bytes match it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use cutter_backup::v1::{VerifyReply, VerifyResult};
use cutter_core::config::Config;
use cutter_core::offsite::{Backend, FetchRequest};
use cutter_core::runid::RunId;
use cutter_core::signer::{self, Cert};
use serde::Serialize;

/// The offsite backend from `config`'s `[offsite]` (no queue: operator
/// tools never upload).
pub fn client(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    let cfg = config
        .offsite
        .as_ref()
        .context("the config has no [offsite] section: add it (see docs/offsite.md)")?;
    crate::tls_trust::note_dropped();
    cutter_offsite::connect(cfg).map_err(anyhow::Error::msg)
}

/// Pinned signers: `--signer` files, else `restore.trusted_signers`; none
/// is an error (fail closed).
pub fn signers(given: &[PathBuf], config: &Config) -> anyhow::Result<Vec<Cert>> {
    let files = if given.is_empty() {
        &config.restore.trusted_signers
    } else {
        given
    };
    if files.is_empty() {
        bail!(
            "no trusted manifest signer: pass --signer FILE (save it once with `cutterctl signer export > FILE`) or list it in restore.trusted_signers"
        );
    }
    signer::read_all(files).map_err(anyhow::Error::msg)
}

/// One run in the bucket.
#[derive(Debug, Serialize)]
struct RemoteRun {
    host: String,
    run_id: String,
    size_bytes: u64,
    modified: String,
    /// "complete" (artifact + manifest) or "incomplete".
    state: &'static str,
}

/// Runs under `host` (every host when `None`), by host, newest first.
async fn runs(o: &dyn Backend, host: Option<&str>) -> anyhow::Result<Vec<RemoteRun>> {
    let mut out: Vec<RemoteRun> = o
        .list(host)
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|r| RemoteRun {
            modified: cutter_core::time::rfc3339(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(r.modified_unix).unwrap_or(0)),
            ),
            state: if r.complete { "complete" } else { "incomplete" },
            host: r.host,
            run_id: r.run_id,
            size_bytes: r.size_bytes,
        })
        .collect();
    out.sort_by(|a, b| (&a.host, &b.modified, &a.run_id).cmp(&(&b.host, &a.modified, &b.run_id)));
    Ok(out)
}

/// The newest complete run of `host` in the bucket (by the time its
/// artifact was written); authenticated later, by whoever fetches it.
pub async fn newest_complete(o: &dyn Backend, host: &str) -> anyhow::Result<Option<RunId>> {
    let all = runs(o, Some(host)).await?;
    Ok(all
        .into_iter()
        .filter(|r| r.host == host && r.state == "complete")
        .max_by(|a, b| (&a.modified, &a.run_id).cmp(&(&b.modified, &b.run_id)))
        .and_then(|r| RunId::parse(&r.run_id).ok()))
}

/// `cutterctl list --offsite`: every host's runs in the bucket (listed, not
/// verified: `verify --offsite` authenticates).
pub async fn list(config: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let o = client(&config)?;
    let all = runs(o.as_ref(), None).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<32} {:>12} {:<20}  state (listed, not verified)",
        "host", "run_id", "size", "modified"
    );
    for r in &all {
        println!(
            "{:<24} {:<32} {:>12} {:<20}  {}",
            r.host, r.run_id, r.size_bytes, r.modified, r.state
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `verify --offsite` checks.
pub struct VerifyArgs<'a> {
    /// The daemon's config.
    pub config: &'a Path,
    /// One run, or every run of the host with `all`.
    pub run_id: Option<&'a str>,
    /// Every run.
    pub all: bool,
    /// The host whose copies to check (default: this one's).
    pub host: Option<&'a str>,
    /// Pinned signers.
    pub signer: &'a [PathBuf],
    /// The envelope's sha256.
    pub expect_sha256: Option<&'a str>,
    /// The envelope's offsite_version.
    pub version: Option<&'a str>,
}

/// `cutterctl verify --offsite`: re-downloads and re-hashes, streaming.
pub async fn verify(a: VerifyArgs<'_>) -> anyhow::Result<VerifyReply> {
    let config = Config::load(a.config)?;
    let o = client(&config)?;
    let signers = signers(a.signer, &config)?;
    let host = a.host.unwrap_or(o.host()).to_owned();
    cutter_core::config::check_host(&host).map_err(anyhow::Error::msg)?;
    let ids: Vec<String> = if a.all {
        runs(o.as_ref(), Some(&host))
            .await?
            .into_iter()
            .map(|r| r.run_id)
            .collect()
    } else {
        vec![a.run_id.unwrap_or_default().to_owned()]
    };
    let mut results = Vec::new();
    for run_id in ids {
        let id = RunId::parse(&run_id)?;
        // A good copy's warnings ride in `reason` (JSON monitoring sees
        // them too); the text output prints them after OK.
        let req = FetchRequest {
            host: &host,
            id: &id,
            signers: &signers,
            expect_sha256: a.expect_sha256,
            version: a.version,
        };
        let (ok, reason) = match o.fetch(req).await {
            Ok(f) => match a.expect_sha256 {
                Some(want) if !want.eq_ignore_ascii_case(&f.manifest.sha256) => (
                    false,
                    format!(
                        "the manifest says sha256 {}, the recorded envelope says {want}",
                        f.manifest.sha256
                    ),
                ),
                _ => (true, f.warnings.join("; ")),
            },
            Err(e) => (false, e),
        };
        results.push(VerifyResult {
            artifact_ref: o.artifact_url(&host, &id),
            ok,
            reason,
            run_id,
        });
    }
    Ok(VerifyReply { results })
}
