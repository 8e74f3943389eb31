//! What an existing root certificate says: which names it may vouch for (its name-constraints
//! extension, RFC 5280 §4.2.1.10), so a root made by an older version (no constraints) or under
//! other settings is recognised at start; and whether it is the root a stored leaf chains to, so
//! leaves of a replaced root are renewed. Reads only; deciding what to do is the caller's.

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// The DNS names a root certificate may vouch for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RootScope {
    /// Any name: the root has no name constraints, or none that permits DNS subtrees.
    Any,
    /// Names under these zones only (lowercase, no trailing dot, sorted, without repeats).
    Under(Vec<String>),
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
        })
}

/// The root certificate `der`'s public key: the bits of its SubjectPublicKeyInfo (for an
/// ECDSA key, the curve point).
pub(super) fn public_key(der: &[u8]) -> Result<Vec<u8>, X509Error> {
    Ok(parse(der)?.public_key().subject_public_key.data.to_vec())
}

/// The scope of the root certificate `der`.
pub(super) fn scope(der: &[u8]) -> Result<RootScope, X509Error> {
    let cert = parse(der)?;
    let Some(constraints) = cert.name_constraints()? else {
        return Ok(RootScope::Any);
    };
    let mut zones: Vec<String> = constraints
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .filter_map(|subtree| match subtree.base {
            GeneralName::DNSName(name) => Some(name.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    // NOTE: without a permitted DNS subtree, DNS names are not limited (RFC 5280 §4.2.1.10),
    // whatever other kinds of names the extension constrains.
    if zones.is_empty() {
        return Ok(RootScope::Any);
    }
    zones.sort();
    zones.dedup();
    Ok(RootScope::Under(zones))
}

/// True if the leaf `leaf_der` names `root_der` as its issuer: the same subject and, when both
/// carry one, the same key identifier (RFC 5280 §4.2.1.1–2). The signature is not checked: the
/// stored leaf is the edge's own, and the question is only which of its roots made it.
pub(super) fn issued(leaf_der: &[u8], root_der: &[u8]) -> Result<bool, X509Error> {
    let (leaf, root) = (parse(leaf_der)?, parse(root_der)?);
    if leaf.issuer().as_raw() != root.subject().as_raw() {
        return Ok(false);
    }
    let authority_key = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        });
    let subject_key = root
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski),
            _ => None,
        });
    Ok(match (authority_key, subject_key) {
        (Some(a), Some(s)) => a.0 == s.0,
        _ => true,
    })
}
