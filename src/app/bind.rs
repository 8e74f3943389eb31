//! Binding the listeners, and an error that says what to do when the kernel refuses: no
//! permission for a port below 1024 names `CAP_NET_BIND_SERVICE`, a port in use names the key
//! to change.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `addr`, the value of config key `key`.
pub(super) async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = bind_hint(addr, key, e.kind());
        anyhow::Error::new(e).context(hint)
    })
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
    async fn a_port_in_use_is_named_with_its_key() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = format!("{:#}", bind(addr, "listen.admin").await.unwrap_err());
        assert!(
            err.contains(&format!("listen.admin = \"{addr}\": another process")),
            "{err}"
        );
    }
}
