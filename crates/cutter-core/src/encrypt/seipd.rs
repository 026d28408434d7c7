//! SEIPDv1 (RFC 4880 §5.13, RFC 9580 §5.13.1) written with OpenSSL's AES-256
//! in CFB mode and OpenSSL's plain SHA-1 for the MDC.
//!
//! Sequoia computes every SHA-1 with collision detection. That protects a
//! *verifier* of signatures against crafted collisions; the MDC we *produce*
//! over our own plaintext has nothing to detect, and GnuPG computes it with
//! plain SHA-1 too. Sequoia still builds the PKESK packets and compression;
//! the SEIP and literal packets' partial-body framing is [`super::framing`]
//! (no copies on the way through).
//!
//! The packet body: version byte 1, then CFB-128 with an all-zero IV (no
//! resync) over 16 random bytes, their last two repeated, the plaintext
//! packets, and the MDC packet `D3 14` + SHA-1 of everything before it
//! (prefix, plaintext, `D3 14`).

use std::io::{self, Write};

use openssl::sha::Sha1;
use openssl::symm::{Cipher, Crypter, Mode};
use sequoia_openpgp as openpgp;

use openpgp::Packet;
use openpgp::crypto::SessionKey;
use openpgp::packet::pkesk::PKESK3;
use openpgp::serialize::Serialize;
use openpgp::serialize::stream::Message;
use openpgp::types::SymmetricAlgorithm;

use super::framing::Partial;
use super::{Packing, Target, write_literal};

/// The AES-256 block size.
const BLOCK: usize = 16;
/// Ciphertext buffered before it goes to the framing writer.
const OUT_CHUNK: usize = 64 * 1024;
/// The SEIP packet's tag.
const SEIP_TAG: u8 = 18;

/// Encrypts `plain` to `targets` as one SEIPDv1 message into `sink`.
pub fn encrypt<W: Write + Send + Sync>(
    plain: impl Iterator<Item = Vec<u8>>,
    done: impl FnMut(Vec<u8>),
    sink: &mut W,
    targets: &[Target<'_>],
    packing: Packing,
    session_key: Option<SessionKey>,
) -> Result<u64, String> {
    let e = |what: &str, err: openpgp::anyhow::Error| format!("{what}: {err}");
    // Made in sequoia's protected memory (zeroed when dropped).
    let sk = match session_key {
        Some(sk) => sk,
        None => SessionKey::new(32).map_err(|err| e("random session key", err))?,
    };
    let mut message = Message::new(sink);
    for t in targets {
        let mut pkesk = PKESK3::for_recipient(SymmetricAlgorithm::AES256, &sk, t.key)
            .map_err(|err| e("encrypting the session key", err))?;
        pkesk.set_recipient(Some(t.key.keyid()));
        Packet::PKESK(pkesk.into())
            .serialize(&mut message)
            .map_err(|err| e("writing a PKESK packet", err))?;
    }
    let io = |err: io::Error| format!("writing the artifact: {err}");
    let mut framed = Partial::new(message, SEIP_TAG).map_err(io)?;
    framed.write_all(&[1]).map_err(io)?;
    let mut body =
        Seipd::new(&sk, framed).map_err(|err| format!("setting up AES-256-CFB: {err}"))?;
    let inner = Message::new(&mut body);
    let total = write_literal(inner, plain, done, packing)?;
    body.finish()
        .and_then(Partial::finish)
        .map_err(io)?
        .finalize()
        .map_err(|err| e("finishing the OpenPGP message", err))?;
    Ok(total)
}

/// The SEIPDv1 body writer: CFB encryption and the MDC's SHA-1 over what
/// passes through, into the framing writer.
struct Seipd<'a> {
    cipher: Crypter,
    sha1: Sha1,
    /// Ciphertext buffer: always `OUT_CHUNK + BLOCK` long (written once, not
    /// re-zeroed per write); `filled` bytes of it are pending.
    out: Vec<u8>,
    filled: usize,
    inner: Partial<Message<'a>>,
}

impl<'a> Seipd<'a> {
    fn new(sk: &SessionKey, inner: Partial<Message<'a>>) -> io::Result<Self> {
        let cipher = Crypter::new(
            Cipher::aes_256_cfb128(),
            Mode::Encrypt,
            sk,
            Some(&[0u8; BLOCK]),
        )
        .map_err(io::Error::other)?;
        let mut w = Self {
            cipher,
            sha1: Sha1::new(),
            out: vec![0; OUT_CHUNK + BLOCK],
            filled: 0,
            inner,
        };
        let mut prefix = [0u8; BLOCK + 2];
        openssl::rand::rand_bytes(&mut prefix[..BLOCK]).map_err(io::Error::other)?;
        prefix[BLOCK] = prefix[BLOCK - 2];
        prefix[BLOCK + 1] = prefix[BLOCK - 1];
        w.absorb(&prefix)?;
        Ok(w)
    }

    /// Hashes and encrypts `plain` into the output buffer, writing it on
    /// whenever it is full.
    fn absorb(&mut self, plain: &[u8]) -> io::Result<()> {
        self.sha1.update(plain);
        self.encrypt(plain)
    }

    /// Encrypts `plain` into the output buffer, in pieces that fit.
    fn encrypt(&mut self, mut plain: &[u8]) -> io::Result<()> {
        while !plain.is_empty() {
            let take = plain.len().min(OUT_CHUNK - self.filled);
            // OpenSSL wants room for a block more than the input.
            let n = self
                .cipher
                .update(
                    &plain[..take],
                    &mut self.out[self.filled..self.filled + take + BLOCK],
                )
                .map_err(io::Error::other)?;
            self.filled += n;
            plain = &plain[take..];
            if self.filled >= OUT_CHUNK {
                self.inner.write_all(&self.out[..self.filled])?;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes the MDC packet and returns the framing writer to finish.
    fn finish(mut self) -> io::Result<Partial<Message<'a>>> {
        const MDC_HEADER: [u8; 2] = [0xD3, 0x14];
        self.sha1.update(&MDC_HEADER);
        let digest = self.sha1.clone().finish();
        let mut mdc = [0u8; 22];
        mdc[..2].copy_from_slice(&MDC_HEADER);
        mdc[2..].copy_from_slice(&digest);
        self.encrypt(&mdc)?;
        let mut tail = [0u8; BLOCK];
        let n = self.cipher.finalize(&mut tail).map_err(io::Error::other)?;
        self.inner.write_all(&self.out[..self.filled])?;
        self.inner.write_all(&tail[..n])?;
        Ok(self.inner)
    }
}

impl Write for Seipd<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.absorb(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
