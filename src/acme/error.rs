//! [`AcmeError`]: what went wrong talking to an ACME CA, other than the CA refusing (a refusal
//! is a problem document, [`crate::issuer::IssueError::Refused`]).

use std::path::PathBuf;

use instant_acme::AuthorizationStatus;

use crate::config::ChallengeKind;
use crate::store::StoreError;

/// What went wrong setting up the ACME client or running an order.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// `acme.ca_root` could not be read or parsed.
    #[error("acme.ca_root {}", path.display())]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate in `acme.ca_root` is not a usable root.
    #[error("acme.ca_root {}", path.display())]
    CaRootCertificate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The client's TLS configuration could not be built.
    #[error("building the ACME client's TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The platform's root certificates could not be loaded.
    #[error("loading the platform's root certificates")]
    PlatformRoots(#[source] std::io::Error),
    /// Reading or writing the store (account, challenges) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored account credentials do not parse.
    #[error("stored ACME account does not parse")]
    StoredAccount(#[source] serde_json::Error),
    /// New account credentials could not be serialised for storing.
    #[error("serialising the ACME account")]
    SerialiseAccount(#[source] serde_json::Error),
    /// `acme.eab_hmac_key` is not base64url.
    #[error("acme.eab_hmac_key is not base64url")]
    EabKey,
    /// The exchange with the CA failed (network, protocol, an unexpected answer).
    #[error("could not reach the CA or understand its answer")]
    Protocol(#[source] instant_acme::Error),
    /// An authorization is in a state no challenge can change.
    #[error("authorization is {0:?}")]
    Authorization(AuthorizationStatus),
    /// The CA offers none of the configured challenge types.
    #[error("the CA offers none of the configured challenge types ({})", names(.0))]
    NoChallenge(Vec<ChallengeKind>),
    /// The order became invalid and the CA gave no problem document saying why.
    #[error("the order became invalid without a reason from the CA")]
    InvalidOrder,
    /// The order did not complete within `acme.order_timeout` (plus the budget's wait).
    #[error("the order timed out")]
    Timeout,
    /// The order was finalized by another holder of the name's lease (this node was stalled
    /// past it); its certificate key is not this node's, so a new order is needed.
    #[error("the order was finalized by another node")]
    FinalizedElsewhere,
    /// The key or the certificate signing request could not be made.
    #[error(transparent)]
    Csr(rcgen::Error),
    /// The CA sent no certificate.
    #[error("the CA sent an empty chain")]
    EmptyChain,
    /// The CA's chain is not PEM.
    #[error("the CA's chain does not parse")]
    ChainPem(#[source] rustls_pki_types::pem::Error),
    /// The CA's leaf certificate is not X.509.
    #[error("the CA's certificate does not parse")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// A stored chain has no leaf to name in a renewal information request.
    #[error("the stored chain has no certificate")]
    StoredChainEmpty,
    /// A stored chain is not PEM.
    #[error("the stored chain does not parse")]
    StoredChainPem(#[source] rustls_pki_types::pem::Error),
    /// The leaf has no ARI certificate identifier (RFC 9773 §4.1); instant-acme says why.
    #[error("no renewal information identifier for the certificate: {0}")]
    CertificateId(String),
    /// The TLS-ALPN-01 certificate could not be made.
    #[error("making the TLS-ALPN-01 certificate")]
    AlpnCertificate(#[source] rcgen::Error),
    /// The TLS-ALPN-01 key could not be loaded.
    #[error("loading the TLS-ALPN-01 key")]
    AlpnKey(#[source] rustls::Error),
}

fn names(kinds: &[ChallengeKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
