//! A real `redis-server` for tests, shared by the store's unit tests and the cluster tests.
//!
//! - [`TestRedis::get`] is what most tests use: the server `scripts/test` started
//!   (`WXHUB_TEST_REDIS_URL`), or else a private one started here. Tests sharing one server stay
//!   apart by using a [`unique_namespace`] each.
//! - [`RedisServer::start`] always starts a private server, for tests that stop and restart it;
//!   [`RedisServer::start_with`] one with extra directives (ACL users, replication) or TLS.
//! - [`SentinelGroup::start`] a master, its replica and three Sentinels watching them.
//!
//! A test that cannot get a Redis fails with a message saying how to provide one; it never skips.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// The Sentinel binary: `WXHUB_TEST_REDIS_SENTINEL`, else `redis-sentinel` from `PATH`.
pub fn redis_sentinel_binary() -> PathBuf {
    std::env::var_os("WXHUB_TEST_REDIS_SENTINEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-sentinel"))
}

/// The binary tests start: `WXHUB_TEST_REDIS_SERVER`, else `redis-server` from `PATH`.
pub fn redis_server_binary() -> PathBuf {
    std::env::var_os("WXHUB_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A namespace no other test (or earlier run on the same server) uses.
pub fn unique_namespace(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "wxhub-test:{label}:{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Redis for one test: the shared one, or a private server that lives as long as this value.
pub enum TestRedis {
    /// The server named by `WXHUB_TEST_REDIS_URL`.
    Shared(String),
    /// A server started for this test.
    Private(RedisServer),
}

impl TestRedis {
    /// The shared server if `WXHUB_TEST_REDIS_URL` is set, else a private one (without
    /// persistence, like the shared one).
    pub fn get() -> TestRedis {
        match std::env::var("WXHUB_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => TestRedis::Shared(url),
            _ => TestRedis::Private(RedisServer::start(false)),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        match self {
            TestRedis::Shared(url) => url.clone(),
            TestRedis::Private(server) => server.url(),
        }
    }
}

/// How a private server runs, beyond the defaults.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Every write in an append-only file synced to disk (`appendfsync always`), so a restart
    /// (even after `SIGKILL`) keeps everything.
    pub persistent: bool,
    /// Extra directives, e.g. `["--user", "hub", "on", ">pw", "~*", "&*", "+@all"]`.
    pub args: Vec<String>,
    /// Serve TLS (only) on the port, with these files.
    pub tls: Option<TlsFiles>,
}

/// A throwaway certificate authority and a server certificate it signed for `127.0.0.1`.
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM): what a client must trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a fresh CA and server certificate in `dir` with `openssl`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("writing the certificate extensions");
        let p = |path: &PathBuf| path.to_string_lossy().into_owned();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wxhub test CA",
            "-keyout",
            &p(&ca_key),
            "-out",
            &p(&files.ca),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p(&files.key),
            "-out",
            &p(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&files.ca),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&files.cert),
        ]);
        files
    }
}

/// Runs `openssl` with `args`, failing the test with its output if it fails.
fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the TLS tests need the openssl command (Debian: apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `redis-server` process this test owns: killed when dropped.
pub struct RedisServer {
    /// The binary, to start it again.
    binary: PathBuf,
    /// Its port, kept across restarts so clients reconnect to the same URL.
    port: u16,
    /// Its working directory (AOF, RDB, log); removed when dropped.
    dir: tempfile::TempDir,
    /// How it runs.
    options: ServerOptions,
    /// The running process, if it runs.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a private server on a free port. With `persistent`, every write is in an
    /// append-only file synced to disk, so a restart (even after `SIGKILL`) keeps everything.
    pub fn start(persistent: bool) -> RedisServer {
        Self::start_with(ServerOptions {
            persistent,
            ..ServerOptions::default()
        })
    }

    /// Starts a private server on a free port, run as `options` say.
    pub fn start_with(options: ServerOptions) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let binary = redis_server_binary();
        let mut last_error = String::new();
        // A free port can be taken by someone else between choosing and binding it: try a few.
        for _ in 0..5 {
            let port = free_port();
            match spawn(&binary, port, dir.path(), &options) {
                Ok(child) => {
                    return RedisServer {
                        binary,
                        port,
                        dir,
                        options,
                        child: Some(child),
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("{last_error}");
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server at once (`SIGKILL`, like a crash or a pulled plug) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (with what it persisted, if
    /// anything).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match spawn(&self.binary, self.port, self.dir.path(), &self.options) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The old socket may linger for a moment.
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Starts `redis-server` on `port` in `dir` and waits until it answers (or, with TLS, accepts
/// connections).
fn spawn(binary: &Path, port: u16, dir: &Path, options: &ServerOptions) -> Result<Child, String> {
    let log = dir.join("redis.log");
    let appendonly = if options.persistent { "yes" } else { "no" };
    let mut command = Command::new(binary);
    match &options.tls {
        None => command.args(["--port", &port.to_string()]),
        Some(tls) => command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca)
            .args(["--tls-auth-clients", "no"]),
    };
    let mut child = command
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(["--save", "", "--appendonly", appendonly])
        .args(["--appendfsync", "always", "--daemonize", "no"])
        .args(&options.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({e}): the Redis tests need a real redis-server. Install it \
                 (Debian: apt-get install redis-server), set WXHUB_TEST_REDIS_SERVER to its \
                 path, or run scripts/test, which starts one and sets WXHUB_TEST_REDIS_URL",
                binary.display()
            )
        })?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let exited = child.try_wait().ok().flatten().is_some();
        let up = if options.tls.is_some() {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        } else {
            answers_ping(address)
        };
        if !exited && up {
            return Ok(child);
        }
        if exited || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} did not start; its log:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free local port")
}

/// Whether a Redis at `address` answers `PING` (with `+PONG`, or `-NOAUTH` when it wants a
/// login first).
fn answers_ping(address: SocketAddr) -> bool {
    query(address, "PING")
        .is_some_and(|reply| reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
}

/// Sends one inline command to `address` and returns the raw reply (RESP text), if any came
/// within half a second.
pub fn query(address: SocketAddr, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&chunk[..n]);
                if reply.ends_with(b"\r\n") && complete(&reply) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (!reply.is_empty()).then(|| String::from_utf8_lossy(&reply).into_owned())
}

/// Whether a RESP reply is whole: simple replies end at their first line; a bulk string (the
/// only long reply these helpers ask for) once its announced length has arrived.
fn complete(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'$') => {
            let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let length: usize = std::str::from_utf8(&reply[1..end])
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            reply.len() >= end + 2 + length + 2
        }
        Some(b'*') => {
            let lines = reply.windows(2).filter(|w| w == b"\r\n").count();
            let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let items: usize = std::str::from_utf8(&reply[1..end])
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            // Arrays of bulk strings: a header line, then two lines per item.
            lines > 2 * items
        }
        _ => true,
    }
}

/// A master, one replica and three Sentinels (quorum 2, a master is down after 1 s without an
/// answer), all on free loopback ports: a store that can fail over. Everything is killed when
/// dropped.
pub struct SentinelGroup {
    /// The master at the start.
    pub master: RedisServer,
    /// Its replica, which a failover promotes.
    pub replica: RedisServer,
    /// The Sentinels' ports.
    ports: Vec<u16>,
    /// The Sentinel processes.
    sentinels: Vec<Child>,
    /// The Sentinels' configuration files and logs.
    dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// The master's name the Sentinels monitor.
    pub const MASTER_NAME: &'static str = "wxhub-test";

    /// Starts the master, its replica, then the Sentinels, and waits until every Sentinel knows
    /// the replica and the two other Sentinels (so a failover can be agreed and has a target).
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start(true);
        let replica = RedisServer::start_with(ServerOptions {
            persistent: true,
            args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
            tls: None,
        });
        let replica_address = SocketAddr::from(([127, 0, 0, 1], replica.port()));
        wait_for(
            "the replica is in sync with the master",
            || {
                query(replica_address, "INFO replication")
                    .is_some_and(|info| info.contains("master_link_status:up"))
            },
            || replica.log(),
        );
        let dir = tempfile::tempdir().expect("a temporary directory for the Sentinels");
        let mut group = SentinelGroup {
            master,
            replica,
            ports: Vec::new(),
            sentinels: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            group.spawn_sentinel();
        }
        let expected = format!("slaves=1,sentinels={}", group.ports.len());
        for port in group.ports.clone() {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for(
                "every Sentinel knows the replica and the other Sentinels",
                || query(address, "INFO sentinel").is_some_and(|info| info.contains(&expected)),
                || group.logs(),
            );
        }
        group
    }

    /// Starts one Sentinel on a free port.
    fn spawn_sentinel(&mut self) {
        let port = free_port();
        let config = self.dir.path().join(format!("sentinel-{port}.conf"));
        let log = self.dir.path().join(format!("sentinel-{port}.log"));
        let name = Self::MASTER_NAME;
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"{}\"\ndir \"{}\"\n\
                 sentinel monitor {name} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                log.display(),
                self.dir.path().display(),
                self.master.port(),
            ),
        )
        .expect("writing a Sentinel configuration");
        let binary = redis_sentinel_binary();
        let child = Command::new(&binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the Sentinel test needs redis-sentinel (Debian: \
                     apt-get install redis-sentinel) or WXHUB_TEST_REDIS_SENTINEL",
                    binary.display()
                )
            });
        self.sentinels.push(child);
        self.ports.push(port);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for(
            "a Sentinel answers",
            || answers_ping(address),
            || self.logs(),
        );
    }

    /// The Sentinels' URLs, as `[store] sentinels` lists them.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The master's port as the first answering Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        self.ports.iter().find_map(|port| {
            let address = SocketAddr::from(([127, 0, 0, 1], *port));
            let reply = query(
                address,
                &format!("SENTINEL get-master-addr-by-name {}", Self::MASTER_NAME),
            )?;
            reply.lines().nth(4)?.trim().parse().ok()
        })
    }

    /// Asks a Sentinel for a switchover (`SENTINEL FAILOVER`): the replica is promoted while the
    /// master is alive, and the master becomes its replica.
    pub fn switchover(&self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.ports[0]));
        let reply = query(address, &format!("SENTINEL FAILOVER {}", Self::MASTER_NAME));
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "SENTINEL FAILOVER answered {reply:?}\n{}",
            self.logs()
        );
    }

    /// Every Sentinel's log, to explain a failure.
    pub fn logs(&self) -> String {
        self.ports
            .iter()
            .map(|port| {
                let path = self.dir.path().join(format!("sentinel-{port}.log"));
                format!(
                    "--- Sentinel {port}\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` every 50 ms for up to 20 s; fails the test with `what` and `context()`.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
