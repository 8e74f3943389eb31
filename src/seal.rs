//! The cluster's seal key and the sealing of secrets at rest (certificate private keys, the ACME
//! account, link keys) in a shared database: AES-256-GCM with a random nonce per value, each
//! value bound to its row by associated data (`cert-key:<domain>`), so a row moved or swapped
//! into another place does not open.
//!
//! The key comes from `cluster.seal_key_file` (mode 0600, 64 hex characters) or the environment
//! variable `CLICKEDGE_SEAL_KEY`; `clickedge cluster keygen FILE` writes a new one. This module
//! reads and writes the key file and seals bytes; which rows are sealed is the store's business.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};

use crate::config::Cluster;

/// Environment variable carrying the seal key (64 hex characters) instead of a file.
pub const SEAL_KEY_ENV: &str = "CLICKEDGE_SEAL_KEY";

/// First byte of every sealed value: the format (AES-256-GCM, 12-byte nonce, 16-byte tag).
const FORMAT_V1: u8 = 1;

/// Why a seal key could not be had, or a value not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read.
    #[error("reading the seal key file {path} (cluster.seal_key_file)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by others than its owner.
    #[error(
        "the seal key file {path} is mode {mode:04o}: only its owner may read it; run: chmod 600 {path}"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not 32 bytes written as 64 hex characters.
    #[error(
        "the seal key in {0} is not 64 hex characters (32 bytes); make one with `clickedge cluster keygen FILE`"
    )]
    Malformed(String),
    /// Both the file and the environment name a key.
    #[error(
        "both cluster.seal_key_file ({0}) and {SEAL_KEY_ENV} are set: keep one, so every node \
         surely uses the same key"
    )]
    Both(PathBuf),
    /// `keygen` refuses to replace a key: what it sealed would no longer open.
    #[error(
        "{0} exists: not overwriting a seal key (what it sealed opens only with it); pick another file"
    )]
    Exists(PathBuf),
    /// The new key file could not be written.
    #[error("writing the seal key file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sealed value does not open: another key, or a value altered or moved to another row.
    #[error(
        "the sealed value of {0} does not open with this seal key (another key, or the row was altered or moved)"
    )]
    Open(String),
    /// The system's random source or the cipher failed.
    #[error("sealing the value of {0} failed")]
    Seal(String),
}

/// The cluster's seal key. Its bytes are never printed.
pub struct SealKey {
    key: RandomizedNonceKey,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// The key `[cluster]` names: `seal_key_file`, or `CLICKEDGE_SEAL_KEY`; none when neither is
    /// set.
    pub fn from_config(cluster: &Cluster) -> Result<Option<SealKey>, SealError> {
        let env = std::env::var(SEAL_KEY_ENV).ok().filter(|v| !v.is_empty());
        SealKey::load(cluster.seal_key_file.as_deref(), env.as_deref())
    }

    /// The key in `file` (which must be readable by its owner alone), or the one in `env`
    /// (the value of `CLICKEDGE_SEAL_KEY`); never both.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<SealKey>, SealError> {
        match (file, env) {
            (Some(path), Some(_)) => Err(SealError::Both(path.to_path_buf())),
            (None, Some(hex)) => SealKey::from_hex(hex, SEAL_KEY_ENV).map(Some),
            (None, None) => Ok(None),
            (Some(path), None) => {
                let read = |source| SealError::Read {
                    path: path.to_path_buf(),
                    source,
                };
                let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(SealError::Permissions {
                        path: path.to_path_buf(),
                        mode: mode & 0o7777,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(read)?;
                SealKey::from_hex(&text, &path.display().to_string()).map(Some)
            }
        }
    }

    /// A key from its 64 hex characters (surrounding white space ignored); `from` names where
    /// the text came from, for the error.
    pub fn from_hex(text: &str, from: &str) -> Result<SealKey, SealError> {
        let bytes = decode_hex(text.trim()).ok_or_else(|| SealError::Malformed(from.to_owned()))?;
        SealKey::from_bytes(&bytes).ok_or_else(|| SealError::Malformed(from.to_owned()))
    }

    fn from_bytes(bytes: &[u8; 32]) -> Option<SealKey> {
        RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .ok()
            .map(|key| SealKey { key })
    }

    /// A new random key (tests).
    pub fn generate() -> SealKey {
        let hex = new_key_hex();
        // The text is 64 hex characters by construction.
        SealKey::from_hex(&hex, "a generated key").expect("a generated key is well-formed")
    }

    /// Seals `plain` for the row `binding` names (e.g. `cert-key:links.example.com`): format
    /// byte, nonce, ciphertext and tag. Only the same key and the same binding open it.
    pub fn seal(&self, binding: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut data = plain.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(binding.as_bytes()), &mut data)
            .map_err(|_| SealError::Seal(binding.to_owned()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Opens what [`SealKey::seal`] sealed for the same `binding`.
    pub fn open(&self, binding: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Open(binding.to_owned());
        let (&format, rest) = sealed.split_first().ok_or_else(fail)?;
        if format != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding.as_bytes()), &mut data)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// Writes a new seal key to `path`: 32 random bytes as 64 hex characters and a newline, mode
/// 0600; an existing file is never replaced.
pub fn write_new_key(path: &Path) -> Result<(), SealError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SealError::Exists(path.to_path_buf()),
            _ => SealError::Write {
                path: path.to_path_buf(),
                source,
            },
        })?;
    // NOTE: the mode given at creation is reduced by the umask, never widened: 0600 or less.
    writeln!(file, "{}", new_key_hex())
        .and_then(|()| file.sync_all())
        .map_err(|source| SealError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn new_key_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
