//! Certificates made for a test: a CA and a server certificate it signed.

/// A test CA and a server certificate it signed, as PEM.
pub struct TestCerts {
    /// The CA's certificate: what a client trusts.
    pub ca: String,
    /// The server's certificate, for `names`.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

/// A CA named `ca_name` and a server certificate for `names` signed by it.
pub fn test_certs(ca_name: &str, names: &[&str]) -> TestCerts {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    TestCerts {
        ca: ca_cert.pem(),
        cert: leaf.pem(),
        key: key.serialize_pem(),
    }
}
