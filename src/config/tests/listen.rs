//! `[listen]`: addresses, threads, the PROXY protocol and listeners that would clash.

use super::*;

#[test]
fn a_listener_takes_one_address_or_a_list_but_not_an_empty_one() {
    let c =
        parse("[listen]\nhttps = [\"0.0.0.0:443\", \"[::]:443\"]\nhttp = \"[::]:80\"\n").unwrap();
    let all: Vec<String> = c.listen.https.all().iter().map(|a| a.to_string()).collect();
    assert_eq!(all, ["0.0.0.0:443", "[::]:443"]);
    assert_eq!(c.listen.http.all().len(), 1);
    let err = parse("[listen]\nhttps = []\n").unwrap_err().to_string();
    assert!(
        err.contains("https") && err.contains("at least one"),
        "{err}"
    );
    let err = parse("[listen]\nhttp = 443\n").unwrap_err().to_string();
    assert!(
        err.contains("http") && err.contains("list of addresses"),
        "{err}"
    );
}

#[test]
fn a_bad_listen_address_says_what_is_wrong_with_it() {
    for (text, says) in [
        (
            "https = \"localhost:8443\"",
            "\"localhost\" is not an IP address",
        ),
        ("https = [\"127.0.0.1:70000\"]", "port 70000 is above 65535"),
        (
            "http = \"127.0.0.1\"",
            "has no port: give one, e.g. \"127.0.0.1:443\"",
        ),
        ("admin = \"::1\"", "e.g. \"[::1]:443\""),
        (
            "admin = \"[::1]\"",
            "has no port: give one, e.g. \"[::1]:443\"",
        ),
        (
            "admin = \"::1:9180\"",
            "or \"[::1]:9180\" if 9180 is the port",
        ),
        (
            "https = \":443\"",
            "has no address before the port: e.g. \"0.0.0.0:443\"",
        ),
        ("admin = \"127.0.0.1:http\"", "\"http\" is not a port"),
        ("metrics = \"edge.example.net:9181\"", "not an IP address"),
    ] {
        let err = parse(&format!("[listen]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
    let c = parse("[listen]\nadmin = \"[::1]:9180\"\nmetrics = \"127.0.0.1:9181\"\n").unwrap();
    assert_eq!(c.listen.admin, "[::1]:9180".parse().unwrap());
    assert_eq!(c.listen.metrics, Some("127.0.0.1:9181".parse().unwrap()));
}

#[test]
fn https_threads_default_to_the_shared_runtime_and_are_bounded() {
    assert_eq!(parse("").unwrap().listen.https_threads, 0);
    assert_eq!(
        parse("[listen]\nhttps_threads = 2\n")
            .unwrap()
            .listen
            .https_threads,
        2
    );
    let err = parse("[listen]\nhttps_threads = 100000\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listen.https_threads = 100000") && err.contains("one per CPU core"),
        "{err}"
    );
    let err = parse("[listen]\nhttps_threads = -1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("https_threads"), "{err}");
}

#[test]
fn two_listeners_on_one_port_of_one_address_are_refused_naming_both_keys() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    let e = err("[listen]\nhttp = \"127.0.0.1:9180\"\n");
    assert!(
        e.contains("listen.http = \"127.0.0.1:9180\" and listen.admin = \"127.0.0.1:9180\"")
            && e.contains("a port of its own"),
        "{e}"
    );
    let e = err("[listen]\nhttps = [\"127.0.0.1:8443\", \"127.0.0.1:8443\"]\n");
    assert!(
        e.contains("listen.https = \"127.0.0.1:8443\" and listen.https"),
        "{e}"
    );
    // A wildcard takes the port on every address of its family, `[::]` on every address.
    let e = err("[listen]\nhttps = \"0.0.0.0:9180\"\n");
    assert!(
        e.contains("listen.https = \"0.0.0.0:9180\" listens on port 9180 of every address")
            && e.contains("give listen.admin another port"),
        "{e}"
    );
    let e = err("[listen]\nmetrics = \"[::]:8080\"\n");
    assert!(e.contains("listen.metrics = \"[::]:8080\""), "{e}");
    // An IPv4-mapped address is its IPv4 address.
    let e = err("[listen]\nhttp = \"[::ffff:127.0.0.1]:9180\"\n");
    assert!(
        e.contains(
            "listen.http = \"[::ffff:127.0.0.1]:9180\" and listen.admin = \"127.0.0.1:9180\""
        ),
        "{e}"
    );
    let e = err("[listen]\nhttps = \"0.0.0.0:9443\"\nadmin = \"[::ffff:10.0.0.1]:9443\"\n");
    assert!(e.contains("give listen.admin another port"), "{e}");
    // Not clashes: other addresses, other families, one listener's two wildcards, port 0.
    for ok in [
        "[listen]\nhttp = \"127.0.0.2:9180\"\n",
        "[listen]\nhttps = \"0.0.0.0:9443\"\nadmin = \"[::1]:9443\"\n",
        "[listen]\nhttps = [\"0.0.0.0:443\", \"[::]:443\"]\nhttp = [\"0.0.0.0:80\", \"[::]:80\"]\n",
        "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    ] {
        assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
    }
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_they_need_it() {
    let err = parse("[listen]\nproxy_protocol = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listen.proxy_protocol") && err.contains("listen.trusted_proxies"),
        "{err}"
    );
    let err = parse("[listen]\ntrusted_proxies = [\"10.0.0.0/8\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen.proxy_protocol = true"), "{err}");
    let c = parse(
        "[listen]\nproxy_protocol = true\ntrusted_proxies = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n",
    )
    .unwrap();
    let nets: Vec<String> = c
        .listen
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let err = parse("[listen]\nproxy_protocol = true\ntrusted_proxies = [\"lb.internal\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trusted_proxies") && err.contains("lb.internal"),
        "{err}"
    );
}
