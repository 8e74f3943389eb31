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
//! Nothing here retries: any error leaves the connection unusable, and the shipper drops it, backs
//! off and connects again.

use std::sync::Arc;

use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::nats::{ACK_TIMEOUT, Ack, AckReply, NatsTarget, PublishError, UrlAuth};

/// Frames are written once this many bytes wait (and before every wait for an answer).
const WRITE_AT: usize = 64 << 10;

/// The longest protocol line read (an `INFO` can list a cluster's URLs).
const MAX_LINE: usize = 64 << 10;

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
    io: Box<dyn Io>,
    /// Frames not yet written.
    out: BytesMut,
    /// Bytes read and not yet parsed.
    input: BytesMut,
    /// `HPUB <subject> <inbox>.`: how every publish's frame starts.
    head: Vec<u8>,
    /// The subject, for errors.
    subject: String,
    /// The server's largest message (headers and payload).
    max_payload: usize,
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
        let mut wire = Wire {
            io: Box::new(tcp),
            out: BytesMut::with_capacity(WRITE_AT * 2),
            input: BytesMut::with_capacity(WRITE_AT),
            head: [b"HPUB ", target.subject.as_bytes(), b" ", inbox.as_bytes()].concat(),
            subject: target.subject.clone(),
            max_payload: 0,
        };
        let info: ServerInfo = {
            let line = wire.line().await?;
            let json = line
                .strip_prefix(b"INFO ")
                .ok_or(PublishError::Protocol("the server did not begin with INFO"))?;
            serde_json::from_slice(json).map_err(PublishError::Malformed)?
        };
        if !info.headers {
            return Err(PublishError::Protocol(
                "the server does not take headers (NATS 2.2 or later is needed)",
            ));
        }
        wire.max_payload = info.max_payload;
        let tls = url.scheme() == "tls" || info.tls_required;
        if tls {
            let connector = tls_connector()?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| PublishError::Tls(e.to_string()))?;
            // Nothing more is sent before CONNECT: the plain socket is all there is to upgrade.
            let tcp = std::mem::replace(&mut wire.io, Box::new(tokio::io::empty()));
            wire.io = Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| PublishError::Tls(e.to_string()))?,
            );
        }
        let connect = connect_json(target, credentials, info.nonce.as_deref(), tls)?;
        wire.out.extend_from_slice(b"CONNECT ");
        wire.out.extend_from_slice(connect.as_bytes());
        wire.out.extend_from_slice(b"\r\nSUB ");
        wire.out.extend_from_slice(inbox.as_bytes());
        wire.out.extend_from_slice(b"* ");
        wire.out.extend_from_slice(SID);
        wire.out.extend_from_slice(b"\r\nPING\r\n");
        // Everything before the PONG is the server's answer to CONNECT: an -ERR refuses it.
        loop {
            wire.write().await?;
            let line = wire.line().await?;
            match line.as_ref() {
                b"PONG" => return Ok(wire),
                b"PING" => wire.out.extend_from_slice(b"PONG\r\n"),
                l if l.starts_with(b"-ERR") => return Err(server_error(l)),
                _ => {}
            }
        }
    }

    /// Queues publish `n` of `payload` with `id` as its `Nats-Msg-Id`; writes once enough is
    /// queued.
    pub(super) async fn publish(
        &mut self,
        id: Option<&str>,
        payload: &[u8],
        n: u64,
    ) -> Result<(), PublishError> {
        frame(&mut self.out, &self.head, id, payload, n, self.max_payload)?;
        if self.out.len() >= WRITE_AT {
            self.write().await?;
        }
        Ok(())
    }

    /// The next answer to a publish: from what was read already, or else, after writing what is
    /// queued, from the server.
    pub(super) async fn reply(&mut self) -> Result<Reply, PublishError> {
        loop {
            while let Some((op, used)) = parse(&self.input)? {
                let reply = match op {
                    Op::Msg {
                        subject,
                        headers,
                        payload,
                    } => Some(Reply {
                        n: publish_number(subject),
                        ack: self.decode(headers, payload),
                    }),
                    Op::Ping => {
                        self.out.extend_from_slice(b"PONG\r\n");
                        None
                    }
                    Op::Other => None,
                    Op::Err(text) => return Err(server_error(text)),
                };
                self.input.advance(used);
                if let Some(reply) = reply {
                    return Ok(reply);
                }
            }
            self.write().await?;
            self.fill().await?;
        }
    }

    /// The acknowledgement (or refusal) a message to the inbox says.
    fn decode(&self, headers: &[u8], payload: &[u8]) -> Result<Ack, PublishError> {
        // `NATS/1.0 503\r\n...`: a status; 503 is "no responders", nothing takes the subject.
        if let Some(status) = headers.strip_prefix(b"NATS/1.0 ") {
            if status.starts_with(b"503") {
                return Err(PublishError::NoStream(self.subject.clone()));
            }
            let line = status.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(PublishError::Status(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        parse_ack(payload)
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
    /// in [`Wire::write`] does the connection wait, so only they are timed: an answer already
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

    /// The next protocol line, without its `\r\n` (during the handshake).
    async fn line(&mut self) -> Result<BytesMut, PublishError> {
        loop {
            if let Some(end) = line_end(&self.input)? {
                let line = self.input.split_to(end);
                self.input.advance(2);
                return Ok(line);
            }
            self.fill().await?;
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

/// Appends publish `n`'s frame to `out`: `HPUB <subject> <inbox>.<n> <hdr> <total>\r\n`, the
/// headers (`Nats-Msg-Id` when there is an id), the payload and `\r\n`.
fn frame(
    out: &mut BytesMut,
    head: &[u8],
    id: Option<&str>,
    payload: &[u8],
    n: u64,
    max_payload: usize,
) -> Result<(), PublishError> {
    const START: &[u8] = b"NATS/1.0\r\n";
    const KEY: &[u8] = b"Nats-Msg-Id: ";
    // A header value ends at a line break: an id holding one goes without (none does: ids are
    // `{node}-{seq}`).
    let id = id.filter(|id| !id.bytes().any(|b| b == b'\r' || b == b'\n'));
    let headers = START.len() + id.map_or(0, |id| KEY.len() + id.len() + 2) + 2;
    let total = headers + payload.len();
    if max_payload > 0 && total > max_payload {
        return Err(PublishError::TooLarge {
            bytes: total,
            max: max_payload,
        });
    }
    out.reserve(head.len() + 60 + total);
    out.extend_from_slice(head);
    push_decimal(out, n as usize);
    out.extend_from_slice(b" ");
    push_decimal(out, headers);
    out.extend_from_slice(b" ");
    push_decimal(out, total);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(START);
    if let Some(id) = id {
        out.extend_from_slice(KEY);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `n` in decimal (without the formatting machinery: this runs per click).
fn push_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
enum Op<'a> {
    /// `MSG` or `HMSG` (`headers` empty for `MSG`).
    Msg {
        subject: &'a [u8],
        headers: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Err(&'a [u8]),
    /// `PONG`, `+OK`, `INFO`: nothing to do.
    Other,
}

/// Where the protocol line at the start of `buf` ends (its `\r`); `None` until it is all there.
fn line_end(buf: &[u8]) -> Result<Option<usize>, PublishError> {
    match memchr::memchr(b'\n', buf) {
        Some(at) if at > 0 && buf[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err(PublishError::Protocol("a protocol line not ended by CRLF")),
        None if buf.len() > MAX_LINE => Err(PublishError::Protocol("a protocol line is too long")),
        None => Ok(None),
    }
}

/// The first whole operation in `buf` and how many bytes it takes; `None` until it is all there.
fn parse(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, PublishError> {
    let Some(end) = line_end(buf)? else {
        return Ok(None);
    };
    let line = &buf[..end];
    let body = end + 2;
    let mut args = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|a| !a.is_empty());
    let op = match args.next().unwrap_or_default() {
        b"MSG" | b"HMSG" => {
            let headed = line.starts_with(b"H");
            // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <hdr> <total>.
            let sizes = if headed { 2 } else { 1 };
            let mut fields = [&b""[..]; 5];
            let mut count = 0;
            for a in args {
                *fields
                    .get_mut(count)
                    .ok_or(PublishError::Protocol("a MSG line with too many fields"))? = a;
                count += 1;
            }
            let args = &fields[..count];
            if args.len() < 2 + sizes || args.len() > 3 + sizes {
                return Err(PublishError::Protocol(
                    "a MSG line with the wrong number of fields",
                ));
            }
            let number = |a: &[u8]| {
                decimal(a)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(PublishError::Protocol("a MSG size that is not a number"))
            };
            let total = number(args[args.len() - 1])?;
            let hdr = if headed {
                number(args[args.len() - 2])?
            } else {
                0
            };
            if hdr > total {
                return Err(PublishError::Protocol("an HMSG whose headers outsize it"));
            }
            if buf.len() < body + total + 2 {
                return Ok(None);
            }
            if &buf[body + total..body + total + 2] != b"\r\n" {
                return Err(PublishError::Protocol("a message not followed by CRLF"));
            }
            let op = Op::Msg {
                subject: args[0],
                headers: &buf[body..body + hdr],
                payload: &buf[body + hdr..body + total],
            };
            return Ok(Some((op, body + total + 2)));
        }
        b"PING" => Op::Ping,
        b"-ERR" => Op::Err(line),
        _ => Op::Other,
    };
    Ok(Some((op, body)))
}

/// The publish number at the end of a reply subject (`<inbox>.<n>`).
fn publish_number(subject: &[u8]) -> Option<u64> {
    decimal(&subject[memchr::memrchr(b'.', subject)? + 1..])
}

/// ASCII digits as a number (`None` if empty, not all digits, or too large); without the
/// standard library's UTF-8 check and sign handling, which cost a third of reading an ack.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// An acknowledgement as nats-server writes one without a domain, `{"stream":"<name>", "seq":<n>}`
/// or with `,"duplicate": true` before the brace (spaces between tokens as any server version
/// puts them); `None` for anything else, which the JSON parser reads. Saves most of the parser's
/// ~1 000 instructions per click shipped.
fn plain_ack(payload: &[u8]) -> Option<Ack> {
    fn eat<'a>(rest: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
        rest.trim_ascii_start().strip_prefix(token)
    }
    let rest = eat(eat(eat(payload, b"{")?, br#""stream""#)?, b":")?;
    let name = eat(rest, b"\"")?;
    let rest = eat(eat(&name[memchr::memchr(b'"', name)?..], b"\"")?, b",")?;
    let rest = eat(eat(rest, br#""seq""#)?, b":")?.trim_ascii_start();
    let digits = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq = decimal(&rest[..digits])?;
    let rest = &rest[digits..];
    let (duplicate, rest) = match eat(rest, b"}") {
        Some(rest) => (false, rest),
        None => {
            let rest = eat(eat(eat(rest, b",")?, br#""duplicate""#)?, b":")?;
            (true, eat(eat(rest, b"true")?, b"}")?)
        }
    };
    rest.trim_ascii()
        .is_empty()
        .then_some(Ack { seq, duplicate })
}

/// `-ERR 'text'` as an error.
fn server_error(line: &[u8]) -> PublishError {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start_matches("-ERR").trim().trim_matches('\'');
    PublishError::Server(text.to_owned())
}

/// The acknowledgement in a reply's payload.
pub(super) fn parse_ack(payload: &[u8]) -> Result<Ack, PublishError> {
    if let Some(ack) = plain_ack(payload) {
        return Ok(ack);
    }
    let reply: AckReply<'_> = serde_json::from_slice(payload).map_err(PublishError::Malformed)?;
    if let Some(e) = reply.error {
        return Err(PublishError::Refused {
            err_code: e.err_code,
            description: e.description.into_owned(),
        });
    }
    Ok(Ack {
        seq: reply.seq,
        duplicate: reply.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op of `buf`, parsed as the connection does: from the front, as far as it is whole.
    fn ops(buf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((op, used)) = parse(&buf[at..]).unwrap() {
            out.push(format!("{op:?}"));
            at += used;
        }
        out
    }

    const SERVER: &[u8] = b"INFO {\"headers\":true}\r\nPING\r\n\
        MSG _INBOX.x.7 1 27\r\n{\"stream\":\"CLICKS\",\"seq\":9}\r\n\
        +OK\r\nHMSG _INBOX.x.8 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
        MSG _INBOX.x.9 1 _INBOX.reply 2\r\n{}\r\n-ERR 'Maximum Connections Exceeded'\r\n";

    #[test]
    fn the_servers_operations_are_read_whole_whatever_the_reads_split() {
        let whole = ops(SERVER);
        assert_eq!(whole.len(), 7, "{whole:?}");
        assert_eq!(
            whole[2],
            format!(
                "{:?}",
                Op::Msg {
                    subject: b"_INBOX.x.7",
                    headers: b"",
                    payload: br#"{"stream":"CLICKS","seq":9}"#,
                }
            )
        );
        assert_eq!(
            whole[4],
            format!(
                "{:?}",
                Op::Msg {
                    subject: b"_INBOX.x.8",
                    headers: b"NATS/1.0 503\r\n\r\n",
                    payload: b"",
                }
            )
        );
        // Cut anywhere, the front parses to what it holds whole and no more, and the rest follows.
        for cut in 0..SERVER.len() {
            let mut front = Vec::new();
            let mut at = 0;
            while let Some((op, used)) = parse(&SERVER[at..cut]).unwrap() {
                front.push(format!("{op:?}"));
                at += used;
            }
            assert_eq!(front[..], whole[..front.len()], "cut at {cut}");
            let mut rest = ops(&SERVER[at..]);
            front.append(&mut rest);
            assert_eq!(front, whole, "cut at {cut}");
        }
    }

    #[test]
    fn what_the_server_should_not_send_is_an_error_not_a_guess() {
        for bad in [
            &b"MSG a 1\r\n"[..],
            b"MSG a 1 b c 2 3\r\n",
            b"MSG a 1 x\r\n",
            b"HMSG a 1 9 2\r\nxx\r\n",
            b"MSG a 1 2\r\nabcd\r\n",
            b"PING\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'x'; MAX_LINE + 1]).is_err());
        assert!(parse(&[b'x'; 100]).unwrap().is_none());
    }

    #[test]
    fn a_publish_is_one_hpub_frame_with_the_id_as_its_only_header() {
        let mut out = BytesMut::new();
        let payload = br#"{"ts":"x","click_id":"edge-a-42"}"#;
        frame(
            &mut out,
            b"HPUB clicks.a _INBOX.x.",
            Some("edge-a-42"),
            payload,
            7,
            0,
        )
        .unwrap();
        let headers = "NATS/1.0\r\nNats-Msg-Id: edge-a-42\r\n\r\n";
        let expected = format!(
            "HPUB clicks.a _INBOX.x.7 {} {}\r\n{headers}{}\r\n",
            headers.len(),
            headers.len() + payload.len(),
            String::from_utf8_lossy(payload)
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);

        let mut out = BytesMut::new();
        frame(&mut out, b"HPUB s r.", None, b"{}", u64::MAX, 0).unwrap();
        assert_eq!(
            &out[..],
            format!("HPUB s r.{} 12 14\r\nNATS/1.0\r\n\r\n{{}}\r\n", u64::MAX).as_bytes()
        );

        let mut out = BytesMut::new();
        frame(&mut out, b"HPUB s r.", Some("bad\r\nX: y"), b"{}", 1, 0).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("X: y"));

        let err = frame(&mut out, b"HPUB s r.", Some("i"), &[b'x'; 100], 1, 100).unwrap_err();
        assert!(
            matches!(
                err,
                PublishError::TooLarge {
                    bytes: 128,
                    max: 100
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_answer_to_each_publish_is_found_by_its_number() {
        assert_eq!(publish_number(b"_INBOX.abc.0"), Some(0));
        assert_eq!(
            publish_number(b"_INBOX.abc.18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(publish_number(b"_INBOX.abc.x"), None);
        assert_eq!(publish_number(b"nodot"), None);
        assert_eq!(publish_number(b"_INBOX.abc."), None);
        assert_eq!(publish_number(b"_INBOX.abc.18446744073709551616"), None);
        assert_eq!(publish_number(b"_INBOX.abc.-1"), None);
        assert_eq!(decimal(b"0042"), Some(42));
    }

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
    fn the_plain_acknowledgement_reads_as_the_json_parser_reads_it() {
        let json = |p: &[u8]| {
            let r: AckReply<'_> = serde_json::from_slice(p).ok()?;
            r.error.is_none().then_some(Ack {
                seq: r.seq,
                duplicate: r.duplicate,
            })
        };
        let plain: &[&[u8]] = &[
            br#"{"stream":"CLICKS","seq":42}"#,
            br#"{"stream":"CLICKS","seq":7,"duplicate":true}"#,
            br#"{"stream":"","seq":0}"#,
            // nats-server 2.9's own spacing.
            br#"{"stream":"T", "seq":1}"#,
            br#"{"stream":"CLICKS","seq":7 }"#,
            br#"{"stream":"T", "seq":1,"duplicate": true}"#,
            b" { \"stream\" : \"T\" , \"seq\" : 1 , \"duplicate\" : true } \r\n",
        ];
        for p in plain {
            assert_eq!(plain_ack(p), json(p), "{}", String::from_utf8_lossy(p));
            assert!(plain_ack(p).is_some());
        }
        // Anything else goes to the JSON parser.
        let other: &[&[u8]] = &[
            br#"{"stream":"CLICKS","domain":"hub","seq":7,"duplicate":true}"#,
            br#"{"stream":"CLICKS","seq":7,"duplicate":false}"#,
            br#"{"stream":"CLICKS","seq":-7}"#,
            br#"{"stream":"CLICKS","seq":99999999999999999999}"#,
            br#"{"stream":"a"b","seq":1}"#,
            br#"{"stream":"CLICKS","seq":1}x"#,
            br#"{"error":{"code":503,"err_code":10077,"description":"x"}}"#,
        ];
        for p in other {
            assert_eq!(plain_ack(p), None, "{}", String::from_utf8_lossy(p));
        }
        assert_eq!(
            parse_ack(other[0]).unwrap(),
            Ack {
                seq: 7,
                duplicate: true
            }
        );
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
