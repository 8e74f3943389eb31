//! `clickedge clicks follow`: the stream printed as the logged lines.

use std::sync::Mutex;

use super::*;

/// `clickedge clicks follow ARGS` as a child process, its output lines read on a thread; killed
/// on drop.
struct Follow {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its lines on stderr after the first.
    said: Arc<Mutex<Vec<String>>>,
}

/// `clickedge clicks follow ARGS`, its output piped.
fn spawn_follow(args: &[&str]) -> std::process::Child {
    spawn_follow_with(args, &[])
}

/// [`spawn_follow`] with `env` set too.
fn spawn_follow_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(common::bin())
        .args(["clicks", "follow"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting clickedge clicks follow")
}

impl Follow {
    /// Starts it and waits until it follows the stream (its line on stderr).
    fn start(args: &[&str]) -> Follow {
        use std::io::BufRead as _;
        let mut child = spawn_follow(args);
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("following stream CLICKS"),
            "clicks follow said: {first}"
        );
        let said = Arc::new(Mutex::new(Vec::new()));
        let keep = said.clone();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                eprintln!("clicks follow: {line}");
                keep.lock().unwrap().push(line);
            }
        });
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines, said }
    }

    /// The next `n` lines (each within 60 s: a guard against a hang, not a bound on speed).
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|e| panic!("line {i} of {n}: {e}"))
            })
            .collect()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_follow_prints_the_stream_as_the_logged_lines() {
    let nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    let click = async || assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    for _ in 0..20 {
        click().await;
    }
    wait_for_ids(&nats.jetstream().await, 20).await;
    let logged = || common::read_click_lines(&edge.data_dir().join("clicks"));
    let config = edge.config_path();
    let config = config.to_str().unwrap();

    // The config's [clicks] nats settings, from the start: every line exactly as logged.
    let all = Follow::start(&["--config", config, "--from-start"]);
    assert_eq!(all.take(20), logged());
    // The last 3, with the server and stream named on the command line instead.
    let last = Follow::start(&[
        "--last",
        "3",
        "--nats-url",
        &nats.url(),
        "--stream",
        "CLICKS",
    ]);
    assert_eq!(last.take(3), logged()[17..]);
    // Further back than any click (it panicked): the whole stream.
    let long_ago = Follow::start(&["--config", config, "--since", "20000y"]);
    assert_eq!(long_ago.take(20), logged());
    drop(long_ago);
    // By default only what comes after it starts; both followers get the new clicks.
    let new = Follow::start(&["--config", config]);
    for _ in 0..5 {
        click().await;
    }
    let after = new.take(5);
    assert_eq!(after, logged()[20..]);
    assert_eq!(all.take(5), after);
    let ids: BTreeSet<u64> = after
        .iter()
        .map(|l| click_seq(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(ids, (21..=25).collect());
    // Nothing between: the next line is the next click.
    click().await;
    let next: Value = serde_json::from_str(&new.take(1)[0]).unwrap();
    assert_eq!(next["click_id"], format!("{NODE}-26"));

    // `| head`: once its reader is gone, the next click ends it, with success.
    let mut new = new;
    drop(std::mem::replace(
        &mut new.lines,
        std::sync::mpsc::channel().1,
    ));
    drop(all);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        click().await;
        if let Some(status) = new.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "clicks follow went on after its reader left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "clicks follow on a closed pipe: {status}");
}

/// `clickedge clicks follow ARGS` to its end: its exit status, stdout lines and stderr (killed
/// past 60 s, a guard against a hang).
fn run_to_end(args: &[&str]) -> (std::process::ExitStatus, Vec<String>, String) {
    run_to_end_with(args, &[])
}

/// [`run_to_end`] with `env` set too.
fn run_to_end_with(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, Vec<String>, String) {
    let mut child = spawn_follow_with(args, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (
        out.status,
        stdout.lines().map(str::to_owned).collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--no-follow` prints what the stream holds from where it starts and exits with success, so
/// `| sort | uniq -c` gets its end; from where it holds nothing, at once. Without a start
/// (which would print nothing, ever) it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_follow_no_follow_ends_after_what_the_stream_holds() {
    let nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    for _ in 0..6 {
        assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    }
    wait_for_ids(&nats.jetstream().await, 6).await;
    let logged = common::read_click_lines(&edge.data_dir().join("clicks"));
    let config = edge.config_path();
    let config = config.to_str().unwrap();

    let (status, lines, stderr) = run_to_end(&["--config", config, "--last", "3", "--no-follow"]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(lines, logged[3..]);
    let (status, lines, stderr) = run_to_end(&["--config", config, "--from-start", "--no-follow"]);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(lines, logged);
    let (status, lines, stderr) = run_to_end(&["--config", config, "--last", "0", "--no-follow"]);
    assert!(
        status.success() && lines.is_empty(),
        "{status} {lines:?}: {stderr}"
    );
    assert!(stderr.contains("holds no click"), "{stderr}");
    let (status, _, stderr) = run_to_end(&["--config", config, "--no-follow"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("--from-start"), "{stderr}");
}

/// A follower outlives a NATS restart: the failed pull is said once on stderr, and the clicks
/// after the restart are printed as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_follow_goes_on_across_a_nats_restart() {
    let mut nats = NatsServer::start();
    let edge = Edge::start_with(&config(&nats, "buffered"));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    let client = edge.client(&[DOMAIN]);
    let click = async || assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    click().await;
    wait_for_ids(&nats.jetstream().await, 1).await;
    let config = edge.config_path();
    let mut follow = Follow::start(&["--config", config.to_str().unwrap(), "--from-start"]);
    assert_eq!(follow.take(1).len(), 1);

    nats.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart();
    click().await;
    let next: Value = serde_json::from_str(&follow.take(1)[0]).unwrap();
    assert_eq!(next["click_id"], format!("{NODE}-2"));
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "clicks follow ended at the restart"
    );
    let said = follow.said.lock().unwrap().clone();
    let following_on: Vec<_> = said
        .iter()
        .filter(|l| l.contains("following on as soon as NATS answers"))
        .collect();
    assert_eq!(following_on.len(), 1, "said once: {said:?}");
}

/// A NATS that does not answer is named by where its URL came from: the config's
/// `clicks.nats_url`, or `--nats-url`.
#[test]
fn a_nats_that_does_not_answer_is_named_by_where_its_url_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        "[clicks]\nstream = \"nats\"\nnats_url = \"nats://127.0.0.1:1\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (status, _, stderr) = run_to_end(&["--config", config, "--from-start", "--no-follow"]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("nats://127.0.0.1:1 (clicks.nats_url; --nats-url to read another)"),
        "{stderr}"
    );
    let other = "nats://127.0.0.1:2";
    let (status, _, stderr) = run_to_end(&["--config", config, "--nats-url", other]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("nats://127.0.0.1:2 (--nats-url or CLICKEDGE_NATS_URL)"),
        "{stderr}"
    );
    // From the environment, out of `ps`; a password in it is never shown.
    let (status, _, stderr) = run_to_end_with(
        &["--config", config],
        &[("CLICKEDGE_NATS_URL", "nats://reader:s3cret@127.0.0.1:3")],
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:3 (--nats-url or CLICKEDGE_NATS_URL)")
            && !stderr.contains("s3cret"),
        "{stderr}"
    );
}
