//! A real browser for the tests: Debian's headless Chromium, driven by its
//! ChromeDriver over WebDriver (plain HTTP and JSON), both installed by
//! `xtask/system-packages.sh`. Each [`Browser`] is a ChromeDriver on a free
//! loopback port with one session and a fresh profile; dropping it ends
//! both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::{Error, free_port};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    log: PathBuf,
}

/// The WebDriver id of an element.
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with its profile and log under `dir`.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                return Err(Error::Process(format!(
                    "{binary} is missing: `bash xtask/system-packages.sh` installs Debian's chromium and chromium-driver"
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let port = free_port()?;
        let log = dir.join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .arg("--allowed-ips=127.0.0.1")
            .spawn()
            .map_err(|source| Error::Spawn { binary: CHROMEDRIVER.into(), source })?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut browser = Self { driver, base, session: String::new(), http, log };
        browser.wait_ready().await?;
        let profile = dir.join("profile");
        // The flags the machine notes give: no background traffic (the network is closed), no sandbox (root).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let session = browser.call("POST", "/session", Some(capabilities)).await?;
        browser.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| Error::Process(format!("ChromeDriver made no session: {session}")))?
            .to_string();
        Ok(browser)
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        for _ in 0..100 {
            if self.http.get(format!("{}/status", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::not_ready("ChromeDriver did not answer within 10 s".into(), &self.log))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer = request.send().await.map_err(|e| Error::Process(format!("ChromeDriver {method} {path}: {e}")))?;
        let status = answer.status();
        let body: Value =
            answer.json().await.map_err(|e| Error::Process(format!("ChromeDriver's answer to {path}: {e}")))?;
        if !status.is_success() {
            return Err(Error::Process(format!("ChromeDriver {method} {path}: {status} {}", body["value"])));
        }
        Ok(body["value"].clone())
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Error> {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    /// Loads `url`.
    pub async fn goto(&self, url: &str) -> Result<(), Error> {
        self.session_call("POST", "/url", Some(json!({"url": url}))).await.map(|_| ())
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String, Error> {
        Ok(self.session_call("GET", "/url", None).await?.as_str().unwrap_or_default().to_string())
    }

    /// The first element `css` selects, if any.
    pub async fn find(&self, css: &str) -> Result<Option<Element>, Error> {
        let found =
            self.session_call("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(found
            .as_array()
            .and_then(|all| all.first())
            .and_then(|e| e[ELEMENT_KEY].as_str())
            .map(|id| Element(id.into())))
    }

    /// Waits (up to `seconds`) until `css` selects an element that is displayed, and returns it.
    pub async fn wait_for(&self, css: &str, seconds: u64) -> Result<Element, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(element) = self.find(css).await? {
                let shown = self.session_call("GET", &format!("/element/{}/displayed", element.0), None).await;
                if shown.is_ok_and(|v| v == json!(true)) {
                    return Ok(element);
                }
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.url().await.unwrap_or_default();
                let source = match self.session_call("GET", "/source", None).await {
                    Ok(source) => source.as_str().unwrap_or_default().chars().take(2000).collect(),
                    Err(error) => format!("(unread: {error})"),
                };
                return Err(Error::Process(format!("no {css} shown within {seconds} s at {url}; the page: {source}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) -> Result<(), Error> {
        self.session_call("POST", &format!("/element/{}/click", element.0), None).await.map(|_| ())
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) -> Result<(), Error> {
        self.session_call("POST", &format!("/element/{}/value", element.0), Some(json!({"text": text})))
            .await
            .map(|_| ())
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> Result<String, Error> {
        Ok(self
            .session_call("GET", &format!("/element/{}/text", element.0), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .into())
    }

    /// The rendered text of the whole page.
    pub async fn text_of_page(&self) -> Result<String, Error> {
        let body = self.find("body").await?.ok_or_else(|| Error::Process("the page has no body".into()))?;
        self.text(&body).await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value, Error> {
        self.session_call("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), Error> {
        let encoded = self.session_call("GET", "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| Error::Process(format!("the screenshot is not base64: {e}")))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(path, png).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, which stops Chromium, with a plain blocking request: drop may run inside the runtime.
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request =
                format!("DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n", self.session);
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
