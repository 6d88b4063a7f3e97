//! src/http.rs against the loopback fixture server.

mod support;

use std::path::Path;

use matrix_provision::http::{self, Options};
use support::{dead_port, fixtures};

#[test]
fn get_returns_the_body() {
    let f = fixtures();
    let body = http::get(
        &format!("{}/releases/latest", f.base()),
        &Options::default(),
    )
    .unwrap();
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("\"tag_name\": \"v1.1.0\""));
}

#[test]
fn not_found_reads_get_url_http_404() {
    let url = format!("{}/nope", fixtures().base());
    let e = http::get(&url, &Options::for_key("sources.matrix_keyring_url")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("GET {url}: HTTP 404 (not found), check sources.matrix_keyring_url in host.toml")
    );
}

#[test]
fn connection_refused_names_the_setting() {
    let url = format!("http://127.0.0.1:{}/x", dead_port());
    let e = http::get(&url, &Options::for_key("sources.matrix_repo_url")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("GET {url}: connection refused")),
        "{msg}"
    );
    assert!(
        msg.ends_with("check sources.matrix_repo_url in host.toml"),
        "{msg}"
    );
}

#[test]
fn responses_over_the_size_cap_are_refused() {
    let f = fixtures();
    let url = format!("{}/download/v1.0.0/element-v1.0.0.tar.gz", f.base());
    let opts = Options {
        max_bytes: 100,
        ..Options::default()
    };
    let e = http::get(&url, &opts).unwrap_err();
    assert!(
        e.to_string().contains("more than the 100 byte limit"),
        "{e}"
    );
}

#[test]
fn download_writes_the_file() {
    let f = fixtures();
    let url = format!("{}/download/v1.0.0/element-v1.0.0.tar.gz", f.base());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("t.tar.gz");
    let n = http::download(&url, &dest, &Options::default()).unwrap();
    let want = std::fs::read(f.www().join("download/v1.0.0/element-v1.0.0.tar.gz")).unwrap();
    assert_eq!(n as usize, want.len());
    assert_eq!(std::fs::read(&dest).unwrap(), want);
}

#[test]
fn full_disk_says_disk_full() {
    // /dev/full fails every write with ENOSPC, exactly like a full filesystem.
    let url = format!(
        "{}/download/v1.0.0/element-v1.0.0.tar.gz",
        fixtures().base()
    );
    let e = http::download(&url, Path::new("/dev/full"), &Options::default()).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
}

#[test]
fn ca_bundle_problems_are_named() {
    let url = format!("{}/releases/latest", fixtures().base());
    let missing = Options {
        ca_bundle: Some("/nonexistent/ca.pem".into()),
        ..Options::default()
    };
    let e = http::get(&url, &missing).unwrap_err();
    assert!(
        format!("{e:#}").contains("read CA bundle /nonexistent/ca.pem"),
        "{e:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let e = http::get(
        &url,
        &Options {
            ca_bundle: Some(junk),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
}
