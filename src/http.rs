//! Blocking HTTP(S) for the whole crate: GET for release metadata, tarballs, apt keyrings; [`request`]
//! for JSON APIs (the Synapse admin API on loopback).
//!
//! One place decides timeouts, the size cap, which CAs are trusted and how failures read, so every
//! download error looks the same: `GET <url>: <what happened>[, check <config key>]`.
//! Built on `ureq` (rustls, Mozilla roots): blocking, no async runtime, no system OpenSSL.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How a request behaves. `Options::default()` suits API calls and release tarballs alike.
#[derive(Debug, Clone)]
pub struct Options {
    /// TCP + TLS setup, per attempt.
    pub connect_timeout: Duration,
    /// Longest silence while reading: catches a stalled server without capping slow large downloads.
    pub read_timeout: Duration,
    /// Whole request including redirects and the body.
    pub total_timeout: Duration,
    /// Slowest tolerated transfer: at least `.0` bytes in every `.1`. A server that drips a byte now and
    /// then never trips `read_timeout`; this ends it within one window instead of at `total_timeout`.
    pub min_rate: (u64, Duration),
    /// Responses larger than this are refused (checked against Content-Length and while reading).
    pub max_bytes: u64,
    /// PEM bundle to trust *instead of* the built-in Mozilla roots (private servers, e.g. a test ACME CA).
    pub ca_bundle: Option<PathBuf>,
    /// The host.toml key the URL came from, named in connection errors ("check sources.X").
    pub config_key: Option<String>,
    /// The Host header to send instead of the URL's host: a name-based vhost reached at an address
    /// (doctor asking nginx's plain-HTTP listener behind an edge).
    pub host_header: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(15 * 60),
            // 1 KiB in 30 s: far below any real link, far above a drip.
            min_rate: (1024, Duration::from_secs(30)),
            max_bytes: 256 * 1024 * 1024,
            ca_bundle: None,
            config_key: None,
            host_header: None,
        }
    }
}

impl Options {
    /// Default options that name `key` (e.g. "sources.element_releases_url") in errors.
    pub fn for_key(key: &str) -> Options {
        Options {
            config_key: Some(key.to_string()),
            ..Options::default()
        }
    }
}

/// `opts`, with the limits cut to seconds when `url` is on loopback (a health check, a local API): a
/// service that accepted the connection and hangs must not hold a step for a quarter of an hour.
pub fn suited(url: &str, opts: &Options) -> Options {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let loopback = host.starts_with("127.")
        || host.starts_with("[::1]")
        || host == "localhost"
        || host.starts_with("localhost:");
    if !loopback {
        return opts.clone();
    }
    Options {
        connect_timeout: opts.connect_timeout.min(Duration::from_secs(5)),
        read_timeout: opts.read_timeout.min(Duration::from_secs(10)),
        total_timeout: opts.total_timeout.min(Duration::from_secs(30)),
        min_rate: (
            opts.min_rate.0,
            opts.min_rate.1.min(Duration::from_secs(10)),
        ),
        ..opts.clone()
    }
}

/// GET `url` into memory (metadata, keyrings). Fails on any non-2xx status.
pub fn get(url: &str, opts: &Options) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    fetch(url, opts, &mut out)?;
    Ok(out)
}

/// GET `url` into a new file at `dest` (created, or truncated if present). Returns the byte count.
/// On failure the partial file is left for the caller, who owns `dest`'s directory and cleans it.
pub fn download(url: &str, dest: &Path, opts: &Options) -> Result<u64> {
    let mut file =
        File::create(dest).map_err(|e| describe_io(e, &format!("create {}", dest.display())))?;
    let n = fetch(url, opts, &mut file)?;
    file.sync_all()
        .map_err(|e| describe_io(e, &format!("write {}", dest.display())))?;
    Ok(n)
}

/// Turns an io error into one that says "disk full" when it is ENOSPC (the raw message,
/// "No space left on device", does not say which disk or what to do).
pub fn describe_io(err: io::Error, action: &str) -> anyhow::Error {
    if err.raw_os_error() == Some(nix::libc::ENOSPC) {
        anyhow!("{action}: disk full (no space left on device); free space on that filesystem and retry")
    } else {
        anyhow!("{action}: {err}")
    }
}

fn fetch(url: &str, opts: &Options, sink: &mut dyn Write) -> Result<u64> {
    let agent = agent(opts)?;
    let mut request = agent.get(url);
    if let Some(host) = &opts.host_header {
        request = request.header("Host", host);
    }
    let mut response = request.call().map_err(|e| request_error(url, opts, e))?;
    if let Some(len) = response.body().content_length() {
        if len > opts.max_bytes {
            bail!(
                "GET {url}: response is {len} bytes, more than the {} byte limit",
                opts.max_bytes
            );
        }
    }
    let check = opts
        .config_key
        .as_deref()
        .map(|k| format!("; check {k} in host.toml"))
        .unwrap_or_default();
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    let (min_bytes, window) = opts.min_rate;
    let mut window_start = Instant::now();
    let mut window_bytes: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => bail!(
                "GET {url}: timed out: nothing received for {} s after {total} bytes{check}",
                opts.read_timeout.as_secs()
            ),
            Err(e) => bail!("GET {url}: reading the response failed after {total} bytes: {e}"),
        };
        total += n as u64;
        window_bytes += n as u64;
        if window_start.elapsed() >= window {
            if window_bytes < min_bytes {
                bail!(
                    "GET {url}: too slow, timed out: {window_bytes} bytes in the last {} s \
                     (less than {min_bytes}; a stalled or dripping server){check}",
                    window_start.elapsed().as_secs()
                );
            }
            window_start = Instant::now();
            window_bytes = 0;
        }
        if total > opts.max_bytes {
            bail!(
                "GET {url}: response exceeds the {} byte limit",
                opts.max_bytes
            );
        }
        sink.write_all(&buf[..n])
            .map_err(|e| describe_io(e, &format!("GET {url}: saving the response")))?;
    }
    Ok(total)
}

/// The status and body of an API call. Any HTTP status is a reply, not an error: APIs answer
/// "401 token expired" or "404 no such user" in their bodies and the caller decides what each means.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `method` (GET, POST, PUT, DELETE) `url` with an optional bearer token and JSON body.
/// Errors only when no HTTP answer came back (refused, timed out, DNS) or the body exceeds the limit.
pub fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    json: Option<&[u8]>,
    opts: &Options,
) -> Result<Reply> {
    let agent = agent_with(opts, false)?;
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = bearer {
        builder = builder.header("Authorization", format!("Bearer {token}"));
    }
    if json.is_some() {
        builder = builder.header("Content-Type", "application/json");
    }
    let invalid = || format!("{method} {url}: not a valid request");
    // No body at all (not an empty one) for GET and DELETE.
    let sent = match json {
        Some(body) => agent.run(builder.body(body.to_vec()).with_context(invalid)?),
        None => agent.run(builder.body(()).with_context(invalid)?),
    };
    let mut response = sent.map_err(|e| describe_error(method, url, opts, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(opts.max_bytes)
        .read_to_vec()
        .map_err(|e| describe_error(method, url, opts, e))?;
    Ok(Reply { status, body })
}

/// ureq reports its per-read timeout as an io error of kind TimedOut (or the ureq Timeout it wraps).
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.kind() == io::ErrorKind::WouldBlock
        || e.to_string().to_ascii_lowercase().contains("timeout")
}

fn agent(opts: &Options) -> Result<ureq::Agent> {
    agent_with(opts, true)
}

fn agent_with(opts: &Options, status_as_error: bool) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(bundle) = &opts.ca_bundle {
        tls = tls.root_certs(load_bundle(bundle)?);
    }
    let config = ureq::Agent::config_builder()
        .user_agent(concat!("matrix-provision/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        // A server that accepts and never answers: no status line within the read timeout.
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_global(Some(opts.total_timeout))
        .tls_config(tls.build())
        .http_status_as_error(status_as_error)
        .build();
    Ok(config.new_agent())
}

fn load_bundle(path: &Path) -> Result<ureq::tls::RootCerts> {
    let pem = std::fs::read(path).with_context(|| format!("read CA bundle {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("parse CA bundle {}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!(
            "CA bundle {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

fn request_error(url: &str, opts: &Options, err: ureq::Error) -> anyhow::Error {
    describe_error("GET", url, opts, err)
}

fn describe_error(method: &str, url: &str, opts: &Options, err: ureq::Error) -> anyhow::Error {
    let check = opts
        .config_key
        .as_deref()
        .map(|k| format!(", check {k} in host.toml"))
        .unwrap_or_default();
    let what = match &err {
        ureq::Error::StatusCode(404) => format!("HTTP 404 (not found){check}"),
        ureq::Error::StatusCode(code @ (403 | 429)) => format!(
            "HTTP {code} (forbidden or rate limited; the GitHub API allows 60 unauthenticated requests an hour)"
        ),
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            format!("connection refused (nothing listens there){check}")
        }
        ureq::Error::Io(e) => format!("{e}{check}"),
        ureq::Error::HostNotFound => format!("host not found (DNS lookup failed){check}"),
        ureq::Error::ConnectionFailed => format!("connection failed{check}"),
        ureq::Error::Timeout(t) => format!("timed out ({t}){check}"),
        ureq::Error::BadUri(u) => format!("not a valid URL ({u}){check}"),
        other => format!("{other}{check}"),
    };
    anyhow!("{method} {url}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// One-shot HTTP server on loopback: answers `status` + `body` and hands back the request it got.
    fn serve_once(status: &str, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = status.to_string();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut content = vec![0; length];
            reader.read_exact(&mut content).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            head + &String::from_utf8_lossy(&content)
        });
        (url, handle)
    }

    #[test]
    fn request_returns_error_statuses_as_replies_and_sends_token_and_json() {
        let (url, server) = serve_once("401 Unauthorized", r#"{"errcode":"M_UNKNOWN_TOKEN"}"#);
        let reply = request(
            "POST",
            &format!("{url}/x"),
            Some("tok"),
            Some(br#"{"a":1}"#),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(reply.status, 401);
        assert!(!reply.ok());
        assert_eq!(reply.body, br#"{"errcode":"M_UNKNOWN_TOKEN"}"#);
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /x HTTP/1.1"), "{seen}");
        assert!(
            seen.contains("authorization: Bearer tok")
                || seen.contains("Authorization: Bearer tok"),
            "{seen}"
        );
        assert!(seen.ends_with(r#"{"a":1}"#), "{seen}");
    }

    #[test]
    fn request_without_body_and_refused_connection() {
        let (url, server) = serve_once("200 OK", "{}");
        let reply = request("GET", &format!("{url}/h"), None, None, &Options::default()).unwrap();
        assert!(reply.ok());
        assert!(server.join().unwrap().starts_with("GET /h HTTP/1.1"));
        // A port nobody listens on any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = request(
            "DELETE",
            &format!("http://127.0.0.1:{port}/t"),
            None,
            None,
            &Options::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("DELETE http://127.0.0.1:"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
    }

    /// A server that sends its headers, then `body` one byte every `pause`.
    fn drip(body: &'static [u8], pause: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/releases/latest", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            for b in body {
                if stream.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        });
        url
    }

    #[test]
    fn a_dripping_server_is_given_up_on_within_one_window() {
        // Every byte arrives well inside the read timeout: only the rate limit can end this.
        let url = drip(&[b'x'; 4096], Duration::from_millis(100));
        let opts = Options {
            read_timeout: Duration::from_secs(2),
            min_rate: (1024, Duration::from_secs(1)),
            ..Options::for_key("sources.element_releases_url")
        };
        let started = Instant::now();
        let err = get(&url, &opts).unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("too slow") && err.contains(&url), "{err}");
        assert!(err.contains("sources.element_releases_url"), "{err}");
    }

    #[test]
    fn a_stalled_body_times_out_naming_the_url() {
        let url = drip(b"xy", Duration::from_secs(20));
        let opts = Options {
            read_timeout: Duration::from_millis(500),
            ..Options::default()
        };
        let started = Instant::now();
        let err = get(&url, &opts).unwrap_err().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("timed out") && err.contains(&url), "{err}");
    }

    #[test]
    fn loopback_urls_get_limits_in_seconds() {
        let d = Options::default();
        for url in [
            "http://127.0.0.1:8008/health",
            "http://localhost/x",
            "http://[::1]:80/",
        ] {
            assert!(
                suited(url, &d).total_timeout <= Duration::from_secs(30),
                "{url}"
            );
        }
        let far = suited("https://api.github.com/x", &d);
        assert_eq!(far.total_timeout, d.total_timeout);
    }

    #[test]
    fn the_default_rate_limit_ends_a_one_byte_a_minute_drip() {
        let d = Options::default();
        assert!(d.read_timeout < Duration::from_secs(60));
        assert!(d.min_rate.0 > 1 && d.min_rate.1 <= Duration::from_secs(60));
    }
}
