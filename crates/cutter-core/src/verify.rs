//! Verifying an artifact without its private key: the manifest's signature
//! against the signers the operator pinned, the manifest naming this run,
//! the file's sha256 and size against the manifest (and against the
//! orchestrator's recorded envelope when given), then its OpenPGP structure
//! (who can decrypt it, and that it is SEIPDv1 so GnuPG 2.2 can).

use std::collections::BTreeSet;
use std::io::Read;

use sequoia_openpgp as openpgp;

use openpgp::Packet;
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::{Cert, Fingerprint, KeyID};

use crate::manifest::{Manifest, SignedManifest};
use crate::runid::RunId;
use crate::signer::verify_detached;
use crate::store::Store;

/// What an artifact must be anchored to before it is believed.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Signer certs the operator pinned; a manifest must carry a good
    /// signature by one of them.
    pub signers: Vec<Cert>,
    /// The sha256 the orchestrator recorded from the envelope, if known.
    pub expect_sha256: Option<String>,
}

/// Authenticates a manifest read from disk: a good signature by a pinned
/// signer, naming this run and this run's artifact file.
pub fn authenticate(
    id: &RunId,
    signed: &SignedManifest,
    signers: &[Cert],
) -> Result<Manifest, String> {
    let signature = signed
        .signature
        .as_deref()
        .ok_or_else(|| format!("{id}: the manifest is unsigned (no {id}.manifest.json.sig); it was not written by cutter-backupd"))?;
    verify_detached(&signed.bytes, signature, signers).map_err(|e| format!("{id}: {e}"))?;
    let m = &signed.manifest;
    if m.run_id != id.as_str() || m.artifact != format!("{id}{}", crate::store::ARTIFACT_SUFFIX) {
        return Err(format!("{id}: the signed manifest is for another run"));
    }
    Ok(m.clone())
}

/// Checks `id`'s artifact; `Err` says what is wrong, naming the file.
pub fn verify(store: &Store, id: &RunId, trust: &Trust) -> Result<Manifest, String> {
    let signed = store
        .read_manifest(id)
        .map_err(|e| format!("manifest unreadable: {e}"))?
        .ok_or_else(|| format!("no manifest {}", store.manifest_path(id).display()))?;
    let manifest = authenticate(id, &signed, &trust.signers)?;
    if let Some(want) = &trust.expect_sha256
        && !want.eq_ignore_ascii_case(&manifest.sha256)
    {
        return Err(format!(
            "{id}: the manifest says sha256 {}, the recorded envelope says {want}",
            manifest.sha256
        ));
    }
    let (sha, size) = store.hash_artifact(id).map_err(|e| e.to_string())?;
    manifest
        .check_bytes(&sha, size)
        .map_err(|e| format!("{}: {e}", store.artifact_path(id).display()))?;
    let file = store.open_artifact(id).map_err(|e| e.to_string())?;
    check_structure(file, &manifest)
        .map_err(|e| format!("{}: {e}", store.artifact_path(id).display()))?;
    Ok(manifest)
}

/// The message must be PKESKs for exactly the manifest's encryption keys,
/// then one SEIPDv1 packet.
pub fn check_structure(
    artifact: impl Read + Send + Sync,
    manifest: &Manifest,
) -> Result<(), String> {
    let expected: BTreeSet<KeyID> = manifest
        .recipients
        .iter()
        .flat_map(|r| &r.encryption_keys)
        .filter_map(|hex| Fingerprint::from_hex(hex).ok())
        .map(|f| KeyID::from(&f))
        .collect();
    let mut found = BTreeSet::new();
    let mut ppr =
        PacketParser::from_reader(artifact).map_err(|e| format!("not an OpenPGP message: {e}"))?;
    let mut seip_version = None;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                if let Some(h) = p.recipient() {
                    found.insert(KeyID::from(h));
                }
            }
            Packet::SEIP(s) => {
                seip_version = Some(s.version());
                break;
            }
            other => {
                return Err(format!(
                    "unexpected {} packet before the encrypted data",
                    other.tag()
                ));
            }
        }
        ppr = pp
            .next()
            .map_err(|e| format!("malformed OpenPGP packet: {e}"))?
            .1;
    }
    match seip_version {
        Some(1) => {}
        Some(v) => return Err(format!("encrypted as SEIPDv{v}; GnuPG 2.2 cannot read it")),
        None => return Err("no encrypted data packet".into()),
    }
    if found != expected {
        let show = |s: &BTreeSet<KeyID>| s.iter().map(KeyID::to_hex).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "encrypted to [{}], the manifest names [{}]",
            show(&found),
            show(&expected)
        ));
    }
    Ok(())
}
