//! The built-in CA: created once under the data dir (`ca.pem`, `ca-key.pem` mode 0600), it signs
//! ECDSA P-256 leaf certificates for registered names. Clients trust `ca.pem`.
//!
//! For development, tests and private deployments; production uses ACME.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer as RcgenIssuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::{IssueError, Issuer};
use crate::Domain;
use crate::clock::{Clock, from_unix_secs};
use crate::store::StoredCert;

/// Leaf validity, like Let's Encrypt's.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Leaves start an hour in the past to tolerate clients with a slow clock.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    /// Reading or writing a CA file failed.
    #[error("local CA file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA files exist but do not parse, or generation failed.
    #[error("local CA {what}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

/// The built-in certificate authority.
pub struct LocalCa {
    issuer: RcgenIssuer<'static, KeyPair>,
    root_pem: String,
    clock: Clock,
}

impl LocalCa {
    /// File holding the root certificate, under the data dir.
    pub const ROOT_FILE: &'static str = "ca.pem";
    /// File holding the root's private key (mode 0600), under the data dir.
    pub const KEY_FILE: &'static str = "ca-key.pem";

    /// Loads the CA from `dir`, creating it on first use; validity periods start at `clock`'s
    /// now.
    pub fn load_or_create(dir: &Path, clock: Clock) -> Result<LocalCa, LocalCaError> {
        let cert_path = dir.join(Self::ROOT_FILE);
        let key_path = dir.join(Self::KEY_FILE);
        if key_path.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|source| LocalCaError::Io {
                    path: p.to_path_buf(),
                    source,
                })
            };
            let key_pem = read(&key_path)?;
            let root_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| LocalCaError::Cert {
                what: "key does not parse",
                source,
            })?;
            let issuer = RcgenIssuer::from_ca_cert_pem(&root_pem, key).map_err(|source| {
                LocalCaError::Cert {
                    what: "certificate does not parse",
                    source,
                }
            })?;
            return Ok(LocalCa {
                issuer,
                root_pem,
                clock,
            });
        }
        let gen_err = |source| LocalCaError::Cert {
            what: "generation failed",
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let tag: u32 = rand::random();
        dn.push(DnType::CommonName, format!("clickedge local CA {tag:08x}"));
        dn.push(DnType::OrganizationName, "clickedge");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = clock.now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let root_pem = cert.pem();
        // The key first, so a crash in between leaves no root without its key.
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, root_pem.as_bytes(), 0o644)?;
        Ok(LocalCa {
            issuer: RcgenIssuer::new(params, key),
            root_pem,
            clock,
        })
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    fn sign(&self, domain: &Domain) -> Result<StoredCert, rcgen::Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![domain.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, domain.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        // Whole seconds, as the certificate states them.
        let now = from_unix_secs(self.clock.unix_secs());
        let not_before = now - BACKDATE;
        let not_after = now + LEAF_LIFETIME;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(StoredCert {
            issuer: "local".into(),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_before,
            not_after,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LocalCaError> {
    let io = |source| LocalCaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[async_trait::async_trait]
impl Issuer for LocalCa {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn issue(
        &self,
        domain: &Domain,
        _replacing: Option<&StoredCert>,
    ) -> Result<StoredCert, IssueError> {
        // Key generation and one P-256 signature: well under a millisecond, not worth a thread hop.
        self.sign(domain).map_err(|source| IssueError::Local {
            domain: domain.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn creates_once_and_reloads_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let wall = ManualClock::new(from_unix_secs(1_800_000_000));
        let clock = wall.clock();
        let ca = LocalCa::load_or_create(dir.path(), clock.clone()).unwrap();
        let mode = std::fs::metadata(dir.path().join(LocalCa::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LocalCa::load_or_create(dir.path(), clock).unwrap();
        assert_eq!(ca.root_pem(), again.root_pem());
        let cert = again
            .issue(&Domain::parse("links.example.com").unwrap(), None)
            .await
            .unwrap();
        assert!(cert.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.not_after > cert.not_before);
        // Valid from an hour before the clock's now, for 90 days.
        assert_eq!(cert.not_before, from_unix_secs(1_800_000_000) - BACKDATE);
        assert_eq!(
            cert.not_after,
            from_unix_secs(1_800_000_000) + LEAF_LIFETIME
        );
    }
}
