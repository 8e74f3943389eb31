//! Binding the listeners, and an error that says what to do when the kernel refuses: no
//! permission for a port below 1024 names `CAP_NET_BIND_SERVICE`, a port in use names the key
//! to change.
//!
//! An IPv6 wildcard (`[::]`) is dual-stack, set explicitly (`IPV6_V6ONLY` off) rather than left
//! to the host's `net.ipv6.bindv6only`: IPv4 clients arrive IPv4-mapped, and are seen as IPv4
//! (`client::canonical`). When the same listener also lists `0.0.0.0` on that port, the IPv4
//! socket takes the IPv4 clients and `[::]` is IPv6 only, so both can be bound.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use super::Addrs;
use crate::config::Config;

/// The kernel's queue of connections not yet accepted (tokio's and std's choice too).
const BACKLOG: i32 = 1024;

/// Every listener of a config, bound.
pub(super) struct Listeners {
    /// `listen.https`: one list per address, a socket per HTTPS thread (else one).
    pub https: Vec<Vec<TcpListener>>,
    /// `listen.http`.
    pub http: Vec<TcpListener>,
    /// `listen.admin`.
    pub admin: TcpListener,
    /// `listen.metrics`, if configured.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener of `config`; the first refused names its key.
    pub(super) fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let https_threads = config.listen.https_threads.max(1);
        Ok(Listeners {
            https: bind_copies(config.listen.https.all(), "listen.https", https_threads)?,
            http: bind_all(config.listen.http.all(), "listen.http")?,
            admin: bind(config.listen.admin, "listen.admin")?,
            metrics: config
                .listen
                .metrics
                .map(|addr| bind(addr, "listen.metrics"))
                .transpose()?,
        })
    }

    /// The addresses bound (the ports the kernel chose for port 0).
    pub(super) fn addrs(&self) -> std::io::Result<Addrs> {
        Ok(Addrs {
            https: self
                .https
                .iter()
                .map(|copies| copies[0].local_addr())
                .collect::<std::io::Result<_>>()?,
            http: self
                .http
                .iter()
                .map(TcpListener::local_addr)
                .collect::<std::io::Result<_>>()?,
            admin: self.admin.local_addr()?,
            metrics: self
                .metrics
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        })
    }
}

/// Binds each of `addrs`, the value of config key `key`.
fn bind_all(addrs: &[SocketAddr], key: &str) -> anyhow::Result<Vec<TcpListener>> {
    Ok(bind_copies(addrs, key, 1)?.into_iter().flatten().collect())
}

/// Binds each of `addrs` `copies` times, `SO_REUSEPORT` when more than once (the kernel spreads
/// an address's connections over its sockets): one list of sockets per address.
fn bind_copies(
    addrs: &[SocketAddr],
    key: &str,
    copies: usize,
) -> anyhow::Result<Vec<Vec<TcpListener>>> {
    let shared = copies > 1;
    addrs
        .iter()
        .map(|&addr| {
            let ipv4_beside = addrs.iter().any(|a| {
                a.port() == addr.port()
                    && a.port() != 0
                    && a.ip() == std::net::Ipv4Addr::UNSPECIFIED
            });
            let first = bind_socket(addr, key, ipv4_beside, shared)?;
            // Port 0: the others join the port the first one got.
            let addr = first.local_addr()?;
            let mut all = vec![first];
            for _ in 1..copies {
                all.push(bind_socket(addr, key, ipv4_beside, shared)?);
            }
            Ok(all)
        })
        .collect()
}

/// Binds `addr`, the value of config key `key`.
fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    bind_socket(addr, key, false, false)
}

fn bind_socket(
    addr: SocketAddr,
    key: &str,
    only_v6: bool,
    reuse_port: bool,
) -> anyhow::Result<TcpListener> {
    listen(addr, only_v6, reuse_port).map_err(|e| {
        let hint = bind_hint(addr, key, e.kind());
        anyhow::Error::new(e).context(hint)
    })
}

/// A listening socket on `addr`, set up as `TcpListener::bind` does (`SO_REUSEADDR`, so a
/// restarted edge binds while its old connections linger in TIME_WAIT), plus `IPV6_V6ONLY`,
/// `SO_REUSEPORT` when asked, and `TCP_NODELAY`, which Linux copies to every connection it
/// accepts: a response goes out when written, without a system call per connection to say so.
fn listen(addr: SocketAddr, only_v6: bool, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What to do when `key = addr` cannot be bound, by what the kernel said.
fn bind_hint(addr: SocketAddr, key: &str, kind: std::io::ErrorKind) -> String {
    use std::io::ErrorKind;
    let what = format!("binding {key} = \"{addr}\"");
    match kind {
        // EACCES: a port below 1024 (net.ipv4.ip_unprivileged_port_start) without the capability.
        ErrorKind::PermissionDenied => format!(
            "{what}: no permission to listen on port {port}; ports below 1024 need \
             CAP_NET_BIND_SERVICE: grant it (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; \
             or: setcap cap_net_bind_service=+ep <the clickedge binary>), or pick a port above 1023",
            port = addr.port()
        ),
        ErrorKind::AddrInUse => format!(
            "{what}: another process is listening there; stop it or pick a free port in the config"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{what}: {ip} is not an address of this machine; use one of its addresses, or \
             0.0.0.0 / [::] for all",
            ip = addr.ip()
        ),
        _ => what,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_wildcard_ipv6_listener_takes_ipv4_unless_an_ipv4_wildcard_is_beside_it() {
        if !crate::netns::entered(
            "app::bind::tests::a_wildcard_ipv6_listener_takes_ipv4_unless_an_ipv4_wildcard_is_beside_it",
        ) {
            return;
        }
        let dual = bind_all(&["[::]:0".parse().unwrap()], "listen.https").unwrap();
        let port = dual[0].local_addr().unwrap().port();
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("an IPv4 client of [::]");
        drop(dual);

        // Both wildcards on one port: only possible with [::] IPv6 only.
        let port = TcpListener::bind("0.0.0.0:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let both: Vec<SocketAddr> = vec![
            format!("[::]:{port}").parse().unwrap(),
            format!("0.0.0.0:{port}").parse().unwrap(),
        ];
        let listeners = bind_all(&both, "listen.https").unwrap();
        assert_eq!(listeners.len(), 2);
    }

    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn a_bind_refused_for_permission_names_the_capability_not_another_process() {
        let addr = SocketAddr::from(([0, 0, 0, 0], 443));
        let denied = bind_hint(addr, "listen.https", ErrorKind::PermissionDenied);
        assert!(denied.contains("CAP_NET_BIND_SERVICE"), "{denied}");
        assert!(
            denied.contains("listen.https = \"0.0.0.0:443\""),
            "{denied}"
        );
        assert!(!denied.contains("another process"), "{denied}");
        let in_use = bind_hint(addr, "listen.https", ErrorKind::AddrInUse);
        assert!(in_use.contains("another process"), "{in_use}");
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off_from_the_listener() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = bind(addr.parse().unwrap(), "listen.https").unwrap();
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "{addr}: accepted without TCP_NODELAY"
            );
            assert!(
                !client.nodelay().unwrap(),
                "a client socket has Nagle on by default"
            );
        }
    }

    #[tokio::test]
    async fn copies_of_a_listener_share_its_port_and_each_accepts() {
        let copies = bind_copies(&["127.0.0.1:0".parse().unwrap()], "listen.https", 3).unwrap();
        let [copies] = <[Vec<TcpListener>; 1]>::try_from(copies).unwrap();
        let port = copies[0].local_addr().unwrap().port();
        assert!(
            copies
                .iter()
                .all(|l| l.local_addr().unwrap().port() == port)
        );
        // The kernel picks the copy by the connection's addresses: enough connections reach
        // every copy.
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        for (i, copy) in copies.iter().enumerate() {
            tokio::time::timeout(std::time::Duration::from_secs(5), copy.accept())
                .await
                .unwrap_or_else(|_| panic!("copy {i} accepted nothing of 64 connections"))
                .unwrap();
        }
        // A copy is a listener of ours only: the port stays refused to one without the option.
        let err = format!(
            "{:#}",
            bind(copies[0].local_addr().unwrap(), "listen.https").unwrap_err()
        );
        assert!(err.contains("another process"), "{err}");
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_with_its_key() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = format!("{:#}", bind(addr, "listen.admin").unwrap_err());
        assert!(
            err.contains(&format!("listen.admin = \"{addr}\": another process")),
            "{err}"
        );
    }
}
