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

/// A writer that hashes and counts what it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    failed: Option<io::ErrorKind>,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            failed: None,
        }
    }

    /// The kind of the first write error, if a write failed (the encryptor
    /// reports errors as text; this keeps "disk full" recognisable).
    pub fn write_error(&self) -> Option<io::ErrorKind> {
        self.failed
    }

    /// The inner writer, the lowercase hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
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
