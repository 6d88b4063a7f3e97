//! The update timer's systemd units: they render, carry the hardening, and systemd accepts them.

mod support;

use std::path::Path;
use std::process::Command;

use matrix_provision::config::HostConfig;

const SERVICE: &str = include_str!("../templates/systemd/matrix-element-update.service.j2");
const TIMER: &str = include_str!("../templates/systemd/matrix-element-update.timer.j2");

fn render(template: &str, binary: &str) -> String {
    let cfg: HostConfig = matrix_provision::config::parse(
        &support::host_toml(
            "https://example.invalid/releases",
            Path::new("/etc/matrix-provision/element.gpg"),
            "latest",
            true,
        ),
        "host.toml",
    )
    .unwrap();
    let env = minijinja::Environment::new();
    let ctx = minijinja::context! {
        config => cfg.for_templates(),
        paths => minijinja::context! {
            binary => binary,
            host_config => "/etc/matrix-provision/host.toml",
            element_root => "/var/www/element",
        },
    };
    env.render_str(template, ctx).unwrap()
}

#[test]
fn service_runs_element_update_unprivileged_and_confined() {
    let unit = render(SERVICE, "/usr/local/bin/matrix-provision");
    for line in [
        "Type=oneshot",
        "User=matrix-element",
        "LoadCredential=host.toml:/etc/matrix-provision/host.toml",
        "ExecStart=/usr/local/bin/matrix-provision element-update ${CREDENTIALS_DIRECTORY}/host.toml",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/www/element",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Description=Verified Element Web update for element.example.org",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?} in\n{unit}");
    }
    assert!(!unit.contains("{{") && !unit.contains("{%"));
}

#[test]
fn timer_is_daily_randomized_and_persistent() {
    let unit = render(TIMER, "/usr/local/bin/matrix-provision");
    for line in [
        "OnCalendar=daily",
        "RandomizedDelaySec=1h",
        "Persistent=true",
        "WantedBy=timers.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "missing {line:?} in\n{unit}"
        );
    }
}

/// systemd-analyze is on every Debian host with systemd; where it is absent there is nothing to ask.
#[test]
fn systemd_analyze_verify_accepts_both_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists, so point it at one that does.
    let service = dir.path().join("matrix-element-update.service");
    let timer = dir.path().join("matrix-element-update.timer");
    std::fs::write(&service, render(SERVICE, "/bin/true")).unwrap();
    std::fs::write(&timer, render(TIMER, "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&service)
        .arg(&timer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("matrix-element-update"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}
