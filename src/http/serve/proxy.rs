//! PROXY protocol v1 and v2 (`listen.proxy_protocol`): the client's address as a load balancer in
//! front of the edge saw it, read from the header it sends before the connection's first byte.
//!
//! Only a peer in `listen.trusted_proxies` may send one, and such a peer must: a header from
//! anyone else, or a trusted peer's connection without one, is refused, never served with the
//! wrong address. The header is read with a deadline and a size bound, and exactly its bytes are
//! taken from the socket (what follows is the client's TLS or HTTP): the framing is here, the
//! parsing is `ppp`'s.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::client;

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// How every v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest v2 header this edge reads: its 16 fixed bytes and up to this many of addresses
/// and TLVs (IPv6 addresses take 36, the TLVs of the usual cloud balancers a few dozen).
const V2_MAX_PAYLOAD: usize = 1024;
/// Both the shortest v1 header (`PROXY UNKNOWN\r\n`) and the shortest v2 one are longer than
/// this, so reading this many bytes never takes any of the client's.
const FIRST_READ: usize = 12;

/// Why a connection was refused before it was served.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProxyError {
    /// The peer is not a trusted proxy, yet sent a header.
    #[error("proxy protocol header from {peer}, which is not in listen.trusted_proxies")]
    Untrusted {
        /// The connection's peer.
        peer: SocketAddr,
    },
    /// The peer is a trusted proxy, but its connection does not start with a header.
    #[error("connection from trusted proxy {peer} without a proxy protocol header")]
    Missing {
        /// The connection's peer.
        peer: SocketAddr,
    },
    /// The header did not arrive within the handshake timeout.
    #[error("proxy protocol header not received in time")]
    Timeout,
    /// The connection ended inside the header.
    #[error("proxy protocol header truncated")]
    Truncated,
    /// The header is longer than the edge reads.
    #[error("proxy protocol header longer than {max} bytes")]
    Oversized {
        /// The bound it passed.
        max: usize,
    },
    /// Reading the socket failed.
    #[error("reading the proxy protocol header")]
    Read(#[source] std::io::Error),
    /// A v1 header that does not parse.
    #[error("malformed proxy protocol v1 header")]
    V1(#[source] ppp::v1::BinaryParseError),
    /// A v2 header that does not parse.
    #[error("malformed proxy protocol v2 header")]
    V2(#[source] ppp::v2::ParseError),
}

impl ProxyError {
    /// The `reason` label of `clickedge_proxy_protocol_refused_total`.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            ProxyError::Untrusted { .. } => "untrusted",
            ProxyError::Missing { .. } => "missing",
            ProxyError::Timeout => "timeout",
            ProxyError::Truncated
            | ProxyError::Oversized { .. }
            | ProxyError::V1(_)
            | ProxyError::V2(_) => "malformed",
            ProxyError::Read(_) => "io",
        }
    }
}

/// The listeners' PROXY protocol settings.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    trusted: Vec<IpNet>,
    timeout: Duration,
}

impl ProxyProtocol {
    /// Headers accepted from peers in `trusted` only, each read within `timeout`. A network
    /// written IPv4-mapped (`::ffff:10.0.0.0/104`) is taken as the IPv4 one it maps: peers are
    /// compared in canonical form, an IPv4 client of a dual-stack listener as IPv4.
    pub fn new(trusted: Vec<IpNet>, timeout: Duration) -> ProxyProtocol {
        let trusted = trusted.into_iter().map(canonical_net).collect();
        ProxyProtocol { trusted, timeout }
    }

    /// Whether `peer` is a trusted proxy, whose connections must start with a header.
    pub(super) fn trusts(&self, peer: SocketAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&peer.ip()))
    }

    /// The client of a connection from `peer` (canonical): the header's source when `peer` is a
    /// trusted proxy, `peer` itself when it is not (and sent no header), or when the proxy's
    /// header names no client (v2 `LOCAL`, v1 `UNKNOWN`: the proxy's own health checks).
    pub(super) async fn client(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, ProxyError> {
        let trusted = self.trusts(peer);
        let read = async {
            if trusted {
                read_header(tcp, peer).await
            } else {
                refuse_header(tcp, peer).await.map(|()| None)
            }
        };
        let source = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ProxyError::Timeout)??;
        Ok(source.map_or(peer, client::canonical))
    }
}

/// `net` written IPv4-mapped (within `::ffff:0:0/96`) as the IPv4 network it maps; any other
/// as it is.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// A connection from a peer that may not send a header: refused if it starts like one. Bytes
/// that start like a header but are too few to tell are peeked at again once more arrive
/// (within the caller's timeout), so a header sent in small pieces is refused too.
async fn refuse_header(tcp: &TcpStream, peer: SocketAddr) -> Result<(), ProxyError> {
    let mut first = [0; FIRST_READ];
    loop {
        let n = tcp.peek(&mut first).await.map_err(ProxyError::Read)?;
        if looks_like_header(&first[..n]) {
            return Err(ProxyError::Untrusted { peer });
        }
        if n == 0 || n >= 5 || !starts_like_header(&first[..n]) {
            return Ok(());
        }
        // `peek` answers at once while those bytes wait: look again a moment later.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True if `bytes` (the first of a connection, at least five to tell) start a v1 or v2 header;
/// neither a TLS record nor an HTTP request starts like one.
fn looks_like_header(bytes: &[u8]) -> bool {
    bytes.len() >= 5 && starts_like_header(bytes)
}

/// True if `bytes`, however few, are the start of a v1 or v2 header.
fn starts_like_header(bytes: &[u8]) -> bool {
    let starts = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    starts(&V2_SIGNATURE) || starts(V1_PREFIX)
}

/// Reads a trusted proxy's header, exactly its bytes; the client it names, if any.
async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut header = vec![0; FIRST_READ];
    read_exact(tcp, &mut header).await?;
    if header[..] == V2_SIGNATURE {
        read_v2(tcp, header).await
    } else if header.starts_with(V1_PREFIX) {
        read_v1(tcp, header).await
    } else {
        Err(ProxyError::Missing { peer })
    }
}

/// The rest of a v2 header after its signature: 4 bytes that end with the length, then that many.
async fn read_v2(
    tcp: &mut TcpStream,
    mut header: Vec<u8>,
) -> Result<Option<SocketAddr>, ProxyError> {
    header.resize(16, 0);
    read_exact(tcp, &mut header[FIRST_READ..]).await?;
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::Oversized {
            max: 16 + V2_MAX_PAYLOAD,
        });
    }
    header.resize(16 + len, 0);
    read_exact(tcp, &mut header[16..]).await?;
    // Version 2, command LOCAL (the proxy's own connection, a health check): its address block
    // is ignored, whatever family it says (the spec; parsing would refuse a family with a
    // shorter block than it needs).
    if header[12] == 0x20 {
        return Ok(None);
    }
    let parsed = ppp::v2::Header::try_from(&header[..]).map_err(ProxyError::V2)?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

/// The rest of a v1 header: up to its line feed, within [`V1_MAX`]. The bytes are peeked first
/// and only those up to the line feed are taken, so the client's first bytes stay in the socket.
async fn read_v1(
    tcp: &mut TcpStream,
    mut header: Vec<u8>,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = [0; V1_MAX];
    while header.last() != Some(&b'\n') {
        let room = V1_MAX - header.len();
        if room == 0 {
            return Err(ProxyError::Oversized { max: V1_MAX });
        }
        // Waits for bytes not yet taken: every byte peeked before was read below.
        let n = tcp.peek(&mut buf[..room]).await.map_err(ProxyError::Read)?;
        if n == 0 {
            return Err(ProxyError::Truncated);
        }
        let take = buf[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        read_exact(tcp, &mut buf[..take]).await?;
        header.extend_from_slice(&buf[..take]);
    }
    let parsed = ppp::v1::Header::try_from(&header[..]).map_err(ProxyError::V1)?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

async fn read_exact(tcp: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProxyError> {
    match tcp.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyError::Truncated),
        Err(e) => Err(ProxyError::Read(e)),
    }
}

#[cfg(test)]
mod tests;
