//! Encryption of secret records at rest: XChaCha20-Poly1305 under keys the deployment provides.
//!
//! Keys are lines `KEY_ID:BASE64` (32 bytes each), from `ORCHESTRATOR_SECRET_KEYS_FILE` or,
//! inline and comma-separated, `ORCHESTRATOR_SECRET_KEYS`. The first key seals every write; every
//! key opens what it sealed, so rotation is: put a new key first, restart (the store seals every
//! secret again with it at start), then drop the old line. With neither set, a key file is
//! created with one new key, readable by its owner only, and a warning says to back it up.
//!
//! A sealed value records its key id and its random 24-byte nonce; the record's bucket and key
//! are authenticated with it, so a sealed record moved under another key does not open. No error
//! here quotes key material or plaintext.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::{Rng as _, TryRngCore as _};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

/// The variable naming the key file.
pub const SECRET_KEYS_FILE_ENV: &str = "ORCHESTRATOR_SECRET_KEYS_FILE";
/// The variable holding the keys themselves, comma-separated.
pub const SECRET_KEYS_ENV: &str = "ORCHESTRATOR_SECRET_KEYS";
/// The algorithm every sealed value names.
pub const ALGORITHM: &str = "xchacha20poly1305";
/// The length of a key, in bytes.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const MAX_KEY_ID_LEN: usize = 64;

/// Where the orchestrator gets the keys that seal secret values.
#[derive(Clone, Default, clap::Args)]
pub struct SecretKeysConfig {
    /// A file of keys, one `KEY_ID:BASE64` (32 bytes) a line; the first seals new writes, every
    /// one opens. Created with one new key when missing [default: operator-orchestrator/
    /// secret-keys under $XDG_STATE_HOME, else ~/.local/state].
    #[arg(long = "secret-keys-file", env = SECRET_KEYS_FILE_ENV, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// The keys inline, `KEY_ID:BASE64` comma-separated, first one sealing (instead of a file).
    #[arg(
        long = "secret-keys",
        env = SECRET_KEYS_ENV,
        value_name = "KEY_ID:BASE64,…",
        hide_env_values = true
    )]
    pub keys: Option<String>,
}

/// Never prints the inline keys.
impl fmt::Debug for SecretKeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeysConfig")
            .field("file", &self.file)
            .field(
                "keys",
                &self
                    .keys
                    .as_ref()
                    .map(|_| operator_contract::manifest::REDACTED),
            )
            .finish()
    }
}

/// Why the keys could not be had, or a sealed value not opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyringError {
    /// Both places to give keys are set.
    #[error("set {SECRET_KEYS_FILE_ENV} or {SECRET_KEYS_ENV}, not both")]
    BothSet,
    /// Neither is set and there is no home directory to keep a generated key in.
    #[error("no place to keep the secret key: set {SECRET_KEYS_FILE_ENV} or {SECRET_KEYS_ENV}")]
    NoPlace,
    /// The key file could not be read.
    #[error("cannot read the secret key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    /// A key file could not be created.
    #[error("cannot create the secret key file {path}: {reason}")]
    CannotCreate { path: String, reason: String },
    /// The keys' text has no key.
    #[error("{origin} holds no key: write one `KEY_ID:BASE64` line (32 random bytes)")]
    Empty { origin: String },
    /// One key line is wrong (its material is never quoted).
    #[error("{origin}, key {index}: {reason}")]
    BadKey {
        origin: String,
        index: usize,
        reason: String,
    },
    /// A sealed value names a key that is not configured.
    #[error("sealed with key '{key_id}', which is not among the configured keys ({known}): add it back after the current key")]
    UnknownKey { key_id: String, known: String },
    /// The key named by a sealed value does not open it.
    #[error("cannot be opened with key '{key_id}': the key is not the one it was sealed with, or the stored value was altered")]
    Undecryptable { key_id: String },
    /// A sealed value is not in the expected shape.
    #[error("not a sealed value: {0}")]
    Malformed(String),
}

/// One key: its id and cipher; the material is never printed.
struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The configured keys, the first one sealing.
pub struct SecretKeyring {
    keys: Vec<SecretKey>,
}

/// Key ids only.
impl fmt::Debug for SecretKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// A sealed value as stored: which key, the nonce, and ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sealed {
    pub algorithm: String,
    pub key_id: String,
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of the ciphertext followed by the 16-byte tag.
    pub ciphertext: String,
}

impl SecretKeyring {
    /// Parses keys from text: one `KEY_ID:BASE64` an entry, entries on lines or separated by
    /// commas; blank lines and `#` comments are skipped. `source` names the text in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<SecretKey> = Vec::new();
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let bad = |reason: String| KeyringError::BadKey {
                origin: source.to_string(),
                index: i + 1,
                reason,
            };
            let (id, material) = entry
                .split_once(':')
                .ok_or_else(|| bad("expected KEY_ID:BASE64".into()))?;
            let id = id.trim();
            if !is_key_id(id) {
                return Err(bad(format!(
                    "key id '{}' must be 1 to {MAX_KEY_ID_LEN} letters, digits, '.', '_' or '-'",
                    id.chars().take(MAX_KEY_ID_LEN).collect::<String>()
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(bad(format!("key id '{id}' is listed twice")));
            }
            let bytes = BASE64
                .decode(material.trim())
                .map_err(|_| bad(format!("key '{id}' is not base64")))?;
            if bytes.len() != KEY_BYTES {
                return Err(bad(format!(
                    "key '{id}' is {} bytes; it must be {KEY_BYTES}",
                    bytes.len()
                )));
            }
            keys.push(SecretKey {
                id: id.to_string(),
                cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty {
                origin: source.to_string(),
            });
        }
        Ok(Self { keys })
    }

    /// The keys as configured: inline, else from the file, else from a file created with one
    /// new key at the default place.
    pub fn load(config: &SecretKeysConfig) -> Result<Self, KeyringError> {
        let keyring = match (&config.keys, &config.file) {
            (Some(_), Some(_)) => return Err(KeyringError::BothSet),
            (Some(inline), None) => Self::parse(inline, SECRET_KEYS_ENV)?,
            (None, Some(path)) => Self::from_file(path)?,
            (None, None) => Self::from_file(&default_keys_file().ok_or(KeyringError::NoPlace)?)?,
        };
        info!(sealing_key = %keyring.current_id(), key_ids = ?keyring.key_ids(), "secret keys loaded");
        Ok(keyring)
    }

    /// Reads a key file, creating it with one new key when it does not exist.
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let shown = path.display().to_string();
        if !path.exists() {
            create_key_file(path)?;
        }
        let unreadable = |e: std::io::Error| KeyringError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if metadata.permissions().mode() & 0o077 != 0 {
            warn!(path = %shown, "the secret key file is readable by others than its owner; chmod 600 it");
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::parse(&text, &shown)
    }

    /// The id of the key that seals new writes.
    pub fn current_id(&self) -> &str {
        // `parse` refuses an empty list.
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    /// Every configured key id, the sealing one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plaintext` with the current key; `context` (e.g. the bucket and key it is stored
    /// under) is authenticated with it and must be given again to open it.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_BYTES];
        // ThreadRng is a CSPRNG seeded from the OS; 24-byte nonces make random ones safe.
        rand::rng().fill(&mut nonce[..]);
        let key = &self.keys[0];
        // Encryption fails only for messages beyond the cipher's 256 GiB limit.
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .unwrap_or_default();
        Sealed {
            algorithm: ALGORITHM.to_string(),
            key_id: key.id.clone(),
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        }
    }

    /// Opens a sealed value with the key it names and the same `context` it was sealed with.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if sealed.algorithm != ALGORITHM {
            return Err(KeyringError::Malformed(format!(
                "algorithm '{}' is not {ALGORITHM}",
                sealed.algorithm.chars().take(32).collect::<String>()
            )));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| KeyringError::UnknownKey {
                key_id: sealed.key_id.chars().take(MAX_KEY_ID_LEN).collect(),
                known: self.key_ids().join(", "),
            })?;
        let nonce = BASE64
            .decode(&sealed.nonce)
            .ok()
            .filter(|n| n.len() == NONCE_BYTES)
            .ok_or_else(|| {
                KeyringError::Malformed(format!("the nonce is not {NONCE_BYTES} bytes of base64"))
            })?;
        let ciphertext = BASE64
            .decode(&sealed.ciphertext)
            .map_err(|_| KeyringError::Malformed("the ciphertext is not base64".into()))?;
        key.cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| KeyringError::Undecryptable {
                key_id: key.id.clone(),
            })
    }

    /// Whether a value sealed with `key_id` should be sealed again with the current key.
    pub fn is_stale(&self, key_id: &str) -> bool {
        key_id != self.current_id()
    }
}

fn is_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `operator-orchestrator/secret-keys` under `$XDG_STATE_HOME`, else `~/.local/state`.
fn default_keys_file() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    non_empty("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .map(|dir| dir.join("operator-orchestrator").join("secret-keys"))
}

/// One new line `KEY_ID:BASE64` with 32 bytes from the operating system's generator.
pub fn generate_key_line() -> Result<String, String> {
    let mut key = [0u8; KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| format!("no randomness from the operating system: {e}"))?;
    let id = format!("key-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    Ok(format!("{id}:{}", BASE64.encode(key)))
}

/// Creates the key file (owner-only, in an owner-only directory when it makes one) with one new
/// key; another process that created it first wins.
fn create_key_file(path: &Path) -> Result<(), KeyringError> {
    let failed = |reason: String| KeyringError::CannotCreate {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(e.to_string()))?;
    }
    let line = generate_key_line().map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(failed(e.to_string())),
    };
    let text = format!(
        "# Keys sealing the orchestrator's secret records: KEY_ID:BASE64 (32 bytes), one a line.\n\
         # The first seals new writes; every one opens. Back this file up: without it the\n\
         # stored secrets cannot be read.\n{line}\n"
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(e.to_string()))?;
    warn!(
        path = %path.display(),
        "no secret key was configured: created a key file with a new key; back it up, and in production provide the keys with {SECRET_KEYS_FILE_ENV} or {SECRET_KEYS_ENV}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_line(id: &str, byte: u8) -> String {
        format!("{id}:{}", BASE64.encode([byte; KEY_BYTES]))
    }

    fn keyring(lines: &[String]) -> SecretKeyring {
        SecretKeyring::parse(&lines.join("\n"), "test keys").expect("valid keys")
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_context() {
        let keys = keyring(&[key_line("k1", 1)]);
        let sealed = keys.seal(b"hunter2", b"orchestrator-secrets/public.s");
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.algorithm, ALGORITHM);
        assert!(!sealed.ciphertext.contains("hunter2"));
        assert_eq!(
            keys.open(&sealed, b"orchestrator-secrets/public.s")
                .expect("opens"),
            b"hunter2"
        );
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let keys = keyring(&[key_line("k1", 1)]);
        let (a, b) = (keys.seal(b"same", b"c"), keys.seal(b"same", b"c"));
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_wrong_key_is_refused_naming_its_id_and_never_the_value() {
        let sealed = keyring(&[key_line("k1", 1)]).seal(b"hunter2", b"c");
        let other = keyring(&[key_line("k1", 2)]);
        let error = other.open(&sealed, b"c").expect_err("wrong key refused");
        assert_eq!(
            error,
            KeyringError::Undecryptable {
                key_id: "k1".into()
            }
        );
        let missing = keyring(&[key_line("k2", 1)]);
        let error = missing
            .open(&sealed, b"c")
            .expect_err("unknown key refused");
        let text = error.to_string();
        assert!(text.contains("'k1'") && text.contains("k2"), "{text}");
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn a_tampered_ciphertext_or_another_context_is_refused() {
        let keys = keyring(&[key_line("k1", 1)]);
        let mut sealed = keys.seal(b"hunter2", b"orchestrator-secrets/public.a");
        assert!(matches!(
            keys.open(&sealed, b"orchestrator-secrets/public.b"),
            Err(KeyringError::Undecryptable { .. })
        ));
        let mut bytes = BASE64.decode(&sealed.ciphertext).expect("base64");
        bytes[0] ^= 1;
        sealed.ciphertext = BASE64.encode(bytes);
        assert!(matches!(
            keys.open(&sealed, b"orchestrator-secrets/public.a"),
            Err(KeyringError::Undecryptable { .. })
        ));
        sealed.nonce = "short".into();
        assert!(matches!(
            keys.open(&sealed, b"orchestrator-secrets/public.a"),
            Err(KeyringError::Malformed(_))
        ));
    }

    #[test]
    fn after_rotation_old_values_open_and_new_ones_use_the_new_key() {
        let old = keyring(&[key_line("k1", 1)]);
        let sealed_before = old.seal(b"v1", b"c");
        let rotated = keyring(&[key_line("k2", 2), key_line("k1", 1)]);
        assert_eq!(rotated.open(&sealed_before, b"c").expect("opens"), b"v1");
        assert!(rotated.is_stale(&sealed_before.key_id));
        let sealed_after = rotated.seal(b"v1", b"c");
        assert_eq!(sealed_after.key_id, "k2");
        assert!(!rotated.is_stale(&sealed_after.key_id));
    }

    #[test]
    fn bad_key_text_is_refused_without_quoting_the_material() {
        let material = BASE64.encode([7u8; 16]);
        for (text, expected) in [
            ("".to_string(), "holds no key"),
            ("# only a comment\n".to_string(), "holds no key"),
            ("no-colon".to_string(), "expected KEY_ID:BASE64"),
            (format!("k1:{material}"), "16 bytes; it must be 32"),
            ("k1:!!!notbase64".to_string(), "is not base64"),
            (format!("bad id:{}", BASE64.encode([1u8; 32])), "key id"),
            (
                format!("{},{}", key_line("k1", 1), key_line("k1", 2)),
                "listed twice",
            ),
        ] {
            let error = SecretKeyring::parse(&text, "keys")
                .expect_err("refused")
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains(&material), "{error}");
        }
    }

    #[test]
    fn inline_keys_are_comma_separated_and_the_first_seals() {
        let keys = SecretKeyring::parse(
            &format!("{}, {}", key_line("new", 2), key_line("old", 1)),
            SECRET_KEYS_ENV,
        )
        .expect("valid");
        assert_eq!(keys.key_ids(), ["new", "old"]);
        assert_eq!(keys.current_id(), "new");
    }

    #[test]
    fn a_missing_key_file_is_created_owner_only_and_read_back_the_same() {
        let dir = tempfile_dir();
        let path = dir.join("state/secret-keys");
        let first = SecretKeyring::from_file(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let sealed = first.seal(b"v", b"c");
        let again = SecretKeyring::from_file(&path).expect("read back");
        assert_eq!(again.current_id(), first.current_id());
        assert_eq!(again.open(&sealed, b"c").expect("same key"), b"v");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn both_places_set_is_refused_and_debug_output_hides_inline_keys() {
        let config = SecretKeysConfig {
            file: Some("/nonexistent".into()),
            keys: Some(key_line("k1", 1)),
        };
        assert_eq!(
            SecretKeyring::load(&config).expect_err("refused"),
            KeyringError::BothSet
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains(&BASE64.encode([1u8; 32])), "{printed}");
        let keys = keyring(&[key_line("k1", 1)]);
        assert_eq!(format!("{keys:?}"), "SecretKeyring { key_ids: [\"k1\"] }");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "secret-keys-test-{}-{}",
            std::process::id(),
            rand::rng().random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
