//! The shipper's own connection to NATS, for the one thing it does once per click: publish a line
//! with its `Nats-Msg-Id` and read the stream's acknowledgement.
//!
//! async-nats does this too, but spends about 7 000 instructions per message on it (a header map,
//! the `HPUB` line through the formatting machinery, a channel to its connection task and one back
//! from the subscription, an owned message per acknowledgement): two thirds of what shipping a
//! click cost, and more than issue 13 allows against a keep-alive click (BENCHMARKS.md). Here a
//! publish is one frame appended to a buffer and an acknowledgement is parsed where it was read.
//! async-nats still does everything else: the stream's lookup and creation, and
//! `clickedge clicks follow`.
//!
//! The protocol (NATS client protocol, version 1): the server greets with `INFO {json}`; the
//! client upgrades to TLS if either side asks, then sends `CONNECT {json}`, and the server's
//! answer to the `PING` after it (`PONG`, or `-ERR`) says whether it was accepted. A publish is
//! `HPUB <subject> <reply> <header bytes> <total bytes>\r\n<headers><payload>\r\n`. Messages to the
//! one subscription (`<inbox>.*`, sid 1) come as `MSG <subject> <sid> <bytes>\r\n<payload>\r\n`,
//! or `HMSG` with headers: a status such as 503 "no responders" is headers alone. The server's
//! `PING` is answered; `INFO` updates and `PONG` are read past; `-ERR` ends the connection.
//!
//! The bytes themselves, the frame written and the operations read, are [`frames`].
//!
//! Nothing here retries: any error leaves the connection unusable, and the shipper drops it, backs
//! off and connects again.

use std::sync::Arc;

use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::nats::{ACK_TIMEOUT, Ack, NatsTarget, PublishError, UrlAuth};
pub(super) use frames::parse_ack;
use frames::{Op, frame, parse, publish_number, server_error};

mod frames;

/// Frames are written once this many bytes wait (and before every wait for an answer).
const WRITE_AT: usize = 64 << 10;

/// The NATS port when the URL names none.
const DEFAULT_PORT: u16 = 4222;

/// The subscription id of the acknowledgements.
const SID: &[u8] = b"1";

trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// A user's JWT and the seed that signs the server's nonce, from a credentials file
/// (`clicks.nats_credentials`, as `nsc` writes them).
pub(super) struct Credentials {
    jwt: String,
    key: nkeys::KeyPair,
}

impl Credentials {
    /// The JWT and seed of a credentials file's text: the first and second values that follow a
    /// `-----BEGIN ...-----` line.
    pub(super) fn parse(text: &str) -> Result<Credentials, String> {
        let mut lines = text.lines().map(str::trim);
        let mut values = std::iter::from_fn(|| {
            lines
                .by_ref()
                .find(|l| l.starts_with("---") && l.contains("BEGIN"))?;
            lines.next()
        });
        let jwt = values
            .next()
            .ok_or("no user JWT (a -----BEGIN NATS USER JWT----- block)")?;
        let seed = values
            .next()
            .ok_or("no seed (a -----BEGIN USER NKEY SEED----- block)")?;
        let key = nkeys::KeyPair::from_seed(seed).map_err(|e| format!("the seed: {e}"))?;
        Ok(Credentials {
            jwt: jwt.to_owned(),
            key,
        })
    }

    /// The server's nonce signed, as `CONNECT` carries it.
    fn sign(&self, nonce: &str) -> Result<String, PublishError> {
        let sig = self
            .key
            .sign(nonce.as_bytes())
            .map_err(|e| PublishError::Auth(e.to_string()))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
    }
}

/// What the server's `INFO` says that matters here.
#[derive(serde::Deserialize)]
struct ServerInfo {
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    max_payload: usize,
    #[serde(default)]
    nonce: Option<String>,
}

/// The answer to publish `n` (the last token of its reply subject; `None` if it was not a
/// number).
pub(super) struct Reply {
    pub n: Option<u64>,
    pub ack: Result<Ack, PublishError>,
}

/// One connection, publishing on one subject, its acknowledgements on `<inbox>.*`.
pub(super) struct Wire {
    link: Link,
    /// `HPUB <subject> <inbox>.`: how every publish's frame starts.
    head: Vec<u8>,
    /// The subject and the stream, for errors.
    subject: String,
    stream: String,
    /// The server's largest message (headers and payload).
    max_payload: usize,
}

/// The socket and its two buffers.
struct Link {
    io: Box<dyn Io>,
    /// Frames not yet written.
    out: BytesMut,
    /// Bytes read and not yet parsed.
    input: BytesMut,
}

impl Wire {
    /// Connects to `target`, authenticates (`credentials`, or the URL's user and password or
    /// token) and subscribes to `inbox` followed by `*`; `inbox` ends with its dot.
    pub(super) async fn connect(
        target: &NatsTarget,
        credentials: Option<&Credentials>,
        inbox: &str,
    ) -> Result<Wire, PublishError> {
        let url = &target.url;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(PublishError::Protocol("the NATS URL names no host")),
        };
        let tcp = TcpStream::connect((host.as_str(), url.port().unwrap_or(DEFAULT_PORT)))
            .await
            .map_err(PublishError::Io)?;
        tcp.set_nodelay(true).map_err(PublishError::Io)?;
        let mut link = Link {
            io: Box::new(tcp),
            out: BytesMut::with_capacity(WRITE_AT * 2),
            input: BytesMut::with_capacity(WRITE_AT),
        };
        let info: ServerInfo = link
            .until(|op| match op {
                Op::Info(json) => {
                    Some(serde_json::from_slice(json).map_err(PublishError::Malformed))
                }
                _ => Some(Err(PublishError::Protocol(
                    "the server did not begin with INFO",
                ))),
            })
            .await??;
        if !info.headers {
            return Err(PublishError::Protocol(
                "the server does not take headers (NATS 2.2 or later is needed)",
            ));
        }
        let tls = url.scheme() == "tls" || info.tls_required;
        if tls {
            let connector = tls_connector()?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| PublishError::Tls(e.to_string()))?;
            // Nothing more is sent before CONNECT: the plain socket is all there is to upgrade.
            let tcp = std::mem::replace(&mut link.io, Box::new(tokio::io::empty()));
            link.io = Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| PublishError::Tls(e.to_string()))?,
            );
        }
        let connect = connect_json(target, credentials, info.nonce.as_deref(), tls)?;
        for part in [
            b"CONNECT ",
            connect.as_bytes(),
            b"\r\nSUB ",
            inbox.as_bytes(),
            b"* ",
            SID,
            b"\r\nPING\r\n",
        ] {
            link.out.extend_from_slice(part);
        }
        // Everything before the PONG is the server's answer to CONNECT: an -ERR refuses it.
        link.until(|op| matches!(op, Op::Pong).then_some(()))
            .await?;
        Ok(Wire {
            link,
            head: [b"HPUB ", target.subject.as_bytes(), b" ", inbox.as_bytes()].concat(),
            subject: target.subject.clone(),
            stream: target.stream.clone(),
            max_payload: info.max_payload,
        })
    }

    /// Queues publish `n` of `payload` with `id` as its `Nats-Msg-Id`; writes once enough is
    /// queued.
    pub(super) async fn publish(
        &mut self,
        id: Option<&str>,
        payload: &[u8],
        n: u64,
    ) -> Result<(), PublishError> {
        frame(
            &mut self.link.out,
            &self.head,
            id,
            payload,
            n,
            self.max_payload,
        )?;
        if self.link.out.len() >= WRITE_AT {
            self.link.write().await?;
        }
        Ok(())
    }

    /// Waits up to `wait` while nothing is published (every publish acknowledged), answering
    /// the server's `PING`s: a connection whose pings go unanswered is closed by the server as
    /// stale (nats-server: after two, two minutes apart), and the next publish would fail on it.
    /// What else comes is read past; `-ERR` ends it.
    pub(super) async fn idle(&mut self, wait: std::time::Duration) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + wait;
        let link = &mut self.link;
        loop {
            while let Some((op, used)) = parse(&link.input)? {
                match op {
                    Op::Ping => link.out.extend_from_slice(b"PONG\r\n"),
                    Op::Err(text) => return Err(server_error(text)),
                    _ => {}
                }
                link.input.advance(used);
            }
            link.write().await?;
            // Only the read is cut short at the deadline: one not done takes nothing.
            match tokio::time::timeout_at(deadline, link.io.read_buf(&mut link.input)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(PublishError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(PublishError::Io(e)),
            }
        }
    }

    /// The next answer to a publish: from what was read already, or else, after writing what is
    /// queued, from the server.
    pub(super) async fn reply(&mut self) -> Result<Reply, PublishError> {
        let (subject, stream) = (&self.subject, &self.stream);
        self.link
            .until(|op| match op {
                Op::Msg {
                    subject: reply_to,
                    headers,
                    payload,
                } => Some(Reply {
                    n: publish_number(reply_to),
                    ack: decode(subject, stream, headers, payload),
                }),
                _ => None,
            })
            .await
    }
}

/// The acknowledgement (or refusal) a message to the inbox says; `subject` is the one published
/// on, `stream` the one meant to take it.
fn decode(
    subject: &str,
    stream: &str,
    headers: &[u8],
    payload: &[u8],
) -> Result<Ack, PublishError> {
    // `NATS/1.0 503\r\n...`: a status; 503 is "no responders", nothing takes the subject.
    if let Some(status) = headers.strip_prefix(b"NATS/1.0 ") {
        if status.starts_with(b"503") {
            return Err(PublishError::NoStream {
                subject: subject.to_owned(),
                stream: stream.to_owned(),
            });
        }
        let line = status.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(PublishError::Status(
            String::from_utf8_lossy(line).into_owned(),
        ));
    }
    parse_ack(payload, subject, stream)
}

impl Link {
    /// Reads the server's operations until `take` makes something of one, answering `PING` on
    /// the way; `-ERR` ends it. Writes what is queued before it waits for the server.
    async fn until<T>(
        &mut self,
        mut take: impl FnMut(Op<'_>) -> Option<T>,
    ) -> Result<T, PublishError> {
        loop {
            while let Some((op, used)) = parse(&self.input)? {
                let taken = match op {
                    Op::Ping => {
                        self.out.extend_from_slice(b"PONG\r\n");
                        None
                    }
                    Op::Err(text) => return Err(server_error(text)),
                    op => take(op),
                };
                self.input.advance(used);
                if let Some(taken) = taken {
                    return Ok(taken);
                }
            }
            self.write().await?;
            self.fill().await?;
        }
    }

    /// Writes every queued frame (failing after [`ACK_TIMEOUT`]).
    async fn write(&mut self) -> Result<(), PublishError> {
        if !self.out.is_empty() {
            let write = async {
                self.io.write_all(&self.out).await?;
                self.io.flush().await
            };
            tokio::time::timeout(ACK_TIMEOUT, write)
                .await
                .map_err(|_| PublishError::TimedOut(ACK_TIMEOUT))?
                .map_err(PublishError::Io)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more from the server (failing after [`ACK_TIMEOUT`] without a byte). Only here and
    /// in [`Link::write`] does the connection wait, so only they are timed: an answer already
    /// read costs no clock reading.
    async fn fill(&mut self) -> Result<(), PublishError> {
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(WRITE_AT);
        }
        let read = tokio::time::timeout(ACK_TIMEOUT, self.io.read_buf(&mut self.input))
            .await
            .map_err(|_| PublishError::TimedOut(ACK_TIMEOUT))?;
        match read {
            Ok(0) => Err(PublishError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(PublishError::Io(e)),
        }
    }
}

/// The `CONNECT` options: headers and "no responders" statuses on, no `+OK` per message, and
/// the credentials (the JWT and `nonce` signed) or the URL's user and password or token.
fn connect_json(
    target: &NatsTarget,
    credentials: Option<&Credentials>,
    nonce: Option<&str>,
    tls: bool,
) -> Result<String, PublishError> {
    let mut connect = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": target.client_name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "headers": true,
        "no_responders": true,
    });
    if let Some(creds) = credentials {
        let nonce = nonce.ok_or(PublishError::Auth(
            "the server sent no nonce to sign with the credentials".into(),
        ))?;
        connect["jwt"] = creds.jwt.as_str().into();
        connect["sig"] = creds.sign(nonce)?.into();
    }
    match &target.auth {
        UrlAuth::None => {}
        UrlAuth::UserPassword(user, pass) => {
            connect["user"] = user.as_str().into();
            connect["pass"] = pass.as_str().into();
        }
        UrlAuth::Token(token) => connect["auth_token"] = token.as_str().into(),
    }
    Ok(connect.to_string())
}

/// TLS to NATS: the server's certificate verified against the platform's roots (`SSL_CERT_FILE`
/// names others), as for PostgreSQL.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, PublishError> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_jwt_and_the_seed_that_signs_the_nonce() {
        let user = nkeys::KeyPair::new_user();
        let text = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi.body.sig\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        );
        let creds = Credentials::parse(&text).unwrap();
        assert_eq!(creds.jwt, "eyJ0eXAi.body.sig");
        let sig = creds.sign("nonce-1").unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let public = nkeys::KeyPair::from_public_key(&user.public_key()).unwrap();
        public.verify(b"nonce-1", &sig).unwrap();
        assert!(public.verify(b"nonce-2", &sig).is_err());

        let err = Credentials::parse("-----BEGIN NATS USER JWT-----\nabc\n")
            .err()
            .unwrap();
        assert!(err.contains("no seed"), "{err}");
        assert!(
            Credentials::parse("")
                .err()
                .unwrap()
                .contains("no user JWT")
        );
        let err = Credentials::parse(
            "-----BEGIN A-----\nabc\n-----END A-----\n-----BEGIN B-----\nnot-a-seed\n",
        )
        .err()
        .unwrap();
        assert!(err.contains("the seed"), "{err}");
    }

    #[test]
    fn connect_carries_the_urls_user_or_token_or_the_signed_nonce() {
        let node = crate::config::NodeId::parse("edge-a").unwrap();
        let target = |url: &str| {
            let clicks = crate::config::Clicks {
                nats_url: url::Url::parse(url).unwrap(),
                ..Default::default()
            };
            NatsTarget::from_config(&clicks, &node)
        };
        let json = |t: &NatsTarget, creds: Option<&Credentials>, nonce: Option<&str>| {
            let text = connect_json(t, creds, nonce, false).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let plain = json(&target("nats://127.0.0.1:4222"), None, None);
        assert_eq!(plain["headers"], true);
        assert_eq!(plain["no_responders"], true);
        assert_eq!(plain["verbose"], false);
        assert_eq!(plain["name"], "clickedge-edge-a");
        for key in ["user", "pass", "auth_token", "jwt", "sig"] {
            assert!(plain.get(key).is_none(), "{key} in {plain}");
        }
        let user = json(&target("nats://a%40b:p%3Aw@h"), None, None);
        assert_eq!(
            (&user["user"], &user["pass"]),
            (&"a@b".into(), &"p:w".into())
        );
        let token = json(&target("nats://t0k%2Fen@h"), None, None);
        assert_eq!(token["auth_token"], "t0k/en");

        let seed = nkeys::KeyPair::new_user();
        let creds = Credentials {
            jwt: "header.claims.sig".into(),
            key: nkeys::KeyPair::from_seed(&seed.seed().unwrap()).unwrap(),
        };
        let signed = json(&target("nats://h"), Some(&creds), Some("n0nce"));
        assert_eq!(signed["jwt"], "header.claims.sig");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signed["sig"].as_str().unwrap())
            .unwrap();
        seed.verify(b"n0nce", &sig).unwrap();
        let err = connect_json(&target("nats://h"), Some(&creds), None, false).unwrap_err();
        assert!(err.to_string().contains("no nonce"), "{err}");
    }
}
