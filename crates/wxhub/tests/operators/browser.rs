//! Headless Chromium driven over the DevTools protocol: just enough to open a page, run
//! JavaScript in it, wait for conditions and take a screenshot.
//!
//! The browser is Debian's `chromium` (or the binary named by `WXHUB_TEST_CHROMIUM`). A missing
//! browser fails the test with a clear message: it is never skipped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page open, driven through the browser's DevTools socket and a
/// session attached to the page.
pub struct Browser {
    socket: WebSocket<TcpStream>,
    /// The page's DevTools session; every command goes to it.
    session: String,
    next_id: u64,
    /// Declared last: the process is killed after the socket is closed.
    _process: Process,
}

/// The browser process and its profile: killed and removed when dropped, also when the test
/// fails while the browser starts.
struct Process {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Process {
    /// Gives a browser that was asked to quit a few seconds, then kills it.
    fn drop(&mut self) {
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts headless Chromium and connects to its first page.
    pub fn launch() -> Browser {
        let binary = std::env::var("WXHUB_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary:?} ({e}): the status page test needs headless Chromium \
                     (Debian: apt-get install chromium), or WXHUB_TEST_CHROMIUM naming a browser"
                )
            });
        let process = Process { child, profile };
        let mut browser = Browser {
            socket: connect(&browser_socket_url(process.profile.path())),
            session: String::new(),
            next_id: 0,
            _process: process,
        };
        let targets = browser.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|list| list.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .unwrap_or_else(|| panic!("Chromium opened no page: {targets}"))
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a DevTools session")
            .to_string();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends one protocol command and returns its result; fails the test on a protocol error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            request["sessionId"] = Value::from(self.session.as_str());
        }
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("{method}: cannot send: {e}"));
        let give_up = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(
                Instant::now() < give_up,
                "{method}: no answer in {CALL_TIMEOUT:?}"
            );
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: cannot read the answer: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if answer["id"] != id {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                panic!("{method} failed: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Opens `url` and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        assert!(
            result.get("errorText").is_none(),
            "navigate {url}: {result}"
        );
        self.wait_for("document.readyState === 'complete'", "the page loads");
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: threw {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 100 ms until it is truthy (within 20 s) and returns its value.
    pub fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < give_up,
                "timed out after 20 s waiting until {what} ({expression})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let result = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    /// Asks the browser to quit, so that it ends its helper processes itself.
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.socket.send(Message::text(close.to_string()));
        let _ = self.socket.close(None);
    }
}

/// The browser's DevTools websocket URL. Chromium writes the port it chose and the socket's path
/// to `DevToolsActivePort` in its profile once it listens.
fn browser_socket_url(profile: &Path) -> String {
    let port_file = profile.join("DevToolsActivePort");
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&port_file).unwrap_or_default();
        let mut lines = text.lines();
        if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
            if let Ok(port) = port.trim().parse::<u16>() {
                return format!("ws://127.0.0.1:{port}{}", path.trim());
            }
        }
        assert!(
            Instant::now() < give_up,
            "Chromium did not open its DevTools port within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens the websocket at `url` (`ws://127.0.0.1:PORT/…`).
fn connect(url: &str) -> WebSocket<TcpStream> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("a ws:// URL: {url}"));
    let stream = TcpStream::connect(authority).expect("DevTools socket connects");
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .expect("read timeout");
    let (socket, _) = tungstenite::client(url, stream).expect("DevTools websocket handshake");
    socket
}

/// Where the screenshots of a test run are kept: the cargo target directory.
pub fn target_dir() -> PathBuf {
    // The test binary runs from <target>/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}
