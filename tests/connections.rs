//! No connection lives forever, and a flood on one port does not starve another. Each test
//! reproduces an attack against the real binary and shows it now fails: an h2 client that never
//! answers a PING, an HTTP/1.1 client that pipelines requests and never reads the responses, a
//! flood of held connections at one listener's cap, many connections from one address, and a
//! half-sent request (head or body) or a crowd on the admin port. Also: the binary raises its
//! open-files limit and says when the caps cannot fit in it.
//!
//! Configured timeouts are small (1 s) so the tests are quick; "closed in time" means within the
//! configured deadline plus [`SLACK`] for a loaded machine.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Edge;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

const DOMAIN: &str = "links.example.com";

/// Room on top of a configured deadline for a loaded machine; not a timing claim.
const SLACK: Duration = Duration::from_secs(10);

/// The h2 connection preface and an empty SETTINGS frame (RFC 9113 §3.4): enough for the edge
/// to serve the connection. The client says nothing after it, not even a SETTINGS ack.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads and ignores whatever the edge sends (answering nothing) until it closes the connection;
/// fails if it is still open after `within`.
async fn closed_within(mut io: impl AsyncRead + Unpin, within: Duration, what: &str) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {within:?}");
}

/// A verified TLS connection to the edge's HTTPS port offering `alpn`.
async fn tls(
    edge: &Edge,
    tcp: TcpStream,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tls = edge
        .tls_connector(alpn)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Starts an edge with `limits`, connects an h2 client that sends the preface and then never
/// answers anything, and checks the edge drops it within `deadline` (plus slack).
async fn silent_h2_client_is_dropped(limits: &str, deadline: Duration) {
    let edge = edge_with_domain(limits).await;
    let mut h2 = tls(&edge, TcpStream::connect(edge.https).await.unwrap(), b"h2").await;
    h2.write_all(H2_PREFACE).await.unwrap();
    h2.flush().await.unwrap();
    closed_within(h2, deadline + SLACK, "silent h2 client").await;
}

async fn edge_with_domain(limits: &str) -> Edge {
    let edge = Edge::start_with(limits);
    edge.add_domain(DOMAIN).await;
    edge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_never_answers_the_closing_ping_is_dropped_after_close_timeout() {
    // Keep-alive PINGs out of the way: this is the close after the idle timeout (GOAWAY, then a
    // PING whose answer never comes), which used to wait forever.
    silent_h2_client_is_dropped(
        "[limits]\nkeepalive_timeout = \"1s\"\nclose_timeout = \"1s\"\nh2_keepalive_interval = \"1h\"\n",
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_never_answers_keepalive_pings_is_dropped() {
    // The idle timeout out of the way: only the keep-alive PING can end this connection.
    silent_h2_client_is_dropped(
        "[limits]\nkeepalive_timeout = \"1h\"\nh2_keepalive_interval = \"1s\"\nh2_keepalive_timeout = \"1s\"\n",
        Duration::from_secs(2),
    )
    .await;
}

/// A TCP connection with small socket buffers, so that a client that does not read fills them
/// quickly.
async fn small_buffered(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Pipelines requests for a 404 on `io` and never reads a response; returns once writing
/// fails, which is when the edge has dropped the connection.
async fn pipeline_without_reading(mut io: impl AsyncWrite + Unpin, within: Duration, what: &str) {
    let requests = format!("GET /nothing-here HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n").repeat(64);
    let dropped = tokio::time::timeout(within, async {
        while io.write_all(requests.as_bytes()).await.is_ok() {}
    })
    .await;
    assert!(dropped.is_ok(), "{what}: still open after {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_that_never_reads_its_responses_is_dropped_after_write_timeout() {
    // The idle and header timeouts out of the way: only the stalled writes can end this.
    let edge = edge_with_domain(
        "[limits]\nkeepalive_timeout = \"1h\"\nheader_read_timeout = \"1h\"\nwrite_timeout = \"1s\"\n",
    )
    .await;
    let tcp = small_buffered(edge.http).await;
    pipeline_without_reading(tcp, Duration::from_secs(1) + SLACK, "plain HTTP non-reader").await;
    assert_eq!(
        edge.click_status(DOMAIN, &link(&edge).await).await,
        302,
        "the edge still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_that_never_reads_is_dropped_after_close_timeout_once_idle() {
    // The write timeout out of the way: the close after the idle timeout, which used to wait
    // forever for responses nobody reads, is what ends this (over TLS this time).
    let edge = edge_with_domain(
        "[limits]\nkeepalive_timeout = \"1s\"\nclose_timeout = \"1s\"\nheader_read_timeout = \"1h\"\nwrite_timeout = \"1h\"\n",
    )
    .await;
    let https = tls(&edge, small_buffered(edge.https).await, b"http/1.1").await;
    pipeline_without_reading(https, Duration::from_secs(2) + SLACK, "HTTPS non-reader").await;
}

async fn link(edge: &Edge) -> String {
    edge.mint(DOMAIN, "https://example.com/", json!({})).await
}

/// Opens `n` connections to `addr` that send nothing, and waits until the edge counts them.
async fn hold(edge: &Edge, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for_open(edge, n).await;
    held
}

async fn wait_for_open(edge: &Edge, n: usize) {
    let deadline = Instant::now() + SLACK;
    while edge.metric("clickedge_connections_open").await != n as f64 {
        assert!(
            Instant::now() < deadline,
            "the edge did not count {n} connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one request on a new plain connection and returns the status line of the answer.
async fn status_line(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(SLACK, tcp.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Both edge listeners capped at 20, nothing per address; held connections never time out.
const FLOOD: &str = "[tls]\nhandshake_timeout = \"1m\"\n[limits]\nmax_connections = 20\nhttp_max_connections = 20\nmax_connections_per_ip = 0\nheader_read_timeout = \"1m\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_flood_at_its_cap_leaves_the_http_port_answering_acme_validation() {
    let edge = edge_with_domain(FLOOD).await;
    let _flood = hold(&edge, edge.https, 20).await;
    let status = status_line(
        edge.http,
        &format!(
            "GET /.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    // No challenge is published, so 404: what matters is that the HTTP port answers.
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_flood_at_its_cap_leaves_https_clicks_answering() {
    let edge = edge_with_domain(FLOOD).await;
    let link = link(&edge).await;
    let _flood = hold(&edge, edge.http, 20).await;
    let status = tokio::time::timeout(SLACK, edge.click_status(DOMAIN, &link))
        .await
        .expect("the click was not answered");
    assert_eq!(status, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_is_on_by_default_and_counted_per_listener() {
    let edge = edge_with_domain("[limits]\nheader_read_timeout = \"1m\"\n").await;
    let link = link(&edge).await;
    let _held = hold(&edge, edge.http, 256).await;
    let mut extra = TcpStream::connect(edge.http).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(SLACK, extra.read_to_end(&mut answer))
        .await
        .expect("the connection past the per-address cap was not closed")
        .unwrap();
    assert!(answer.is_empty());
    assert_eq!(
        edge.metric("clickedge_connections_refused_total").await,
        1.0
    );
    // The same address still has its places on the HTTPS listener.
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_closes_a_half_sent_request() {
    let edge = Edge::start_with("[limits]\nadmin_header_read_timeout = \"1s\"\n");
    let mut tcp = TcpStream::connect(edge.admin).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: adm")
        .await
        .unwrap();
    closed_within(
        tcp,
        Duration::from_secs(1) + SLACK,
        "half-sent admin request",
    )
    .await;
}

/// Sends `GET /healthz` on a kept-alive admin connection and reads the answer.
async fn healthz(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(SLACK, tcp.read(&mut buf))
            .await
            .expect("no answer from /healthz")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_refuses_connections_past_its_cap() {
    let edge = Edge::start_with("[limits]\nadmin_max_connections = 2\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(edge.admin).await.unwrap();
        healthz(&mut tcp).await;
        held.push(tcp);
    }
    // Both places are taken (each connection has been served and is kept alive): a third is
    // closed at once, without an answer.
    let mut extra = TcpStream::connect(edge.admin).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SLACK, extra.read_to_end(&mut answer))
        .await
        .expect("the connection past the admin cap was not closed");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // A place freed is a place served again.
    held.pop();
    probe_until_answered(
        edge.admin,
        "/healthz",
        Instant::now() + SLACK,
        "the freed admin place was not reused",
    )
    .await;
}

/// Asks the admin listener at `addr` for `path` until it answers 200, failing with `why` past
/// `deadline` (a connection refused, closed at once or reset while every place is held is asked
/// again).
async fn probe_until_answered(addr: SocketAddr, path: &str, deadline: Instant, why: &str) {
    loop {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(SLACK, tcp.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            return;
        }
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the head of `POST /ui/login` announcing a 1000-byte body, then a byte every 100 ms for
/// as long as the connection takes them (the body would take 100 s); returns the reading half.
async fn login_with_a_trickling_body(addr: SocketAddr) -> OwnedReadHalf {
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    write
        .write_all(
            b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        while write.write_all(b"t").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    read
}

/// Sends the head of `POST /ui/login` announcing a 1000-byte body, then 10 bytes of it, and
/// nothing more; returns both halves (the writing one kept open, so the edge sees no end).
async fn login_with_a_stalled_body(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf) {
    let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    write
        .write_all(
            b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n\
              token=0123",
        )
        .await
        .unwrap();
    (read, write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_with_trickling_bodies_get_408_and_leave_room_for_the_probes() {
    let edge = Edge::start_with(
        "[limits]\nadmin_max_connections = 2\nadmin_header_read_timeout = \"1s\"\n",
    );
    // One body trickles on, one stops part way; together they hold every admin place.
    let trickling = login_with_a_trickling_body(edge.admin).await;
    let (mut stalled, _write) = login_with_a_stalled_body(edge.admin).await;
    // Once their time is up (the header timeout, and a little for 1000 bytes) the places are
    // free again, and the probes are answered.
    probe_until_answered(
        edge.admin,
        "/readyz",
        Instant::now() + Duration::from_secs(2) + SLACK,
        "/readyz not answered with every admin place held by a trickling body",
    )
    .await;

    // The stalled body has nothing left unread, so the close does not reset the 408.
    let mut answer = Vec::new();
    tokio::time::timeout(SLACK, stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled admin request body was not cut off")
        .expect("the answer to a stalled admin request body was reset");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    let mut answer = Vec::new();
    let mut trickling = trickling;
    // A reset (the rest of the body unread) counts as closed.
    let _ = tokio::time::timeout(SLACK, trickling.read_to_end(&mut answer))
        .await
        .expect("a trickling admin request body was not cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// The soft and hard open-files limits of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut numbers = line["Max open files".len()..].split_whitespace();
    (
        numbers.next().unwrap().to_owned(),
        numbers.next().unwrap().to_owned(),
    )
}

#[test]
fn open_files_limit_is_raised_to_the_hard_limit_and_caps_that_do_not_fit_are_warned() {
    // Defaults need 10000 + 1000 + 64 places and a reserve of 256: more than 4096.
    let edge = Edge::start_with_open_files_limit(1024, 4096, "");
    assert_eq!(
        open_files_limits(edge.pid()),
        ("4096".into(), "4096".into())
    );
    let warning = edge
        .stderr()
        .lines()
        .find(|l| l.contains("open-files limit"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no warning:\n{}", edge.stderr()));
    assert!(
        warning.contains("4096") && warning.contains("11320"),
        "{warning}"
    );

    // Caps that fit: raised the same, and no warning.
    let edge = Edge::start_with_open_files_limit(1024, 4096, "[limits]\nmax_connections = 1000\n");
    assert_eq!(
        open_files_limits(edge.pid()),
        ("4096".into(), "4096".into())
    );
    assert!(!edge.stderr().contains("is below the"), "{}", edge.stderr());
}

/// Sends a GET for `path` on a kept-alive HTTP/1.1 connection and reads the whole answer (head,
/// then `content-length` bytes); returns its status line.
async fn exchange(io: &mut (impl AsyncRead + AsyncWrite + Unpin), path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(SLACK, io.read(&mut byte))
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.push(byte[0]);
    }
    let head = String::from_utf8(answer).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await.unwrap();
    head.lines().next().unwrap().to_owned()
}

async fn wait_for_parked(edge: &Edge, n: usize) {
    let deadline = Instant::now() + SLACK;
    while edge.metric("clickedge_connections_parked").await != n as f64 {
        assert!(
            Instant::now() < deadline,
            "the edge did not park {n} connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads what the edge sends until it closes; true if it closed with TLS `close_notify` (the
/// client's read ends cleanly), false for a bare FIN or a reset.
async fn closes_with_close_notify(mut io: impl AsyncRead + Unpin) -> bool {
    let mut buf = [0u8; 4096];
    let end = tokio::time::timeout(SLACK, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    });
    end.await.expect("still open")
}

/// An edge with `limits`, and a verified HTTP/1.1 connection to it that has made one click;
/// with the click's path.
async fn after_one_click(
    limits: &str,
) -> (Edge, tokio_rustls::client::TlsStream<TcpStream>, String) {
    let edge = edge_with_domain(limits).await;
    let link = link(&edge).await;
    let path = link[link.find("/c/").expect("a click path")..].to_owned();
    let tcp = TcpStream::connect(edge.https).await.unwrap();
    let mut https = tls(&edge, tcp, b"http/1.1").await;
    assert_eq!(exchange(&mut https, &path).await, "HTTP/1.1 302 Found");
    (edge, https, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_parked_serves_its_next_click_and_closes_at_shutdown() {
    let (mut edge, mut https, path) = after_one_click("").await;
    let path = path.as_str();
    // Idle past the park delay: hyper's state is dropped, the connection stays open.
    wait_for_parked(&edge, 1).await;
    assert_eq!(edge.metric("clickedge_connections_open").await, 1.0);
    // The parked connection wakes for its next request, over the same TLS session.
    assert_eq!(exchange(&mut https, path).await, "HTTP/1.1 302 Found");
    assert_eq!(edge.wait_for_clicks(2).len(), 2);
    // The plain HTTP listener parks its connections too.
    let mut http = TcpStream::connect(edge.http).await.unwrap();
    let first = exchange(&mut http, path).await;
    wait_for_parked(&edge, 2).await;
    assert_eq!(exchange(&mut http, path).await, first);
    // At shutdown a parked connection is closed at once, with close_notify, and the edge exits
    // (the default shutdown_grace is far longer than SLACK).
    wait_for_parked(&edge, 2).await;
    edge.signal("TERM");
    assert!(closes_with_close_notify(https).await, "no close_notify");
    closed_within(http, SLACK, "parked plain HTTP connection at shutdown").await;
    let status = edge.wait();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_http1_connection_is_closed_when_hyper_would_have_closed_it() {
    // An idle HTTP/1.1 connection waits header_read_timeout for its next request head (hyper's
    // rule); parking keeps it, also under a longer keepalive_timeout.
    let (edge, https, _) = after_one_click("[limits]\nheader_read_timeout = \"6s\"\n").await;
    let answered = Instant::now();
    wait_for_parked(&edge, 1).await;
    assert!(closes_with_close_notify(https).await, "no close_notify");
    let open_for = answered.elapsed();
    assert!(
        open_for >= Duration::from_secs(5),
        "closed after {open_for:?}"
    );
    wait_for_parked(&edge, 0).await;
    wait_for_open(&edge, 0).await;
}

/// A parked connection woken by the first bytes of a head it never finishes is closed when it
/// would have been without them: header_read_timeout after its last answer. It used to get a
/// whole header timeout more from its first byte (hyper's new connection starts its own timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_woken_by_half_a_head_closes_when_it_would_have() {
    let (edge, mut https, path) =
        after_one_click("[limits]\nheader_read_timeout = \"15s\"\n").await;
    let answered = Instant::now();
    wait_for_parked(&edge, 1).await;
    tokio::time::sleep_until((answered + Duration::from_secs(14)).into()).await;
    https
        .write_all(format!("GET {path} HTTP/1.1\r\nHo").as_bytes())
        .await
        .unwrap();
    https.flush().await.unwrap();
    // Due a second from now, and closed then at once; with its own new timer it stayed 15 s more,
    // and up to close_timeout (10 s) besides.
    closed_within(
        &mut https,
        Duration::from_secs(1) + SLACK,
        "woken by half a head",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_never_parked_and_closed_at_the_header_timeout() {
    // A slow client after a first click: a head begun and never finished. Parking would restart
    // hyper's header timer each time; the connection must still close at header_read_timeout.
    let (edge, mut https, path) = after_one_click("[limits]\nheader_read_timeout = \"5s\"\n").await;
    https
        .write_all(format!("GET {path} HTTP/1.1\r\nHo").as_bytes())
        .await
        .unwrap();
    https.flush().await.unwrap();
    // Within the header timeout (plus slack), not the keep-alive timeout (60 s).
    closed_within(&mut https, Duration::from_secs(5) + SLACK, "half-sent head").await;
    assert_eq!(edge.metric("clickedge_connections_parked").await, 0.0);
}
