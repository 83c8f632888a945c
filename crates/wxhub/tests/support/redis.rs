//! A real `redis-server` for tests, shared by the store's unit tests and the cluster tests.
//!
//! - [`TestRedis::get`] is what most tests use: the server `scripts/test` started
//!   (`WXHUB_TEST_REDIS_URL`), or else a private one started here. Tests sharing one server stay
//!   apart by using a [`unique_namespace`] each.
//! - [`RedisServer::start`] always starts a private server, for tests that stop and restart it.
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

/// A `redis-server` process this test owns: killed when dropped.
pub struct RedisServer {
    /// The binary, to start it again.
    binary: PathBuf,
    /// Its port, kept across restarts so clients reconnect to the same URL.
    port: u16,
    /// Its working directory (AOF, RDB, log); removed when dropped.
    dir: tempfile::TempDir,
    /// Whether it runs with an append-only file (`appendfsync always`).
    persistent: bool,
    /// The running process, if it runs.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a private server on a free port. With `persistent`, every write is in an
    /// append-only file synced to disk, so a restart (even after `SIGKILL`) keeps everything.
    pub fn start(persistent: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let binary = redis_server_binary();
        let mut last_error = String::new();
        // A free port can be taken by someone else between choosing and binding it: try a few.
        for _ in 0..5 {
            let port = free_port();
            match spawn(&binary, port, dir.path(), persistent) {
                Ok(child) => {
                    return RedisServer {
                        binary,
                        port,
                        dir,
                        persistent,
                        child: Some(child),
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("{last_error}");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
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
            match spawn(&self.binary, self.port, self.dir.path(), self.persistent) {
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

/// Starts `redis-server` on `port` in `dir` and waits until it answers `PING`.
fn spawn(binary: &Path, port: u16, dir: &Path, persistent: bool) -> Result<Child, String> {
    let log = dir.join("redis.log");
    let appendonly = if persistent { "yes" } else { "no" };
    let mut child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(["--save", "", "--appendonly", appendonly])
        .args(["--appendfsync", "always", "--daemonize", "no"])
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
        if !exited && answers_ping(address) {
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

/// Whether a Redis at `address` answers `PING` with `+PONG`.
fn answers_ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
