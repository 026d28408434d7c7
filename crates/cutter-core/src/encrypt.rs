//! Streaming OpenPGP encryption with sha256 of the bytes written.
//!
//! The message is always SEIPDv1 (with MDC), whatever the cert advertises:
//! GnuPG 2.2 cannot read SEIPDv2, and the operator's restore path is
//! `gpg --decrypt`. Compression, when on, is OpenPGP compression, so gpg
//! alone yields the SQL.

use std::io::{self, Write};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{CompressionAlgorithm, CompressionLevel, Features};
use sha2::{Digest, Sha256};

use crate::config::Compression;
use crate::key::{UsableKey, encryption_keys_of};

/// A writer that hashes and counts what it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the lowercase hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

/// How the plaintext is packed.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    /// Algorithm.
    pub compression: Compression,
    /// Deflate level 1..=9.
    pub level: u8,
}

/// Encrypts every chunk `plain` yields to every key in `keys` (their valid
/// encryption subkeys) into `sink`. Returns the plaintext byte count.
/// Chunks come by value and go back through `done`, so the caller can reuse
/// the buffers and nothing is copied on the way in.
pub fn encrypt<W: Write + Send + Sync>(
    plain: impl Iterator<Item = Vec<u8>>,
    mut done: impl FnMut(Vec<u8>),
    sink: &mut W,
    keys: &[UsableKey],
    packing: Packing,
) -> Result<u64, String> {
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let seipdv1_only = Features::empty().set_seipdv1();
    let mut recipients = Vec::new();
    for k in keys {
        let vc = k
            .cert
            .with_policy(&policy, now)
            .map_err(|e| format!("key …{} became invalid: {e}", k.fingerprint.tail()))?;
        for ka in encryption_keys_of(&vc) {
            recipients.push(Recipient::new(
                seipdv1_only.clone(),
                openpgp::KeyHandle::from(ka.key().keyid()),
                ka.key(),
            ));
        }
    }
    let e = |what: &str, err: openpgp::anyhow::Error| format!("{what}: {err}");
    let message = Message::new(sink);
    let message = Encryptor::for_recipients(message, recipients)
        .build()
        .map_err(|err| e("setting up encryption", err))?;
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
    let mut message = LiteralWriter::new(message)
        .build()
        .map_err(|err| e("setting up the literal packet", err))?;
    let mut total = 0u64;
    for chunk in plain {
        message
            .write_all(&chunk)
            .map_err(|err| format!("writing the artifact: {err}"))?;
        total += chunk.len() as u64;
        done(chunk);
    }
    message
        .finalize()
        .map_err(|err| e("finishing the OpenPGP message", err))?;
    Ok(total)
}
