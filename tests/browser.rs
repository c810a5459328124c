//! A real browser for the tests: headless Chromium (Debian's `chromium`,
//! which `scripts/setup` installs) driven over WebDriver by its
//! `chromedriver`. Each `Browser` is one session; several can share one
//! driver, as several reviewers share one page.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::request;

/// A running chromedriver; it is killed when the last handle goes.
#[derive(Debug)]
pub struct Driver {
    child: std::sync::Mutex<Child>,
    address: SocketAddr,
    _profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn find_program(names: &[&str]) -> String {
    for name in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let path = format!("{dir}/{name}");
            if std::path::Path::new(&path).exists() {
                return path;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: run scripts/setup (it installs Debian's chromium and chromium-driver)"
    )
}

impl Driver {
    pub fn start() -> Arc<Self> {
        let port = crate::free_port();
        let child = Command::new(find_program(&["chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let driver = Arc::new(Self {
            child: std::sync::Mutex::new(child),
            address,
            _profiles: tempfile::tempdir().unwrap(),
        });
        crate::wait_for("chromedriver to answer", Duration::from_secs(120), || {
            request(address, "GET", "/status", &[], None)
                .is_some_and(|(_, body)| body.contains("\"ready\":true"))
        });
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, text) = request(self.address, method, path, &[], body.as_ref())
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("chromedriver answered {method} {path} with {status} {text}: {e}")
        });
        assert!(
            status == 200,
            "chromedriver refused {method} {path}: {status} {}",
            value["value"]
        );
        value["value"].clone()
    }
}

/// One browser session (its own profile, so its own storage).
#[derive(Debug)]
pub struct Browser {
    driver: Arc<Driver>,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.driver.address,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            None,
        );
    }
}

impl Browser {
    pub fn open(driver: &Arc<Driver>) -> Self {
        let profile = driver
            ._profiles
            .path()
            .join(format!("p{}", crate::free_port()));
        let binary = find_program(&["chromium", "chromium-browser"]);
        let session = driver.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1200,1600",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}})),
        );
        Self {
            driver: Arc::clone(driver),
            session: session["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The element `css` selects (the first), as WebDriver's reference.
    pub fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/click"), None);
    }

    /// Types into the element `css` selects (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), None);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Presses keys on whatever has focus; `ctrl` holds Control down.
    pub fn press(&self, keys: &str, ctrl: bool) {
        const CONTROL: &str = "\u{E009}";
        let mut actions = Vec::new();
        if ctrl {
            actions.push(json!({"type": "keyDown", "value": CONTROL}));
        }
        for key in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": key.to_string()}));
            actions.push(json!({"type": "keyUp", "value": key.to_string()}));
        }
        if ctrl {
            actions.push(json!({"type": "keyUp", "value": CONTROL}));
        }
        self.call(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        self.eval(&format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until the text of `css` satisfies `ready`; returns it.
    pub fn wait_text(&self, css: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css);
            if ready(&text) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}: {css} reads {text:?}; status: {:?}",
                self.text("#status")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the page as it looks now.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        decode_base64(encoded.as_str().unwrap_or_default())
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
