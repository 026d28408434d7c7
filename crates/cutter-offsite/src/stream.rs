//! The upload that runs while the dump does (`required` mode).
//!
//! The backup's writer cuts the ciphertext into parts as it writes them
//! (each part's sha256 computed in the same pass as the artifact's own,
//! `cutter_core::encrypt::HashingWriter`) and hands each over once it is
//! in the file. A task here sends them, at most two at a time, read back
//! from the same open file (never a path) and hashed as they go out, so
//! what was sent is what was hashed. The multipart upload is created with
//! the first part; an artifact smaller than one part is sent whole after
//! the commit, as a committed run always was.
//!
//! After the local commit, [`Streamed`]'s `finish` completes the object,
//! then sends the signature and the manifest, then HEADs what it made. A
//! failed or aborted backup aborts the multipart upload, so no incomplete
//! upload is left behind; a failed upload leaves the local run alone.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_s3::types::CompletedPart;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use cutter_core::manifest::Manifest;
use cutter_core::offsite::{BoxFuture, Part, PartPlan, Streaming, Uploaded};
use cutter_core::runid::RunId;
use cutter_core::signer::Cert;
use cutter_core::store::{ARTIFACT_SUFFIX, Store};

use crate::S3;
use crate::s3::{Retention, Source};

/// At most this many parts are on the wire at once.
const IN_FLIGHT: usize = 2;

/// What the sending task leaves for `finish`.
struct Sent {
    /// `None` when no part was cut (a small artifact).
    upload: Option<Multipart>,
    retention: Option<Retention>,
}

/// A multipart upload whose parts are all sent.
struct Multipart {
    upload_id: String,
    /// (part, its sha256), by part number.
    parts: Vec<(CompletedPart, Part)>,
}

/// The multipart upload's id once it exists, until it is completed or
/// aborted: whoever ends the upload (the task, `finish`, `abort`) can
/// abort it, even after the task panicked.
type Open = Arc<Mutex<Option<String>>>;

/// A streamed upload in progress. `stop` is declared (so dropped) before
/// `plan`: a `Streamed` dropped without `finish` or `abort` makes the task
/// abort, not complete, what it sent.
pub(crate) struct Streamed {
    stop: watch::Sender<bool>,
    s3: S3,
    id: RunId,
    plan: PartPlan,
    open: Open,
    task: tokio::task::JoinHandle<Result<Sent, String>>,
    started: Instant,
}

impl Streamed {
    /// Starts the sending task for run `id`, whose artifact is written to `file`.
    pub(crate) fn start(s3: S3, id: RunId, file: File) -> Self {
        let (to, parts) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let plan = PartPlan {
            base: s3.config.part_size_mib << 20,
            to,
        };
        let key = s3.key(&s3.host, &id, ARTIFACT_SUFFIX);
        let open = Open::default();
        let task = tokio::spawn(send(
            s3.clone(),
            key,
            Source::new(file),
            (parts, stopped),
            Arc::clone(&open),
        ));
        Self {
            stop,
            s3,
            id,
            plan,
            open,
            task,
            started: Instant::now(),
        }
    }
}

/// Sends parts as they arrive until the writer hangs up; on any error, or
/// when told to stop, aborts the multipart upload it made.
async fn send(
    s3: S3,
    key: String,
    source: Source,
    (mut parts, mut stopped): (mpsc::UnboundedReceiver<Part>, watch::Receiver<bool>),
    open: Open,
) -> Result<Sent, String> {
    let mut upload: Option<String> = None;
    let mut retention = None;
    let mut flying: JoinSet<Result<(CompletedPart, Part), String>> = JoinSet::new();
    let mut done = Vec::new();
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                biased;
                // A dropped sender (the backup is gone) stops us too.
                r = stopped.changed() => {
                    if r.is_err() || *stopped.borrow() {
                        return Err("the backup failed; the upload was aborted".to_owned());
                    }
                }
                Some(joined) = flying.join_next(), if !flying.is_empty() => {
                    done.push(joined.map_err(|e| format!("a part upload task failed: {e}"))??);
                }
                next = parts.recv(), if flying.len() < IN_FLIGHT => {
                    let Some(part) = next else { break };
                    let id = match &upload {
                        Some(id) => id.clone(),
                        None => {
                            retention = s3.bucket.retention().await?;
                            let id = s3.bucket.create_multipart(&key, None, retention.as_ref()).await?;
                            upload = Some(id.clone());
                            *lock(&open) = Some(id.clone());
                            id
                        }
                    };
                    let (s3, key, source) = (s3.clone(), key.clone(), source.clone());
                    flying.spawn(async move {
                        let number = i32::try_from(part.number)
                            .map_err(|_| format!("part number {} is out of range", part.number))?;
                        let sent = s3
                            .bucket
                            .upload_part(&key, &id, number, (&source, part.offset, part.len), &part.sha256)
                            .await?;
                        Ok((sent, part))
                    });
                }
            }
        }
        while let Some(joined) = flying.join_next().await {
            done.push(joined.map_err(|e| format!("a part upload task failed: {e}"))??);
        }
        Ok(())
    }
    .await;
    match (result, upload) {
        (Ok(()), upload) => {
            done.sort_by_key(|(_, p)| p.number);
            Ok(Sent {
                upload: upload.map(|upload_id| Multipart {
                    upload_id,
                    parts: done,
                }),
                retention,
            })
        }
        (Err(e), Some(upload_id)) => {
            flying.shutdown().await;
            s3.bucket.abort_multipart(&key, &upload_id).await;
            *lock(&open) = None;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

impl Streaming for Streamed {
    fn parts(&self) -> PartPlan {
        self.plan.clone()
    }

    fn finish<'a>(
        self: Box<Self>,
        store: &'a Store,
        manifest: &'a Manifest,
        own: Option<&'a Cert>,
    ) -> BoxFuture<'a, Result<Uploaded, String>> {
        Box::pin(async move {
            let Self {
                stop,
                s3,
                id,
                plan,
                open,
                task,
                started,
            } = *self;
            drop(plan);
            let committed = Instant::now();
            let key = s3.key(&s3.host, &id, ARTIFACT_SUFFIX);
            let sent = match task.await {
                Ok(sent) => sent?,
                Err(e) => {
                    let left = lock(&open).take();
                    if let Some(upload_id) = left {
                        s3.bucket.abort_multipart(&key, &upload_id).await;
                    }
                    return Err(format!("the upload task failed: {e}"));
                }
            };
            drop(stop);
            let Some(multipart) = sent.upload else {
                // Smaller than one part: sent whole, from the committed run.
                return s3.upload(store, &id, own, Some(manifest)).await;
            };
            let completed = async {
                let local = s3.local(store, &id, own, Some(manifest))?;
                check_parts(&multipart.parts, manifest.size_bytes)?;
                let digests: Vec<[u8; 32]> =
                    multipart.parts.iter().map(|(_, p)| p.sha256).collect();
                let parts = multipart.parts.into_iter().map(|(c, _)| c).collect();
                Ok::<_, String>((local, parts, digests))
            }
            .await;
            let (local, parts, digests) = match completed {
                Ok(c) => c,
                Err(e) => {
                    s3.bucket.abort_multipart(&key, &multipart.upload_id).await;
                    return Err(e);
                }
            };
            let up = match s3
                .bucket
                .complete_multipart(&key, &multipart.upload_id, parts, &digests)
                .await
            {
                Ok(up) => up,
                Err(e) => {
                    s3.bucket.abort_multipart(&key, &multipart.upload_id).await;
                    return Err(e);
                }
            };
            let n = digests.len();
            let up = s3
                .complete(&local, &up, sent.retention.as_ref(), started)
                .await?;
            let after_commit_ms =
                u64::try_from(committed.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(
                run_id = %id,
                parts = n,
                after_commit_ms,
                "streamed upload of run_id={id} ended {after_commit_ms} ms after the commit ({n} parts)"
            );
            Ok(up)
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Self {
            stop,
            s3,
            id,
            open,
            task,
            ..
        } = *self;
        Box::pin(async move {
            let _ = stop.send(true);
            // Whatever the task made of the stop (it aborts what it made
            // on an error; every part may have been sent before it saw the
            // stop; it may have panicked), what is still open is aborted.
            let _ = task.await;
            let left = lock(&open).take();
            if let Some(upload_id) = left {
                let key = s3.key(&s3.host, &id, ARTIFACT_SUFFIX);
                s3.bucket.abort_multipart(&key, &upload_id).await;
            }
        })
    }
}

fn lock(open: &Open) -> std::sync::MutexGuard<'_, Option<String>> {
    open.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parts must tile the artifact: numbered 1..=N, each starting where
/// the last ended, ending at its size.
fn check_parts(parts: &[(CompletedPart, Part)], size: u64) -> Result<(), String> {
    let mut at = 0;
    for (i, (_, p)) in parts.iter().enumerate() {
        if usize::try_from(p.number).ok() != Some(i + 1) || p.offset != at {
            return Err(format!(
                "part {} does not follow part {i} (offset {}, expected {at}); the upload was aborted",
                p.number, p.offset
            ));
        }
        at += p.len;
    }
    if at != size {
        return Err(format!(
            "the parts sent hold {at} bytes, the artifact has {size}; the upload was aborted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, offset: u64, len: u64) -> (CompletedPart, Part) {
        (
            CompletedPart::builder().part_number(1).build(),
            Part {
                number,
                offset,
                len,
                sha256: [0; 32],
            },
        )
    }

    #[test]
    fn parts_must_tile_the_artifact() {
        assert!(check_parts(&[part(1, 0, 5), part(2, 5, 3)], 8).is_ok());
        assert!(check_parts(&[part(1, 0, 5), part(2, 5, 3)], 9).is_err());
        assert!(check_parts(&[part(1, 0, 5), part(3, 5, 3)], 8).is_err());
        assert!(check_parts(&[part(1, 0, 5), part(2, 4, 4)], 8).is_err());
        assert!(check_parts(&[], 0).is_ok());
    }
}
