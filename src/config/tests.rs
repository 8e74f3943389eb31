//! Config parsing: defaults, bad values and errors that name the key and file (the documented
//! examples in `docs`).

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("edge.toml"))
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    let one = |a: &str| vec![a.parse::<SocketAddr>().unwrap()];
    assert_eq!(c.listen.https.all(), one("127.0.0.1:8443"));
    assert_eq!(c.listen.http.all(), one("127.0.0.1:8080"));
    assert!(!c.listen.proxy_protocol);
    assert_eq!(c.listen.admin, "127.0.0.1:9180".parse().unwrap());
    assert_eq!(c.tls.issuer, IssuerKind::Local);
    assert!(c.tls.session_resumption);
    assert_eq!(c.clicks_dir(), PathBuf::from("./clickedge-data/clicks"));
    assert_eq!(c.store.kind(), StoreKind::Sqlite);
    assert_eq!(
        c.store_path(),
        PathBuf::from("./clickedge-data/clickedge.db")
    );
}

#[test]
fn store_is_chosen_in_its_table_and_unknown_kinds_and_keys_are_named() {
    let c = parse("[store]\nkind = \"sqlite\"\npath = \"/var/lib/edge.db\"\n").unwrap();
    assert_eq!(c.store.kind(), StoreKind::Sqlite);
    assert_eq!(c.store_path(), PathBuf::from("/var/lib/edge.db"));
    let err = parse("[store]\nkind = \"mysql\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mysql"), "{err}");
    let err = parse("[store]\nurl = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("url"), "{err}");
    let err = parse("[store]\nfile = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("file"), "{err}");
}

#[test]
fn a_store_url_means_postgres_and_never_goes_with_a_sqlite_path() {
    let c = parse("[store]\nurl = \"postgres://edge:pw@127.0.0.1:5432/clickedge\"\n").unwrap();
    assert_eq!(c.store.kind(), StoreKind::Postgres);
    let c = parse("[store]\nkind = \"postgres\"\nurl = \"postgres://edge@db/c\"\n").unwrap();
    assert_eq!(c.store.kind(), StoreKind::Postgres);
    let err = parse("[store]\npath = \"/var/lib/edge.db\"\nurl = \"postgres://edge:pw@db/c\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.path (/var/lib/edge.db)")
            && err.contains("store.url (postgres://edge:***@db/c)"),
        "{err}"
    );
    let err = parse("[store]\nkind = \"postgres\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("store.url"), "{err}");
    let err = parse("[store]\nkind = \"sqlite\"\nurl = \"postgres://edge@db/c\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.kind") && err.contains("store.url"),
        "{err}"
    );
    let err = parse("[store]\nurl = \"mysql://edge@db/c\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://"), "{err}");
}

#[test]
fn onboarding_defaults_and_bad_values() {
    let o = parse("").unwrap().onboarding;
    assert_eq!(o.caa_identities, vec!["letsencrypt.org".to_string()]);
    assert_eq!(o.http_port.get(), 80);
    assert_eq!(o.recheck_interval, Duration::from_secs(300));
    assert!(!o.is_configured());
    let o = parse("[onboarding]\ncname_target = \"Edge.Example.NET.\"\n")
        .unwrap()
        .onboarding;
    assert_eq!(o.cname_target.unwrap().as_str(), "edge.example.net");
    let err = parse("[onboarding]\ncname_target = \"not a name\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cname_target"), "{err}");
    let err = parse("[onboarding]\ncaa_identities = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("onboarding.caa_identities"), "{err}");
    // Addresses that are not: named, with the form to write.
    for (line, says) in [
        (
            "dns_servers = [\"1.1.1.1\"]",
            "\"1.1.1.1\" is not ip:port: add the port: \"1.1.1.1:53\"",
        ),
        (
            "dns_servers = [\"dns.example\"]",
            "\"dns.example\" is not ip:port: write a resolver's IP address and port",
        ),
        (
            "addresses = [\"edge.example.net\"]",
            "\"edge.example.net\" is not an IP address: write the edge's public addresses",
        ),
    ] {
        let err = parse(&format!("[onboarding]\n{line}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{line}: {err}");
    }
    let o = parse("[onboarding]\ndns_servers = [\"[::1]:53\"]\naddresses = [\"2001:db8::10\"]\n")
        .unwrap()
        .onboarding;
    assert_eq!(o.dns_servers[0].to_string(), "[::1]:53");
    assert_eq!(o.addresses[0].to_string(), "2001:db8::10");
}

/// A value checked beyond its type is refused naming its key and the value given.
#[test]
fn values_under_their_minimum_are_refused_naming_the_key_and_the_value() {
    for (text, said) in [
        (
            "[clicks]\nrotate_interval = \"500ms\"\n",
            "clicks.rotate_interval = \"500ms\" is under 1s",
        ),
        (
            "[clicks]\nretention = \"30s\"\n",
            "clicks.retention = \"30s\" is under 1m",
        ),
        (
            "[onboarding]\nrecheck_interval = \"5s\"\n",
            "onboarding.recheck_interval = \"5s\" is under 10s",
        ),
        (
            "[onboarding]\ncaa_identities = [\"letsencrypt.org\", \"lets encrypt\"]\n",
            "onboarding.caa_identities has \"lets encrypt\"",
        ),
        (
            "[tls]\nhandshake_timeout = \"0s\"\n",
            "tls.handshake_timeout = \"0s\" must be greater than zero",
        ),
        (
            "[acme]\norder_timeout = \"0s\"\n",
            "acme.order_timeout = \"0s\" must be greater than zero",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(said), "{text}: {err}");
    }
}

#[test]
fn ask_is_off_by_default_and_rate_limited_when_on() {
    let t = parse("").unwrap().tls;
    assert!(t.ask.is_none());
    assert_eq!((t.ask_rate.get(), t.ask_burst.get()), (10, 20));
    assert_eq!(t.ask_cache_ttl, Duration::from_secs(300));
    let t = parse("[tls]\nask = \"http://127.0.0.1:5555/allowed\"\nask_rate = 2\nask_burst = 5\n")
        .unwrap()
        .tls;
    assert_eq!((t.ask_rate.get(), t.ask_burst.get()), (2, 5));
    let err = parse("[tls]\nask_rate = 0\n").unwrap_err().to_string();
    assert!(err.contains("ask_rate"), "{err}");
}

#[test]
fn unknown_key_names_key_and_file() {
    let err = parse("[tls]\nsession_resumptoin = false\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("edge.toml"), "{err}");
    assert!(err.contains("session_resumptoin"), "{err}");
}

#[test]
fn unknown_challenge_type_is_named() {
    let err = parse("[acme]\nchallenges = [\"dns-01\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("dns-01"), "{err}");
}

#[test]
fn bad_value_names_key() {
    let err = parse("[listen]\nhttps = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("https"), "{err}");
    let err = parse("[clicks]\nflush_interval = \"0s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("clicks.flush_interval"), "{err}");
}

#[test]
fn click_log_cap_defaults_to_10_gib_and_must_leave_room_for_a_whole_file() {
    let c = parse("").unwrap().clicks;
    assert_eq!(c.max_total_bytes, 10 << 30);
    assert!(!c.group_read);
    let c = parse("[clicks]\nmax_total_bytes = 0\ngroup_read = true\n")
        .unwrap()
        .clicks;
    assert_eq!(c.max_total_bytes, 0);
    assert!(c.group_read);
    assert!(parse("[clicks]\nmax_file_bytes = 1000\nmax_total_bytes = 2000\n").is_ok());
    let err = parse("[clicks]\nmax_file_bytes = 1000\nmax_total_bytes = 1999\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("clicks.max_total_bytes"), "{err}");
    assert!(err.contains("2000"), "{err}");
}

#[test]
fn addresses_are_kept_whole_and_visitors_off_by_default_and_a_bad_ip_value_names_the_choices() {
    let c = parse("").unwrap().clicks;
    assert_eq!((c.ip, c.visitor), (IpField::Full, false));
    let c = parse("[clicks]\nip = \"truncated\"\nvisitor = true\n")
        .unwrap()
        .clicks;
    assert_eq!((c.ip, c.visitor), (IpField::Truncated, true));
    let err = parse("[clicks]\nip = \"hashed\"\n")
        .unwrap_err()
        .to_string();
    for part in ["ip", "hashed", "`full`", "`truncated`"] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

#[test]
fn per_address_click_rate_defaults_to_10_and_0_turns_it_off() {
    assert_eq!(parse("").unwrap().clicks.max_clicks_per_ip_per_sec, 10);
    let c = parse("[clicks]\nmax_clicks_per_ip_per_sec = 0\n").unwrap();
    assert_eq!(c.clicks.max_clicks_per_ip_per_sec, 0);
    let err = parse("[clicks]\nmax_clicks_per_ip_per_sec = -1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_clicks_per_ip_per_sec"), "{err}");
}

#[test]
fn local_ca_names_default_to_reserved_zones_and_bad_entries_are_named() {
    let names = parse("").unwrap().tls.local_ca_names;
    assert_eq!(names, crate::domain::Zones::reserved());
    let names = parse("[tls]\nlocal_ca_names = [\"Corp.Internal.\", \"test\"]\n")
        .unwrap()
        .tls
        .local_ca_names;
    assert_eq!(names.to_string(), "corp.internal, test");
    for (bad, shown) in [
        ("[\"*.corp.internal\"]", "*.corp.internal"),
        ("[\"10.0.0.1\"]", "10.0.0.1"),
        ("[\"\"]", "DNS zone \"\""),
    ] {
        let err = parse(&format!("[tls]\nlocal_ca_names = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("local_ca_names"), "{err}");
        assert!(err.contains(shown), "{err}");
    }
    let err = parse("[tls]\nlocal_ca_names = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("local_ca_names"), "{err}");
    assert!(err.contains("at least one DNS zone"), "{err}");
}

#[test]
fn lease_ttl_defaults_to_a_minute_and_must_leave_room_for_heartbeats() {
    assert_eq!(parse("").unwrap().acme.lease_ttl, Duration::from_secs(60));
    assert!(parse("[acme]\nlease_ttl = \"3s\"\n").is_ok());
    let err = parse("[acme]\nlease_ttl = \"2s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("acme.lease_ttl"), "{err}");
    assert!(err.contains("at least 3s"), "{err}");
}

/// A message table forgetting faster than the rules look back would silently judge no burst or
/// decoy at all.
#[test]
fn message_ttl_must_cover_the_message_rules_windows() {
    assert!(parse("[clicks]\nmessage_ttl = \"10s\"\n").is_ok());
    for short in ["0s", "3s"] {
        let err = parse(&format!("[clicks]\nmessage_ttl = \"{short}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("clicks.message_ttl is {short}")),
            "{err}"
        );
        assert!(err.contains("at least 10s"), "{err}");
    }
}

#[test]
fn a_bad_value_is_shown_in_its_line_with_a_caret_and_expected_in_words() {
    let err = parse("[clicks]\nmax_file_bytes = 0\n")
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 4, "one line per part of the snippet:\n{err}");
    assert!(lines.contains(&"2 | max_file_bytes = 0"), "{err}");
    let caret = lines.iter().position(|l| l.trim_end().ends_with('^'));
    assert!(
        caret.is_some_and(|i| lines[i].find('^') == lines[i - 1].find('0')),
        "the caret under the value:\n{err}"
    );
    assert!(
        err.contains("expected a positive number of bytes, e.g. 67108864 or \"64MiB\""),
        "{err}"
    );
    for (text, words) in [
        ("[tls]\nask_rate = 0\n", "expected a whole number above 0"),
        (
            "shutdown_grace = \"5\"\n",
            "expected a duration such as \"100ms\", \"10s\"",
        ),
        ("[onboarding]\nhttp_port = 70000\n", "from 1 to 65535"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(words), "{err}");
        assert!(!err.contains("nonzero") && !err.contains("u16"), "{err}");
    }
}

#[test]
fn byte_counts_take_human_sizes_and_plain_integers() {
    let c = parse(
        "[clicks]\nmax_file_bytes = \"64MiB\"\nmax_buffered_bytes = 1048576\n\
         max_total_bytes = \"10 GiB\"\nmessage_table_bytes = \"32MiB\"\n\
         [limits]\nmax_header_bytes = \"16KiB\"\n\
         max_uri_bytes = \"8kb\"\nadmin_max_body_bytes = 65536\n",
    )
    .unwrap();
    assert_eq!(c.clicks.max_file_bytes.get(), 64 << 20);
    assert_eq!(c.clicks.max_buffered_bytes.get(), 1 << 20);
    assert_eq!(c.clicks.max_total_bytes, 10 << 30);
    assert_eq!(c.clicks.message_table_bytes.get(), 32 << 20);
    assert_eq!(c.limits.max_header_bytes.get(), 16 << 10);
    assert_eq!(c.limits.max_uri_bytes.get(), 8_000);
    assert_eq!(c.limits.admin_max_body_bytes.get(), 65_536);
    assert_eq!(
        parse("[clicks]\nmax_total_bytes = 0\n")
            .unwrap()
            .clicks
            .max_total_bytes,
        0,
        "0: no cap"
    );
    let err = parse("[clicks]\nmax_total_bytes = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a number of bytes (0: no cap)"), "{err}");
}

#[test]
fn acme_account_settings_are_checked_at_load_naming_the_key() {
    let acme = |lines: &str| parse(&format!("[acme]\n{lines}\n")).map(|c| c.acme);
    let a = acme(
        "directory = \"https://ca.example:14000/dir\"\ncontact = [\"mailto:ops@example.com\", \
         \"MAILTO:noc@example.com\"]\neab_kid = \"kid-1\"\neab_hmac_key = \
         \"zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\"",
    )
    .unwrap();
    assert_eq!(a.contact.len(), 2);
    // Padding is ignored, as the ACME client ignores it.
    acme("eab_kid = \"k\"\neab_hmac_key = \"YWJj-_8=\"").unwrap();
    for (lines, says) in [
        (
            "directory = \"http://ca.example/dir\"",
            "acme.directory = \"http://ca.example/dir\" is not an https:// URL",
        ),
        (
            "directory = \"acme-v02.api.letsencrypt.org/directory\"",
            "acme.directory = \"acme-v02.api.letsencrypt.org/directory\" is not an https:// URL",
        ),
        (
            "contact = [\"ops@example.com\"]",
            "acme.contact entry \"ops@example.com\" is not a mailto: URL, the only contact CAs \
             take: write it as \"mailto:ops@example.com\"",
        ),
        (
            "contact = [\"tel:+15555550100\"]",
            "acme.contact entry \"tel:+15555550100\" is not a mailto: URL",
        ),
        (
            "contact = [\"mailto:\"]",
            "acme.contact entry \"mailto:\" is not a mailto: URL",
        ),
        (
            "eab_kid = \"k\"\neab_hmac_key = \"not/base64+url\"",
            "acme.eab_hmac_key is not base64url",
        ),
    ] {
        let err = acme(lines).unwrap_err().to_string();
        assert!(
            err.contains(says) && err.contains("edge.toml"),
            "{lines}: {err}"
        );
        assert!(
            !err.contains("not/base64+url"),
            "the key is not shown: {err}"
        );
    }
}

/// A NATS URL that is not one is named without its secret: the password, or a token (a user
/// without a password), shows as `***`.
#[test]
fn a_bad_nats_url_is_named_without_its_password_or_token() {
    for (url, shown) in [
        ("https://u:hunter2@nats:4222", "https://u:***@nats:4222/"),
        ("https://hunter2@nats:4222", "https://***@nats:4222/"),
    ] {
        let err = parse(&format!("[clicks]\nnats_url = \"{url}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "clicks.nats_url = \"{shown}\" is not a NATS server address"
            )),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// Numbers past any use are refused naming the key, instead of overflowing the clock where a
/// time is computed from them (a panic) or reserving all memory at start (an abort).
#[test]
fn durations_past_100_years_and_a_queue_past_a_million_clicks_are_refused_by_key() {
    for (text, key) in [
        (
            "[acme]\norder_timeout = \"400000000000y\"\n",
            "order_timeout",
        ),
        ("[cluster]\nscan_interval = \"200y\"\n", "scan_interval"),
        ("[clicks]\nretention = \"101y\"\n", "retention"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains("longer than the 100 years a duration may be"),
            "{text}: {err}"
        );
    }
    // 100 years as written, humantime's years (365.25 days) included.
    assert!(parse("[clicks]\nretention = \"100y\"\n").is_ok());
    // A connection cap past what a process can hold open (it panicked at start).
    let err = parse("[limits]\nmax_connections = 9223372036854775807\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("limits.max_connections = 9223372036854775807 is more connections"),
        "{err}"
    );
    let err = parse("[clicks]\nqueue_capacity = 1000000000000\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clicks.queue_capacity is 1000000000000; use at most 1048576"),
        "{err}"
    );
    assert!(parse("[clicks]\nqueue_capacity = 1048576\n").is_ok());
}

/// The stream takes every node's subject with a wildcard where `{node_id}` stands: so it must be
/// a whole token, and before the subject's end (`*`, one token) the node id may hold no dot.
#[test]
fn a_subject_template_the_stream_could_not_take_is_refused() {
    for (subject, node) in [
        ("clicks_{node_id}", "edge-a"),
        ("clicks.{node_id}-x", "edge-a"),
        ("clicks.{node_id}.{node_id}", "edge-a"),
        ("acme.{node_id}.clicks", "edge-a.eu"),
    ] {
        let text = format!(
            "[cluster]\nnode_id = \"{node}\"\n[clicks]\nstream = \"nats\"\nnats_subject = \"{subject}\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("clicks.nats_subject") && err.contains("{node_id}"),
            "{subject}: {err}"
        );
    }
    for (subject, node) in [
        ("acme.{node_id}.clicks", "edge-a"),
        ("clicks.{node_id}", "edge-a.eu"),
        ("clicks", "edge-a.eu"),
    ] {
        let text = format!(
            "[cluster]\nnode_id = \"{node}\"\n[clicks]\nstream = \"nats\"\nnats_subject = \"{subject}\"\n"
        );
        assert!(parse(&text).is_ok(), "{subject} on {node}");
    }
}

mod docs;
mod listen;

/// A value that does not parse on a line that may hold a secret (a password in a URL, a token,
/// a key) is located by line and column, and the line is not shown: the error reaches stderr,
/// and on SIGHUP the log.
#[test]
fn a_bad_secret_value_is_located_without_showing_its_line() {
    for text in [
        "[store]\nurl = \"postgres://edge:ab/cd@db/x\"\n",
        "[store]\nurl = \"postgress://edge:hunter2@db/x\"\n",
        "[admin]\ntoken = \"hunter2\\q\"\n",
        "[admin]\nread_tokens = [\n  \"fine\",\n  \"hunter2\\q\",\n]\n",
        "[acme]\neab_hmac_key = \"hunter2\\q\"\n",
        "[admin]\nread_tokens = [\n  \"fine\",\n  \"abc=hunter2\\q\",\n]\n",
        "[clicks]\nnats_url = \"nats://clicks:ab/cd@nats:4222\"\n",
        "[tls]\nask = \"https://u:ab/cd@ask.internal/check\"\n",
        // A misspelt key holds its secret all the same; the error names the key.
        "[store]\nulr = \"postgres://edge:hunter2@db/x\"\n",
        "[admin]\ntokn = \"hunter2\"\n",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && !err.contains("ab/cd"), "{err}");
        assert!(err.contains("TOML parse error at line "), "{err}");
        assert!(err.contains("the line is not shown"), "{err}");
        if text.contains("ulr") {
            assert!(err.contains("unknown field `ulr`"), "{err}");
        }
    }
    // Other lines are shown as before.
    let err = parse("[clicks]\nmax_file_bytes = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_file_bytes = \"x\""), "{err}");
    // A URL that holds no secret is shown, and its own error does not claim otherwise.
    let err = parse("[onboarding]\npublic_url = \"http://status.example.net\"\n")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("the line is not shown"), "{err}");
    assert!(err.contains("must be https://NAME"), "{err}");
}
