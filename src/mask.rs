//! Mask: sensitive payload fields redacted, hashed or encrypted right after
//! decode, before anything is ordered, stored, logged or dead-lettered.
//!
//! - `redact`: the value becomes `null`.
//! - `hash`: `"hmac-sha256:<64 hex digits>"`, HMAC-SHA256 under a secret key
//!   of the value (a string's UTF-8 bytes, any other value's compact JSON):
//!   equal values give equal hashes, so masked columns still join, and
//!   without the key a dictionary of likely values does not reverse them.
//! - `encrypt`: `"enc:v1:<key id>:<base64 of nonce (12 bytes) then
//!   ciphertext and tag>"`, AES-256-GCM of the value's compact JSON, no
//!   associated data; the key id names the key for rotation.
//!
//! Masking is idempotent: a value already in the masked form (a hash of the
//! right shape, a ciphertext this key decrypts) is left as it is, so a
//! masked dead letter replayed into its topic is not masked twice.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::decode::extract::FieldPath;

const HASH_PREFIX: &str = "hmac-sha256:";
const ENCRYPTED_PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// `[mask]`: which payload fields are masked, and the keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// `[[mask.fields]]`: a dotted path and what is done to its value.
    #[serde(default)]
    pub fields: Vec<FieldRule>,
    /// The HMAC key of `hash` (any length; 32 random bytes or more).
    #[serde(default)]
    pub hash_key: Option<Secret>,
    /// The AES-256 key of `encrypt`: 32 bytes, as 64 hex digits or base64.
    #[serde(default)]
    pub encryption_key: Option<Secret>,
    /// The id written with each ciphertext, naming `encryption_key`.
    #[serde(default)]
    pub encryption_key_id: Option<String>,
}

/// One masked field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub path: FieldPath,
    pub action: Action,
}

/// What is done to a masked field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Redact,
    Hash,
    Encrypt,
}

/// Where a key comes from: an environment variable or a file (never inline,
/// so it is not in the configuration file nor in `ordo check`'s output).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Names where the secret comes from, never its value.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl Secret {
    /// The secret's bytes (a file's trailing newline dropped); `Err` says
    /// what is wrong without the value.
    fn read(&self) -> Result<Vec<u8>, String> {
        let text = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            _ => return Err("give exactly one of `env` or `file`".into()),
        };
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return Err("is empty".into());
        }
        Ok(text.as_bytes().to_vec())
    }

    fn resolve_path(&mut self, base: &Path) {
        if let Some(f) = self.file.as_mut().filter(|f| f.is_relative()) {
            *f = base.join(&*f);
        }
    }
}

impl MaskConfig {
    /// Checks the section (and reads its keys): the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        Masker::new(self).map(drop)
    }

    /// Makes the keys' relative file paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for s in [&mut self.hash_key, &mut self.encryption_key]
            .into_iter()
            .flatten()
        {
            s.resolve_path(base);
        }
    }

    /// What is done at `path`, if it is masked.
    pub fn action_at(&self, path: &FieldPath) -> Option<Action> {
        self.fields
            .iter()
            .find(|r| &r.path == path)
            .map(|r| r.action)
    }
}

/// A masked value could not be produced; names the field, never its value.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("payload is not a JSON document to mask: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("cannot encrypt field `{0}`")]
    Encrypt(String),
}

/// Masks payloads as `[mask]` says.
pub struct Masker {
    rules: Vec<(FieldPath, Action)>,
    hash_key: Option<Vec<u8>>,
    cipher: Option<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("rules", &self.rules)
            .field("encryption_key_id", &self.cipher.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// The masker `[mask]` describes, its keys read; `None` when nothing is
    /// masked. Errors name the key (in full) and why, never a key's value.
    pub fn new(config: &MaskConfig) -> Result<Option<Masker>, (String, String)> {
        let bad = |k: &str, why: String| (format!("mask.{k}"), why);
        if config.fields.is_empty() {
            return Ok(None);
        }
        for (i, r) in config.fields.iter().enumerate() {
            if config.fields[..i].iter().any(|o| o.path == r.path) {
                return Err(bad(
                    &format!("fields[{i}].path"),
                    format!("`{}` is masked twice", r.path),
                ));
            }
        }
        let needs = |a: Action| config.fields.iter().any(|r| r.action == a);
        let hash_key = match (&config.hash_key, needs(Action::Hash)) {
            (Some(s), true) => Some(s.read().map_err(|why| bad("hash_key", why))?),
            (None, true) => {
                return Err(bad(
                    "hash_key",
                    "required by a `hash` field: { env = \"VAR\" } or { file = \"path\" }".into(),
                ))
            }
            (_, false) => None,
        };
        let cipher = match (&config.encryption_key, needs(Action::Encrypt)) {
            (Some(s), true) => {
                let id = config
                    .encryption_key_id
                    .clone()
                    .filter(|id| !id.is_empty() && !id.contains(':'))
                    .ok_or_else(|| {
                        bad(
                            "encryption_key_id",
                            "required by an `encrypt` field: a name for the key, without `:`"
                                .into(),
                        )
                    })?;
                let key = aes_key(&s.read().map_err(|why| bad("encryption_key", why))?)
                    .map_err(|why| bad("encryption_key", why))?;
                Some((id, Aes256Gcm::new(&key.into())))
            }
            (None, true) => {
                return Err(bad(
                    "encryption_key",
                    "required by an `encrypt` field: { env = \"VAR\" } or { file = \"path\" }"
                        .into(),
                ))
            }
            (_, false) => None,
        };
        Ok(Some(Masker {
            rules: config
                .fields
                .iter()
                .map(|r| (r.path.clone(), r.action))
                .collect(),
            hash_key,
            cipher,
        }))
    }

    /// The payload's JSON with every masked field present replaced.
    pub fn mask(&self, json: &str) -> Result<String, MaskError> {
        let mut doc: Value = serde_json::from_str(json).map_err(MaskError::NotJson)?;
        for (path, action) in &self.rules {
            if let Some(v) = at_mut(&mut doc, path) {
                *v = self.masked(path, *action, v)?;
            }
        }
        Ok(doc.to_string())
    }

    /// A key read from a hashed field, hashed as the field is (so the
    /// stored key joins with the masked payload).
    pub fn hash_text(&self, text: &str) -> String {
        self.hash(text.as_bytes())
    }

    fn masked(&self, path: &FieldPath, action: Action, v: &Value) -> Result<Value, MaskError> {
        Ok(match action {
            Action::Redact => Value::Null,
            Action::Hash => match v {
                Value::String(s) if is_hash(s) => v.clone(),
                Value::String(s) => Value::String(self.hash(s.as_bytes())),
                other => Value::String(self.hash(other.to_string().as_bytes())),
            },
            Action::Encrypt => match v {
                Value::String(s) if self.decrypt(s).is_some() => v.clone(),
                other => Value::String(
                    self.encrypt(other.to_string().as_bytes())
                        .ok_or_else(|| MaskError::Encrypt(path.to_string()))?,
                ),
            },
        })
    }

    fn hash(&self, bytes: &[u8]) -> String {
        let key = self.hash_key.as_deref().unwrap_or_default();
        let Ok(mut mac) = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) else {
            // HMAC takes keys of any length; unreachable.
            return format!("{HASH_PREFIX}?");
        };
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
        out.push_str(HASH_PREFIX);
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn encrypt(&self, plaintext: &[u8]) -> Option<String> {
        let (id, cipher) = self.cipher.as_ref()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = cipher.encrypt(&Nonce::from(nonce), plaintext).ok()?;
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        Some(format!(
            "{ENCRYPTED_PREFIX}{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    /// The plaintext of a value this masker encrypted (`None` otherwise).
    pub fn decrypt(&self, text: &str) -> Option<Vec<u8>> {
        let (id, cipher) = self.cipher.as_ref()?;
        let rest = text.strip_prefix(ENCRYPTED_PREFIX)?;
        let (got_id, blob) = rest.split_once(':')?;
        if got_id != id {
            return None;
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .ok()?;
        if blob.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        cipher.decrypt(&nonce, sealed).ok()
    }
}

/// Whether `s` has a hash's shape: the prefix and 64 lowercase hex digits.
fn is_hash(s: &str) -> bool {
    s.strip_prefix(HASH_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A 32-byte AES key given as 64 hex digits or base64.
fn aes_key(text: &[u8]) -> Result<[u8; 32], String> {
    let text = std::str::from_utf8(text).map_err(|_| "is not text (hex or base64)".to_string())?;
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "is not hex".to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is neither 64 hex digits nor base64".to_string())?
    };
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("holds {len} bytes; AES-256 needs 32 (64 hex digits or base64)"))
}

/// The value at `path`, if the document has one there.
fn at_mut<'a>(doc: &'a mut Value, path: &FieldPath) -> Option<&'a mut Value> {
    path.0
        .iter()
        .try_fold(doc, |v, segment| v.as_object_mut()?.get_mut(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn config(rules: &[(&str, Action)]) -> (MaskConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash"), "a-hash-key-of-some-length\n").unwrap();
        std::fs::write(dir.path().join("aes"), KEY_HEX).unwrap();
        let c = MaskConfig {
            fields: rules
                .iter()
                .map(|(p, a)| FieldRule {
                    path: p.parse().unwrap(),
                    action: *a,
                })
                .collect(),
            hash_key: Some(Secret {
                env: None,
                file: Some(dir.path().join("hash")),
            }),
            encryption_key: Some(Secret {
                env: None,
                file: Some(dir.path().join("aes")),
            }),
            encryption_key_id: Some("k1".into()),
        };
        (c, dir)
    }

    #[test]
    fn fields_are_redacted_hashed_and_encrypted_and_others_kept() {
        let (c, _dir) = config(&[
            ("customer.ssn", Action::Redact),
            ("customer.email", Action::Hash),
            ("customer.card", Action::Encrypt),
            ("absent.field", Action::Hash),
        ]);
        let m = Masker::new(&c).unwrap().unwrap();
        let doc = r#"{"id":7,"customer":{"ssn":"123-45-6789","email":"a@example.com","card":{"n":"4111"}},"amount":1.5}"#;
        let out: Value = serde_json::from_str(&m.mask(doc).unwrap()).unwrap();
        assert_eq!(out["id"], 7);
        assert_eq!(out["amount"], 1.5);
        assert_eq!(out["customer"]["ssn"], Value::Null);
        // The HMAC of the string's bytes under the key, in hex.
        let mut mac =
            <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(b"a-hash-key-of-some-length").unwrap();
        mac.update(b"a@example.com");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(out["customer"]["email"], format!("hmac-sha256:{hex}"));
        assert_eq!(m.hash_text("a@example.com"), format!("hmac-sha256:{hex}"));
        let card = out["customer"]["card"].as_str().unwrap();
        assert!(card.starts_with("enc:v1:k1:"), "{card}");
        assert_eq!(m.decrypt(card).unwrap(), br#"{"n":"4111"}"#);
        assert!(out.get("absent").is_none());
        let text = m.mask(doc).unwrap();
        for clear in ["123-45-6789", "a@example.com", "4111"] {
            assert!(!text.contains(clear), "{text}");
        }
    }

    #[test]
    fn masking_twice_changes_nothing_and_hashes_are_stable() {
        let (c, _dir) = config(&[("e", Action::Hash), ("c", Action::Encrypt)]);
        let m = Masker::new(&c).unwrap().unwrap();
        let once = m.mask(r#"{"e":"x@y","c":5}"#).unwrap();
        assert_eq!(m.mask(&once).unwrap(), once);
        // A fresh masker with the same key hashes the same (restarts, replicas).
        let again = Masker::new(&c).unwrap().unwrap();
        let v1: Value = serde_json::from_str(&once).unwrap();
        let v2: Value = serde_json::from_str(&again.mask(r#"{"e":"x@y","c":5}"#).unwrap()).unwrap();
        assert_eq!(v1["e"], v2["e"]);
        assert_ne!(v1["c"], v2["c"], "a fresh nonce per encryption");
        assert_eq!(again.decrypt(v1["c"].as_str().unwrap()).unwrap(), b"5");
        // A value dressed as a ciphertext of another key is encrypted.
        let forged = m.mask(r#"{"c":"enc:v1:other:AAAA"}"#).unwrap();
        let v: Value = serde_json::from_str(&forged).unwrap();
        assert_eq!(
            m.decrypt(v["c"].as_str().unwrap()).unwrap(),
            br#""enc:v1:other:AAAA""#
        );
    }

    #[test]
    fn bad_keys_are_named_without_their_value() {
        let (mut c, dir) = config(&[("c", Action::Encrypt)]);
        std::fs::write(dir.path().join("aes"), "c2hvcnQta2V5LXNlY3JldA==").unwrap();
        let (key, why) = Masker::new(&c).unwrap_err();
        assert_eq!(key, "mask.encryption_key");
        assert!(why.contains("holds 16 bytes"), "{why}");
        assert!(!why.contains("c2hvcnQ"), "{why}");
        c.encryption_key_id = None;
        std::fs::write(dir.path().join("aes"), KEY_HEX).unwrap();
        assert_eq!(Masker::new(&c).unwrap_err().0, "mask.encryption_key_id");
        let (mut c, _dir) = config(&[("e", Action::Hash)]);
        c.hash_key = Some(Secret {
            env: Some("ORDO_TEST_NO_SUCH_VARIABLE".into()),
            file: None,
        });
        let (key, why) = Masker::new(&c).unwrap_err();
        assert_eq!(key, "mask.hash_key");
        assert!(
            why.contains("ORDO_TEST_NO_SUCH_VARIABLE is not set"),
            "{why}"
        );
        c.hash_key = None;
        assert_eq!(Masker::new(&c).unwrap_err().0, "mask.hash_key");
        let (c, _dir) = config(&[("e", Action::Hash), ("e", Action::Redact)]);
        assert!(Masker::new(&c).unwrap_err().1.contains("masked twice"));
        assert!(Masker::new(&MaskConfig::default()).unwrap().is_none());
    }
}
