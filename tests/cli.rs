//! The command line as a user meets it: `--help` that documents the config with defaults,
//! config errors that name the key and the file, and the client commands against a running edge
//! (the domain commands in `cli/domains.rs`, the link key commands in `cli/keys.rs`).

mod common;

#[path = "cli/domains.rs"]
mod domains;
#[path = "cli/keys.rs"]
mod keys;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::process::Command;

use common::{Edge, bin};

#[test]
fn serve_help_documents_every_config_key_with_its_default() {
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for key in [
        "data_dir = \"./clickedge-data\"",
        "https = \"127.0.0.1:8443\"",
        "http  = \"127.0.0.1:8080\"",
        "admin = \"127.0.0.1:9180\"",
        "issuer = \"local\"",
        "on_demand_timeout = \"10s\"",
        "session_resumption = true",
        "local_ca_names = [\"example\", \"example.com\"",
        "flush_interval = \"100ms\"",
        "durability = \"buffered\"",
        "ip = \"full\"",
        "visitor = false",
        "max_connections = 10000",
        "http_max_connections = 1000",
        "max_connections_per_ip = 256",
        "close_timeout = \"10s\"",
        "write_timeout = \"30s\"",
        "h2_keepalive_interval = \"20s\"",
        "h2_keepalive_timeout = \"10s\"",
        "admin_max_connections = 64",
        "admin_header_read_timeout = \"10s\"",
        "CLICKEDGE_CONFIG",
    ] {
        assert!(help.contains(key), "missing {key:?} in:\n{help}");
    }
    assert!(help.contains("--log-format"), "{help}");
    // The log format is serve's: client commands log nothing, so their help does not offer it.
    let domain = Command::new(bin())
        .args(["domain", "list", "--help"])
        .output()
        .unwrap();
    let domain = String::from_utf8(domain.stdout).unwrap();
    assert!(domain.contains("--admin"), "{domain}");
    assert!(!domain.contains("--log-format"), "{domain}");
    let version = Command::new(bin()).arg("--version").output().unwrap();
    assert!(
        String::from_utf8(version.stdout)
            .unwrap()
            .starts_with("clickedge ")
    );
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "[tls]\nsesion_resumption = false\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("sesion_resumption"), "{err}");
    assert!(err.contains("edge.toml"), "{err}");

    // The environment variable names the file too.
    std::fs::write(&path, "[listen]\nhttps = \"nowhere\"\n").unwrap();
    let out = Command::new(bin())
        .arg("serve")
        .env("CLICKEDGE_CONFIG", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("https") && err.contains("edge.toml"), "{err}");
}

#[tokio::test]
async fn client_commands_add_list_link_and_remove() {
    let edge = Edge::start();
    // The config listens on port 0, so the address comes from --admin; the token from the
    // data dir named by the config.
    let admin = format!("http://{}", edge.admin);
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(edge.config_path())
            .args(args)
            .args(["--admin", &admin])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, out, err) = run(&["domain", "add", "links.example.com"]);
    assert!(ok, "{err}");
    assert!(out.contains("added links.example.com"));
    let (ok, out, _) = run(&["domain", "list"]);
    assert!(ok);
    assert!(
        out.contains("links.example.com") && out.contains("none"),
        "{out}"
    );
    let (ok, link, err) = run(&[
        "link",
        "https://example.com/x",
        "--domain",
        "links.example.com",
        "--meta",
        "campaign=spring",
    ]);
    assert!(ok, "{err}");
    let link = link.trim();
    assert!(link.starts_with("https://links.example.com/c/"), "{link}");
    let res = edge
        .client(&["links.example.com"])
        .get(edge.on_port(link))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks[0]["meta"]["campaign"], "spring");

    let (ok, _, err) = run(&[
        "link",
        "javascript:alert(1)",
        "--domain",
        "links.example.com",
    ]);
    assert!(!ok);
    assert!(
        err.contains("javascript:alert(1)") && err.contains("400"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "link",
        "https://e.com/",
        "--domain",
        "d.example.com",
        "--meta",
        "novalue",
    ]);
    assert!(!ok);
    assert!(err.contains("KEY=VALUE"), "{err}");

    let (ok, out, _) = run(&["domain", "show", "links.example.com", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["certificate"]["status"], "valid");
    let (ok, _, err) = run(&["domain", "remove", "links.example.com"]);
    assert!(!ok, "removed without --yes and without a terminal");
    // The command as it was run, --config and --admin included, to paste with --yes.
    assert!(
        err.contains(&format!(
            " --config {} domain remove links.example.com --admin {admin} --yes",
            edge.config_path().display()
        )),
        "{err}"
    );
    let (ok, _, _) = run(&["domain", "show", "links.example.com"]);
    assert!(ok, "the refused remove removed the domain");
    let (ok, _, _) = run(&["domain", "remove", "links.example.com", "--yes"]);
    assert!(ok);
    let (ok, _, err) = run(&["domain", "show", "links.example.com"]);
    assert!(!ok);
    assert!(err.contains("not registered"), "{err}");
    // Removed already: nothing to remove, not a hint to add it.
    let (ok, _, err) = run(&["domain", "remove", "links.example.com", "--yes"]);
    assert!(!ok);
    assert!(err.contains("nothing to remove"), "{err}");
    assert!(!err.contains("domain add"), "{err}");
}

/// A client command against `edge`'s admin API, with its config.
fn client(edge: &Edge, args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("--config")
        .arg(edge.config_path())
        .args(args)
        .args(["--admin", &format!("http://{}", edge.admin)]);
    command
}

/// A proxy set in the environment is not used for the admin API: the token would go to it, and
/// the edge's address is not the proxy's to reach.
#[tokio::test]
async fn client_commands_reach_the_admin_api_past_a_proxy_in_the_environment() {
    let edge = Edge::start();
    // Nothing listens there: a command that went through it would fail.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    for command in [&["domain", "list"][..], &["health"][..]] {
        let out = client(&edge, command)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("ALL_PROXY", &proxy)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn a_link_with_a_meta_key_twice_or_without_a_typed_host_is_refused() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let run = |args: &[&str]| client(&edge, args).output().unwrap();
    let out = run(&[
        "link",
        "https://example.com/",
        "--domain",
        "links.example.com",
        "--meta",
        "campaign=a",
        "--meta",
        "campaign=b",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--meta campaign=… is given twice"), "{err}");

    let out = run(&["link", "https:///path", "--domain", "links.example.com"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("with a host"), "{err}");
}

/// Runs a client command; its success, stdout and stderr.
fn run_client(edge: &Edge, args: &[&str]) -> (bool, String, String) {
    let out = client(edge, args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_with_success() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    // The reading end is closed before the command starts, so its first write meets EPIPE, as
    // `clickedge domain list | head -0` would.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [
        &["domain", "list"][..],
        &["keys", "list"],
        &["domain", "list", "--json"],
    ] {
        let out = client(&edge, args)
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// `clickedge serve | head -1`, or a supervisor that closes stdout: the banner cannot be
/// written, and the edge serves on (it once panicked on the broken pipe and exited).
#[tokio::test]
async fn serve_with_stdout_closed_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clickedge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reading end closed before the edge writes a byte
    let admin = common::poll_file(&log, "where the edge listens, logged", |text| {
        text.lines()
            .find(|l| l.contains("listening"))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .map(str::to_owned)
    });
    let ready = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(child.try_wait().unwrap().is_none(), "the edge exited");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
}

/// A client command that cannot use what it was given says which thing and what to give: the
/// token refused names where it was read, a server that is not the admin API is told apart,
/// and an `--admin` without `http://` is refused before anything is sent.
#[tokio::test]
async fn a_client_command_names_the_token_or_address_that_failed() {
    let edge = Edge::start();
    let run = |env: &[(&str, &OsStr)], admin: &str| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(edge.config_path())
            .args(["domain", "list", "--admin", admin])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let admin = format!("http://{}", edge.admin);
    let err = run(
        &[(
            "CLICKEDGE_ADMIN_TOKEN",
            OsStr::new("not-the-token-0123456789"),
        )],
        &admin,
    );
    assert!(
        err.contains("refused the token read from CLICKEDGE_ADMIN_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("not-the-token"), "{err}");
    // A token no edge can hold (one outside visible ASCII is refused at its start) is refused
    // before it is sent, saying what is wrong with it rather than that it was refused.
    let refused =
        "the admin token read from CLICKEDGE_ADMIN_TOKEN has a character outside visible ASCII";
    let err = run(
        &[(
            "CLICKEDGE_ADMIN_TOKEN",
            OsStr::new("jeton-numéro-0123456789"),
        )],
        &admin,
    );
    assert!(err.contains(refused), "{err}");
    assert!(!err.contains("numéro"), "{err}");
    // Nor one that is not UTF-8 at all, which is not passed over for the token file either (it
    // was, in silence: that token may be another, wider one).
    let err = run(
        &[(
            "CLICKEDGE_ADMIN_TOKEN",
            OsStr::from_bytes(b"jeton-\xff-0123456789"),
        )],
        &admin,
    );
    assert!(err.contains(refused), "{err}");

    // The plain HTTP listener answers 404 in text, not as the admin API.
    let err = run(&[], &format!("http://{}", edge.http));
    assert!(err.contains("is it listen.admin's address?"), "{err}");
    assert!(!err.contains("\\n"), "{err}");

    let bare = edge.admin.to_string();
    let err = run(&[], &bare);
    assert!(err.contains(&format!("e.g. http://{bare}")), "{err}");

    // A server that answers 200 with a page (a proxy's): not an empty list, exit 0.
    let page = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = page.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = page.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = std::io::Read::read(&mut conn, &mut request);
        let body = "<html>Welcome</html>";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        std::io::Write::write_all(&mut conn, answer.as_bytes()).unwrap();
    });
    let err = run(&[], &format!("http://{at}"));
    server.join().unwrap();
    assert!(err.contains("something other than JSON"), "{err}");
    assert!(err.contains("is it listen.admin's address?"), "{err}");
}

/// A `CLICKEDGE_LOG` that is not a filter does not stop the edge, and is not ignored in silence.
#[test]
fn a_bad_log_filter_in_the_environment_is_said_once_logging_is_up() {
    let edge = Edge::start_with_env(&[("CLICKEDGE_LOG", "[[[")], "");
    let log = edge.wait_for_log("CLICKEDGE_LOG is not a log filter", 1);
    assert!(log.contains("value=[[["), "{log}");
}

/// `clickedge rewrite` of message m1 on links.example.com with `args`, no edge needed (each
/// case is refused before anything is sent).
fn rewrite_cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args([
            "rewrite",
            "--domain",
            "links.example.com",
            "--message",
            "m1",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// Both parts from stdin: the second would read nothing and be rewritten as empty. Refused
/// before anything is sent, saying so.
#[test]
fn both_parts_from_stdin_are_refused() {
    let out = rewrite_cli(&["--html", "-", "--text", "-"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("would both read stdin"), "{stderr}");
}

/// The pixel and the decoy live in HTML: asking for them with a text part alone is refused
/// before anything is sent, naming --html (they were dropped in silence).
#[test]
fn pixel_or_decoy_without_an_html_part_is_refused() {
    for flag in ["--pixel", "--decoy"] {
        let out = rewrite_cli(&["--text", "-", flag]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--html <FILE>"),
            "{out:?}"
        );
    }
}

/// `cluster keygen` runs locally: a `$CLICKEDGE_CONFIG` naming a file this host does not have
/// does not stop it. An empty `$CLICKEDGE_CONFIG` is unset (it was the path ""), as for every
/// other variable of the edge's.
#[test]
fn keygen_reads_no_config_and_an_empty_config_variable_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["cluster", "keygen"])
        .arg(dir.path().join("seal.key"))
        .env("CLICKEDGE_CONFIG", dir.path().join("missing.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("seal.key").exists());
    let out = Command::new(bin())
        .args(["classify", "--replay", "tests/data/verdict-corpus.jsonl"])
        .env("CLICKEDGE_CONFIG", "")
        .env("CLICKEDGE_LOG_FORMAT", "")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A `--nats-url` that is not a URL is refused naming the flag, its password not repeated (the
/// parser's own error echoed the whole value).
#[test]
fn a_bad_nats_url_is_refused_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let given = "nats://reader:s3cret@[::1/x";
    let from_flag = Command::new(bin())
        .current_dir(dir.path())
        .args(["clicks", "follow", "--nats-url", given])
        .env_remove("CLICKEDGE_CONFIG")
        .output()
        .unwrap();
    let from_env = Command::new(bin())
        .current_dir(dir.path())
        .args(["clicks", "follow"])
        .env_remove("CLICKEDGE_CONFIG")
        .env("CLICKEDGE_NATS_URL", given)
        .output()
        .unwrap();
    // A password with a '/' in it (not percent-encoded: why it is no URL) is hidden too.
    let slashed = Command::new(bin())
        .current_dir(dir.path())
        .args([
            "clicks",
            "follow",
            "--nats-url",
            "nats://reader:s3/cret@127.0.0.1:4222",
        ])
        .env_remove("CLICKEDGE_CONFIG")
        .output()
        .unwrap();
    for (out, shown) in [
        (from_flag, "nats://***@[::1/x"),
        (from_env, "nats://***@[::1/x"),
        (slashed, "nats://***@127.0.0.1:4222"),
    ] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--nats-url"), "{stderr}");
        assert!(stderr.contains(shown), "{stderr}");
        assert!(!stderr.contains("s3"), "{stderr}");
    }
}

/// An empty `CLICKEDGE_NATS_URL` is unset, as every `CLICKEDGE_` variable: the config's
/// `clicks.nats_url` is used (it was refused as no URL).
#[test]
fn an_empty_nats_url_variable_leaves_the_configs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    // A port nobody listens on.
    std::fs::write(&config, "[clicks]\nnats_url = \"nats://127.0.0.1:1\"\n").unwrap();
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["clicks", "follow", "--config"])
        .arg(&config)
        .env("CLICKEDGE_NATS_URL", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connecting to NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
}
