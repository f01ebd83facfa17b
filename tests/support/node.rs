//! Starting `symphony node` as a child process for end-to-end tests: free
//! ports, a config file in a temporary directory, waiting for `/health`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to answer `/health` with 200.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on now, out of the range the OS takes
/// ports from for other connections (see the library's function).
pub fn free_port() -> u16 {
    symphony::chaos::runner::free_port().expect("a free port")
}

/// A running `symphony node`, killed when dropped.
#[derive(Debug)]
pub struct Node {
    child: Child,
    /// The node's name.
    pub name: String,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its cluster address, `127.0.0.1:PORT`.
    pub cluster_addr: String,
    /// Its working directory (config file, data dir, log).
    pub dir: PathBuf,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node named `name` on loopback with free ports, a data dir in
    /// a fresh temporary directory and `extra` appended to its config file
    /// (YAML: e.g. `api_token: t` or `seeds: [...]` and `cookie: c`).
    /// Does not wait for it: see [`Node::wait_healthy`].
    pub fn start(name: &str, extra: &str) -> Node {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().to_owned();
        let mut node = Node::start_in(&dir, name, extra);
        node._tmp = Some(tmp);
        node
    }

    /// [`Node::start`] in a directory the caller keeps.
    pub fn start_in(dir: &Path, name: &str, extra: &str) -> Node {
        Node::start_at(dir, name, (free_port(), free_port()), extra)
    }

    /// [`Node::start_in`] on the given `(cluster, http)` ports (a node that
    /// restarts keeps its address, so peers that list it as a seed find it).
    pub fn start_at(dir: &Path, name: &str, (cluster, http): (u16, u16), extra: &str) -> Node {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "name: {name}\nlisten: 127.0.0.1:{cluster}\nhttp: 127.0.0.1:{http}\ndata_dir: data-{name}\n{extra}\n"
            ),
        )
        .expect("config file written");
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file created");
        let child = clean_symphony()
            .current_dir(dir)
            .args(["node", "--config"])
            .arg(&config)
            .env("SYMPHONY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("symphony node starts");
        Node {
            child,
            name: name.to_owned(),
            url: format!("http://127.0.0.1:{http}"),
            cluster_addr: format!("127.0.0.1:{cluster}"),
            dir: dir.to_owned(),
            log,
            _tmp: None,
        }
    }

    /// Starts a node and waits until it is healthy.
    pub fn healthy(name: &str, extra: &str) -> Node {
        let mut node = Node::start(name, extra);
        node.wait_healthy();
        node
    }

    /// Waits until `GET /health` answers 200. Panics, with the node's log,
    /// when the node exits first (a node that is "not built yet" fails
    /// here, loudly) or the deadline passes.
    pub fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!(
                    "symphony node {} exited ({status}) before answering /health:\n{}",
                    self.name,
                    self.log()
                );
            }
            if get(&self.url, "/health").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                start.elapsed() < HEALTH_DEADLINE,
                "symphony node {} did not answer /health with 200 within {HEALTH_DEADLINE:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the node wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the node's API with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        request(&self.url, "GET", path, token)
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the node's process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// Kills the node (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `Command` for the `symphony` binary without the `SYMPHONY_*`
/// variables of the test's environment, so the caller's shell cannot change
/// what a test runs (logs quiet).
pub fn clean_symphony() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_symphony"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SYMPHONY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("SYMPHONY_LOG", "warn");
    cmd
}

/// `GET path` on `url` (`http://host:port`): status and body, or `None`
/// when nothing answers.
pub fn get(url: &str, path: &str) -> Option<(u16, String)> {
    request(url, "GET", path, None)
}

/// A minimal HTTP/1.1 request over a fresh connection (the tests need no
/// HTTP client library): status and body, or `None` when nothing answers.
pub fn request(url: &str, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    request_with(url, method, path, token, None)
}

/// [`request`] with a JSON body.
pub fn post_json(url: &str, path: &str, body: &serde_json::Value) -> Option<(u16, String)> {
    post_text(url, path, &body.to_string())
}

/// `POST path` with `body` sent as it is, as JSON (for bodies that a
/// `serde_json::Value` cannot hold, such as a million nested brackets).
pub fn post_text(url: &str, path: &str, body: &str) -> Option<(u16, String)> {
    request_with(url, "POST", path, None, Some(body))
}

fn request_with(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let host = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = body.unwrap_or("");
    let kind = if body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{content}",
        content.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
