//! A hub instance as a real `wxhub serve` child process, for tests where an instance must really
//! die (`SIGKILL`) or freeze (`SIGSTOP`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use wechat_mock::MockServer;
use wxhub::configuration::consumer_key_sha256;

use crate::helpers::{TestHub, ADMIN_KEY};

/// `[wechat]` pointing at `mock`, with an upstream timeout short enough for tests.
pub fn wechat_section(mock: &MockServer) -> String {
    format!(
        "[wechat]\napi_base = \"{base}\"\nwork_api_base = \"{base}\"\ntimeout = \"2s\"\n",
        base = mock.base_url()
    )
}

/// `[store]` on an SQLite file in `dir`.
pub fn sqlite_section(dir: &Path) -> String {
    format!(
        "[store]\nkind = \"sqlite\"\npath = \"{}\"",
        dir.join("wxhub.db").display()
    )
}

/// `[store]` on the Redis at `url`, in a namespace of its own named after `test`.
pub fn redis_section(url: &str, test: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nurl = \"{url}\"\nnamespace = \"{}\"",
        crate::redis_server::unique_namespace(test)
    )
}

/// A consumer with the admin key of the tests, granted every account, with `scopes`.
pub fn admin_consumer(scopes: &str) -> String {
    format!(
        "[[consumers]]\nname = \"admin\"\nkey_sha256 = \"{}\"\napps = [\"*\"]\nscopes = {scopes}\n",
        consumer_key_sha256(ADMIN_KEY)
    )
}

/// A `wxhub serve` child process; killed when dropped.
pub struct ProcessHub {
    /// The process, until killed.
    child: Option<Child>,
    /// A consumer's view of it.
    pub hub: TestHub,
    /// Its log (stderr), shown when a test fails.
    log: PathBuf,
}

impl ProcessHub {
    /// Starts `wxhub serve` on a free port with `sections` as the rest of its configuration
    /// (everything but `[server]`, which this writes). The configuration and the log are
    /// `dir/{name}.toml` and `dir/{name}.log`.
    pub fn spawn(dir: &Path, name: &str, sections: &str) -> ProcessHub {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n{sections}");
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("WXHUB_LOG", "wxhub=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the wxhub binary");
        ProcessHub {
            child: Some(child),
            hub: TestHub::remote(format!("http://127.0.0.1:{port}")),
            log,
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProcessHub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.hub.address, self.log());
        }
        self.kill();
    }
}
