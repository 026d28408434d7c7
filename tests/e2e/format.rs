//! Proof that both SEIPDv1 writers (`seipdv1`, the default, and `sequoia`)
//! make the same format: over plaintext lengths at the block-size and
//! partial-body edges, GnuPG and sequoia both decrypt what each writes,
//! verify's structure check accepts it, one flipped byte is reported as a
//! modification by both, several recipients (cv25519 and RSA-4096) each
//! open it, and the two writers given one session key yield the same
//! plaintext.

use std::path::{Path, PathBuf};
use std::process::Output;

use cutter_core::config::{Compression, Encryptor, KeyConfig};
use cutter_core::decrypt::{Password, decrypt, read_secret_keys};
use cutter_core::encrypt::{Packing, encrypt, encrypt_with};
use cutter_core::key::{Fingerprint, UsableKey, load_cert, usable};
use cutter_core::manifest::{FORMAT, Manifest, Recipient};
use cutter_core::verify::check_structure;
use sequoia_openpgp::crypto::SessionKey;

use crate::harness::gpg::PASSPHRASE;
use crate::harness::{Gpg, KeyKind};

struct Keys {
    gpg: Gpg,
    work: tempfile::TempDir,
    usable: Vec<UsableKey>,
    /// Secret key files: [cv25519, rsa4096].
    secrets: Vec<PathBuf>,
}

fn keys() -> Keys {
    let gpg = Gpg::new();
    let work = tempfile::tempdir().expect("tempdir");
    let mut usable_keys = Vec::new();
    let mut secrets = Vec::new();
    for (kind, name) in [(KeyKind::Ed25519, "cv"), (KeyKind::Rsa4096, "rsa")] {
        let fpr = gpg.gen_key(kind, &format!("{name} <{name}@cutter.invalid>"));
        let public = work.path().join(format!("{name}.asc"));
        gpg.export_public(&fpr, &public);
        let secret = work.path().join(format!("{name}-secret.asc"));
        gpg.export_secret(&fpr, &secret);
        secrets.push(secret);
        let cfg = KeyConfig {
            cert_file: Some(public),
            ..KeyConfig::default()
        };
        let fpr = Fingerprint::parse(&fpr).expect("fingerprint");
        let loaded = load_cert(&cfg, &fpr).expect("cert");
        usable_keys.push(usable(&loaded, std::time::SystemTime::now()).expect("usable"));
    }
    Keys {
        gpg,
        work,
        usable: usable_keys,
        secrets,
    }
}

/// Deterministic bytes that do not compress away.
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn seal(keys: &[UsableKey], plain: &[u8], encryptor: Encryptor, sk: Option<SessionKey>) -> Vec<u8> {
    seal_packed(keys, plain, encryptor, Compression::None, sk)
}

fn seal_packed(
    keys: &[UsableKey],
    plain: &[u8],
    encryptor: Encryptor,
    compression: Compression,
    sk: Option<SessionKey>,
) -> Vec<u8> {
    // Odd chunk sizes, so the writers see writes that straddle blocks.
    let chunks: Vec<Vec<u8>> = plain.chunks(7919).map(<[u8]>::to_vec).collect();
    let mut out = Vec::new();
    let packing = Packing {
        compression,
        level: 2,
        encryptor,
    };
    let n = match sk {
        Some(sk) => encrypt_with(chunks.into_iter(), drop, &mut out, keys, packing, Some(sk)),
        None => encrypt(chunks.into_iter(), drop, &mut out, keys, packing),
    }
    .expect("encrypt");
    assert_eq!(n, plain.len() as u64);
    out
}

fn gpg_decrypt(k: &Keys, artifact: &[u8], name: &str) -> Output {
    let path = k.work.path().join(name);
    std::fs::write(&path, artifact).expect("write");
    k.gpg.try_decrypt(&path)
}

fn sequoia_decrypt(secret: &Path, artifact: &[u8]) -> Result<Vec<u8>, String> {
    let keys = read_secret_keys(secret)?;
    let mut out = Vec::new();
    decrypt(artifact, &keys, Some(Password::from(PASSPHRASE)), &mut out)?;
    Ok(out)
}

fn manifest_for(keys: &[UsableKey]) -> Manifest {
    Manifest {
        format: FORMAT,
        run_id: "format".into(),
        created_at: String::new(),
        artifact: "format.sql.gpg".into(),
        sha256: String::new(),
        size_bytes: 0,
        gpg_fpr: keys[0].fingerprint.as_str().to_owned(),
        recipients: keys
            .iter()
            .map(|k| Recipient {
                fingerprint: k.fingerprint.as_str().to_owned(),
                encryption_keys: k.encryption_keys.clone(),
            })
            .collect(),
        tables: Vec::new(),
        plaintext_bytes: 0,
        compression: "none".into(),
        server_version: String::new(),
        pg_dump_version: String::new(),
        producer: String::new(),
        duration_ms: 0,
        host: String::new(),
    }
}

const LENGTHS: [usize; 16] = [
    0,
    1,
    15,
    16,
    17,
    511,
    512,
    513,
    8191,
    8192,
    8193,
    65535,
    65536,
    65537,
    1 << 20,
    (1 << 20) + 1,
];

#[test]
fn both_writers_make_what_gnupg_and_sequoia_read_at_every_edge() {
    let k = keys();
    let manifest = manifest_for(&k.usable);
    for encryptor in [Encryptor::Seipdv1, Encryptor::Sequoia] {
        for (i, len) in LENGTHS.into_iter().enumerate() {
            let plain = plaintext(len, i as u64);
            let sealed = seal(&k.usable, &plain, encryptor, None);
            let what = format!("{encryptor:?} {len} bytes");
            let out = gpg_decrypt(&k, &sealed, "edge.gpg");
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == plain, "{what}: gpg's plaintext differs");
            // The second recipient (RSA-4096) opens it with sequoia.
            let opened = sequoia_decrypt(&k.secrets[1], &sealed).expect(&what);
            assert!(opened == plain, "{what}: sequoia's plaintext differs");
            check_structure(&sealed[..], &manifest).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        // The default packing (zip-2) at a few of the edges.
        for (i, len) in [0, 1, 8193, (1 << 20) + 1].into_iter().enumerate() {
            let plain = plaintext(len, 100 + i as u64);
            let sealed = seal_packed(&k.usable, &plain, encryptor, Compression::Zip, None);
            let what = format!("{encryptor:?} zip-2 {len} bytes");
            let out = gpg_decrypt(&k, &sealed, "zip.gpg");
            assert!(out.status.success() && out.stdout == plain, "{what}");
            let opened = sequoia_decrypt(&k.secrets[0], &sealed).expect(&what);
            assert!(opened == plain, "{what}: sequoia's plaintext differs");
        }
    }
}

#[test]
fn one_flipped_byte_is_a_modification_for_gnupg_and_sequoia() {
    let k = keys();
    let plain = plaintext(100_000, 7);
    for encryptor in [Encryptor::Seipdv1, Encryptor::Sequoia] {
        let sealed = seal(&k.usable, &plain, encryptor, None);
        for at in [sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            let what = format!("{encryptor:?}, byte {at} of {}", sealed.len());
            let out = gpg_decrypt(&k, &bad, "flipped.gpg");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: gpg accepted it");
            assert!(err.contains("manipulated"), "{what}: {err}");
            let e = sequoia_decrypt(&k.secrets[0], &bad).expect_err(&what);
            assert!(
                e.contains("manipulated") || e.contains("MDC"),
                "{what}: {e}"
            );
        }
    }
}

#[test]
fn the_two_writers_agree_given_one_session_key() {
    let k = keys();
    let plain = plaintext(300_000, 11);
    let sk = SessionKey::from(&[0x5a_u8; 32][..]);
    let ours = seal(&k.usable, &plain, Encryptor::Seipdv1, Some(sk.clone()));
    let theirs = seal(&k.usable, &plain, Encryptor::Sequoia, Some(sk));
    let session_key = |artifact: &[u8], name: &str| -> String {
        let path = k.work.path().join(name);
        std::fs::write(&path, artifact).expect("write");
        let out = k
            .gpg
            .cmd()
            .arg("--show-session-key")
            .arg("--decrypt")
            .arg(&path)
            .output()
            .expect("gpg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == plain, "{name}: plaintext differs");
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| l.contains("session key:"))
            .expect("gpg shows the session key")
            .to_owned()
    };
    assert_eq!(
        session_key(&ours, "ours.gpg"),
        session_key(&theirs, "theirs.gpg")
    );
    assert_eq!(
        sequoia_decrypt(&k.secrets[0], &ours).expect("ours"),
        sequoia_decrypt(&k.secrets[0], &theirs).expect("theirs")
    );
}
