//! Errors that teach an operator what to do: an ACME directory that cannot be reached is a
//! warning at start, not a surprise at the first order; config errors show the bad value; a
//! port below 1024 without the capability names `CAP_NET_BIND_SERVICE` (the edge started as an
//! unprivileged user by util-linux's `setpriv`).

mod common;

use std::process::Command;

use common::{Edge, bin};

#[test]
fn an_unreachable_acme_directory_is_a_warning_at_start() {
    // A port nothing listens on: taken, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut edge = Edge::start_with(&format!(
        "[tls]\nissuer = \"acme\"\n[acme]\ndirectory = \"https://127.0.0.1:{port}/dir\"\n"
    ));
    let log = edge.wait_for_log("could not reach the CA", 1);
    assert!(log.contains(&format!("127.0.0.1:{port}/dir")), "{log}");
    assert!(edge.alive(), "a warning, not a refusal to start");
}

#[test]
fn a_config_error_shows_the_line_with_a_caret_under_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "[clicks]\nmax_file_bytes = \"64 megs\"\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for part in [
        "edge.toml",
        "\n2 | max_file_bytes = \"64 megs\"\n",
        "^^^^^^^^^",
        "expected a positive number of bytes, e.g. 67108864 or \"64MiB\"",
    ] {
        assert!(err.contains(part), "missing {part:?} in:\n{err}");
    }
}

/// The lowest port the kernel lets any process bind (`net.ipv4.ip_unprivileged_port_start`).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .expect("reading net.ipv4.ip_unprivileged_port_start")
        .trim()
        .parse()
        .expect("a port number")
}

/// Fails the test naming util-linux when `program` is missing.
fn util_linux(program: &str) -> String {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    match found {
        Some(path) => path.display().to_string(),
        None => panic!("{program} is missing: install the Debian package util-linux"),
    }
}

/// `serve` started by an unprivileged user (nobody, no capabilities at all, through util-linux's
/// `setpriv`) with `listen.https` on a port below 1024 fails to start, saying the port needs
/// `CAP_NET_BIND_SERVICE`. Where ports below 1024 are not privileged on this machine
/// (`net.ipv4.ip_unprivileged_port_start` at or below the port), the edge runs in a network
/// namespace of its own (`unshare -n`) whose setting is put back to the kernel default, 1024.
#[test]
fn binding_a_privileged_port_without_the_capability_names_cap_net_bind_service() {
    use std::os::unix::fs::MetadataExt as _;
    let setpriv = util_linux("setpriv");
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    // A privileged port nothing else uses: free on this machine, or any in a namespace.
    let privileged_here = unprivileged_port_start() > 1000;
    let port = if privileged_here {
        (900..1000)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port in 900..1000")
    } else {
        980
    };
    let dir = tempfile::tempdir().unwrap();
    let mut command = if root {
        // The unprivileged user owns the data dir, as it would on a host set up for it.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let drop_privileges = format!(
            "exec {setpriv} --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
             --bounding-set=-all \"$0\" \"$@\""
        );
        let script = if privileged_here {
            drop_privileges
        } else {
            format!(
                "echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start && {drop_privileges}"
            )
        };
        let mut sh = if privileged_here {
            Command::new("sh")
        } else {
            let mut ns = Command::new(util_linux("unshare"));
            ns.args(["-n", "sh"]);
            ns
        };
        sh.arg("-c").arg(script).arg(bin());
        sh
    } else {
        // Not root: already unprivileged, but no namespace of our own to make ports privileged.
        assert!(
            privileged_here,
            "ports below 1024 are not privileged here (net.ipv4.ip_unprivileged_port_start) \
             and only root can give the edge a network namespace where they are: run as root"
        );
        Command::new(bin())
    };
    command.env_remove("CLICKEDGE_SEAL_KEY");
    let err = common::refused_start_as(
        command,
        dir.path(),
        &format!(
            "[listen]\nhttps = \"127.0.0.1:{port}\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n"
        ),
    );
    assert!(
        err.contains(&format!("no permission to listen on port {port}")),
        "{err}"
    );
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
    assert!(
        err.contains(&format!("binding listen.https = \"127.0.0.1:{port}\"")),
        "{err}"
    );
}
