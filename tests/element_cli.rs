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
    let mut argv = vec!["element-update", "/etc/matrix-provision/host.toml"];
    argv.extend_from_slice(extra);
    let root = root.to_str().unwrap();
    argv.extend_from_slice(&["--root", root]);
    Cli::try_parse_from(argv).unwrap().args
}

fn config(version: &str, enabled: bool) -> HostConfig {
    let f = fixtures();
    matrix_provision::config::parse(
        &support::host_toml(&f.releases_url(), &f.keyring(), version, enabled),
        "host.toml",
    )
    .expect("test host.toml parses")
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
    assert!(Cli::try_parse_from(["x", "h", "--rollback", "--version", "v1.0.0"]).is_err());
    // HOST_TOML is positional; the old `--config` spelling (units installed by earlier versions) still parses.
    assert_eq!(
        Cli::try_parse_from(["x", "--config", "/old/host.toml"])
            .unwrap()
            .args
            .host_toml
            .path(),
        std::path::Path::new("/old/host.toml")
    );
}
