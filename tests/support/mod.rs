//! Test fixtures for the Element updater: fake releases signed with a throwaway key
//! (tests/support/element-fixtures.sh) served by a tiny HTTP/1.0 file server on 127.0.0.1.
#![allow(dead_code)] // each test crate uses a different part

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Fixtures {
    /// Kept alive for the whole test binary; holds keys, keyrings and www/.
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub port: u16,
}

impl Fixtures {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn releases_url(&self) -> String {
        format!("{}/releases", self.base())
    }
    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring.gpg")
    }
    pub fn keyring_armored(&self) -> PathBuf {
        self.root.join("keyring.asc")
    }
    pub fn www(&self) -> PathBuf {
        self.root.join("www")
    }
}

/// Generated once per test binary: key generation and signing take about half a second.
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/element-fixtures.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .expect("run element-fixtures.sh (needs bash, gpg, tar)");
        assert!(
            out.status.success(),
            "element-fixtures.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let www = dir.path().join("www");
        std::thread::spawn(move || serve(listener, www));
        Fixtures {
            root: dir.path().to_path_buf(),
            _dir: dir,
            port,
        }
    })
}

/// A complete host.toml for the tests (every key, since the schema has no defaults yet).
pub fn host_toml(releases_url: &str, keyring: &Path, version: &str, enabled: bool) -> String {
    format!(
        r#"
server_name = "example.org"
[acme]
enabled = false
[synapse]
host = "matrix.example.org"
registration = "closed"
federation = true
presence = true
max_upload_size_mb = 50
report_stats = false
expose_admin_api = false
[element]
enabled = {enabled}
host = "element.example.org"
version = "{version}"
auto_update = true
keep_releases = 3
[turn]
enabled = false
host = "turn.example.org"
min_port = 49152
max_port = 49172
user_quota = 12
total_quota = 1200
[firewall]
enabled = false
extra_allowed_ports = []
[sources]
matrix_repo_url = "https://packages.matrix.org/debian/"
matrix_keyring_url = "https://packages.matrix.org/debian/matrix-org-archive-keyring.gpg"
matrix_key_fingerprint = "AAF9AE843A7584B5A3E4CD2BCF45A512DE2DA058"
acme_directory_url = "https://acme-v02.api.letsencrypt.org/directory"
element_releases_url = "{releases_url}"
element_signing_key = "{keyring}"
"#,
        keyring = keyring.display()
    )
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// GET only. `/short/<path>` serves `<path>` but closes the connection halfway through the
/// body it announced, like a dropped download.
fn serve(listener: TcpListener, www: PathBuf) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let www = www.clone();
        std::thread::spawn(move || {
            let _ = answer(conn, &www);
        });
    }
}

fn answer(mut conn: TcpStream, www: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (short, path) = match path.strip_prefix("/short") {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let rel = path.trim_start_matches('/');
    let file = www.join(rel);
    let body = if rel.split('/').any(|p| p == "..") {
        None
    } else {
        std::fs::read(&file).ok().filter(|_| file.is_file())
    };
    match body {
        Some(body) => {
            let sent = if short {
                &body[..body.len() / 2]
            } else {
                &body[..]
            };
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(sent)?;
        }
        None => {
            let msg = b"not found\n";
            write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            )?;
            conn.write_all(msg)?;
        }
    }
    conn.flush()
}

/// Every file below `dir`, recursively (for the tests that scan the source tree).
pub fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}
