//! Headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API, with reqwest.
//!
//! [`Browser::start`] runs `chromedriver` on a free 127.0.0.1 port (a child process of
//! its own process group, killed on drop) and opens one session on a fresh profile in a
//! temporary directory. Every command is bounded in time. The session is deleted by
//! [`Browser::quit`], or on drop when a test failed before it: deleting the session is
//! what makes ChromeDriver close Chromium, which killing the driver alone would leave
//! running.
//!
//! Debian's `/usr/bin/chromium` and `/usr/bin/chromedriver` are used unless `CHROMIUM`
//! or `CHROMEDRIVER` name others; [`tools`] says which one is missing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::wait::WAIT;

pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
pub const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long Chromium may take to start (its first start on a busy 2-core machine is slow).
const SESSION_START: Duration = Duration::from_secs(30);
/// The key under which W3C WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser and its driver.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// The browser and its driver from `CHROMIUM`/`CHROMEDRIVER` or Debian's paths; the error
/// says which one is missing and how to get it.
pub fn tools() -> Result<Tools, String> {
    let find = |var: &str, default: &str| -> Result<PathBuf, String> {
        let path = PathBuf::from(std::env::var_os(var).unwrap_or_else(|| default.into()));
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} not found (install Debian's chromium and chromium-driver, or set {var})",
                path.display()
            ))
        }
    };
    Ok(Tools {
        chromium: find("CHROMIUM", DEFAULT_CHROMIUM)?,
        chromedriver: find("CHROMEDRIVER", DEFAULT_CHROMEDRIVER)?,
    })
}

/// An element found on the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A WebDriver error: the W3C `error` code (`no such element`, ...) and its message, or a
/// transport failure.
#[derive(Debug)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// One headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the driver.
    driver_url: String,
    session: Option<String>,
    driver: Child,
    /// Chromium's profile; removed after the driver and the browser are gone.
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; panics (bounded) when either
    /// does not come up.
    pub async fn start(tools: &Tools) -> Browser {
        let mut profile = tempfile::tempdir().expect("a profile directory");
        // The port is chosen before ChromeDriver binds it; another process may take it in
        // between, so a driver that exits at once is started again on another port.
        for _ in 0..3 {
            let port = free_port();
            let mut command = Command::new(&tools.chromedriver);
            command
                .arg(format!("--port={port}"))
                .arg("--log-level=WARNING")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            // Its own process group, so whatever is left of it can be ended as a whole.
            #[cfg(unix)]
            command.process_group(0);
            let driver = command
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", tools.chromedriver.display()));
            let http = reqwest::Client::builder()
                .timeout(SESSION_START)
                .no_proxy()
                .build()
                .unwrap();
            let mut browser = Browser {
                http,
                driver_url: format!("http://127.0.0.1:{port}"),
                session: None,
                driver,
                profile,
            };
            if browser.wait_ready().await {
                browser.new_session(tools).await;
                return browser;
            }
            profile = std::mem::replace(&mut browser.profile, tempfile::tempdir().unwrap());
        }
        panic!("chromedriver did not come up on three ports");
    }

    /// Waits for `GET /status` to say ready; false when the driver exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return false;
            }
            let status = self
                .http
                .get(format!("{}/status", self.driver_url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(r) = status
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver at {} not ready within {WAIT:?}",
                self.driver_url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn new_session(&mut self, tools: &Tools) {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let ms = WAIT.as_millis() as u64;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": ms, "script": ms, "implicit": 0},
            "goog:chromeOptions": {"binary": tools.chromium, "args": args},
        }}});
        let value = self
            .send(reqwest::Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("create a Chromium session: {e}"));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"));
        self.session = Some(id.to_owned());
    }

    /// One WebDriver call; its `value` on success.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.driver_url);
        let mut request = self.http.request(method.clone(), &url);
        if path != "/session" {
            request = request.timeout(WAIT);
        }
        // POST commands carry a JSON body, `{}` when they have no parameters.
        if method == reqwest::Method::POST {
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        let transport = |e: reqwest::Error| WebDriverError {
            error: "transport".into(),
            message: format!("{method} {path}: {e}"),
        };
        let response = request.send().await.map_err(transport)?;
        let ok = response.status().is_success();
        let mut value: Value = response.json().await.map_err(transport)?;
        let value = value["value"].take();
        if ok {
            Ok(value)
        } else {
            Err(WebDriverError {
                error: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                message: value["message"].as_str().unwrap_or("").to_owned(),
            })
        }
    }

    fn session_path(&self, rest: &str) -> String {
        let id = self.session.as_deref().expect("the session is open");
        format!("/session/{id}{rest}")
    }

    async fn command(&self, method: reqwest::Method, rest: &str, body: Option<Value>) -> Value {
        let path = self.session_path(rest);
        self.send(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {rest}: {e}"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let v = self.command(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap_or_else(|| panic!("URL: {v}")).to_owned()
    }

    /// The first element matching `css` on the current page, waiting (bounded by
    /// [`WAIT`]) for it to appear: after a click the next page may still be loading.
    pub async fn find(&self, css: &str) -> Element {
        let path = self.session_path("/element");
        let body = json!({"using": "css selector", "value": css});
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self
                .send(reqwest::Method::POST, &path, Some(body.clone()))
                .await
            {
                Ok(v) => {
                    let id = v[ELEMENT]
                        .as_str()
                        .unwrap_or_else(|| panic!("element reference: {v}"));
                    return Element(id.to_owned());
                }
                Err(e) if e.error == "no such element" || e.error == "stale element reference" => {
                    if tokio::time::Instant::now() >= deadline {
                        let url = self.url().await;
                        panic!("no element {css:?} on {url} within {WAIT:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("find {css:?}: {e}"),
            }
        }
    }

    /// Clicks `element` (a link click returns once the navigation it starts has loaded).
    pub async fn click(&self, element: &Element) {
        let rest = format!("/element/{}/click", element.0);
        self.command(reqwest::Method::POST, &rest, None).await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let rest = format!("/element/{}/text", element.0);
        let v = self.command(reqwest::Method::GET, &rest, None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.text(&element).await
    }

    /// The current page's source as the browser serializes it.
    pub async fn source(&self) -> String {
        let v = self.command(reqwest::Method::GET, "/source", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (bounded by [`WAIT`]) until the current URL satisfies `condition`; returns it.
    pub async fn wait_for_url(&self, what: &str, condition: impl Fn(&url::Url) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let current = self.url().await;
            if url::Url::parse(&current).is_ok_and(|u| condition(&u)) {
                return current;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {WAIT:?} for {what}; the browser is at {current}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session (ChromeDriver closes Chromium), then the driver.
    pub async fn quit(mut self) {
        if self.session.is_some() {
            let path = self.session_path("");
            let _ = self.send(reqwest::Method::DELETE, &path, None).await;
            self.session = None;
        }
        self.end_driver();
        let _ = tokio::time::timeout(WAIT, self.driver.wait()).await;
    }

    /// Kills the driver's process group (the driver and whatever it left behind).
    fn end_driver(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.driver.id() {
            // The group was created for this driver alone (`process_group(0)`).
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
        let _ = self.driver.start_kill();
    }
}

impl Drop for Browser {
    /// A test that failed before [`Browser::quit`]: the session is deleted with a plain,
    /// bounded HTTP request (no runtime to await on here), then the driver is ended.
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let addr = self.driver_url.trim_start_matches("http://").to_owned();
            let _ = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect(&addr)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.set_write_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )?;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                Ok(())
            })();
        }
        self.end_driver();
    }
}
