//! TLS 1.3's key schedule (HKDF) over HMAC keys that are set up once per secret.
//!
//! rustls's aws-lc provider runs each HKDF step through aws-lc's `HKDF` functions, which set up
//! the HMAC key (its two padded blocks hashed) at every call, and redo the extraction for every
//! expansion of an extracted secret. A handshake derives about twenty keys, IVs and secrets from
//! a handful of secrets. Here each secret becomes an HMAC key once, and every expansion from it
//! starts from a copy: rustls's own HKDF over HMAC ([`HkdfUsingHmac`]).
//!
//! The HMAC is RustCrypto's (`hmac`, `sha2`: SHA-256 on the CPU's SHA instructions, SHA-384 on
//! AVX2). A keyed state is two hash states, about 200 bytes, and a tag starts from a plain copy
//! of it; aws-lc's `HMAC_CTX` is three hash contexts sized for SHA-512, zeroed, copied and
//! cleansed for every tag: 214 against 125 ns per SHA-256 tag (`cargo bench --bench hotpath --
//! floor/hmac`, BENCHMARKS.md). The states are wiped when dropped, as aws-lc's are (`zeroize`).
//! The bytes derived are the same (RFC 5869); only the work to get them changes.

use std::marker::PhantomData;
use std::sync::LazyLock;

use hmac::digest::{KeyInit, Mac, OutputSizeUser};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::cipher_suite as suites;
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::{CipherSuite, CipherSuiteCommon, SupportedCipherSuite, Tls13CipherSuite};

/// HMAC with the MAC type `M` (`hmac::Hmac<D>` for a hash `D`).
struct HmacWith<M>(PhantomData<fn() -> M>);

impl<M> Hmac for HmacWith<M>
where
    M: Mac + KeyInit + Clone + Send + Sync + 'static,
{
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
        let keyed = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        Box::new(Keyed(keyed))
    }

    fn hash_output_len(&self) -> usize {
        M::output_size()
    }
}

/// A key whose padded blocks are hashed once; each tag starts from a copy of that state.
struct Keyed<M>(M);

impl<M> Key for Keyed<M>
where
    M: Mac + Clone + Send + Sync,
{
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        <M as OutputSizeUser>::output_size()
    }
}

static HMAC_SHA256: HmacWith<hmac::Hmac<sha2::Sha256>> = HmacWith(PhantomData);
static HMAC_SHA384: HmacWith<hmac::Hmac<sha2::Sha384>> = HmacWith(PhantomData);
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

static AES_128_GCM_SHA256: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(suites::TLS13_AES_128_GCM_SHA256, &HKDF_SHA256));
static AES_256_GCM_SHA384: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(suites::TLS13_AES_256_GCM_SHA384, &HKDF_SHA384));
static CHACHA20_POLY1305_SHA256: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(suites::TLS13_CHACHA20_POLY1305_SHA256, &HKDF_SHA256));

/// The aws-lc provider with its TLS 1.3 suites deriving their keys here; everything else (TLS
/// 1.2, key exchange, signatures, record protection, the suites' order) as it is.
pub fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    for suite in &mut provider.cipher_suites {
        let ours: &'static Tls13CipherSuite = match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => &AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => &AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => &CHACHA20_POLY1305_SHA256,
            _ => continue,
        };
        *suite = SupportedCipherSuite::Tls13(ours);
    }
    provider
}

/// aws-lc's `suite` with `hkdf` in place of its own.
fn with_hkdf(
    suite: SupportedCipherSuite,
    hkdf: &'static HkdfUsingHmac<'static>,
) -> Tls13CipherSuite {
    let SupportedCipherSuite::Tls13(theirs) = suite else {
        unreachable!("a TLS 1.3 suite");
    };
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: theirs.common.suite,
            hash_provider: theirs.common.hash_provider,
            confidentiality_limit: theirs.common.confidentiality_limit,
        },
        hkdf_provider: hkdf,
        aead_alg: theirs.aead_alg,
        quic: theirs.quic,
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::tls13::Hkdf;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn aws_lcs_own(suite: SupportedCipherSuite) -> &'static dyn Hkdf {
        let SupportedCipherSuite::Tls13(suite) = suite else {
            panic!("a TLS 1.3 suite");
        };
        suite.hkdf_provider
    }

    #[test]
    fn rfc_5869_test_case_1() {
        let (ikm, salt, info) = (
            [0x0b_u8; 22],
            (0x00..=0x0c).collect::<Vec<u8>>(),
            (0xf0..=0xf9).collect::<Vec<u8>>(),
        );
        let mut okm = [0; 42];
        HKDF_SHA256
            .extract_from_secret(Some(&salt), &ikm)
            .expand_slice(&[&info], &mut okm)
            .unwrap();
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn every_step_of_the_key_schedule_derives_what_aws_lcs_own_hkdf_does() {
        let pairs: [(&dyn Hkdf, &dyn Hkdf); 3] = [
            (
                AES_128_GCM_SHA256.hkdf_provider,
                aws_lcs_own(suites::TLS13_AES_128_GCM_SHA256),
            ),
            (
                AES_256_GCM_SHA384.hkdf_provider,
                aws_lcs_own(suites::TLS13_AES_256_GCM_SHA384),
            ),
            (
                CHACHA20_POLY1305_SHA256.hkdf_provider,
                aws_lcs_own(suites::TLS13_CHACHA20_POLY1305_SHA256),
            ),
        ];
        let inputs: [(Option<&[u8]>, &[u8]); 3] = [
            (None, &[7; 32]),
            (Some(&[1; 48]), &[9; 48]),
            (Some(&[]), &[3; 5]),
        ];
        let label: [&[u8]; 3] = [b"\x00\x10", b"tls13 key", b""];
        for (ours, theirs) in pairs {
            for (salt, secret) in inputs {
                let (a, b) = (
                    ours.extract_from_secret(salt, secret),
                    theirs.extract_from_secret(salt, secret),
                );
                for len in [12, 16, 32, 48, 100] {
                    let (mut x, mut y) = (vec![0; len], vec![0; len]);
                    a.expand_slice(&label, &mut x).unwrap();
                    b.expand_slice(&label, &mut y).unwrap();
                    assert_eq!(x, y, "{len} bytes");
                }
                let okm = a.expand_block(&label);
                assert_eq!(okm.as_ref(), b.expand_block(&label).as_ref());
                assert_eq!(
                    ours.hmac_sign(&okm, b"transcript hash").as_ref(),
                    theirs.hmac_sign(&okm, b"transcript hash").as_ref()
                );
                assert_eq!(
                    ours.expander_for_okm(&okm).expand_block(&label).as_ref(),
                    theirs.expander_for_okm(&okm).expand_block(&label).as_ref()
                );
                assert_eq!(
                    ours.extract_from_zero_ikm(salt)
                        .expand_block(&label)
                        .as_ref(),
                    theirs
                        .extract_from_zero_ikm(salt)
                        .expand_block(&label)
                        .as_ref()
                );
            }
        }
    }

    #[test]
    fn the_provider_derives_tls_1_3_keys_here_and_keeps_the_rest() {
        let (ours, theirs) = (provider(), rustls::crypto::aws_lc_rs::default_provider());
        let names = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&ours), names(&theirs), "same suites, same order");
        let ours_tls13: Vec<_> = ours
            .cipher_suites
            .iter()
            .filter_map(|s| match s {
                SupportedCipherSuite::Tls13(t) => Some(*t),
                SupportedCipherSuite::Tls12(_) => None,
            })
            .collect();
        assert_eq!(ours_tls13.len(), 3);
        for suite in ours_tls13 {
            assert!(
                [
                    &*AES_128_GCM_SHA256,
                    &*AES_256_GCM_SHA384,
                    &*CHACHA20_POLY1305_SHA256
                ]
                .iter()
                .any(|s| std::ptr::eq(*s, suite)),
                "{:?} is aws-lc's own",
                suite.common.suite
            );
        }
    }
}
