//! A real Prometheus (Debian's package) that scrapes what the tests run, and the HTTP GETs
//! the tests make to it and to bindguard's `--metrics` listener (inside a test namespace
//! when the service runs there: the listener is on that namespace's loopback).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use crate::{Cmd, topology::NetnsGuard, unique};

/// Why the Prometheus tests cannot run here (None: they can). `cargo xtask setup` installs
/// the package.
pub fn unavailable() -> Option<String> {
    ["prometheus", "promtool"]
        .iter()
        .find(|t| !std::path::Path::new("/usr/bin").join(t).exists())
        .map(|t| format!("{t} is not installed (Debian's prometheus package; `cargo xtask setup` installs it)"))
}

/// Runs `f` on a thread that entered `ns` (the calling thread stays where it is).
fn in_netns<T: Send>(ns: Option<&NetnsGuard>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = ns {
                let f = fs::File::open(ns.path()).expect("open netns");
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            }
            f()
        })
        .join()
        .expect("the netns thread")
    })
}

/// A free TCP port on 127.0.0.1 of `ns` (the root namespace when None).
pub fn free_port(ns: Option<&NetnsGuard>) -> u16 {
    in_netns(ns, || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    })
}

/// `GET path` (HTTP/1.0, one request per connection): (status, body), or None when nothing
/// answers.
pub fn get(ns: Option<&NetnsGuard>, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    })
}

/// Waits until `f` returns Some, up to `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Percent-encodes a query parameter (PromQL has braces, quotes and spaces).
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on `exposition`: (accepted, what it said).
pub fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Prometheus server scraping `targets` (job name, address) every second, in `ns`; killed
/// and its directory removed on drop.
pub struct Prometheus<'a> {
    child: Child,
    pub addr: SocketAddr,
    ns: Option<&'a NetnsGuard>,
    dir: PathBuf,
}

impl<'a> Prometheus<'a> {
    pub fn start(ns: Option<&'a NetnsGuard>, targets: &[(&str, SocketAddr)]) -> Self {
        let dir = std::env::temp_dir().join(unique("opp"));
        fs::create_dir_all(&dir).unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, addr) in targets {
            config +=
                &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n");
        }
        fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port(ns)).parse().unwrap();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = Cmd::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        if let Some(ns) = ns {
            cmd = cmd.in_netns(ns);
        }
        let p = Self {
            child: cmd.spawn_logged(log),
            addr,
            ns,
            dir,
        };
        assert!(
            wait_for(Duration::from_secs(30), || p
                .api("/-/ready")
                .filter(|(s, _)| *s == 200))
            .is_some(),
            "prometheus did not become ready: {}",
            p.log()
        );
        p
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str) -> Option<(u16, String)> {
        get(self.ns, self.addr, path)
    }

    /// The health of job `job`'s target as Prometheus last scraped it ("up", "down",
    /// "unknown"), and its last error.
    pub fn target(&self, job: &str) -> Option<(String, String)> {
        let (_, body) = self.api("/api/v1/targets?state=active")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .map(|t| {
                (
                    t["health"].as_str().unwrap_or_default().to_string(),
                    t["lastError"].as_str().unwrap_or_default().to_string(),
                )
            })
    }

    /// An instant PromQL query: each result's labels and value.
    pub fn query(&self, q: &str) -> Vec<(serde_json::Value, f64)> {
        let Some((200, body)) = self.api(&format!("/api/v1/query?query={}", encode(q))) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect()
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus log:\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
