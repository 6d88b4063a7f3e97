//! `element-update` flags and exit codes, against the loopback fixtures.

mod support;

use clap::Parser;
use matrix_provision::cli::element_update::{execute, Args, EXIT_PENDING};
use matrix_provision::config::HostConfig;
use support::fixtures;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(extra: &[&str], root: &std::path::Path) -> Args {
    let mut argv = vec![
        "element-update",
        "--config",
        "/etc/matrix-provision/host.toml",
    ];
    argv.extend_from_slice(extra);
    let root = root.to_str().unwrap();
    argv.extend_from_slice(&["--root", root]);
    Cli::try_parse_from(argv).unwrap().args
}

fn config(version: &str, enabled: bool) -> HostConfig {
    let f = fixtures();
    let text = format!(
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
element_releases_url = "{releases}"
element_signing_key = "{keyring}"
"#,
        releases = f.releases_url(),
        keyring = f.keyring().display()
    );
    toml::from_str(&text).expect("test host.toml parses")
}

#[test]
fn check_then_update_then_check_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("element");
    let cfg = config("latest", true);

    assert_eq!(
        execute(&args(&["--check"], &root), &cfg).unwrap(),
        EXIT_PENDING
    );
    assert!(!root.join("current").exists(), "--check wrote something");

    assert_eq!(
        execute(&args(&["--version", "v1.0.0"], &root), &cfg).unwrap(),
        0
    );
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap().to_str(),
        Some("archive/element-v1.0.0")
    );
    assert_eq!(
        execute(&args(&["--check"], &root), &cfg).unwrap(),
        EXIT_PENDING
    );
    assert_eq!(execute(&args(&[], &root), &cfg).unwrap(), 0);
    assert_eq!(execute(&args(&["--check"], &root), &cfg).unwrap(), 0);

    assert_eq!(
        execute(&args(&["--rollback", "--check"], &root), &cfg).unwrap(),
        EXIT_PENDING
    );
    assert_eq!(execute(&args(&["--rollback"], &root), &cfg).unwrap(), 0);
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap().to_str(),
        Some("archive/element-v1.0.0")
    );
}

#[test]
fn pinned_in_host_toml_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("element");
    let cfg = config("v0.9.0", true);
    assert_eq!(execute(&args(&[], &root), &cfg).unwrap(), 0);
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap().to_str(),
        Some("archive/element-v0.9.0")
    );
}

#[test]
fn disabled_element_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("element");
    assert_eq!(
        execute(&args(&[], &root), &config("latest", false)).unwrap(),
        0
    );
    assert!(!root.exists());
}

#[test]
fn errors_propagate_and_bad_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("element");
    let cfg = config("latest", true);
    let e = execute(&args(&["--version", "v9.9.9"], &root), &cfg).unwrap_err();
    assert!(format!("{e:#}").contains("HTTP 404"), "{e:#}");
    let e = execute(&args(&["--version", "../../etc"], &root), &cfg).unwrap_err();
    assert!(e.to_string().contains("not an Element release tag"), "{e}");
    assert!(
        Cli::try_parse_from(["x", "--config", "h", "--rollback", "--version", "v1.0.0"]).is_err()
    );
}
