//! Shipping over TLS and with each way NATS authenticates: a URL's user and password, a
//! credentials file, a token in the URL.

use super::*;

/// Clicks a fresh link on `edge` `n` times and waits until the stream, read with `reader`, holds
/// click ids 1 to `n` and the edge counts them shipped.
async fn ships_every_click(edge: &Edge, reader: async_nats::Client, n: u64) {
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    for _ in 0..n {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    let msgs = wait_for_ids(&jetstream::new(reader), n as usize).await;
    let ids: BTreeSet<u64> = msgs.iter().map(|(_, v)| click_seq(v)).collect();
    assert_eq!(ids, (1..=n).collect());
    wait_for_metric(edge, "clickedge_clicks_shipped_total", |v| v >= n as f64).await;
}

/// TLS (`tls://`) to a server whose certificate the platform's roots vouch for (here through
/// `SSL_CERT_FILE`), with the URL's user and percent-encoded password: the shipper's own
/// connection and the stream's client both take them, and every click is shipped. The server
/// takes no client without TLS or without the password, so shipping at all shows both were used;
/// the log shows the URL without its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_goes_over_tls_with_the_urls_user_and_password() {
    let certs = common::test_certs("NATS test CA", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("ca.pem"), &certs.ca).unwrap();
    std::fs::write(path("cert.pem"), &certs.cert).unwrap();
    std::fs::write(path("key.pem"), &certs.key).unwrap();
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &path("cert.pem"),
        "--tlskey",
        &path("key.pem"),
        "--user",
        "clicks",
        "--pass",
        "p@ss:word",
    ]);
    let url = format!("tls://clicks:p%40ss%3Aword@localhost:{}", nats.port);
    let config = format!(
        "[cluster]\nnode_id = \"{NODE}\"\n[clicks]\nstream = \"nats\"\nnats_url = \"{url}\"\n\
         flush_interval = \"20ms\"\nmax_clicks_per_ip_per_sec = 0\n"
    );
    let edge = Edge::start_with_env(&[("SSL_CERT_FILE", &path("ca.pem"))], &config);
    let reader =
        async_nats::ConnectOptions::with_user_and_password("clicks".into(), "p@ss:word".into())
            .add_root_certificates(path("ca.pem").into())
            .require_tls(true)
            .connect(format!("tls://localhost:{}", nats.port))
            .await
            .expect("a TLS client with the password");
    ships_every_click(&edge, reader, 30).await;
    // The log names the server, never the password.
    let log = edge.stderr();
    assert!(
        log.contains("url=tls://clicks:***@localhost") && !log.contains("word"),
        "{log}"
    );
}

/// A JWT signed by `issuer`: `{"typ":"JWT","alg":"ed25519-nkey"}`, `claims` with `jti`, `iat`,
/// `iss` and `sub` added, as nsc writes them (version 2).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, mut claims: Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    claims["jti"] = json!(format!("test{subject}"));
    claims["iat"] = json!(1_700_000_000);
    claims["iss"] = json!(issuer.public_key());
    claims["sub"] = json!(subject);
    let signed = format!(
        "{}.{}",
        b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&sig))
}

/// `clicks.nats_credentials`: a server in operator mode (accounts and users as JWTs, the
/// operator's resolver in memory) takes the shipper's connection by the credentials file's user
/// JWT and the nonce signed with its seed, and every click is shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_authenticates_with_a_credentials_file() {
    let (operator, system, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        json!({"name": "test", "nats": {"type": "operator", "version": 2}}),
    );
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1,
        "streams": -1, "consumer": -1});
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        json!({"name": "clicks", "nats": {"limits": unlimited, "type": "account", "version": 2}}),
    );
    // JetStream needs a system account.
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        json!({"name": "SYS", "nats": {"type": "account", "version": 2}}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        json!({"name": "edge", "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1,
            "payload": -1, "type": "user", "version": 2}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("operator.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
            account.public_key(),
            sys = system.public_key()
        ),
    )
    .unwrap();
    let creds = dir.path().join("edge.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let config = format!(
        "{}nats_credentials = \"{}\"\n",
        config(&nats, "buffered"),
        creds.display()
    );
    let edge = Edge::start_with(&config);
    let reader = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .unwrap()
        .connect(nats.url())
        .await
        .expect("a client with the credentials");
    ships_every_click(&edge, reader, 30).await;
}

/// A token in the URL (`nats://TOKEN@host`, percent-encoded) authenticates both the shipper's
/// connection and the stream's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_authenticates_with_a_token_in_the_url() {
    let nats = NatsServer::start_with(&["--auth", "s3cr/t"]);
    let url = format!("nats://s3cr%2Ft@127.0.0.1:{}", nats.port);
    let config = config(&nats, "buffered").replace(&nats.url(), &url);
    let edge = Edge::start_with(&config);
    let reader = async_nats::ConnectOptions::with_token("s3cr/t".into())
        .connect(nats.url())
        .await
        .expect("a client with the token");
    ships_every_click(&edge, reader, 10).await;
    assert!(!edge.stderr().contains("s3cr"), "{}", edge.stderr());
}
