//! `--reuse-key-shares`: the client computes its key shares once, at the start, and offers them
//! again and again.
//!
//! A new-connection click costs the client about what it costs the server: both generate a key
//! share and compute the shared secret, and with X25519MLKEM768 the client also generates an
//! ML-KEM-768 key pair and decapsulates. One client core then cannot keep one server core busy:
//! the server runs out of work, sleeps, and pays for being woken again in CPU time per click
//! that a saturated server does not pay. Reusing its own shares saves the client its key
//! generation (an X25519 base-point multiplication, an ML-KEM-768 key pair) on every connection.
//! The server still generates a fresh share of its own and computes the whole key exchange for
//! each handshake, so its work per click is what a browser's click costs it. The client keeps
//! [`POOL`] sets of shares and takes them in turn, so that the server does not see the same
//! share on consecutive connections either (ML-KEM's matrix comes from rejection sampling,
//! whose branches a CPU could learn for one key repeated).
//!
//! Only for load generation: a client that reuses its key shares gives up forward secrecy
//! between its own connections.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, ML_KEM_768};
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::ffdhe_groups::FfdheGroup;
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};

/// Sets of key shares generated at the start and taken in turn.
const POOL: usize = 256;

/// An X25519 public key.
const X25519_SHARE: usize = 32;

/// An ML-KEM-768 ciphertext, the first part of the server's X25519MLKEM768 share.
const MLKEM768_CIPHERTEXT: usize = 1088;

/// The client's key material, generated once.
struct Keys {
    x25519: PrivateKey,
    x25519_public: Vec<u8>,
    mlkem: DecapsulationKey,
    /// X25519MLKEM768's share: the ML-KEM-768 encapsulation key, then the X25519 public key.
    hybrid_public: Vec<u8>,
}

impl Keys {
    fn generate() -> Result<Keys, String> {
        let fail = |what: &str| format!("generating the client's {what} key share");
        let x25519 = PrivateKey::generate(&X25519).map_err(|_| fail("X25519"))?;
        let x25519_public = x25519
            .compute_public_key()
            .map_err(|_| fail("X25519"))?
            .as_ref()
            .to_vec();
        let mlkem = DecapsulationKey::generate(&ML_KEM_768).map_err(|_| fail("ML-KEM-768"))?;
        let encapsulation = mlkem
            .encapsulation_key()
            .and_then(|k| k.key_bytes())
            .map_err(|_| fail("ML-KEM-768"))?;
        let hybrid_public = [encapsulation.as_ref(), &x25519_public].concat();
        Ok(Keys {
            x25519,
            x25519_public,
            mlkem,
            hybrid_public,
        })
    }

    /// The X25519 secret with the server's share: exactly 32 bytes, as rustls's own X25519
    /// requires (aws-lc-rs would also take a DER-wrapped key).
    fn x25519_secret(&self, server_share: &[u8]) -> Result<Vec<u8>, Error> {
        let invalid = Error::from(PeerMisbehaved::InvalidKeyShare);
        if server_share.len() != X25519_SHARE {
            return Err(invalid);
        }
        agreement::agree(
            &self.x25519,
            UnparsedPublicKey::new(&X25519, server_share),
            invalid,
            |secret| Ok(secret.to_vec()),
        )
    }

    /// The X25519MLKEM768 secret: ML-KEM-768's, then X25519's.
    fn hybrid_secret(&self, server_share: &[u8]) -> Result<Vec<u8>, Error> {
        let invalid = || Error::from(PeerMisbehaved::InvalidKeyShare);
        if server_share.len() != MLKEM768_CIPHERTEXT + X25519_SHARE {
            return Err(invalid());
        }
        let (ciphertext, x25519) = server_share.split_at(MLKEM768_CIPHERTEXT);
        let mlkem = self
            .mlkem
            .decapsulate(Ciphertext::from(ciphertext))
            .map_err(|_| invalid())?;
        Ok([mlkem.as_ref(), &self.x25519_secret(x25519)?].concat())
    }
}

/// X25519 and X25519MLKEM768 (with its X25519 part offered beside it, as rustls's own hybrid
/// does), offering shares from one pool generated now. Each call generates (and leaks, for the
/// `'static` rustls wants) a pool of its own: one call per client configuration.
pub fn groups() -> Result<(&'static dyn SupportedKxGroup, &'static dyn SupportedKxGroup), String> {
    let pool: &'static Pool = Box::leak(Box::new(Pool {
        keys: (0..POOL)
            .map(|_| Keys::generate())
            .collect::<Result<_, _>>()?,
        next: AtomicUsize::new(0),
    }));
    let group =
        |kind| -> &'static dyn SupportedKxGroup { Box::leak(Box::new(Reused { pool, kind })) };
    Ok((group(Kind::X25519), group(Kind::X25519Mlkem768)))
}

/// Checks [`groups`] against rustls's own server side: each share agrees on its secret with
/// what rustls computes from it (X25519MLKEM768, the X25519 part offered beside it, X25519
/// alone), and consecutive connections offer different shares.
pub fn check() -> Result<(), String> {
    let (x25519, hybrid) = groups()?;
    let failed = |what: &str, e: Error| format!("{what}: {e}");
    let agree = |what: &str,
                 client: Box<dyn ActiveKeyExchange>,
                 server: &dyn SupportedKxGroup,
                 component: bool|
     -> Result<(), String> {
        let share = match client.hybrid_component() {
            Some((_, share)) if component => share.to_vec(),
            _ => client.pub_key().to_vec(),
        };
        let theirs = server
            .start_and_complete(&share)
            .map_err(|e| failed(what, e))?;
        let ours = if component {
            client.complete_hybrid_component(&theirs.pub_key)
        } else {
            client.complete(&theirs.pub_key)
        }
        .map_err(|e| failed(what, e))?;
        if ours.secret_bytes() != theirs.secret.secret_bytes() {
            return Err(format!("{what}: the client's secret is not the server's"));
        }
        Ok(())
    };
    let start = |group: &dyn SupportedKxGroup| group.start().map_err(|e| failed("start", e));
    agree(
        "X25519MLKEM768",
        start(hybrid)?,
        kx_group::X25519MLKEM768,
        false,
    )?;
    agree(
        "X25519 beside X25519MLKEM768",
        start(hybrid)?,
        kx_group::X25519,
        true,
    )?;
    agree("X25519", start(x25519)?, kx_group::X25519, false)?;
    let (first, second) = (start(hybrid)?, start(hybrid)?);
    if first.pub_key() == second.pub_key() {
        return Err("two connections in a row offered the same key share".into());
    }
    Ok(())
}

/// The key shares, and which set the next connection offers.
struct Pool {
    keys: Vec<Keys>,
    next: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    X25519,
    X25519Mlkem768,
}

impl Kind {
    fn name(self) -> NamedGroup {
        match self {
            Kind::X25519 => NamedGroup::X25519,
            Kind::X25519Mlkem768 => NamedGroup::X25519MLKEM768,
        }
    }
}

/// One group of [`groups`].
struct Reused {
    pool: &'static Pool,
    kind: Kind,
}

impl std::fmt::Debug for Reused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (reused key shares)", self.kind.name())
    }
}

impl SupportedKxGroup for Reused {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let turn = self.pool.next.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Offer {
            keys: &self.pool.keys[turn % self.pool.keys.len()],
            kind: self.kind,
        }))
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn name(&self) -> NamedGroup {
        self.kind.name()
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        self.kind == Kind::X25519 || version == ProtocolVersion::TLSv1_3
    }
}

/// A handshake's offer of a [`Reused`] share.
struct Offer {
    keys: &'static Keys,
    kind: Kind,
}

impl ActiveKeyExchange for Offer {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        let secret = match self.kind {
            Kind::X25519 => self.keys.x25519_secret(server_share)?,
            Kind::X25519Mlkem768 => self.keys.hybrid_secret(server_share)?,
        };
        Ok(SharedSecret::from(secret))
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        (self.kind == Kind::X25519Mlkem768)
            .then_some((NamedGroup::X25519, &self.keys.x25519_public[..]))
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<SharedSecret, Error> {
        Ok(SharedSecret::from(self.keys.x25519_secret(server_share)?))
    }

    fn pub_key(&self) -> &[u8] {
        match self.kind {
            Kind::X25519 => &self.keys.x25519_public,
            Kind::X25519Mlkem768 => &self.keys.hybrid_public,
        }
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        None
    }

    fn group(&self) -> NamedGroup {
        self.kind.name()
    }
}
