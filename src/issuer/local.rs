//! The built-in CA: created once under the data dir (`ca.pem`, `ca-key.pem` mode 0600), it signs
//! ECDSA P-256 leaf certificates for registered names. Clients trust `ca.pem`.
//!
//! For development, tests and private deployments; production uses ACME. Its root carries a
//! critical name-constraints extension (RFC 5280 §4.2.1.10) limited to `tls.local_ca_names`, so a
//! `ca.pem` in a trust store cannot vouch for any other name, even with a stolen key; names
//! outside those zones are refused before anything is signed. A stored leaf that another root
//! signed (the CA was replaced) is due for renewal at once. It does not decide who may get a
//! certificate (`policy`) nor keep certificates (`certs`).

mod root;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer as RcgenIssuer, KeyPair, KeyUsagePurpose, NameConstraints,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::{IssueError, Issuer, OrderClaim, RenewalWindow};
use crate::Domain;
use crate::clock::{Clock, from_unix_secs};
use crate::domain::Zones;
use crate::store::StoredCert;
use root::RootScope;

/// Leaf validity, like Let's Encrypt's.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Leaves start an hour in the past to tolerate clients with a slow clock.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How to replace the root, as errors and warnings say it ([`LocalCa::ROOT_FILE`],
/// [`LocalCa::KEY_FILE`]); the renewal is [`Issuer::renewal_window`]'s doing.
const REPLACE_ROOT: &str = "stop the edge, delete ca.pem and ca-key.pem from the data dir and start it again \
    (a cluster: stop every node, delete them on each and the stored root, DELETE FROM kv WHERE key = 'local-ca'): \
    clients must then trust the new ca.pem, and certificates the old root signed are renewed within hours";

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
    /// The root file holds no PEM certificate.
    #[error("local CA root {path} is not a PEM certificate")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The root's extensions do not parse.
    #[error("local CA root {path}: reading its name constraints")]
    Constraints {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// The key file holds another key than the root certificate's: every certificate signed
    /// with it would fail to verify.
    #[error(
        "local CA key {key} is not the key of the root {root} (one of the two was replaced or deleted and made again): to make a new CA, {REPLACE_ROOT}"
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The root file.
        root: PathBuf,
    },
    /// The existing root vouches for other zones than the configuration lists.
    #[error(
        "local CA root {path} vouches for names under {root}, but tls.local_ca_names lists {config}: set tls.local_ca_names to the first list or, to make a new CA, {REPLACE_ROOT}"
    )]
    NamesDiffer {
        /// The root file.
        path: PathBuf,
        /// The zones in the root's name constraints, separated by `, `.
        root: String,
        /// The zones in `tls.local_ca_names`.
        config: Zones,
    },
}

/// The built-in certificate authority.
pub struct LocalCa {
    issuer: RcgenIssuer<'static, KeyPair>,
    root_pem: String,
    root_der: CertificateDer<'static>,
    names: Zones,
    clock: Clock,
}

impl LocalCa {
    /// File holding the root certificate, under the data dir.
    pub const ROOT_FILE: &'static str = "ca.pem";
    /// File holding the root's private key (mode 0600), under the data dir.
    pub const KEY_FILE: &'static str = "ca-key.pem";

    /// Loads the CA from `dir`, creating it on first use with its root limited to `names`
    /// (`tls.local_ca_names`); validity periods start at `clock`'s now.
    ///
    /// An existing root constrained to other zones is an error; one without constraints (made by
    /// a version before them) is used, with a warning that it can vouch for any name. Either
    /// way only names under `names` are issued.
    pub fn load_or_create(dir: &Path, names: Zones, clock: Clock) -> Result<LocalCa, LocalCaError> {
        let cert_path = dir.join(Self::ROOT_FILE);
        let key_path = dir.join(Self::KEY_FILE);
        if key_path.exists() {
            LocalCa::load(&cert_path, &key_path, names, clock)
        } else {
            LocalCa::create(&cert_path, &key_path, names, clock)
        }
    }

    fn load(
        cert_path: &Path,
        key_path: &Path,
        names: Zones,
        clock: Clock,
    ) -> Result<LocalCa, LocalCaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| LocalCaError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let key_pem = read(key_path)?;
        let root_pem = read(cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| LocalCaError::Cert {
            what: "key does not parse",
            source,
        })?;
        let der = CertificateDer::from_pem_slice(root_pem.as_bytes()).map_err(|source| {
            LocalCaError::Pem {
                path: cert_path.to_path_buf(),
                source,
            }
        })?;
        match root::public_key(&der) {
            Ok(public) if public == key.public_key_raw() => {}
            Ok(_) => {
                return Err(LocalCaError::KeyMismatch {
                    key: key_path.to_path_buf(),
                    root: cert_path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(LocalCaError::Constraints {
                    path: cert_path.to_path_buf(),
                    source,
                });
            }
        }
        let issuer =
            RcgenIssuer::from_ca_cert_der(&der, key).map_err(|source| LocalCaError::Cert {
                what: "certificate does not parse",
                source,
            })?;
        let scope = root::scope(&der).map_err(|source| LocalCaError::Constraints {
            path: cert_path.to_path_buf(),
            source,
        })?;
        match scope {
            RootScope::Under(root)
                if root
                    .iter()
                    .map(String::as_str)
                    .eq(names.iter().map(|z| z.as_str())) => {}
            RootScope::Under(root) => {
                return Err(LocalCaError::NamesDiffer {
                    path: cert_path.to_path_buf(),
                    root: root.join(", "),
                    config: names,
                });
            }
            // NOTE: kept so data dirs from before name constraints keep starting; the operator
            // decides when to replace it, since every client must then trust the new root.
            RootScope::Any => tracing::warn!(
                root = %cert_path.display(),
                "the local CA root has no name constraints: a client that trusts it accepts a certificate it signs for any name; \
                 to limit it to tls.local_ca_names ({names}), {REPLACE_ROOT}"
            ),
        }
        Ok(LocalCa {
            issuer,
            root_pem,
            root_der: der.into_owned(),
            names,
            clock,
        })
    }

    fn create(
        cert_path: &Path,
        key_path: &Path,
        names: Zones,
        clock: Clock,
    ) -> Result<LocalCa, LocalCaError> {
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
        // Marked critical by rcgen, as RFC 5280 §4.2.1.10 requires; `Zones` is never empty, so
        // the extension is always written.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: names
                .iter()
                .map(|zone| GeneralSubtree::DnsName(zone.as_str().to_owned()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        let now = clock.now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let root_pem = cert.pem();
        // The key first, so a crash in between leaves no root without its key.
        write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(cert_path, root_pem.as_bytes(), 0o644)?;
        tracing::info!(root = %cert_path.display(), names = %names, "created the local CA; it vouches only for names under tls.local_ca_names");
        Ok(LocalCa {
            issuer: RcgenIssuer::new(params, key),
            root_pem,
            root_der: cert.der().clone(),
            names,
            clock,
        })
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Whether the root has no name constraints (made by a version before them): clients that
    /// trust it take its certificates for any name.
    pub fn vouches_for_any_name(&self) -> bool {
        !matches!(root::scope(&self.root_der), Ok(RootScope::Under(_)))
    }

    /// The root and its key as `dir` holds them (`ca.pem`, `ca-key.pem`), PEM: what a cluster's
    /// first node stores for the others.
    pub fn files(dir: &Path) -> Result<(String, String), LocalCaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| LocalCaError::Io { path, source })
        };
        Ok((read(Self::ROOT_FILE)?, read(Self::KEY_FILE)?))
    }

    /// Makes `dir`'s root and key these (a cluster's, read from the store), replacing the ones
    /// there if they differ; whether it replaced any. Each file is written whole under another
    /// name and renamed over the old one.
    pub fn replace_files(dir: &Path, root_pem: &str, key_pem: &str) -> Result<bool, LocalCaError> {
        if Self::files(dir).is_ok_and(|(root, key)| root == root_pem && key == key_pem) {
            return Ok(false);
        }
        // The key first, as at creation.
        for (name, bytes, mode) in [
            (Self::KEY_FILE, key_pem, 0o600),
            (Self::ROOT_FILE, root_pem, 0o644),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!("{name}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            write_file(&tmp, bytes.as_bytes(), mode)?;
            std::fs::rename(&tmp, &path).map_err(|source| LocalCaError::Io { path, source })?;
        }
        Ok(true)
    }

    /// Signs a leaf for `domain`, whatever the name: [`Issuer::issue`] checks it first.
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

    fn refuses(&self, domain: &Domain) -> Option<IssueError> {
        // Also for a root without constraints (older data dirs): the setting says what the
        // operator means the CA to vouch for.
        (!self.names.covers(domain)).then(|| IssueError::OutsideLocalNames {
            domain: domain.clone(),
            names: self.names.clone(),
        })
    }

    async fn issue(
        &self,
        domain: &Domain,
        _replacing: Option<&StoredCert>,
        _claim: &dyn OrderClaim,
    ) -> Result<StoredCert, IssueError> {
        if let Some(refused) = self.refuses(domain) {
            return Err(refused);
        }
        // Key generation and one P-256 signature: well under a millisecond, not worth a thread hop.
        self.sign(domain).map_err(|source| IssueError::Local {
            domain: domain.clone(),
            source,
        })
    }

    /// Due now for a leaf of the built-in CA that another root signed: after `ca.pem` and
    /// `ca-key.pem` were replaced, clients that trust the new root reject it. Otherwise none, and
    /// the lifetime rule decides.
    async fn renewal_window(
        &self,
        domain: &Domain,
        cert: &StoredCert,
    ) -> Result<Option<RenewalWindow>, IssueError> {
        // Certificates of another issuer (tls.issuer was "acme") serve until they are due.
        if cert.issuer != self.kind() {
            return Ok(None);
        }
        let unreadable = |error: &dyn std::error::Error| {
            tracing::warn!(domain = %domain, error = %error, "stored certificate does not parse; the lifetime rule decides its renewal");
            Ok(None)
        };
        let leaf = match CertificateDer::from_pem_slice(cert.chain_pem.as_bytes()) {
            Ok(leaf) => leaf,
            Err(e) => return unreadable(&e),
        };
        match root::issued(&leaf, &self.root_der) {
            Ok(true) => Ok(None),
            Ok(false) => {
                tracing::info!(domain = %domain, "certificate signed by a replaced local CA root: renewing");
                let now = self.clock.now();
                Ok(Some(RenewalWindow {
                    start: now,
                    end: now,
                    check_after: Duration::ZERO,
                }))
            }
            Err(e) => unreadable(&e),
        }
    }
}

#[cfg(test)]
mod tests;
