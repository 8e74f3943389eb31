//! Signals a service manager or an operator sends: SIGHUP reloads without losing a click,
//! SIGQUIT stops as gracefully as SIGTERM, SIGPIPE, SIGUSR1 and SIGUSR2 change nothing.

mod common;

use std::time::Duration;

use common::Edge;
use serde_json::json;

/// A flush interval longer than the test and no per-address click bound: only the shutdown
/// flush writes these clicks, so a signal that killed the edge would lose them.
const FLOOD: &str = "[clicks]\nflush_interval = \"1h\"\nmax_clicks_per_ip_per_sec = 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_clicks_reloads_and_loses_no_acknowledged_click() {
    let mut edge = Edge::start_with(FLOOD);
    edge.add_domain("links.example.com").await;
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let client = edge.client(&["links.example.com"]);
        let link = link.clone();
        tasks.spawn(async move {
            let mut ok = 0usize;
            // Bounded: 150 requests per task; any failure ends the task and the test below.
            for _ in 0..150 {
                let res = client
                    .get(&link)
                    .send()
                    .await
                    .expect("the edge keeps serving");
                assert_eq!(res.status(), 302);
                ok += 1;
            }
            ok
        });
    }
    // Signals land while the clicks are being answered.
    for (i, sig) in ["HUP", "PIPE", "USR1", "USR2", "HUP"].iter().enumerate() {
        let answered = common::within(Duration::from_secs(60), || async {
            edge.metric("clickedge_requests_total{outcome=\"redirect\"}")
                .await
                >= (20 * (i + 1)) as f64
        })
        .await;
        assert!(answered.is_some(), "the clicks stopped before {sig}");
        edge.signal(sig);
    }
    edge.wait_for_log("SIGHUP: reloaded certificates and link keys", 1);
    let mut acknowledged = 0;
    while let Some(n) = tasks.join_next().await {
        acknowledged += n.unwrap();
    }
    assert_eq!(acknowledged, 600);
    assert!(edge.alive(), "{}", edge.stderr());
    // Still serving after the signals, and nothing flushed before the stop.
    assert_eq!(edge.click_status("links.example.com", &link).await, 302);
    assert!(edge.clicks().is_empty(), "nothing should be flushed yet");

    edge.signal("QUIT");
    let status = edge.wait();
    assert!(status.success(), "exit {status:?}\n{}", edge.stderr());
    assert_eq!(edge.clicks().len(), acknowledged + 1);
    assert!(edge.stderr().contains("SIGQUIT: shutting down"));
}

#[tokio::test]
async fn sighup_applies_the_log_filter_of_the_config_file() {
    let mut edge = Edge::start();
    let config = std::fs::read_to_string(edge.config_path()).unwrap();
    edge.signal("USR1");
    edge.wait_for_log("SIGUSR1 received; it means nothing to clickedge", 1);

    std::fs::write(edge.config_path(), format!("log = \"warn\"\n{config}")).unwrap();
    edge.signal("HUP");
    edge.wait_for_log("SIGHUP: reloaded", 1);
    // Now at warn: an ignored signal is no longer logged. A config that no longer parses is
    // (a warning), which tells when both signals were handled.
    std::fs::write(edge.config_path(), format!("log = [\n{config}")).unwrap();
    edge.signal("USR1");
    edge.signal("HUP");
    let log = edge.wait_for_log("the config file was not re-read", 1);
    assert_eq!(
        log.matches("SIGUSR1 received").count(),
        1,
        "info lines after the filter became warn:\n{log}"
    );
    assert!(edge.alive());
    let status = edge.terminate();
    assert!(status.success());
}

/// A fresh database of `pg`: its URL and its name.
fn fresh_database(pg: &common::postgres::PgServer) -> (String, String) {
    let url = pg.fresh_database();
    let db = url
        .rsplit('/')
        .next()
        .expect("a database in the URL")
        .to_owned();
    (url, db)
}

/// Waits until a session holds (`granted` true) or is queued for (false) a lock on `table` of
/// `db`.
async fn lock_on(pg: &common::postgres::PgServer, db: &str, table: &str, granted: &str) {
    let sql = format!(
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = '{table}'::regclass \
         AND granted = {granted} AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())"
    );
    let found = common::within(Duration::from_secs(20), || async {
        pg.psql(db, &sql).trim() == "t"
    })
    .await;
    assert!(found.is_some(), "never true: {sql}");
}

/// An edge starting over PostgreSQL whose read of the domains is queued behind a lock another
/// session holds (in production: migrations queued behind another node's, or a database slow
/// to answer).
struct Starting {
    edge: std::process::Child,
    locker: std::process::Child,
    db: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Starting {
    async fn behind_a_lock(pg: &common::postgres::PgServer) -> Starting {
        let (url, db) = fresh_database(pg);
        let seal = "c1".repeat(32);
        let store = format!("[store]\nurl = \"{url}\"\n");
        // A first start migrates the database, so the second waits on the lock, not a
        // migration.
        let mut first = Edge::start_with_env(&[("CLICKEDGE_SEAL_KEY", &seal)], &store);
        assert!(first.terminate().success());
        let locker = pg.psql_in_background(
            &db,
            "BEGIN; LOCK TABLE domains IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);",
        );
        lock_on(pg, &db, "domains", "true").await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("clickedge.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
                 admin = \"127.0.0.1:0\"\n{store}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let stderr = dir.path().join("stderr.log");
        let edge = std::process::Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("CLICKEDGE_SEAL_KEY", &seal)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        // The start's read, queued behind the lock.
        lock_on(pg, &db, "domains", "false").await;
        Starting {
            edge,
            locker,
            db,
            stderr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// Waits until the log holds `line` (or the edge ended).
    async fn wait_for_log(&self, line: &str) -> String {
        let found = common::within(Duration::from_secs(30), || async {
            self.log().contains(line)
        })
        .await;
        let log = self.log();
        assert!(found.is_some(), "never logged {line:?}:\n{log}");
        log
    }

    /// Ends the session holding the lock, so the start goes on.
    fn unlock(&mut self, pg: &common::postgres::PgServer) {
        pg.psql(
            &self.db,
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'domains'::regclass \
             AND granted AND pid <> pg_backend_pid()",
        );
        let _ = self.locker.kill();
        let _ = self.locker.wait();
    }
}

/// A stop is taken while the edge starts and waits on the store: it exits at once, having
/// served nothing. It used to be taken only once the start was over, and the start waited on.
#[tokio::test]
async fn a_stop_while_starting_and_waiting_on_the_store_is_taken_at_once() {
    let pg = common::postgres::shared();
    let mut starting = Starting::behind_a_lock(pg).await;
    common::signal(&starting.edge, "TERM");
    let status = starting.edge.wait().unwrap();
    starting.unlock(pg);
    let log = starting.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("SIGTERM while starting: stopped before serving"),
        "{log}"
    );
}

/// A SIGHUP while the edge starts (the operator changed what the start may have read already)
/// is acted on once the edge serves. It used to be dropped.
#[tokio::test]
async fn a_sighup_while_starting_reloads_once_started() {
    let pg = common::postgres::shared();
    let mut starting = Starting::behind_a_lock(pg).await;
    common::signal(&starting.edge, "HUP");
    starting
        .wait_for_log("SIGHUP while starting: reloading once started")
        .await;
    starting.unlock(pg);
    let log = starting
        .wait_for_log("SIGHUP: reloaded certificates and link keys")
        .await;
    let listening = log.find("listening").expect("the edge serves");
    assert!(listening < log.find("SIGHUP: reloaded").unwrap(), "{log}");
    common::signal(&starting.edge, "TERM");
    let status = starting.edge.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", starting.log());
}

/// A stop is taken while a SIGHUP reload waits on the store (here on a lock another session
/// holds on the certificates table; in production a database away for a minute): the edge
/// shuts down at once and gives the reload up. It used to finish the reload first, answering
/// `/readyz` 200 all the while.
#[tokio::test]
async fn a_stop_during_a_reload_waiting_on_the_store_is_taken_at_once() {
    let pg = common::postgres::shared();
    let (url, db) = fresh_database(pg);
    let mut edge = Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &"c1".repeat(32))],
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    let mut locker = pg.psql_in_background(
        &db,
        "BEGIN; LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);",
    );
    lock_on(pg, &db, "certificates", "true").await;
    edge.signal("HUP");
    // The reload's read, queued behind the lock.
    lock_on(pg, &db, "certificates", "false").await;
    edge.signal("TERM");
    let status = edge.wait();
    let _ = locker.kill();
    let _ = locker.wait();
    assert!(status.success(), "{status:?}");
    let log = edge.stderr();
    let stop = log.find("shutting down").expect("the stop in the log");
    assert!(
        !log[..stop].contains("SIGHUP:"),
        "the reload ended before the stop was taken:\n{log}"
    );
}

/// A SIGHUP whose certificate reload fails (here their table is gone) still reloads the link
/// keys, and says which part took and which did not: the log said "failed" whole, though the keys
/// had been swapped.
#[tokio::test]
async fn a_reload_failing_in_part_says_which_part_took() {
    let edge = Edge::start();
    rusqlite::Connection::open(edge.data_dir().join("clickedge.db"))
        .unwrap()
        .execute_batch("DROP TABLE certificates")
        .unwrap();
    edge.signal("HUP");
    let log = edge.wait_for_log("SIGHUP: reloading from the store failed in part", 1);
    let line = log.lines().find(|l| l.contains("failed in part")).unwrap();
    assert!(line.contains("link_keys=reloaded (1)"), "{line}");
    assert!(
        line.contains("certificates=failed, serving on with what was loaded"),
        "{line}"
    );
}
