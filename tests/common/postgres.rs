//! A throwaway PostgreSQL server for tests (Debian package `postgresql`): `initdb` in a temporary
//! directory, `pg_ctl start` on 127.0.0.1 and a port picked here, one database per test. As
//! root (CI) the server runs as the `postgres` user, since `initdb` and `pg_ctl` refuse root.
//!
//! One server per test process ([`shared`]), or one per test ([`PgServer::start`]) for tests
//! that stop it. A watchdog shell holding a pipe from this process stops the server
//! (`pg_ctl stop -m immediate`) and deletes its directory when the server is dropped, or when
//! the process ends however it ends: a shared server in a `static` is never dropped.
//!
//! This file is also compiled into the library's own tests (`#[path]`), so it uses nothing from
//! the other harness modules.
#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// Declared here rather than beside the other modules because this file is also compiled on its
// own into the store's unit tests; the other peers take their ports from it too.
#[path = "ports.rs"]
pub mod ports;

/// Ports for PostgreSQL servers: below those of the other peers.
static PORTS: ports::PortRange = ports::PortRange::new(12_000, 16_000);

/// The Debian package with the server binaries.
pub const PACKAGE: &str = "postgresql";

/// A running server; stopped and deleted on drop.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Server options beyond the defaults (TLS).
    options: String,
    watchdog: Option<Child>,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server every test of this process shares, started on first use.
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(PgServer::start)
}

/// `/usr/lib/postgresql/<newest>/bin`; fails the test naming the package when it is missing.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: install the \
             `{PACKAGE}` package (apt-get install -y {PACKAGE})"
        ),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` run as the `postgres` user when this process is root, else as this user.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(what: &str, mut cmd: Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e} (is `{PACKAGE}` installed?)"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgServer {
    /// Initialises and starts a new server; its data lives until the server is dropped.
    pub fn start() -> PgServer {
        PgServer::start_with(None)
    }

    /// A server that also accepts TLS, with this certificate chain and key (PEM).
    pub fn start_with_tls(chain_pem: &str, key_pem: &str) -> PgServer {
        PgServer::start_with(Some((chain_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("clickedge-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL")
            .keep();
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&dir);
            run("chown postgres the PostgreSQL dir", chown);
        }
        let data = dir.join("data");
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data);
        let mut server = PgServer {
            watchdog: Some(watchdog(&bin, &dir)),
            dir,
            bin,
            port: 0,
            options: String::new(),
        };
        run("initdb", initdb);
        let mut options = String::new();
        if let Some((chain, key)) = tls {
            for (name, pem) in [("server.crt", chain), ("server.key", key)] {
                let path = server.dir.join(name);
                std::fs::write(&path, pem).expect("writing the server's TLS files");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("restricting the server's key");
                if is_root() {
                    let mut chown = Command::new("chown");
                    chown.arg("postgres:postgres").arg(&path);
                    run("chown postgres the TLS files", chown);
                }
            }
            options = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                server.dir.display()
            );
        }
        server.options = options;
        // The port is free when picked; another process may take it before the server binds
        // it, so a failed start is retried on a new one.
        for attempt in 1..=3 {
            server.port = PORTS.take();
            let out = server.pg_ctl_start();
            if out.status.success() {
                return server;
            }
            if attempt == 3 {
                panic!(
                    "pg_ctl start failed: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
                );
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn pg_ctl_start(&self) -> Output {
        let mut start = as_server_user(&self.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off{}",
                self.port,
                self.dir.display(),
                self.options
            ))
            .args(["-w", "-t", "30", "start"]);
        start.stdin(Stdio::null()).output().expect("running pg_ctl")
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping its data.
    pub fn stop(&self) {
        let mut stop = as_server_user(&self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        run("pg_ctl stop", stop);
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start (again) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (user `postgres`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL. Its collation is ICU's English with
    /// punctuation ignored at first (`en-US-u-ka-shifted`, as glibc's `en_US.UTF-8` sorts):
    /// "ab.example.com" sorts before "a-c.example.com", where byte order puts it after, so a
    /// query that needs byte order and does not ask for it is caught. (ICU locales in `CREATE
    /// DATABASE` need PostgreSQL 15 or later: Debian 12's `postgresql`.)
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu \
                 ICU_LOCALE 'en-US-u-ka-shifted'"
            ),
        );
        self.url(&name)
    }

    /// Runs `sql` in database `db` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        String::from_utf8_lossy(&run("psql", self.psql_command(db, sql)).stdout).into_owned()
    }

    /// Starts `psql` running `sql` in database `db` in the background (a session holding a
    /// lock, say); kill the child to end it.
    pub fn psql_in_background(&self, db: &str, sql: &str) -> Child {
        self.psql_command(db, sql)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting psql (Debian package postgresql)")
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-d", db, "-c", sql]);
        psql
    }

    /// The whole of database `db` as `pg_dump` writes it (SQL text).
    pub fn dump(&self, db: &str) -> String {
        let mut dump = Command::new(self.bin.join("pg_dump"));
        dump.args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg(db);
        String::from_utf8_lossy(&run("pg_dump", dump).stdout).into_owned()
    }
}

/// A shell that waits for this process's end of its stdin to close, then stops the server and
/// deletes its directory. It ignores SIGINT, so a Ctrl-C on the test run still cleans up.
fn watchdog(bin: &Path, dir: &Path) -> Child {
    let stop = if is_root() {
        "runuser -u postgres -- \"$1/pg_ctl\""
    } else {
        "\"$1/pg_ctl\""
    };
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' INT; read _; {stop} -D \"$2/data\" -m immediate -w -t 30 stop; rm -rf \"$2\""
        ))
        .arg("watchdog")
        .arg(bin)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the PostgreSQL watchdog shell")
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        // A line, then EOF: either wakes the watchdog.
        if let Some(mut stdin) = watchdog.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = watchdog.kill();
        let _ = watchdog.wait();
    }
}
