//! A headless Chromium for one test, driven over WebDriver: its own chromedriver on a free port and its own profile, console errors read from the browser log, and both processes stopped when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long any one wait for the page may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the test needs of the browser.
pub struct Options {
    pub javascript: bool,
    pub width: u32,
    pub height: u32,
    /// The browser's `Accept-Language`.
    pub languages: &'static str,
}

impl Options {
    /// A phone: 360 px wide, scripts on.
    pub fn phone() -> Options {
        Options {
            javascript: true,
            width: 360,
            height: 780,
            languages: "en-PK,en",
        }
    }

    /// A laptop: 1280 px wide, scripts on.
    pub fn desktop() -> Options {
        Options {
            width: 1280,
            height: 1000,
            ..Options::phone()
        }
    }
}

/// One browser session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// The program at `env` or else the first of `candidates` that exists.
fn program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| candidates.iter().map(PathBuf::from).find(|p| p.exists()))
        .filter(|p| p.exists())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. Panics, saying how to install them, when
    /// either is missing: a browser test must never pass without a browser.
    pub async fn start(options: Options) -> Browser {
        let missing = "browser tests need Chromium and chromedriver: `apt-get install -y chromium chromium-driver` \
                       (or set CHROME and CHROMEDRIVER to their paths)";
        let chromedriver = program(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )
        .unwrap_or_else(|| panic!("no chromedriver: {missing}"));
        let chrome = program(
            "CHROME",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )
        .unwrap_or_else(|| panic!("no chromium: {missing}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver_url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Browser {
            client: connect(&driver_url, &chrome, profile.path(), &options).await,
            driver,
            driver_url,
            session: String::new(),
            _profile: profile,
        };
        browser.session = browser
            .client
            .session_id()
            .await
            .expect("a session")
            .expect("a session id");
        browser
    }

    /// Opens `path` of the app.
    pub async fn open(&self, app: &crate::common::TestApp, path: &str) {
        self.client.goto(&app.url(path)).await.expect("navigation");
    }

    /// The element `css` matches, waiting for it to appear.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
    }

    /// The element `css` matches now.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Clicks the element `css` matches now.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{css} not clickable: {e}"));
    }

    /// Types `text` into the element `css` matches now.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Runs a script in the page and returns its value.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns true, for at most `limit` (a bounded wait for a condition
    /// the page reaches by itself, e.g. after its next refresh).
    pub async fn wait_until(&self, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.run(script).await == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not true within {limit:?}: {script}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Presses one key, as a person would, wherever the focus is.
    pub async fn press(&self, key: char) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(keys).await.expect("key press");
    }

    /// Types `text` key by key wherever the focus is.
    pub async fn type_text(&self, text: &str) {
        for key in text.chars() {
            self.press(key).await;
        }
    }

    /// The id of the focused element.
    pub async fn focused_id(&self) -> String {
        self.run("return document.activeElement ? document.activeElement.id : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The browser console's errors since the last call (the log is read and emptied).
    pub async fn console_errors(&self) -> Vec<String> {
        let log: Value = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("the browser log")
            .json()
            .await
            .expect("the browser log as JSON");
        log["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no browser log: {log}"))
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Resizes the window (e.g. tall enough to screenshot a whole page).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("a window resize");
    }

    /// Saves a screenshot of the window as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../screenshots");
        std::fs::create_dir_all(&dir).expect("a screenshots directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot written");
    }

    /// Ends the session (Chromium quits); the drop then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

async fn connect(driver_url: &str, chrome: &Path, profile: &Path, options: &Options) -> Client {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        // Without these Chromium calls home, and this machine's closed network refuses it.
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-extensions".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--hide-scrollbars".to_owned(),
        "--force-device-scale-factor=1".to_owned(),
        format!("--window-size={},{}", options.width, options.height),
        format!("--user-data-dir={}", profile.display()),
        format!(
            "--lang={}",
            options.languages.split(',').next().unwrap_or("en")
        ),
    ];
    if !options.javascript {
        args.push("--blink-settings=scriptEnabled=false".to_owned());
    }
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome.display().to_string(),
            "args": args,
            "prefs": {"intl.accept_languages": options.languages},
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let mut capabilities = capabilities;
    if options.width < 500 && options.javascript {
        // A real phone-width viewport: a headless window is never narrower than 500 px.
        // (Not with scripts off: chromedriver then hangs on the emulated page.)
        capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
            "deviceMetrics": {"width": options.width, "height": options.height, "pixelRatio": 1}
        });
    }
    let capabilities = match capabilities {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    };
    // chromedriver takes a moment to listen: retry the session for a bounded time.
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(driver_url)
            .await;
        match attempt {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot start a Chromium session through {driver_url}: {error}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Even after a failed test: end the session (chromedriver quits Chromium), then stop
        // chromedriver, the one process this harness started.
        let _ = delete_session(&self.driver_url, &self.session);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` over a plain blocking socket (a drop cannot await).
fn delete_session(driver_url: &str, session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let address = driver_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}
