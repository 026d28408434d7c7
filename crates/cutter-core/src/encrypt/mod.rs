//! Streaming OpenPGP encryption with sha256 of the bytes written.
//!
//! The message is always SEIPDv1 (with MDC), whatever the cert advertises:
//! GnuPG 2.2 cannot read SEIPDv2, and the operator's restore path is
//! `gpg --decrypt`. Compression, when on, is OpenPGP compression, so gpg
//! alone yields the SQL.
//!
//! Two writers make the same format behind [`encrypt`]: [`seipd`] (the
//! default: OpenSSL's AES-CFB and plain SHA-1 for the MDC, GnuPG's speed)
//! and [`sequoia`] (sequoia's own encryptor, whose SHA-1 always detects
//! collisions; kept for comparison and as a fallback,
//! `backup.encryptor = "sequoia"`).
//!
//! [`HashingWriter`] hashes the ciphertext as it is written and, for a
//! streamed offsite upload, cuts it into parts hashed in the same pass.

mod framing;
pub mod seipd;
pub mod sequoia;

use std::io::{self, Write};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Compressor, Message};
use openpgp::types::{CompressionAlgorithm, CompressionLevel};
use sha2::{Digest, Sha256};

use crate::config::{Compression, Encryptor};
use crate::key::{UsableKey, encryption_keys_of};
use crate::offsite::{Part, PartPlan};

/// A writer that hashes and counts what it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    failed: Option<io::ErrorKind>,
    cutter: Option<Cutter>,
}

/// Cuts the bytes written into offsite parts, hashing each in the same
/// pass as the whole (see [`crate::offsite::PartPlan`]).
struct Cutter {
    plan: PartPlan,
    /// The part being filled (1-based), where it starts, what it holds.
    number: u32,
    start: u64,
    taken: u64,
    hash: Sha256,
}

/// The last, shorter part of a cut artifact, to hand over once the file
/// is flushed (see [`HashingWriter::last_part`]).
#[derive(Debug)]
pub struct LastPart {
    plan: PartPlan,
    part: Option<Part>,
}

impl LastPart {
    /// Hands the part over (if there is one) and hangs up: the uploader
    /// then knows every part.
    pub fn send(self) {
        if let Some(p) = self.part {
            let _ = self.plan.to.send(p);
        }
    }
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            failed: None,
            cutter: None,
        }
    }

    /// Also cuts what passes into parts for a streamed upload: each full
    /// part is flushed to `inner`, then handed to `plan.to`.
    pub fn cutting(mut self, plan: Option<PartPlan>) -> Self {
        self.cutter = plan.map(|plan| Cutter {
            plan,
            number: 1,
            start: 0,
            taken: 0,
            hash: Sha256::new(),
        });
        self
    }

    /// The kind of the first write error, if a write failed (the encryptor
    /// reports errors as text; this keeps "disk full" recognisable).
    pub fn write_error(&self) -> Option<io::ErrorKind> {
        self.failed
    }

    /// The last part, once everything is written: the bytes after the last
    /// full part, when at least one full part was cut (a smaller artifact
    /// is sent whole after the commit). Send it after flushing the file.
    pub fn last_part(&mut self) -> Option<LastPart> {
        let c = self.cutter.take()?;
        let part = (c.number > 1 && c.taken > 0).then(|| Part {
            number: c.number,
            offset: c.start,
            len: c.taken,
            sha256: c.hash.finalize().into(),
        });
        Some(LastPart { plan: c.plan, part })
    }

    /// The inner writer, the lowercase hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }

    /// Feeds `written` to the part being filled, cutting full parts.
    fn cut(&mut self, mut written: &[u8]) -> io::Result<()> {
        let Some(c) = self.cutter.as_mut() else {
            return Ok(());
        };
        while !written.is_empty() {
            let room = c.plan.size_of(c.number) - c.taken;
            let take = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(written.len());
            c.hash.update(&written[..take]);
            c.taken += take as u64;
            written = &written[take..];
            if c.taken == c.plan.size_of(c.number) {
                // The part must be in the file before the uploader reads it.
                self.inner
                    .flush()
                    .inspect_err(|e| _ = self.failed.get_or_insert(e.kind()))?;
                let part = Part {
                    number: c.number,
                    offset: c.start,
                    len: c.taken,
                    sha256: std::mem::take(&mut c.hash).finalize().into(),
                };
                // A gone uploader (it failed) does not stop the local backup.
                let _ = c.plan.to.send(part);
                c.number += 1;
                c.start += c.taken;
                c.taken = 0;
            }
        }
        Ok(())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(buf)
            .inspect_err(|e| _ = self.failed.get_or_insert(e.kind()))?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.cut(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .inspect_err(|e| _ = self.failed.get_or_insert(e.kind()))
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// How the plaintext is packed, and by which writer.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    /// Algorithm.
    pub compression: Compression,
    /// Deflate level 1..=9.
    pub level: u8,
    /// Which SEIPDv1 writer.
    pub encryptor: Encryptor,
}

/// One encryption key a PKESK packet is made for.
pub struct Target<'a> {
    /// The (sub)key.
    pub key: &'a Key<PublicParts, UnspecifiedRole>,
}

/// Encrypts every chunk `plain` yields to every key in `keys` (their valid
/// encryption subkeys) into `sink`. Returns the plaintext byte count.
/// Chunks come by value and go back through `done`, so the caller can reuse
/// the buffers and nothing is copied on the way in.
pub fn encrypt<W: Write + Send + Sync>(
    plain: impl Iterator<Item = Vec<u8>>,
    done: impl FnMut(Vec<u8>),
    sink: &mut W,
    keys: &[UsableKey],
    packing: Packing,
) -> Result<u64, String> {
    encrypt_with(plain, done, sink, keys, packing, None)
}

/// [`encrypt`] with a given session key (tests compare the two writers).
pub fn encrypt_with<W: Write + Send + Sync>(
    plain: impl Iterator<Item = Vec<u8>>,
    done: impl FnMut(Vec<u8>),
    sink: &mut W,
    keys: &[UsableKey],
    packing: Packing,
    session_key: Option<SessionKey>,
) -> Result<u64, String> {
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let mut valid = Vec::new();
    for k in keys {
        valid.push(
            k.cert
                .with_policy(&policy, now)
                .map_err(|e| format!("key {} became invalid: {e}", k.fingerprint))?,
        );
    }
    let amalgamations: Vec<_> = valid.iter().flat_map(encryption_keys_of).collect();
    let targets: Vec<Target<'_>> = amalgamations
        .iter()
        .map(|ka| Target { key: ka.key() })
        .collect();
    if targets.is_empty() {
        return Err("no encryption-capable key to encrypt to".into());
    }
    match packing.encryptor {
        Encryptor::Seipdv1 => seipd::encrypt(plain, done, sink, &targets, packing, session_key),
        Encryptor::Sequoia => sequoia::encrypt(plain, done, sink, &targets, packing, session_key),
    }
}

/// The literal data packet's tag.
const LITERAL_TAG: u8 = 11;
/// Its body header as sequoia's `LiteralWriter` writes it: binary format
/// (`b`), no file name, no date.
const LITERAL_HEADER: [u8; 6] = [b'b', 0, 0, 0, 0, 0];

/// Compression (if any) and the literal packet over `message`, fed with
/// `plain`; finalizes `message`. Returns the plaintext byte count.
///
/// The literal packet is framed by [`framing::Partial`], which passes each
/// chunk on where it lies (sequoia's `LiteralWriter` copied every chunk
/// twice into its 4 MiB buffer first).
fn write_literal(
    message: Message<'_>,
    plain: impl Iterator<Item = Vec<u8>>,
    mut done: impl FnMut(Vec<u8>),
    packing: Packing,
) -> Result<u64, String> {
    let e = |what: &str, err: openpgp::anyhow::Error| format!("{what}: {err}");
    let message = match packing.compression {
        Compression::None => message,
        algo => Compressor::new(message)
            .algo(match algo {
                Compression::Zlib => CompressionAlgorithm::Zlib,
                _ => CompressionAlgorithm::Zip,
            })
            .level(CompressionLevel::new(packing.level).map_err(|err| e("compression level", err))?)
            .build()
            .map_err(|err| e("setting up compression", err))?,
    };
    let io = |err: io::Error| format!("writing the artifact: {err}");
    let mut literal = framing::Partial::new(message, LITERAL_TAG).map_err(io)?;
    literal.write_all(&LITERAL_HEADER).map_err(io)?;
    let mut total = 0u64;
    for chunk in plain {
        literal.write_all(&chunk).map_err(io)?;
        total += chunk.len() as u64;
        done(chunk);
    }
    literal
        .finish()
        .map_err(io)?
        .finalize()
        .map_err(|err| e("finishing the OpenPGP message", err))?;
    Ok(total)
}
