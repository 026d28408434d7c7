//! SEIPDv1 written by sequoia's own `Encryptor` (collision-detecting SHA-1
//! for the MDC): `backup.encryptor = "sequoia"`. Each recipient is built
//! with features that only set SEIPDv1, so a cert advertising SEIPDv2 (keys
//! made by `sq`) cannot switch the format.

use std::io::Write;

use sequoia_openpgp as openpgp;

use openpgp::KeyHandle;
use openpgp::crypto::SessionKey;
use openpgp::serialize::stream::{Encryptor, Message, Recipient};
use openpgp::types::{Features, SymmetricAlgorithm};

use super::{Packing, Target, write_literal};

/// Encrypts `plain` to `targets` as one SEIPDv1 message into `sink`.
pub fn encrypt<W: Write + Send + Sync>(
    plain: impl Iterator<Item = Vec<u8>>,
    done: impl FnMut(Vec<u8>),
    sink: &mut W,
    targets: &[Target<'_>],
    packing: Packing,
    session_key: Option<SessionKey>,
) -> Result<u64, String> {
    let seipdv1_only = Features::empty().set_seipdv1();
    let recipients: Vec<Recipient<'_>> = targets
        .iter()
        .map(|t| Recipient::new(seipdv1_only.clone(), KeyHandle::from(t.key.keyid()), t.key))
        .collect();
    let e = |what: &str, err: openpgp::anyhow::Error| format!("{what}: {err}");
    let message = Message::new(sink);
    let encryptor = match session_key {
        Some(sk) => Encryptor::with_session_key(message, SymmetricAlgorithm::AES256, sk)
            .map_err(|err| e("setting up encryption", err))?
            .add_recipients(recipients),
        None => Encryptor::for_recipients(message, recipients)
            .symmetric_algo(SymmetricAlgorithm::AES256),
    };
    let message = encryptor
        .build()
        .map_err(|err| e("setting up encryption", err))?;
    write_literal(message, plain, done, packing)
}
