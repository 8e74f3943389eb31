//! Publishing and answering ACME challenges. Responses live in the store, so whichever node the
//! CA reaches can answer: HTTP-01 (RFC 8555 §8.3) on the plain HTTP listener, TLS-ALPN-01
//! (RFC 8737) in the TLS acceptor for a ClientHello offering ALPN `acme-tls/1`.
//!
//! Lookups are for names registered in this node's memory (a name `tls.ask` approves is
//! registered before its first order) and, for HTTP-01, tokens a CA could have made (RFC 8555
//! §8.3: base64url, at least 128 bits), and never make an `ask` request: validation answers what
//! the store has published, it does not decide who may get a certificate. At most
//! [`LOOKUPS_IN_FLIGHT`] lookups run at once; more wait their turn (for [`LOOKUP_WAIT`] at most,
//! then answer nothing), so a flood of requests for a registered name cannot take every store
//! connection (PostgreSQL) or a blocking thread each (SQLite) from the certificate loads
//! handshakes wait on.
//!
//! A name this node does not know yet may be one another node of a cluster registered a moment
//! ago and is ordering now, with the CA's validation reaching this node before the change did
//! (a lost `NOTIFY` delays it up to `cluster.scan_interval`). Such lookups are answered too,
//! but one at a time and without waiting ([`UNKNOWN_IN_FLIGHT`]): a flood of random names costs
//! the store one query at a time and never the registered names' turns.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::Semaphore;

use crate::Domain;
use crate::clock::Clock;
use crate::config::ChallengeKind;
use crate::errors::chain as error_chain;
use crate::issuer::OrderClaim;
use crate::policy::Policy;
use crate::store::{Store, StoreError};

use super::AcmeError;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How many challenge lookups read the store at once: a CA validates from a few vantage points,
/// a few requests each.
pub const LOOKUPS_IN_FLIGHT: usize = 4;

/// How many lookups for names this node has not registered read the store at once; one more
/// answers nothing at once.
pub const UNKNOWN_IN_FLIGHT: usize = 1;

/// The longest a lookup waits for its turn; past it, it answers nothing (404), so a flood's
/// waiting requests do not hold connections for ever.
pub const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The shortest token of RFC 8555 §8.3 (128 bits in base64url), and a bound on the longest read.
const TOKEN_LEN: std::ops::RangeInclusive<usize> = 22..=256;

/// Challenge responses, published by orders and read by the listeners.
pub struct Challenges {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    provider: Arc<CryptoProvider>,
    clock: Clock,
    lookups: Semaphore,
    /// Turns of the lookups for names not registered in memory.
    unknown: Semaphore,
}

impl Challenges {
    /// Challenges kept in `store`, answered for names `policy` has registered while unexpired by
    /// `clock`.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        provider: Arc<CryptoProvider>,
        clock: Clock,
    ) -> Challenges {
        Challenges {
            store,
            policy,
            provider,
            clock,
            lookups: Semaphore::new(LOOKUPS_IN_FLIGHT),
            unknown: Semaphore::new(UNKNOWN_IN_FLIGHT),
        }
    }

    /// Publishes a response until `expires_at`. HTTP-01 is keyed by token, with
    /// the key authorization as value; TLS-ALPN-01 by domain, with the base64url SHA-256 digest
    /// of the key authorization.
    pub async fn publish(
        &self,
        kind: ChallengeKind,
        key: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.store.put_challenge(kind, key, value, expires_at).await
    }

    /// Withdraws a response (and any that expired).
    pub async fn withdraw(&self, kind: ChallengeKind, key: &str) {
        if let Err(e) = self
            .store
            .remove_challenge(kind, key, self.clock.now())
            .await
        {
            tracing::warn!(challenge = kind.as_str(), error = %error_chain(&e), "withdrawing challenge");
        }
    }

    /// Withdraws the responses an order published, if its `claim` on the name still holds. A
    /// node that lost the claim (stalled past its lease) leaves them to expire: the node that
    /// took the name over may have published the same key since (TLS-ALPN-01 is keyed by the
    /// name; a resumed order's HTTP-01 token is the same), with the CA validating it.
    pub async fn withdraw_under(
        &self,
        claim: &dyn OrderClaim,
        published: Vec<(ChallengeKind, String)>,
    ) {
        if published.is_empty() {
            return;
        }
        if let Err(e) = claim.confirm().await {
            tracing::info!(error = %error_chain(&e), "not withdrawing this order's challenges: they expire on their own");
            return;
        }
        for (kind, key) in published {
            self.withdraw(kind, &key).await;
        }
    }

    /// The HTTP-01 key authorization for `token` on `host`, if it is published.
    pub async fn http01(&self, host: &Domain, token: &str) -> Option<String> {
        if !could_be_token(token) {
            return None;
        }
        self.lookup(host, ChallengeKind::Http01, token).await
    }

    /// The TLS-ALPN-01 certificate for `domain`, if a challenge is published for it.
    pub async fn tls_alpn01(&self, domain: &Domain) -> Option<Arc<CertifiedKey>> {
        let digest = self
            .lookup(domain, ChallengeKind::TlsAlpn01, domain.as_str())
            .await?;
        let digest = URL_SAFE_NO_PAD.decode(digest).ok()?;
        match alpn_certificate(&self.provider, domain, &digest) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                tracing::error!(domain = %domain, error = %error_chain(&e), "building the TLS-ALPN-01 certificate");
                None
            }
        }
    }

    /// The published value of `key`, asked for on behalf of `name`: a registered name waits
    /// its turn, another gets one only if it is free.
    async fn lookup(&self, name: &Domain, kind: ChallengeKind, key: &str) -> Option<String> {
        // Never closed, so acquiring only waits (at most LOOKUP_WAIT), and a free turn is
        // always taken.
        let _turn = if self.policy.is_registered(name.as_str()) {
            tokio::time::timeout(LOOKUP_WAIT, self.lookups.acquire())
                .await
                .ok()?
                .ok()?
        } else {
            self.unknown.try_acquire().ok()?
        };
        match self.store.challenge(kind, key, self.clock.now()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(challenge = kind.as_str(), error = %error_chain(&e), "reading challenge");
                None
            }
        }
    }
}

/// Whether `token` has the shape RFC 8555 §8.3 asks of a challenge token: base64url without
/// padding, at least 128 bits.
fn could_be_token(token: &str) -> bool {
    TOKEN_LEN.contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The self-signed certificate of RFC 8737 §3: the name as its only SAN and the critical
/// `acmeIdentifier` extension holding the SHA-256 digest of the key authorization. Loaded with
/// `CertifiedKey::new`, since rustls's own loaders refuse the unknown critical extension.
pub fn alpn_certificate(
    provider: &CryptoProvider,
    domain: &Domain,
    digest: &[u8],
) -> Result<CertifiedKey, AcmeError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(AcmeError::AlpnCertificate)?;
    let mut params =
        CertificateParams::new(vec![domain.to_string()]).map_err(AcmeError::AlpnCertificate)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(AcmeError::AlpnCertificate)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(AcmeError::AlpnKey)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::SqliteStore;
    use std::time::Duration;

    fn setup() -> (Challenges, ManualClock) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let policy = Arc::new(Policy::new([Domain::parse("a.example.com").unwrap()], None));
        let clock = ManualClock::starting_now();
        let challenges = Challenges::new(
            store,
            policy,
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            clock.clock(),
        );
        (challenges, clock)
    }

    /// A token of the shape Let's Encrypt and Pebble hand out: 32 random bytes in base64url.
    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

    /// Publishes [`TOKEN`] (HTTP-01, `tok.thumb`) for a minute from `clock`'s now.
    async fn publish_token(c: &Challenges, clock: &ManualClock) {
        let expires = clock.clock().now() + Duration::from_secs(60);
        c.publish(ChallengeKind::Http01, TOKEN, "tok.thumb", expires)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_challenge_expires_when_the_clock_passes_it() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        publish_token(&c, &clock).await;
        clock.advance(Duration::from_secs(59));
        assert_eq!(c.http01(&a, TOKEN).await.as_deref(), Some("tok.thumb"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(c.http01(&a, TOKEN).await, None);
    }

    /// A claim that holds, or was lost.
    struct Held(bool);

    #[async_trait::async_trait]
    impl OrderClaim for Held {
        fn resume(&self) -> Option<&str> {
            None
        }
        async fn keep(&self, _url: &str) -> Result<(), crate::issuer::IssueError> {
            Ok(())
        }
        async fn confirm(&self) -> Result<(), crate::issuer::IssueError> {
            if self.0 {
                Ok(())
            } else {
                Err(crate::issuer::IssueError::ClaimLost {
                    domain: Domain::parse("a.example.com").unwrap(),
                })
            }
        }
        async fn forget(&self) {}
    }

    #[tokio::test]
    async fn an_order_that_lost_its_claim_leaves_the_challenges_to_the_node_that_took_over() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        publish_token(&c, &clock).await;
        let published = || vec![(ChallengeKind::Http01, TOKEN.to_owned())];
        c.withdraw_under(&Held(false), published()).await;
        assert_eq!(c.http01(&a, TOKEN).await.as_deref(), Some("tok.thumb"));
        c.withdraw_under(&Held(true), published()).await;
        assert_eq!(c.http01(&a, TOKEN).await, None);
    }

    #[tokio::test]
    async fn http01_answers_what_is_published() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        publish_token(&c, &clock).await;
        assert_eq!(c.http01(&a, TOKEN).await.as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01(&a, &TOKEN[1..]).await, None);
        c.withdraw(ChallengeKind::Http01, TOKEN).await;
        assert_eq!(c.http01(&a, TOKEN).await, None);
    }

    #[tokio::test]
    async fn a_name_not_yet_registered_here_is_answered_one_lookup_at_a_time() {
        let (c, clock) = setup();
        // Registered by another node a moment ago: its order published both challenges.
        let b = Domain::parse("b.example.com").unwrap();
        publish_token(&c, &clock).await;
        let digest = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let expires = clock.clock().now() + Duration::from_secs(60);
        c.publish(ChallengeKind::TlsAlpn01, b.as_str(), &digest, expires)
            .await
            .unwrap();
        assert_eq!(c.http01(&b, TOKEN).await.as_deref(), Some("tok.thumb"));
        assert!(c.tls_alpn01(&b).await.is_some());
        // While another such lookup runs, one more answers nothing at once, and the
        // registered names' turns are untouched.
        let busy = c.unknown.try_acquire().unwrap();
        assert_eq!(c.http01(&b, TOKEN).await, None);
        assert!(c.tls_alpn01(&b).await.is_none());
        let a = Domain::parse("a.example.com").unwrap();
        assert_eq!(c.http01(&a, TOKEN).await.as_deref(), Some("tok.thumb"));
        drop(busy);
        assert_eq!(c.http01(&b, TOKEN).await.as_deref(), Some("tok.thumb"));
    }

    #[tokio::test]
    async fn a_path_no_ca_could_have_made_is_not_looked_up() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        let expires = clock.clock().now() + Duration::from_secs(60);
        // Published under keys no token can have (too short: under 128 bits; outside base64url),
        // so only the shape check keeps them unanswered.
        let short = &TOKEN[..21];
        let padded = format!("{}=", &TOKEN[..42]);
        for key in [short, padded.as_str(), &format!("{}.", &TOKEN[..42])] {
            c.publish(ChallengeKind::Http01, key, "x", expires)
                .await
                .unwrap();
            assert_eq!(c.http01(&a, key).await, None, "{key}");
        }
        assert_eq!(c.http01(&a, &TOKEN[..22]).await, None);
        c.publish(ChallengeKind::Http01, &TOKEN[..22], "y", expires)
            .await
            .unwrap();
        assert_eq!(c.http01(&a, &TOKEN[..22]).await.as_deref(), Some("y"));
    }

    /// `TOKEN` published for `a.example.com` on `c`, and every lookup turn taken (held while
    /// the returned permit lives).
    async fn every_turn_taken<'a>(
        c: &'a Challenges,
        clock: &ManualClock,
    ) -> tokio::sync::SemaphorePermit<'a> {
        let expires = clock.clock().now() + Duration::from_secs(3600);
        c.publish(ChallengeKind::Http01, TOKEN, "tok.thumb", expires)
            .await
            .unwrap();
        c.lookups
            .acquire_many(LOOKUPS_IN_FLIGHT as u32)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn lookups_past_the_bound_wait_for_a_turn() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        let held = every_turn_taken(&c, &clock).await;
        let waiting = tokio::time::timeout(Duration::from_millis(200), c.http01(&a, TOKEN)).await;
        assert!(waiting.is_err(), "looked up with every turn taken");
        drop(held);
        assert_eq!(c.http01(&a, TOKEN).await.as_deref(), Some("tok.thumb"));
    }

    /// A lookup waits for its turn at most LOOKUP_WAIT, then answers nothing: a flood's waiting
    /// requests do not hold their connections for ever.
    #[tokio::test(start_paused = true)]
    async fn a_lookup_gives_up_waiting_for_a_turn() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        let _held = every_turn_taken(&c, &clock).await;
        let started = tokio::time::Instant::now();
        assert_eq!(c.http01(&a, TOKEN).await, None);
        assert_eq!(started.elapsed(), LOOKUP_WAIT);
    }

    #[tokio::test]
    async fn tls_alpn01_certificate_carries_the_digest() {
        let (c, clock) = setup();
        let a = Domain::parse("a.example.com").unwrap();
        assert!(c.tls_alpn01(&a).await.is_none());
        let digest = [7u8; 32];
        c.publish(
            ChallengeKind::TlsAlpn01,
            "a.example.com",
            &URL_SAFE_NO_PAD.encode(digest),
            clock.clock().now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
        let key = c.tls_alpn01(&a).await.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes: 0x04 0x20 followed by the digest.
        assert_eq!(ext.value, [&[0x04, 0x20][..], &digest[..]].concat());
    }
}
